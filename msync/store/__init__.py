"""
The store: every oplog, sync point, config, device and delivery record.

L{Store} is the one way in.  Its rules live in L{msync.store.oplog},
L{msync.store.catalog} and L{msync.store.deliveries}; the
engines (L{msync.store.lmdb_engine.LMDBEngine} on disk,
L{msync.store.memory.MemoryEngine} for tests) decide where they run.
"""

from __future__ import annotations

from collections.abc import Generator

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger

from msync.store.api import Store
from msync.store.errors import (
    AlreadyExists,
    CorruptRecord,
    DeviceClaimed,
    NotFound,
    SchemaMismatch,
    StoreClosed,
    StoreError,
)
from msync.store.lmdb_engine import LMDBEngine
from msync.store.memory import MemoryEngine
from msync.store.oplog import SweepResult

__all__ = [
    "AlreadyExists",
    "CorruptRecord",
    "DeviceClaimed",
    "LMDBEngine",
    "MemoryEngine",
    "NotFound",
    "SchemaMismatch",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoreService",
    "SweepResult",
    "sweep_expired",
]

_log = Logger()


class StoreService(Service):
    """
    Opens the LMDB store when the service starts (after twistd forks, not
    at import or in C{makeService}) and closes it, writes drained, when
    the service stops.
    """

    def __init__(
        self, data_dir: str, reactor: IReactorThreads, map_size: int
    ) -> None:
        self.store = Store(LMDBEngine(data_dir, reactor, map_size))
        self._data_dir = data_dir

    def startService(self) -> None:
        self.store.open()
        _log.info(
            "store open in {data_dir} (epoch {epoch})",
            data_dir=self._data_dir,
            epoch=self.store.epoch,
        )
        super().startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        d = self.store.close()
        d.addCallback(
            lambda _: _log.info(
                "store closed in {data_dir}", data_dir=self._data_dir
            )
        )
        return d


@inlineCallbacks
def sweep_expired(
    store: Store, clock: IReactorTime
) -> Generator[Deferred[SweepResult], SweepResult, SweepResult]:
    """
    Sweep the store slice by slice until nothing expired is left, and log
    what went.

    @return: a Deferred firing with the summed L{SweepResult}.
    """
    total = SweepResult()
    while True:
        now_ms = int(clock.seconds() * 1000)
        part: SweepResult = yield store.sweep(now_ms)
        total = SweepResult(
            ops=total.ops + part.ops,
            deliveries=total.deliveries + part.deliveries,
            counters=total.counters + part.counters,
        )
        if not part.more:
            break
    if total.ops or total.deliveries or total.counters:
        _log.info(
            "swept {ops} expired ops, {deliveries} delivery records, "
            "{counters} counters",
            ops=total.ops,
            deliveries=total.deliveries,
            counters=total.counters,
        )
    return total
