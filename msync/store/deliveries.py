"""
Delivery records (what became of an op for a device) and the per-day
push and arrival counters of devices and users.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from msync.model import (
    DeliveryEvent,
    DeliveryRecord,
    DeliveryState,
    Scope,
    ValidationError,
)
from msync.store.records import (
    COUNT_REC,
    DAY_MS,
    U32,
    U64,
    join,
    pack,
    u64,
    unpack,
)
from msync.store.tables import Table, Tables, prefix_end

# --- delivery records and counters -----------------------------------


def _delivery_key(
    instance_id: str, device_id: str, op_id: int, scope: Scope
) -> bytes:
    return join(instance_id, device_id) + b"\x00" + u64(op_id) + scope.key


def _counter_key(day: int, instance_id: str, kind: str, name: str) -> bytes:
    return U32.pack(day) + join(instance_id, kind, name)


def _bump(tx: Tables, key: bytes, pushes: int, arrivals: int) -> None:
    raw = tx.get(Table.COUNTERS, key)
    p, a = COUNT_REC.unpack(raw) if raw else (0, 0)
    tx.put(Table.COUNTERS, key, COUNT_REC.pack(p + pushes, a + arrivals))


def record_deliveries(tx: Tables, events: Iterable[DeliveryEvent]) -> None:
    """
    Record what happened to ops for devices: the latest state per op and
    device, the push attempt count, and the per-day push and arrival
    counters of the device and its user.
    """
    for e in events:
        instance_id = e.scope.instance_id
        key = _delivery_key(instance_id, e.device_id, e.op_id, e.scope)
        raw = tx.get(Table.DELIVERIES, key)
        day = e.at_ms // DAY_MS
        if raw is None:
            old: dict[str, Any] = {
                "state": DeliveryState.STORED.value,
                "attempts": 0,
                "day": day,
                "user": e.user_id,
                "reason": "",
            }
            tx.put(Table.DELIVERY_DAYS, U32.pack(day) + key, b"")
        else:
            old = unpack(Table.DELIVERIES, key, raw)
        pushes = 1 if e.state is DeliveryState.PUSHED else 0
        arrivals = (
            1
            if e.state is DeliveryState.ACKED
            and old["state"] != DeliveryState.ACKED.value
            else 0
        )
        if old["state"] == DeliveryState.ACKED.value and not arrivals:
            # Nothing undoes an ack; later pushes of it are only counted.
            state = DeliveryState.ACKED.value
        else:
            state = e.state.value
        user = e.user_id or old["user"]
        tx.put(
            Table.DELIVERIES,
            key,
            pack(
                {
                    "state": state,
                    "attempts": old["attempts"] + pushes,
                    "day": old["day"],
                    "user": user,
                    "reason": e.reason or old["reason"],
                    "updated": e.at_ms,
                }
            ),
        )
        if pushes or arrivals:
            _bump(
                tx,
                _counter_key(day, instance_id, "d", e.device_id),
                pushes,
                arrivals,
            )
            if user:
                _bump(
                    tx,
                    _counter_key(day, instance_id, "u", user),
                    pushes,
                    arrivals,
                )


def device_deliveries(
    tx: Tables, instance_id: str, device_id: str, limit: int
) -> list[DeliveryRecord]:
    """Return a device's delivery records, newest op first."""
    prefix = join(instance_id, device_id) + b"\x00"
    out = []
    for k, v in tx.scan(
        Table.DELIVERIES, prefix, prefix_end(prefix), reverse=True
    ):
        r = unpack(Table.DELIVERIES, k, v)
        rest = k[len(prefix) :]
        out.append(
            DeliveryRecord(
                scope=Scope.from_key(rest[8:]),
                op_id=U64.unpack(rest[:8])[0],
                device_id=device_id,
                user_id=r["user"],
                state=DeliveryState(r["state"]),
                attempts=r["attempts"],
                reason=r["reason"],
                updated_ms=r.get("updated", 0),
            )
        )
        if len(out) >= limit:
            break
    return out


def daily_counts(
    tx: Tables,
    instance_id: str,
    kind: str,
    name: str,
    first_day: int,
    last_day: int,
) -> list[tuple[int, int, int]]:
    """
    Return C{(day, pushes, arrivals)} for each day in the range that has
    any, for a device (C{kind} C{"d"}) or a user (C{"u"}).
    """
    if kind not in ("d", "u"):
        raise ValidationError("kind", "must be 'd' (device) or 'u' (user)")
    out = []
    for day in range(first_day, last_day + 1):
        raw = tx.get(
            Table.COUNTERS, _counter_key(day, instance_id, kind, name)
        )
        if raw is not None:
            out.append((day, *COUNT_REC.unpack(raw)))
    return out
