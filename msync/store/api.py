"""
L{Store}: every intent-level operation msync performs on its data, over
one engine (LMDB on disk, or memory for tests).

Reads return values at once (they are short or paged); writes return
Deferreds that fire once the change is durable.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from functools import partial

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from msync.model import (
    AccessKey,
    AppendResult,
    DeliveryEvent,
    DeliveryRecord,
    Device,
    Instance,
    NewOp,
    Scope,
    ScopeInfo,
    StoredOp,
    SyncConfig,
    SyncPoint,
)
from msync.store import catalog, deliveries, oplog
from msync.store.interfaces import Listener
from msync.store.oplog import SweepResult
from msync.store.tables import Engine, T, Tables

_log = Logger()

#: Delivery records and daily counters are kept this many days.
RETENTION_DAYS = 30

#: The most a single sweep transaction removes of each kind.
SWEEP_BUDGET = 5000

_UNSET = object()

#: The largest page a read returns.
MAX_PAGE = 10_000


class Store:
    """
    The store: an L{msync.store.interfaces.OplogStore},
    L{msync.store.interfaces.SyncPointStore} and
    L{msync.store.interfaces.Notifier}, plus the catalog of instances,
    keys, configs, devices and delivery records.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._listeners: list[Listener] = []
        # Instances, access keys and settings are read on every gateway
        # call: they are remembered until the catalog changes.
        self._memo: dict[tuple[str, str], object] = {}
        self._catalog_listeners: list[Callable[[], object]] = []
        self.epoch = 0
        """The identity of this store's logs; set by L{open}."""

    def _remembered(self, kind: str, name: str, read: Callable[[], T]) -> T:
        key = (kind, name)
        try:
            return self._memo[key]  # type: ignore[return-value]
        except KeyError:
            value = self._memo[key] = read()
            return value

    def forget(self) -> None:
        """
        Drop what is remembered of the catalog.

        A store that another process writes (a gateway worker's
        read-only view) must be told whenever that process changes an
        instance, an access key or a setting; this store's own writes
        call it themselves.
        """
        self._memo.clear()

    def on_catalog_change(self, listener: Callable[[], object]) -> None:
        """Call C{listener} once each change to the catalog is durable."""
        self._catalog_listeners.append(listener)

    def _catalog_write(self, fn: Callable[[Tables], T]) -> Deferred[T]:
        # Forget now, and again once the write is durable: a read in
        # between may have remembered the old value.
        self.forget()
        return self._engine.write(fn).addBoth(self._changed)

    def _changed(self, result: T) -> T:
        self.forget()
        for listener in list(self._catalog_listeners):
            try:
                listener()
            except Exception:
                _log.failure("catalog listener failed")
        return result

    def open(self) -> None:
        """Open the engine and check or write the schema."""
        fresh = secrets.randbits(62) + 1
        self.epoch = self._engine.open(
            partial(oplog.initialize, new_epoch=fresh)
        )

    def close(self) -> Deferred[None]:
        """Finish pending writes and close."""
        return self._engine.close()

    # --- oplogs ------------------------------------------------------

    def append(self, op: NewOp) -> Deferred[AppendResult]:
        d = self._engine.write(partial(oplog.append, op=op))
        d.addCallback(self._announce, op.scope)
        return d

    def _announce(self, result: AppendResult, scope: Scope) -> AppendResult:
        if not result.duplicate:
            for listener in list(self._listeners):
                try:
                    listener(scope, result.op_id)
                except Exception:
                    _log.failure("op listener failed for {scope}", scope=scope)
        return result

    def read_after(
        self, scope: Scope, after: int, limit: int, now_ms: int
    ) -> list[StoredOp]:
        return self._engine.read(
            partial(
                oplog.read_after,
                scope=scope,
                after=after,
                limit=min(limit, MAX_PAGE),
                now_ms=now_ms,
            )
        )

    def read_newest(
        self, scope: Scope, limit: int, now_ms: int
    ) -> list[StoredOp]:
        """Return the newest unexpired ops of a scope, newest first."""
        return self._engine.read(
            partial(
                oplog.read_newest,
                scope=scope,
                limit=min(limit, MAX_PAGE),
                now_ms=now_ms,
            )
        )

    def used_bytes(self) -> int:
        """Bytes the store's files use (0 for the memory engine)."""
        info = getattr(self._engine, "info", None)
        return int(info()["used_bytes"]) if info is not None else 0

    def total_ops(self) -> int:
        """How many ops are stored, over every scope."""
        return self._engine.read(oplog.total_ops)

    def reserve_ids(self, n: int) -> Deferred[tuple[int, int]]:
        """Reserve C{n} ids for ops that are never stored."""
        return self._engine.write(partial(oplog.reserve_ids, n=n))

    def get_op(self, scope: Scope, op_id: int) -> StoredOp | None:
        """Return one op, or L{None} if it is not (or no longer) stored."""
        return self._engine.read(
            partial(oplog.get_op, scope=scope, op_id=op_id)
        )

    def scope_info(self, scope: Scope) -> ScopeInfo:
        return self._engine.read(
            partial(oplog.scope_info, scope=scope, epoch=self.epoch)
        )

    def sweep(self, now_ms: int) -> Deferred[SweepResult]:
        return self._engine.write(
            partial(
                oplog.sweep,
                now_ms=now_ms,
                retention_days=RETENTION_DAYS,
                budget=SWEEP_BUDGET,
            )
        )

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return partial(self._listeners.remove, listener)

    # --- sync points --------------------------------------------------

    def sync_point(
        self, scope: Scope, device_id: str | None
    ) -> SyncPoint | None:
        return self._engine.read(
            partial(oplog.get_point, scope=scope, device_id=device_id)
        )

    def advance_sync_points(
        self, points: Iterable[tuple[Scope, str | None, SyncPoint]]
    ) -> Deferred[list[SyncPoint]]:
        return self._engine.write(
            partial(oplog.advance_points, points=list(points))
        )

    def save_progress(
        self,
        points: Iterable[tuple[Scope, str | None, SyncPoint]],
        counts: Iterable[Counts],
    ) -> Deferred[None]:
        """
        Move many devices' points forward and add to their daily
        counters C{(instance_id, device_id, user_id, at_ms, pushes,
        arrivals)}, in one write.
        """
        return self._engine.write(
            partial(_save_progress, points=list(points), counts=list(counts))
        )

    # --- catalog ------------------------------------------------------

    def put_instance(self, instance: Instance) -> Deferred[None]:
        """Create or replace an instance."""
        return self._catalog_write(
            partial(catalog.put_instance, instance=instance)
        )

    def instance(self, instance_id: str) -> Instance | None:
        """Return an instance, or L{None}."""
        return self._remembered(
            "instance",
            instance_id,
            partial(
                self._engine.read,
                partial(catalog.get_instance, instance_id=instance_id),
            ),
        )

    def instances(self) -> list[Instance]:
        """Return every instance."""
        return self._engine.read(catalog.list_instances)

    def put_access_key(self, key: AccessKey) -> Deferred[None]:
        """Create or replace an access key."""
        return self._catalog_write(partial(catalog.put_access_key, key=key))

    def access_key(self, access_key: str) -> AccessKey | None:
        """Return an access key, or L{None}."""
        return self._remembered(
            "access_key",
            access_key,
            partial(
                self._engine.read,
                partial(catalog.get_access_key, access_key=access_key),
            ),
        )

    def access_keys(self) -> list[AccessKey]:
        """Return every access key."""
        return self._engine.read(catalog.list_access_keys)

    def put_admin(self, name: str, password_hash: str) -> Deferred[None]:
        """Create or replace an admin login."""
        return self._engine.write(
            partial(catalog.put_admin, name=name, password_hash=password_hash)
        )

    def admin_hash(self, name: str) -> str | None:
        """Return an admin's password hash, or L{None}."""
        return self._engine.read(partial(catalog.get_admin, name=name))

    def admins(self) -> list[str]:
        """Return every admin login name."""
        return self._engine.read(catalog.list_admins)

    def put_token(
        self, token_id: str, token_hash: bytes, admin: str, created_ms: int
    ) -> Deferred[None]:
        """Store an API token's hash."""
        return self._engine.write(
            partial(
                catalog.put_token,
                token_id=token_id,
                token_hash=token_hash,
                admin=admin,
                created_ms=created_ms,
            )
        )

    def token(self, token_id: str) -> tuple[bytes, str] | None:
        """Return an API token's hash and admin, or L{None}."""
        return self._engine.read(partial(catalog.get_token, token_id=token_id))

    def delete_token(self, token_id: str) -> Deferred[bool]:
        """Revoke an API token; fire with whether it existed."""
        return self._engine.write(
            partial(catalog.delete_token, token_id=token_id)
        )

    def put_setting(self, name: str, value: object) -> Deferred[None]:
        """Set a server-wide setting."""
        return self._catalog_write(
            partial(catalog.put_setting, name=name, value=value)
        )

    def setting(self, name: str, default: object = None) -> object:
        """Return a server-wide setting, or C{default}."""
        value = self._remembered(
            "setting",
            name,
            partial(
                self._engine.read,
                partial(catalog.get_setting, name=name, default=_UNSET),
            ),
        )
        return default if value is _UNSET else value

    def probe(self) -> None:
        """
        Read the store, past anything remembered (for health checks).

        @raise Exception: whatever the engine raises when it cannot read.
        """
        self._engine.read(partial(catalog.get_setting, name="probe"))

    def add_config(self, config: SyncConfig) -> Deferred[SyncConfig]:
        """Create a sync config (see L{catalog.add_config})."""
        return self._engine.write(partial(catalog.add_config, config=config))

    def update_config(self, config: SyncConfig) -> Deferred[SyncConfig]:
        """Replace a sync config (see L{catalog.update_config})."""
        return self._engine.write(
            partial(catalog.update_config, config=config)
        )

    def config(self, instance_id: str, biz_type: str) -> SyncConfig | None:
        """Return a sync config, or L{None}."""
        return self._engine.read(
            partial(
                catalog.get_config, instance_id=instance_id, biz_type=biz_type
            )
        )

    def configs(self, instance_id: str) -> list[SyncConfig]:
        """Return an instance's sync configs."""
        return self._engine.read(
            partial(catalog.list_configs, instance_id=instance_id)
        )

    def save_device(self, device: Device) -> Deferred[Device]:
        """Record a device (see L{catalog.save_device})."""
        return self._engine.write(partial(catalog.save_device, device=device))

    def device(self, instance_id: str, device_id: str) -> Device | None:
        """Return what is known of a device, or L{None}."""
        return self._engine.read(
            partial(
                catalog.get_device,
                instance_id=instance_id,
                device_id=device_id,
            )
        )

    def devices_of_user(self, instance_id: str, user_id: str) -> list[Device]:
        """Return a user's devices, most recently seen first."""
        return self._engine.read(
            partial(
                catalog.devices_of_user,
                instance_id=instance_id,
                user_id=user_id,
            )
        )

    def record_deliveries(
        self, events: Iterable[DeliveryEvent]
    ) -> Deferred[None]:
        """Record delivery events (state and attempts per op and device)."""
        return self._engine.write(
            partial(deliveries.record_deliveries, events=list(events))
        )

    def delivery_record(
        self, scope: Scope, op_id: int, device_id: str
    ) -> DeliveryRecord | None:
        """Return what is recorded of one op for one device."""
        return self._engine.read(
            partial(
                deliveries.delivery_record,
                scope=scope,
                op_id=op_id,
                device_id=device_id,
            )
        )

    def add_counts(
        self,
        instance_id: str,
        device_id: str,
        user_id: str,
        at_ms: int,
        pushes: int,
        arrivals: int,
    ) -> Deferred[None]:
        """Add to the day's push and arrival counters."""
        return self._engine.write(
            partial(
                deliveries.add_counts,
                instance_id=instance_id,
                device_id=device_id,
                user_id=user_id,
                at_ms=at_ms,
                pushes=pushes,
                arrivals=arrivals,
            )
        )

    def device_deliveries(
        self, instance_id: str, device_id: str, limit: int = 100
    ) -> list[DeliveryRecord]:
        """Return a device's delivery records, newest op first."""
        return self._engine.read(
            partial(
                deliveries.device_deliveries,
                instance_id=instance_id,
                device_id=device_id,
                limit=min(limit, MAX_PAGE),
            )
        )

    def daily_counts(
        self,
        instance_id: str,
        kind: str,
        name: str,
        first_day: int,
        last_day: int,
    ) -> list[tuple[int, int, int]]:
        """Return per-day C{(day, pushes, arrivals)} of a device or user."""
        return self._engine.read(
            partial(
                deliveries.daily_counts,
                instance_id=instance_id,
                kind=kind,
                name=name,
                first_day=first_day,
                last_day=last_day,
            )
        )


Counts = tuple[str, str, str, int, int, int]


def _save_progress(
    tx: Tables,
    points: list[tuple[Scope, str | None, SyncPoint]],
    counts: list[Counts],
) -> None:
    oplog.advance_points(tx, points)
    for instance_id, device_id, user_id, at_ms, pushes, arrivals in counts:
        deliveries.add_counts(
            tx, instance_id, device_id, user_id, at_ms, pushes, arrivals
        )
