"""
What became of a user's or a device's data: online state, the last 30
days' pushes and arrivals, and the recent ops with each one's state.

The state of an op for a device is derived, not logged op by op: the
device's position in the op's scope says which ops it acked; the engine
knows which are in flight right now; the delivery records hold the
exceptions (pushes of ops a device left without acking, drops with their
reason).  An op retained in a scope the device reads is:

  - C{acked} at or below the device's position (for single-device
    configs, also when another device of the user acked it);
  - C{pushed} while in flight, or when pushed before and not yet acked;
  - C{dropped} when a record says so (with the reason);
  - C{stored} otherwise (waiting for the device).

Ops a device was pushed but that are gone from the store unacked (their
validity ended) show as C{expired}.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import msgpack

from msync.delivery.engine import Engine, Session, wire_scope
from msync.delivery.ops import Filters, audience, matches
from msync.model import (
    DeliveryState,
    Device,
    Range,
    Scope,
    ScopeKind,
    SyncConfig,
    Target,
)
from msync.store.records import DAY_MS

#: How many days of counters a report shows.
DAYS = 30


@dataclass(frozen=True, slots=True)
class PushEntry:
    """One op as one device sees it."""

    biz_type: str
    scope: str
    op_id: int
    third_msg_id: str
    created: int
    state: str
    attempts: int
    reason: str
    device_id: str


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """A device: identity, state, counters and recent pushes."""

    device_id: str
    user_id: str
    online: bool
    os_type: str
    app_version: str
    validated: bool
    first_seen: int
    last_seen: int
    days: list[tuple[int, int, int]]
    pushes: list[PushEntry]


@dataclass(frozen=True, slots=True)
class UserReport:
    """A user: devices, counters and the recent pushes to all of them."""

    user_id: str
    online: bool
    devices: list[DeviceReport]
    days: list[tuple[int, int, int]]
    pushes: list[PushEntry]


def device_report(
    engine: Engine,
    instance_id: str,
    device_id: str,
    now_ms: int,
    limit: int = 100,
) -> DeviceReport | None:
    """Report on one device, or L{None} if it was never seen."""
    device = engine.store.device(instance_id, device_id)
    if device is None:
        return None
    return _report(engine, device, now_ms, limit, detail=True)


def user_report(
    engine: Engine,
    instance_id: str,
    user_id: str,
    now_ms: int,
    limit: int = 100,
) -> UserReport:
    """Report on one user and every device bound to it."""
    devices = engine.store.devices_of_user(instance_id, user_id)
    reports = [_report(engine, d, now_ms, limit, detail=True) for d in devices]
    pushes = sorted(
        (p for r in reports for p in r.pushes),
        key=lambda p: (p.op_id, p.device_id),
        reverse=True,
    )[:limit]
    today = now_ms // DAY_MS
    return UserReport(
        user_id=user_id,
        online=any(r.online for r in reports),
        devices=[replace(r, days=[], pushes=[]) for r in reports],
        days=_with_live(
            engine.store.daily_counts(
                instance_id, "u", user_id, today - DAYS + 1, today
            ),
            [engine.session(instance_id, d.device_id) for d in devices],
            today,
        ),
        pushes=pushes,
    )


def _report(
    engine: Engine, device: Device, now_ms: int, limit: int, detail: bool
) -> DeviceReport:
    session = engine.session(device.instance_id, device.device_id)
    today = now_ms // DAY_MS
    return DeviceReport(
        device_id=device.device_id,
        user_id=session.user_id if session else device.user_id,
        online=session is not None,
        os_type=device.os_type,
        app_version=device.app_version,
        validated=device.session_validated,
        first_seen=device.first_seen_ms,
        last_seen=device.last_seen_ms,
        days=_with_live(
            engine.store.daily_counts(
                device.instance_id,
                "d",
                device.device_id,
                today - DAYS + 1,
                today,
            ),
            [session],
            today,
        ),
        pushes=_pushes(engine, device, now_ms, limit) if detail else [],
    )


def _with_live(
    days: list[tuple[int, int, int]],
    sessions: list[Session | None],
    today: int,
) -> list[tuple[int, int, int]]:
    """Add the counts online devices have not written yet to today's."""
    pushes = sum(s.pushes for s in sessions if s is not None)
    arrivals = sum(s.arrivals for s in sessions if s is not None)
    if not pushes and not arrivals:
        return days
    out = [d for d in days if d[0] != today]
    now = next((d for d in days if d[0] == today), (today, 0, 0))
    out.append((today, now[1] + pushes, now[2] + arrivals))
    return sorted(out)


