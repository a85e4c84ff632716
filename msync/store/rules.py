"""
The rules of the store, written once against L{Tables}.

Every function here is one intent (append an op, advance a sync point,
sweep what expired) run inside one transaction that the engine provides.
Nothing here knows threads, Deferreds or LMDB: the engines decide where a
function runs, and the rules decide what it does to the tables.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from msync.model import (
    AccessKey,
    AppendResult,
    ConfigState,
    DeliveryEvent,
    DeliveryRecord,
    DeliveryState,
    Device,
    Instance,
    NewOp,
    Range,
    ResendMode,
    Scope,
    ScopeInfo,
    StoredOp,
    SyncConfig,
    SyncPoint,
    Target,
    ValidationError,
    check_instance_id,
    check_link,
)
from msync.store.errors import (
    AlreadyExists,
    CorruptRecord,
    DeviceClaimed,
    NotFound,
    SchemaMismatch,
)
from msync.store.tables import Table, Tables, prefix_end

#: Bumped whenever a table's layout changes incompatibly.
SCHEMA_VERSION = 1

DAY_MS = 86_400_000

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_SCOPE = struct.Struct(">QQQ")
_POINT = struct.Struct(">QQ")
_DEDUP = struct.Struct(">QQ")
_COUNT = struct.Struct(">QQ")
# created ms, start ms, expire ms, dedup length, meta length
_OP_HEAD = struct.Struct(">QQQHI")
_MAX_ID = 2**63 - 1


def _u64(n: int) -> bytes:
    return _U64.pack(n)


def _pack(record: dict[str, Any]) -> bytes:
    return msgpack.packb(record, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(table: Table, key: bytes, raw: bytes) -> dict[str, Any]:
    try:
        record = msgpack.unpackb(raw, raw=False)
    except Exception as e:
        raise CorruptRecord(table.value, key, str(e)) from e
    if not isinstance(record, dict):
        raise CorruptRecord(table.value, key, "not a map")
    return record


def _join(*parts: str) -> bytes:
    return "\x00".join(parts).encode("utf-8")


# --- meta -------------------------------------------------------------


def initialize(tx: Tables, new_epoch: int) -> int:
    """
    Write the schema version and the store's epoch on first open, or
    check them on later opens.

    @return: the store's epoch.
    @raise SchemaMismatch: if the data was written by another schema.
    """
    schema = tx.get(Table.META, b"schema")
    if schema is None:
        if any(True for _ in tx.scan(Table.OPS, b"")):
            raise SchemaMismatch("data directory holds ops but no schema")
        tx.put(Table.META, b"schema", b"%d" % SCHEMA_VERSION)
        tx.put(Table.META, b"epoch", _u64(new_epoch))
        tx.put(Table.META, b"seq", _u64(0))
        return new_epoch
    if schema != b"%d" % SCHEMA_VERSION:
        raise SchemaMismatch(
            f"data directory has schema {schema!r}; this msync reads "
            f"schema {SCHEMA_VERSION}"
        )
    raw = tx.get(Table.META, b"epoch")
    if raw is None or len(raw) != 8:
        raise CorruptRecord("meta", b"epoch", "missing or malformed")
    return int(_U64.unpack(raw)[0])


# --- instances, keys, admins, settings -------------------------------


def put_instance(tx: Tables, instance: Instance) -> None:
    """Create or replace an instance."""
    check_instance_id(instance.instance_id)
    tx.put(
        Table.INSTANCES,
        instance.instance_id.encode(),
        _pack(
            {
                "tz": instance.time_zone,
                "validation_url": instance.validation_url,
                "created": instance.created_ms,
            }
        ),
    )


def get_instance(tx: Tables, instance_id: str) -> Instance | None:
    """Return the named instance, or L{None}."""
    key = instance_id.encode()
    raw = tx.get(Table.INSTANCES, key)
    if raw is None:
        return None
    r = _unpack(Table.INSTANCES, key, raw)
    return Instance(instance_id, r["tz"], r["validation_url"], r["created"])


def list_instances(tx: Tables) -> list[Instance]:
    """Return every instance, by name."""
    names = [k.decode() for k, _ in tx.scan(Table.INSTANCES, b"")]
    return [i for i in map(lambda n: get_instance(tx, n), names) if i]


def put_access_key(tx: Tables, key: AccessKey) -> None:
    """Create or replace an access key."""
    check_link("access_key", key.access_key)
    for instance_id in key.instances:
        check_instance_id(instance_id)
    tx.put(
        Table.KEYS,
        key.access_key.encode(),
        _pack(
            {
                "secret": key.secret,
                "instances": list(key.instances),
                "created": key.created_ms,
                "revoked": key.revoked,
            }
        ),
    )


def get_access_key(tx: Tables, access_key: str) -> AccessKey | None:
    """Return the named access key, or L{None}."""
    key = access_key.encode()
    raw = tx.get(Table.KEYS, key)
    if raw is None:
        return None
    r = _unpack(Table.KEYS, key, raw)
    return AccessKey(
        access_key,
        r["secret"],
        tuple(r["instances"]),
        r["created"],
        r["revoked"],
    )


def list_access_keys(tx: Tables) -> list[AccessKey]:
    """Return every access key, by name."""
    names = [k.decode() for k, _ in tx.scan(Table.KEYS, b"")]
    return [k for k in (get_access_key(tx, n) for n in names) if k]


def put_admin(tx: Tables, name: str, password_hash: str) -> None:
    """Create or replace an admin login."""
    check_link("admin_user", name)
    tx.put(Table.ADMINS, name.encode(), _pack({"hash": password_hash}))


def get_admin(tx: Tables, name: str) -> str | None:
    """Return the password hash of an admin login, or L{None}."""
    raw = tx.get(Table.ADMINS, name.encode())
    if raw is None:
        return None
    return str(_unpack(Table.ADMINS, name.encode(), raw)["hash"])


def put_setting(tx: Tables, name: str, value: object) -> None:
    """Set a server-wide setting to a msgpack-able value."""
    tx.put(Table.SETTINGS, name.encode(), _pack({"v": value}))


def get_setting(tx: Tables, name: str, default: object = None) -> object:
    """Return a server-wide setting, or C{default}."""
    raw = tx.get(Table.SETTINGS, name.encode())
    if raw is None:
        return default
    return _unpack(Table.SETTINGS, name.encode(), raw)["v"]


# --- sync configs -----------------------------------------------------


def _config_key(instance_id: str, biz_type: str) -> bytes:
    return _join(instance_id, biz_type)


def _config_record(c: SyncConfig) -> bytes:
    return _pack(
        {
            "target": c.target.value,
            "range": c.range.value,
            "description": c.description,
            "multi_device": c.multi_device,
            "persistent": c.persistent,
            "resend_mode": c.resend_mode.value,
            "threshold": c.threshold,
            "consistency": c.consistency,
            "state": c.state.value,
            "created": c.created_ms,
            "updated": c.updated_ms,
        }
    )


def _read_config(key: bytes, raw: bytes) -> SyncConfig:
    r = _unpack(Table.CONFIGS, key, raw)
    instance_id, biz_type = key.decode().split("\x00")
    try:
        return SyncConfig(
            instance_id=instance_id,
            biz_type=biz_type,
            target=Target(r["target"]),
            range=Range(r["range"]),
            description=r["description"],
            multi_device=r["multi_device"],
            persistent=r["persistent"],
            resend_mode=ResendMode(r["resend_mode"]),
            threshold=r["threshold"],
            consistency=r["consistency"],
            state=ConfigState(r["state"]),
            created_ms=r["created"],
            updated_ms=r["updated"],
        )
    except (KeyError, ValueError) as e:
        raise CorruptRecord("configs", key, repr(e)) from e


def add_config(tx: Tables, config: SyncConfig) -> SyncConfig:
    """
    Create a sync config.

    @raise AlreadyExists: if the instance has that biz type already.
    @raise NotFound: if the instance does not exist.
    @raise ValidationError: if the config breaks a rule.
    """
    config.validated()
    if get_instance(tx, config.instance_id) is None:
        raise NotFound(f"no instance {config.instance_id!r}")
    key = _config_key(config.instance_id, config.biz_type)
    if tx.get(Table.CONFIGS, key) is not None:
        raise AlreadyExists(
            f"{config.instance_id} already has biz type {config.biz_type}"
        )
    tx.put(Table.CONFIGS, key, _config_record(config))
    return config


def update_config(tx: Tables, config: SyncConfig) -> SyncConfig:
    """
    Replace a sync config, keeping its biz type and target.

    @raise NotFound: if there is no such config.
    @raise ValidationError: if the target would change, or a rule breaks.
    """
    current = get_config(tx, config.instance_id, config.biz_type)
    if current is None:
        raise NotFound(
            f"{config.instance_id} has no biz type {config.biz_type}"
        )
    if config.target is not current.target:
        raise ValidationError("target", "cannot be changed")
    config.validated()
    key = _config_key(config.instance_id, config.biz_type)
    tx.put(Table.CONFIGS, key, _config_record(config))
    return config


def get_config(
    tx: Tables, instance_id: str, biz_type: str
) -> SyncConfig | None:
    """Return one sync config, or L{None}."""
    key = _config_key(instance_id, biz_type)
    raw = tx.get(Table.CONFIGS, key)
    return None if raw is None else _read_config(key, raw)


def list_configs(tx: Tables, instance_id: str) -> list[SyncConfig]:
    """Return every sync config of an instance, by biz type."""
    prefix = instance_id.encode() + b"\x00"
    return [
        _read_config(k, v)
        for k, v in tx.scan(Table.CONFIGS, prefix, prefix_end(prefix))
    ]


# --- oplogs -----------------------------------------------------------


def _scope_info(tx: Tables, key: bytes, epoch: int) -> ScopeInfo | None:
    raw = tx.get(Table.SCOPES, key)
    if raw is None:
        return None
    if len(raw) != _SCOPE.size:
        raise CorruptRecord("scopes", key, "wrong length")
    last, trimmed, count = _SCOPE.unpack(raw)
    return ScopeInfo(epoch, last, trimmed, count)


def scope_info(tx: Tables, scope: Scope, epoch: int) -> ScopeInfo:
    """Return what is known of a scope; an unused scope is empty."""
    return _scope_info(tx, scope.key, epoch) or ScopeInfo(epoch, 0, 0, 0)


def _encode_op(op: NewOp) -> bytes:
    head = _OP_HEAD.pack(
        op.created_ms, op.start_ms, op.expire_ms, len(op.dedup), len(op.meta)
    )
    return head + op.dedup + op.meta + op.body


def _decode_op(key: bytes, raw: bytes) -> StoredOp:
    try:
        created, start, expire, ld, lm = _OP_HEAD.unpack_from(raw)
    except struct.error as e:
        raise CorruptRecord("ops", key, "short header") from e
    at = _OP_HEAD.size
    if at + ld + lm > len(raw):
        raise CorruptRecord("ops", key, "lengths overrun the record")
    (op_id,) = _U64.unpack(key[-8:])
    return StoredOp(
        op_id=op_id,
        dedup=raw[at : at + ld],
        meta=raw[at + ld : at + ld + lm],
        body=raw[at + ld + lm :],
        created_ms=created,
        start_ms=start,
        expire_ms=expire,
    )


def append(tx: Tables, op: NewOp) -> AppendResult:
    """
    Append one op to its scope's log, in one step: dedup, assign the next
    id, store, index its expiry, and trim the scope to C{op.keep}.

    Ids come from one store-wide sequence, so they are strictly increasing
    in call order within every scope (and sparse in each).

    @raise ValidationError: if the op's fields are out of range.
    """
    if op.expire_ms and op.expire_ms < op.start_ms:
        raise ValidationError("expire_date", "is before start_date")
    if len(op.dedup) > 0xFFFF:
        raise ValidationError("third_msg_id", "idempotency key too long")
    if op.keep < 0:
        raise ValidationError("keep", "must not be negative")

    # A repeat of a still-retained op answers with the first op's id.
    if op.dedup:
        seen = tx.get(Table.DEDUP, op.dedup)
        if seen is not None:
            first_id, expire = _DEDUP.unpack(seen)
            if not expire or expire >= op.created_ms:
                return AppendResult(first_id, duplicate=True)

    raw_seq = tx.get(Table.META, b"seq")
    op_id = (_U64.unpack(raw_seq)[0] if raw_seq else 0) + 1
    if op_id > _MAX_ID:
        raise ValidationError("op_id", "sequence exhausted")
    id_bytes = _U64.pack(op_id)
    tx.put(Table.META, b"seq", id_bytes)

    key = op.scope.key
    raw_scope = tx.get(Table.SCOPES, key)
    if raw_scope is None:
        trimmed = count = 0
    elif len(raw_scope) == _SCOPE.size:
        _, trimmed, count = _SCOPE.unpack(raw_scope)
    else:
        raise CorruptRecord("scopes", key, "wrong length")
    count += 1
    tx.put(Table.OPS, key + id_bytes, _encode_op(op))
    if op.expire_ms:
        tx.put(Table.EXPIRY, _U64.pack(op.expire_ms) + id_bytes + key, b"")
    if op.dedup:
        tx.put(Table.DEDUP, op.dedup, _DEDUP.pack(op_id, op.expire_ms))

    # Keep only the newest N: drop from the front of the log.
    if op.keep and count > op.keep:
        excess = count - op.keep
        doomed = []
        for k, v in tx.scan(Table.OPS, key, prefix_end(key)):
            doomed.append((k, v))
            if len(doomed) == excess:
                break
        for k, v in doomed:
            trimmed = max(trimmed, _remove_op(tx, k, v))
            count -= 1
    tx.put(Table.SCOPES, key, _SCOPE.pack(op_id, trimmed, count))
    return AppendResult(op_id)


def _remove_op(tx: Tables, key: bytes, raw: bytes) -> int:
    """Delete one op and its index entries; return its id."""
    op = _decode_op(key, raw)
    scope_key = key[:-8]
    tx.delete(Table.OPS, key)
    if op.expire_ms:
        tx.delete(
            Table.EXPIRY, _u64(op.expire_ms) + _u64(op.op_id) + scope_key
        )
    if op.dedup:
        seen = tx.get(Table.DEDUP, op.dedup)
        if seen is not None and _DEDUP.unpack(seen)[0] == op.op_id:
            tx.delete(Table.DEDUP, op.dedup)
    return op.op_id


def read_after(
    tx: Tables, scope: Scope, after: int, limit: int, now_ms: int
) -> list[StoredOp]:
    """
    Return up to C{limit} ops of C{scope} with ids above C{after}, in id
    order, leaving out those that expired before C{now_ms}.
    """
    if after < 0 or after > _MAX_ID:
        raise ValidationError("after", "must be an op id or zero")
    if limit < 1:
        raise ValidationError("limit", "must be positive")
    key = scope.key
    out: list[StoredOp] = []
    for k, v in tx.scan(Table.OPS, key + _u64(after + 1), prefix_end(key)):
        op = _decode_op(k, v)
        if op.expire_ms and op.expire_ms < now_ms:
            continue
        out.append(op)
        if len(out) >= limit:
            break
    return out


def get_op(tx: Tables, scope: Scope, op_id: int) -> StoredOp | None:
    """Return one op of a scope, or L{None}."""
    key = scope.key + _u64(op_id)
    raw = tx.get(Table.OPS, key)
    return None if raw is None else _decode_op(key, raw)


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one sweep removed, and whether more is left to sweep."""

    ops: int = 0
    deliveries: int = 0
    counters: int = 0
    more: bool = False


