"""
The small interfaces the rest of msync sees of the store.

They are shaped so that a clustered backend (NATS JetStream is the planned
one) can implement them beside LMDB:

  - op ids are ordered within a scope and may be sparse: nobody may assume
    that the op after N is N + 1;
  - every scope key starts with a stable partition number
    (L{msync.model.Scope.partition}), the unit a cluster shards by;
  - a new op is persisted first and only then announced to listeners, and
    the announcement is a hint: a listener reads the log to find out what
    is there, so a lost or repeated hint costs latency, never data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from twisted.internet.defer import Deferred

from msync.model import (
    AppendResult,
    NewOp,
    Scope,
    ScopeInfo,
    StoredOp,
    SyncPoint,
)
from msync.store.oplog import SweepResult

Listener = Callable[[Scope, int], None]


class OplogStore(Protocol):
    """Per-scope logs of ops."""

    def append(self, op: NewOp) -> Deferred[AppendResult]:
        """
        Dedup, assign the next id, store, trim to C{op.keep}; fire once
        durable.  A repeat of a retained idempotency key fires with the
        first op's id and C{duplicate} set, and stores nothing.
        """

    def read_after(
        self, scope: Scope, after: int, limit: int, now_ms: int
    ) -> list[StoredOp]:
        """Return up to C{limit} unexpired ops above C{after}, in order."""

    def scope_info(self, scope: Scope) -> ScopeInfo:
        """Return the scope's epoch, last id, trimmed-through id, count."""

    def sweep(self, now_ms: int) -> Deferred[SweepResult]:
        """Remove one slice of what has expired."""


class SyncPointStore(Protocol):
    """Where each device stands in each scope."""

    def sync_point(
        self, scope: Scope, device_id: str | None
    ) -> SyncPoint | None:
        """
        Return a device's point in a scope, or the scope's shared point
        (single-device configs) when C{device_id} is L{None}.
        """

    def advance_sync_points(
        self, points: Iterable[tuple[Scope, str | None, SyncPoint]]
    ) -> Deferred[list[SyncPoint]]:
        """Move points forward (never back within an epoch); fire durable."""


class Notifier(Protocol):
    """Announces appended ops to whoever delivers them."""

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """
        Call C{listener(scope, op_id)} after each op is durably stored;
        return a function that stops the calls.
        """
