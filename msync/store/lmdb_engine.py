"""
The LMDB engine: one environment on local disk, one writer thread that
commits in groups.

Which thread does what (the one rule): every write transaction runs on the
writer thread that L{LMDBEngine} owns, and nowhere else.  The reactor
thread only opens short read transactions (the rules page large reads).
Writes are queued as functions; the writer takes everything queued, runs
each function in a nested transaction inside one outer transaction, and
commits once.  The environment syncs on commit, so when the Deferreds fire
(back on the reactor thread) every change they report is on disk.  While a
commit is syncing, new writes queue up and share the next one: throughput
follows the number of writers, not the disk's sync rate.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import lmdb
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from msync.store.errors import StoreClosed
from msync.store.tables import T, Table

_log = Logger()

_STOP = object()


class _LMDBTables:
    """A L{msync.store.tables.Tables} over one LMDB transaction."""

    def __init__(self, txn: Any, dbs: dict[Table, Any]) -> None:
        self._txn = txn
        self._dbs = dbs

    def get(self, table: Table, key: bytes) -> bytes | None:
        value: bytes | None = self._txn.get(key, db=self._dbs[table])
        return value

    def put(self, table: Table, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, db=self._dbs[table])

    def delete(self, table: Table, key: bytes) -> None:
        self._txn.delete(key, db=self._dbs[table])

    def walk(self, table: Table, lo: bytes) -> Iterator[tuple[bytes, bytes]]:
        # The cursor itself iterates (key, value) pairs in C, with no
        # generator frame between it and the caller.
        cursor = self._txn.cursor(db=self._dbs[table])
        if not cursor.set_range(lo):
            return iter(())
        walker: Iterator[tuple[bytes, bytes]] = iter(cursor)
        return walker

    def scan(
        self,
        table: Table,
        lo: bytes,
        hi: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        cursor = self._txn.cursor(db=self._dbs[table])
        if not reverse:
            if not cursor.set_range(lo):
                return
            for key, value in cursor:
                if hi is not None and key >= hi:
                    return
                yield key, value
            return

        # Start at the last key below hi and walk back to lo.
        if hi is None:
            ok = cursor.last()
        elif cursor.set_range(hi):
            ok = cursor.prev()
        else:
            ok = cursor.last()
        while ok:
            key = cursor.key()
            if key < lo:
                return
            yield key, cursor.value()
            ok = cursor.prev()


class LMDBEngine:
    """
    An L{msync.store.tables.Engine} over an LMDB environment in
    C{path}, with a group-committing writer thread.

    Nothing is opened until L{open}; L{close} drains queued writes first.
    """

    def __init__(
        self,
        path: str,
        reactor: IReactorThreads,
        map_size: int = 64 * 2**30,
        max_batch: int = 2048,
        sync: bool = True,
    ) -> None:
        self._path = path
        self._reactor = reactor
        self._map_size = map_size
        self._max_batch = max_batch
        self._sync = sync
        self._env: Any = None
        self._dbs: dict[Table, Any] = {}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: Deferred[None] | None = None
        self.commits = 0
        """How many transactions the writer has committed."""

    def open(self, init: Callable[[_LMDBTables], T]) -> T:
        """
        Open the environment, run C{init} in a first write transaction on
        the calling thread, then start the writer thread.

        @return: what C{init} returned.
        """
        os.makedirs(self._path, mode=0o700, exist_ok=True)
        # The directory may predate us (mkdir -p): it holds secrets.
        os.chmod(self._path, 0o700)
        self._env = lmdb.open(
            self._path,
            map_size=self._map_size,
            max_dbs=len(Table) + 1,
            sync=self._sync,
            metasync=self._sync,
            readahead=False,
            mode=0o600,
        )
        with self._env.begin(write=True) as txn:
            for table in Table:
                self._dbs[table] = self._env.open_db(
                    table.value.encode(), txn=txn
                )
            result = init(_LMDBTables(txn, self._dbs))
        self._thread = threading.Thread(
            target=self._run, name="msync-store-writer", daemon=True
        )
        self._thread.start()
        return result

    @staticmethod
    def offline(
        path: str, fn: Callable[[_LMDBTables], T], map_size: int = 2**30
    ) -> T:
        """
        Run C{fn} in one write transaction on a store no daemon has open,
        on the calling thread, and close it again: for preparing a data
        directory (tests, benchmarks, offline tools).
        """
        os.makedirs(path, mode=0o700, exist_ok=True)
        env = lmdb.open(
            path, map_size=map_size, max_dbs=len(Table) + 1, mode=0o600
        )
        try:
            with env.begin(write=True) as txn:
                dbs = {
                    t: env.open_db(t.value.encode(), txn=txn) for t in Table
                }
                return fn(_LMDBTables(txn, dbs))
        finally:
            env.close()

    def close(self) -> Deferred[None]:
        """Finish queued writes, stop the writer and close the files."""
        if self._thread is None:
            return succeed(None)
        self._stopped = Deferred()
        self._queue.put(_STOP)
        return self._stopped

    def read(self, fn: Callable[[_LMDBTables], T]) -> T:
        if self._env is None:
            raise StoreClosed("store is not open")
        with self._env.begin(buffers=False) as txn:
            return fn(_LMDBTables(txn, self._dbs))

    def write(self, fn: Callable[[_LMDBTables], T]) -> Deferred[T]:
        if self._thread is None or self._stopped is not None:
            raise StoreClosed("store is not open")
        d: Deferred[T] = Deferred()
        self._queue.put((fn, d))
        return d

    def info(self) -> dict[str, int]:
        """Return the environment's size figures (for metrics)."""
        if self._env is None:
            raise StoreClosed("store is not open")
        stat = self._env.info()
        page = self._env.stat()["psize"]
        return {
            "map_size": stat["map_size"],
            "used_bytes": (stat["last_pgno"] + 1) * page,
            "readers": stat["num_readers"],
        }

    # --- the writer thread ---------------------------------------------

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            work = [item for item in batch if item is not _STOP]
            if work:
                self._commit(work)
            if stop:
                # Anything queued behind the stop marker still gets done.
                rest = []
                while True:
                    try:
                        rest.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if rest:
                    self._commit([i for i in rest if i is not _STOP])
                self._env.close()
                self._env = None
                self._reactor.callFromThread(self._closed)
                return

    def _commit(self, work: list[tuple[Callable[[Any], Any], Any]]) -> None:
        # Run the whole group in one transaction.  A function that raises
        # must leave no trace, so the group is then run again without it;
        # the rules are deterministic, so the others get the same results.
        # This keeps the common case free of per-write savepoints.
        failed: dict[int, Failure] = {}
        while True:
            outcomes: list[tuple[Deferred[Any], object]] = []
            try:
                txn = self._env.begin(write=True)
                tables = _LMDBTables(txn, self._dbs)
                retry = False
                for i, (fn, d) in enumerate(work):
                    if i in failed:
                        outcomes.append((d, failed[i]))
                        continue
                    try:
                        outcomes.append((d, fn(tables)))
                    except BaseException:
                        failed[i] = Failure()
                        retry = True
                        break
                if retry:
                    txn.abort()
                    continue
                txn.commit()
                self.commits += 1
            except BaseException:
                # The commit itself failed: nothing of the group is stored.
                f = Failure()
                _log.failure("store commit failed", f)
                outcomes = [(d, f) for _, d in work]
            break
        self._reactor.callFromThread(_fire, outcomes)

    def _closed(self) -> None:
        self._thread = None
        if self._stopped is not None:
            d, self._stopped = self._stopped, None
            d.callback(None)


class LMDBReader:
    """
    Read-only access to an environment another process writes (the
    gateway workers'): no writer thread, a fresh read transaction per
    read, so every read sees the latest commit.
    """

    def __init__(self, path: str) -> None:
        self._env = lmdb.open(
            path,
            readonly=True,
            max_dbs=len(Table) + 1,
            readahead=False,
            map_size=0,
        )
        self._dbs = {
            t: self._env.open_db(t.value.encode(), create=False) for t in Table
        }

    def read(self, fn: Callable[[_LMDBTables], T]) -> T:
        try:
            txn = self._env.begin(buffers=False)
        except lmdb.MapResizedError:
            # The writer grew the map: adopt its size and read again.
            self._env.set_mapsize(0)
            txn = self._env.begin(buffers=False)
        with txn:
            return fn(_LMDBTables(txn, self._dbs))

    def close(self) -> None:
        """Close the environment."""
        self._env.close()


def _fire(outcomes: list[tuple[Deferred[Any], object]]) -> None:
    for d, outcome in outcomes:
        if isinstance(outcome, Failure):
            d.errback(outcome)
        else:
            d.callback(outcome)