def sweep(
    tx: Tables, now_ms: int, retention_days: int, budget: int
) -> SweepResult:
    """
    Remove ops that expired before C{now_ms}, and delivery records and
    counters older than C{retention_days}; at most C{budget} of each in
    one transaction, so that a large backlog is swept in slices.
    """
    expired = []
    for k, _ in tx.scan(Table.EXPIRY, b"", _u64(now_ms)):
        expired.append(k)
        if len(expired) >= budget:
            break
    touched: dict[bytes, tuple[int, int]] = {}
    for k in expired:
        op_id_bytes, scope_key = k[8:16], k[16:]
        op_key = scope_key + op_id_bytes
        raw = tx.get(Table.OPS, op_key)
        tx.delete(Table.EXPIRY, k)
        if raw is None:
            continue
        op_id = _remove_op(tx, op_key, raw)
        top, n = touched.get(scope_key, (0, 0))
        touched[scope_key] = (max(top, op_id), n + 1)
    for scope_key, (top, n) in touched.items():
        info = _scope_info(tx, scope_key, 0)
        if info is not None:
            tx.put(
                Table.SCOPES,
                scope_key,
                _SCOPE.pack(
                    info.last_id,
                    max(info.trimmed_through, top),
                    max(0, info.count - n),
                ),
            )

    cutoff = _U32.pack(max(0, now_ms // DAY_MS - retention_days))
    old_deliveries = []
    for k, _ in tx.scan(Table.DELIVERY_DAYS, b"", cutoff):
        old_deliveries.append(k)
        if len(old_deliveries) >= budget:
            break
    for k in old_deliveries:
        tx.delete(Table.DELIVERY_DAYS, k)
        tx.delete(Table.DELIVERIES, k[4:])
    old_counters = []
    for k, _ in tx.scan(Table.COUNTERS, b"", cutoff):
        old_counters.append(k)
        if len(old_counters) >= budget:
            break
    for k in old_counters:
        tx.delete(Table.COUNTERS, k)

    return SweepResult(
        ops=sum(n for _, n in touched.values()),
        deliveries=len(old_deliveries),
        counters=len(old_counters),
        more=budget in (len(expired), len(old_deliveries), len(old_counters)),
    )


# --- sync points ------------------------------------------------------


def _point_key(scope: Scope, device_id: str | None) -> bytes:
    if device_id is None:
        return scope.key
    check_link("device_id", device_id)
    return scope.key + device_id.encode("utf-8")


def get_point(
    tx: Tables, scope: Scope, device_id: str | None
) -> SyncPoint | None:
    """
    Return a device's sync point in a scope, or the scope's shared point
    (single-device configs) when C{device_id} is L{None}.
    """
    key = _point_key(scope, device_id)
    raw = tx.get(Table.POINTS, key)
    if raw is None:
        return None
    if len(raw) != _POINT.size:
        raise CorruptRecord("points", key, "wrong length")
    return SyncPoint(*_POINT.unpack(raw))


def advance_points(
    tx: Tables,
    points: Iterable[tuple[Scope, str | None, SyncPoint]],
) -> list[SyncPoint]:
    """
    Move sync points forward, never back: within one epoch a point only
    grows; a point of another epoch replaces the old one (the log it
    named is gone).

    @return: the point now stored for each input, in order.
    """
    out = []
    for scope, device_id, point in points:
        if not 0 <= point.op_id <= _MAX_ID or not 0 <= point.epoch <= _MAX_ID:
            raise ValidationError("sync_point", "out of range")
        key = _point_key(scope, device_id)
        current = get_point(tx, scope, device_id)
        if (
            current is not None
            and current.epoch == point.epoch
            and current.op_id >= point.op_id
        ):
            out.append(current)
            continue
        tx.put(Table.POINTS, key, _POINT.pack(point.epoch, point.op_id))
        out.append(point)
    return out


# --- devices ----------------------------------------------------------


def _device_key(instance_id: str, device_id: str) -> bytes:
    return _join(instance_id, device_id)


def get_device(tx: Tables, instance_id: str, device_id: str) -> Device | None:
    """Return what is known of a device, or L{None}."""
    key = _device_key(instance_id, device_id)
    raw = tx.get(Table.DEVICES, key)
    if raw is None:
        return None
    r = _unpack(Table.DEVICES, key, raw)
    return Device(
        instance_id=instance_id,
        device_id=device_id,
        secret_hash=r["secret"],
        user_id=r["user"],
        session_validated=r["validated"],
        os_type=r["os"],
        app_version=r["app"],
        first_seen_ms=r["first"],
        last_seen_ms=r["last"],
    )


def save_device(tx: Tables, device: Device) -> Device:
    """
    Record a device, keeping its user index in step.

    The first client to present a device id binds it to its secret; a
    later record with another secret is refused.

    @raise DeviceClaimed: if the device id belongs to another secret.
    """
    check_instance_id(device.instance_id)
    check_link("device_id", device.device_id)
    if device.user_id:
        check_link("user_id", device.user_id)
    old = get_device(tx, device.instance_id, device.device_id)
    if old is not None:
        if old.secret_hash and old.secret_hash != device.secret_hash:
            raise DeviceClaimed(
                f"device {device.device_id!r} is bound to another client"
            )
        if old.user_id and old.user_id != device.user_id:
            tx.delete(
                Table.USERS,
                _join(device.instance_id, old.user_id, device.device_id),
            )
        first = old.first_seen_ms or device.first_seen_ms
    else:
        first = device.first_seen_ms or device.last_seen_ms
    if device.user_id:
        tx.put(
            Table.USERS,
            _join(device.instance_id, device.user_id, device.device_id),
            _u64(device.last_seen_ms),
        )
    tx.put(
        Table.DEVICES,
        _device_key(device.instance_id, device.device_id),
        _pack(
            {
                "secret": device.secret_hash,
                "user": device.user_id,
                "validated": device.session_validated,
                "os": device.os_type,
                "app": device.app_version,
                "first": first,
                "last": device.last_seen_ms,
            }
        ),
    )
    return get_device(tx, device.instance_id, device.device_id) or device


def devices_of_user(
    tx: Tables, instance_id: str, user_id: str
) -> list[Device]:
    """Return the devices bound to a user, most recently seen first."""
    prefix = _join(instance_id, user_id) + b"\x00"
    ids = [
        k[len(prefix) :].decode()
        for k, _ in tx.scan(Table.USERS, prefix, prefix_end(prefix))
    ]
    found = [get_device(tx, instance_id, d) for d in ids]
    devices = [d for d in found if d is not None]
    return sorted(devices, key=lambda d: d.last_seen_ms, reverse=True)


# --- delivery records and counters -----------------------------------


def _delivery_key(
    instance_id: str, device_id: str, op_id: int, scope: Scope
) -> bytes:
    return _join(instance_id, device_id) + b"\x00" + _u64(op_id) + scope.key


def _counter_key(day: int, instance_id: str, kind: str, name: str) -> bytes:
    return _U32.pack(day) + _join(instance_id, kind, name)


def _bump(tx: Tables, key: bytes, pushes: int, arrivals: int) -> None:
    raw = tx.get(Table.COUNTERS, key)
    p, a = _COUNT.unpack(raw) if raw else (0, 0)
    tx.put(Table.COUNTERS, key, _COUNT.pack(p + pushes, a + arrivals))


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
            tx.put(Table.DELIVERY_DAYS, _U32.pack(day) + key, b"")
        else:
            old = _unpack(Table.DELIVERIES, key, raw)
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
            _pack(
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
    prefix = _join(instance_id, device_id) + b"\x00"
    out = []
    for k, v in tx.scan(
        Table.DELIVERIES, prefix, prefix_end(prefix), reverse=True
    ):
        r = _unpack(Table.DELIVERIES, k, v)
        rest = k[len(prefix) :]
        out.append(
            DeliveryRecord(
                scope=Scope.from_key(rest[8:]),
                op_id=_U64.unpack(rest[:8])[0],
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
            out.append((day, *_COUNT.unpack(raw)))
    return out
