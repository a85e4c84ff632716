"""
The ordered tables the store keeps, and the transaction shape every backend
offers over them.

A backend is anything that can run a function against a L{Tables}
transaction: LMDB named databases, or sorted in-memory maps.  The rules of
the store (L{msync.store.oplog}, L{msync.store.catalog},
L{msync.store.deliveries}) are written once against this shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import Enum
from typing import Protocol, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")


class Table(Enum):
    """
    Every table, with its key and value layout.

    Integers in keys are big-endian so that byte order is numeric order.
    """

    META = "meta"
    """Name -> value: C{schema}, C{epoch}, C{seq} (the last op id)."""

    INSTANCES = "instances"
    """instance id -> msgpack record."""

    KEYS = "keys"
    """access key -> msgpack record."""

    CONFIGS = "configs"
    """instance NUL biz type -> msgpack record."""

    ADMINS = "admins"
    """admin login name -> msgpack record (password hash)."""

    TOKENS = "tokens"
    """API token id -> msgpack record (token hash, admin, created)."""

    SETTINGS = "settings"
    """setting name -> msgpack value."""

    SCOPES = "scopes"
    """scope key -> u64 last id, u64 trimmed-through id, u64 count."""

    OPS = "ops"
    """scope key + u64 op id -> op header, dedup key, meta, body."""

    EXPIRY = "expiry"
    """u64 expire ms + u64 op id + scope key -> empty."""

    DEDUP = "dedup"
    """idempotency key -> u64 op id + u64 expire ms."""

    POINTS = "points"
    """scope key + device id (empty: the scope's shared point) -> u64
    epoch + u64 op id."""

    DEVICES = "devices"
    """instance NUL device id -> msgpack record."""

    USERS = "users"
    """instance NUL user id NUL device id -> u64 last online ms."""

    DELIVERIES = "deliveries"
    """instance NUL device id NUL + u64 op id + scope key -> msgpack."""

    DELIVERY_DAYS = "delivery_days"
    """u32 day + deliveries key -> empty (for the retention sweep)."""

    COUNTERS = "counters"
    """u32 day + instance NUL kind NUL name -> u64 pushes, u64 arrivals."""


class Tables(Protocol):
    """One transaction over every L{Table}."""

    def get(self, table: Table, key: bytes) -> bytes | None:
        """Return the value at C{key}, or L{None}."""

    def put(self, table: Table, key: bytes, value: bytes) -> None:
        """Set C{key} to C{value} (writers only)."""

    def delete(self, table: Table, key: bytes) -> None:
        """Remove C{key} if present (writers only)."""

    def scan(
        self,
        table: Table,
        lo: bytes,
        hi: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """
        Iterate over the items with C{lo <= key < hi} (no upper bound when
        C{hi} is L{None}), in key order or in reverse.

        The caller must not change the table while iterating.
        """

    def walk(self, table: Table, lo: bytes) -> Iterator[tuple[bytes, bytes]]:
        """
        Iterate over the items with C{lo <= key} in key order, to the end
        of the table: the caller stops where its range ends.  The cheapest
        way through many items (delivery reads every pushed op this way).

        The caller must not change the table while iterating.
        """


class Engine(Protocol):
    """Runs store functions in transactions; what a backend provides."""

    def open(self, init: Callable[[Tables], T]) -> T:
        """Open the backend, run C{init} in a first write transaction."""

    def close(self) -> Deferred[None]:
        """Finish pending writes and release the backend."""

    def read(self, fn: Callable[[Tables], T]) -> T:
        """Run C{fn} in a read transaction on the calling thread."""

    def write(self, fn: Callable[[Tables], T]) -> Deferred[T]:
        """
        Run C{fn} in a write transaction; fire with its result once the
        transaction is durably committed, or fail with what it raised (and
        then none of its changes are kept).
        """


def prefix_end(prefix: bytes) -> bytes | None:
    """
    Return the smallest key above every key that starts with C{prefix},
    or L{None} when there is none (a prefix of only 0xFF bytes).
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))
