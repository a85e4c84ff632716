"""
An in-memory engine: sorted maps, one transaction at a time, undone on
failure.

It keeps nothing across restarts.  Its use is deterministic tests: writes
commit at once and their Deferreds have fired before C{write} returns, so
tests need neither threads nor a running reactor.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from msync.store.tables import T, Table


class _SortedMap:
    """A dict with its keys also kept in order, for range scans."""

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}
        self.keys: list[bytes] = []

    def put(self, key: bytes, value: bytes) -> None:
        if key not in self.values:
            bisect.insort(self.keys, key)
        self.values[key] = value

    def delete(self, key: bytes) -> None:
        if self.values.pop(key, None) is not None:
            del self.keys[bisect.bisect_left(self.keys, key)]


class _MemoryTables:
    """A transaction over the maps, logging what it changed for undo."""

    def __init__(self, maps: dict[Table, _SortedMap], write: bool) -> None:
        self._maps = maps
        self._write = write
        self.undo: list[tuple[Table, bytes, bytes | None]] = []

    def get(self, table: Table, key: bytes) -> bytes | None:
        return self._maps[table].values.get(key)

    def put(self, table: Table, key: bytes, value: bytes) -> None:
        if not self._write:
            raise RuntimeError("write in a read transaction")
        self.undo.append((table, key, self.get(table, key)))
        self._maps[table].put(bytes(key), bytes(value))

    def delete(self, table: Table, key: bytes) -> None:
        if not self._write:
            raise RuntimeError("write in a read transaction")
        self.undo.append((table, key, self.get(table, key)))
        self._maps[table].delete(key)

    def scan(
        self,
        table: Table,
        lo: bytes,
        hi: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        m = self._maps[table]
        start = bisect.bisect_left(m.keys, lo)
        stop = len(m.keys) if hi is None else bisect.bisect_left(m.keys, hi)
        # Copy the slice: the rules may change the table after iterating.
        keys = m.keys[start:stop]
        if reverse:
            keys.reverse()
        for k in keys:
            yield k, m.values[k]

    def walk(self, table: Table, lo: bytes) -> Iterator[tuple[bytes, bytes]]:
        # Lazily: the caller stops where its range ends, and copying every
        # key to the end of the table first would cost each read the
        # table's size.
        m = self._maps[table]
        for i in range(bisect.bisect_left(m.keys, lo), len(m.keys)):
            k = m.keys[i]
            yield k, m.values[k]

    def rollback(self) -> None:
        for table, key, old in reversed(self.undo):
            if old is None:
                self._maps[table].delete(key)
            else:
                self._maps[table].put(key, old)


class MemoryEngine:
    """An L{msync.store.tables.Engine} that keeps everything in memory."""

    def __init__(self) -> None:
        self._maps = {t: _SortedMap() for t in Table}

    def open(self, init: Callable[[_MemoryTables], T]) -> T:
        """Run C{init} in a first write transaction and return its result."""
        return fn_result(self.write(init))

    def close(self) -> Deferred[None]:
        """Nothing to release."""
        return succeed(None)

    def read(self, fn: Callable[[_MemoryTables], T]) -> T:
        return fn(_MemoryTables(self._maps, write=False))

    def write(self, fn: Callable[[_MemoryTables], T]) -> Deferred[T]:
        tx = _MemoryTables(self._maps, write=True)
        try:
            result = fn(tx)
        except BaseException:
            tx.rollback()
            return fail()
        return succeed(result)


def fn_result(d: Deferred[T]) -> T:
    """Return the result of an already-fired Deferred, or raise its error."""
    box: list[T] = []
    failures: list[Failure] = []
    d.addCallbacks(box.append, failures.append)
    if failures:
        failures[0].raiseException()
    return box[0]
