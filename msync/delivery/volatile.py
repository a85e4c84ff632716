"""
Ops of non-persistent configs: never stored, kept in memory just long
enough to be pushed (and pushed again) to the devices online when sent.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from msync.model import Scope, StoredOp
from msync.store import Store

_log = Logger()

#: Ids are reserved from the store's sequence this many at a time, so
#: that unstored ops order with stored ones in every scope.
BLOCK = 65_536


class NoIds(Exception):
    """No op ids are reserved yet (the store has not answered)."""


class VolatileLogs:
    """
    Short in-memory logs, one per scope, of the latest non-persistent
    ops: at most C{keep} ops a scope, none older than C{ttl} seconds.
    """

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        keep: int = 4096,
        ttl: float = 120.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._keep = keep
        self._ttl = ttl
        self._logs: dict[bytes, deque[StoredOp]] = {}
        self._last: dict[bytes, int] = {}
        self._next = 0
        self._end = -1
        self._spare: tuple[int, int] | None = None
        self._asking = False

    def start(self) -> None:
        """Reserve the first block of ids."""
        self._refill()

    def _refill(self) -> None:
        if self._asking or self._spare is not None:
            return
        self._asking = True
        d = self._store.reserve_ids(BLOCK)

        def got(span: tuple[int, int]) -> None:
            self._asking = False
            self._spare = span
            if self._next > self._end:
                self._use_spare()

        def failed(f: Failure) -> None:
            self._asking = False
            _log.failure("reserving op ids failed", f)

        d.addCallbacks(got, failed)

    def _use_spare(self) -> None:
        # Ids left unused in a block are skipped: ids may be sparse.  The
        # next block is asked for once this one is half used (append).
        if self._spare is not None:
            self._next, self._end = self._spare
            self._spare = None

    def append(
        self, scope: Scope, body: bytes, meta: bytes, created_ms: int
    ) -> int:
        """
        Add an op to its scope's log and return its id.

        @raise NoIds: if no ids are reserved yet.
        """
        if self._next > self._end:
            self._use_spare()
            if self._next > self._end:
                self._refill()
                raise NoIds("no op ids reserved yet")
        op_id = self._next
        self._next += 1
        if self._end - self._next < BLOCK // 2:
            self._refill()
        log = self._logs.setdefault(scope.key, deque(maxlen=self._keep))
        log.append(StoredOp(op_id, body, meta, b"", created_ms, 0, 0))
        self._last[scope.key] = op_id
        self._expire(log)
        return op_id

    def _expire(self, log: deque[StoredOp]) -> None:
        oldest = int((self._clock.seconds() - self._ttl) * 1000)
        while log and log[0].created_ms < oldest:
            log.popleft()

    def last_id(self, scope: Scope) -> int:
        """The id of the newest op ever sent in C{scope} (0: none)."""
        return self._last.get(scope.key, 0)

    def read_after(
        self, scope: Scope, after: int, limit: int
    ) -> list[StoredOp]:
        """Return up to C{limit} retained ops above C{after}, in order."""
        log = self._logs.get(scope.key)
        if not log:
            return []
        self._expire(log)
        # Readers are nearly always at or near the newest op: walk back
        # from the end to the first op above C{after}, so that a push
        # costs what is newer than the reader, not the length of the log.
        newer: list[StoredOp] = []
        for op in reversed(log):
            if op.op_id <= after:
                break
            newer.append(op)
        newer.reverse()
        return newer[:limit]