def _scopes(engine: Engine, device: Device) -> list[tuple[SyncConfig, Scope]]:
    """The scopes a device reads (or read when last online)."""
    out = []
    for config in engine.configs(device.instance_id).values():
        if config.range is Range.GLOBAL:
            if config.target is Target.DEVICE or device.user_id:
                out.append(
                    (
                        config,
                        Scope(
                            device.instance_id,
                            config.biz_type,
                            ScopeKind.GLOBAL,
                        ),
                    )
                )
        elif config.target is Target.DEVICE:
            out.append(
                (
                    config,
                    Scope(
                        device.instance_id,
                        config.biz_type,
                        ScopeKind.DEVICE,
                        device.device_id,
                    ),
                )
            )
        elif device.user_id:
            out.append(
                (
                    config,
                    Scope(
                        device.instance_id,
                        config.biz_type,
                        ScopeKind.USER,
                        device.user_id,
                    ),
                )
            )
    return out


def _pushes(
    engine: Engine, device: Device, now_ms: int, limit: int
) -> list[PushEntry]:
    store = engine.store
    epoch = store.epoch
    session = engine.session(device.instance_id, device.device_id)
    who = audience(device.device_id, device.os_type, device.app_version)
    entries: list[PushEntry] = []
    seen: set[tuple[bytes, int]] = set()

    for config, scope in _scopes(engine, device):
        name = wire_scope(scope)
        stored = store.sync_point(scope, device.device_id)
        point = stored.op_id if stored and stored.epoch == epoch else 0
        inflight: dict[int, tuple[int, int, float]] = {}
        if session is not None:
            stream = session.streams.get((config.biz_type, name))
            if stream is not None:
                point = max(point, stream.point)
                inflight = stream.inflight
        done_by_others: set[int] = set()
        shared_point = 0
        if not config.multi_device and scope.kind is ScopeKind.USER:
            shared = store.sync_point(scope, None)
            if shared and shared.epoch == epoch:
                shared_point, done_by_others = shared.op_id, set(shared.above)

        for op in store.read_newest(scope, limit, now_ms):
            if not matches(Filters.decode(op.meta), who):
                continue
            record = store.delivery_record(scope, op.op_id, device.device_id)
            attempts = record.attempts if record else 0
            reason = record.reason if record else ""
            if record and record.state is DeliveryState.DROPPED:
                state = DeliveryState.DROPPED.value
            elif op.op_id <= point:
                # Acked by this device: it was pushed at least once, even
                # if no record counted it (the first push is not logged).
                state = DeliveryState.ACKED.value
                attempts = max(attempts, 1)
            elif op.op_id in inflight:
                state = DeliveryState.PUSHED.value
                attempts = inflight[op.op_id][0]
            elif op.op_id <= shared_point or op.op_id in done_by_others:
                state = DeliveryState.ACKED.value
                reason = "acked by another device of the user"
            elif attempts:
                state = DeliveryState.PUSHED.value
            else:
                state = DeliveryState.STORED.value
            seen.add((scope.key, op.op_id))
            entries.append(
                PushEntry(
                    biz_type=config.biz_type,
                    scope=name,
                    op_id=op.op_id,
                    third_msg_id=_third_msg_id(op.body),
                    created=op.created_ms,
                    state=state,
                    attempts=attempts,
                    reason=reason,
                    device_id=device.device_id,
                )
            )

    # Pushed once, never acked, and gone from the store: expired.
    for record in store.device_deliveries(
        device.instance_id, device.device_id, limit
    ):
        if (record.scope.key, record.op_id) in seen:
            continue
        if record.state in (DeliveryState.ACKED, DeliveryState.DROPPED):
            state, reason = record.state.value, record.reason
        else:
            state, reason = DeliveryState.EXPIRED.value, "validity ended"
        entries.append(
            PushEntry(
                biz_type=record.scope.biz_type,
                scope=wire_scope(record.scope),
                op_id=record.op_id,
                third_msg_id="",
                created=0,
                state=state,
                attempts=record.attempts,
                reason=reason,
                device_id=device.device_id,
            )
        )
    entries.sort(key=lambda e: e.op_id, reverse=True)
    return entries[:limit]


def _third_msg_id(body: bytes) -> str:
    try:
        _, third_msg_id, _ = msgpack.unpackb(body)
        return str(third_msg_id)
    except Exception:
        return ""
