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
    device, with its push attempt count.  An ack is final: later events
    of the op for that device change only the attempt count.
    """
    for e in events:
        key = _delivery_key(e.scope.instance_id, e.device_id, e.op_id, e.scope)
        raw = tx.get(Table.DELIVERIES, key)
        if raw is None:
            day = e.at_ms // DAY_MS
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
        attempts = old["attempts"]
        if e.state is DeliveryState.PUSHED:
            attempts = (
                max(attempts, e.attempts) if e.attempts else attempts + 1
            )
        acked = old["state"] == DeliveryState.ACKED.value
        tx.put(
            Table.DELIVERIES,
            key,
            pack(
                {
                    "state": old["state"] if acked else e.state.value,
                    "attempts": attempts,
                    "day": old["day"],
                    "user": e.user_id or old["user"],
                    "reason": old["reason"] if acked else e.reason,
                    "updated": e.at_ms,
                }
            ),
        )


def delivery_record(
    tx: Tables, scope: Scope, op_id: int, device_id: str
) -> DeliveryRecord | None:
    """Return what is recorded of one op for one device, or L{None}."""
    key = _delivery_key(scope.instance_id, device_id, op_id, scope)
    raw = tx.get(Table.DELIVERIES, key)
    if raw is None:
        return None
    return _record(key, raw, scope, op_id, device_id)


def _record(
    key: bytes, raw: bytes, scope: Scope, op_id: int, device_id: str
) -> DeliveryRecord:
    r = unpack(Table.DELIVERIES, key, raw)
    return DeliveryRecord(
        scope=scope,
        op_id=op_id,
        device_id=device_id,
        user_id=r["user"],
        state=DeliveryState(r["state"]),
        attempts=r["attempts"],
        reason=r["reason"],
        updated_ms=r.get("updated", 0),
    )


def add_counts(
    tx: Tables,
    instance_id: str,
    device_id: str,
    user_id: str,
    at_ms: int,
    pushes: int,
    arrivals: int,
) -> None:
    """Add pushes and arrivals to the day's counters of a device and of
    its user (when it has one)."""
    if pushes < 0 or arrivals < 0:
        raise ValidationError("counts", "must not be negative")
    day = at_ms // DAY_MS
    _bump(tx, _counter_key(day, instance_id, "d", device_id), pushes, arrivals)
    if user_id:
        _bump(
            tx, _counter_key(day, instance_id, "u", user_id), pushes, arrivals
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
        rest = k[len(prefix) :]
        scope = Scope.from_key(rest[8:])
        out.append(_record(k, v, scope, U64.unpack(rest[:8])[0], device_id))
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
