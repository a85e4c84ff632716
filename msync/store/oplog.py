"""
The oplog rules: the schema check, appends with dedup and trimming, paged
reads, the expiry sweep, and sync points.

Each function is one intent run inside one transaction that an engine
provides (see L{msync.store.tables}); nothing here knows threads,
Deferreds or LMDB.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from msync.model import (
    AppendResult,
    NewOp,
    Scope,
    ScopeInfo,
    StoredOp,
    SyncPoint,
    ValidationError,
    check_link,
)
from msync.store.errors import (
    CorruptRecord,
    SchemaMismatch,
)
from msync.store.records import (
    DAY_MS,
    DEDUP_REC,
    MAX_ID,
    OP_HEAD,
    POINT_REC,
    SCHEMA_VERSION,
    SCOPE_REC,
    U32,
    U64,
    u64,
)
from msync.store.tables import Table, Tables, prefix_end

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
        tx.put(Table.META, b"epoch", u64(new_epoch))
        tx.put(Table.META, b"seq", u64(0))
        return new_epoch
    if schema != b"%d" % SCHEMA_VERSION:
        raise SchemaMismatch(
            f"data directory has schema {schema!r}; this msync reads "
            f"schema {SCHEMA_VERSION}"
        )
    raw = tx.get(Table.META, b"epoch")
    if raw is None or len(raw) != 8:
        raise CorruptRecord("meta", b"epoch", "missing or malformed")
    return int(U64.unpack(raw)[0])


# --- oplogs -----------------------------------------------------------


def _scope_info(tx: Tables, key: bytes, epoch: int) -> ScopeInfo | None:
    raw = tx.get(Table.SCOPES, key)
    if raw is None:
        return None
    if len(raw) != SCOPE_REC.size:
        raise CorruptRecord("scopes", key, "wrong length")
    last, trimmed, count, expired = SCOPE_REC.unpack(raw)
    return ScopeInfo(epoch, last, trimmed, count, expired)


def scope_info(tx: Tables, scope: Scope, epoch: int) -> ScopeInfo:
    """Return what is known of a scope; an unused scope is empty."""
    return _scope_info(tx, scope.key, epoch) or ScopeInfo(epoch, 0, 0, 0)


def _encode_op(op: NewOp) -> bytes:
    head = OP_HEAD.pack(
        op.created_ms, op.start_ms, op.expire_ms, len(op.dedup), len(op.meta)
    )
    return head + op.dedup + op.meta + op.body


def _decode_op(key: bytes, raw: bytes) -> StoredOp:
    try:
        created, start, expire, ld, lm = OP_HEAD.unpack_from(raw)
    except struct.error as e:
        raise CorruptRecord("ops", key, "short header") from e
    at = OP_HEAD.size
    if at + ld + lm > len(raw):
        raise CorruptRecord("ops", key, "lengths overrun the record")
    return StoredOp(
        U64.unpack_from(key, len(key) - 8)[0],
        raw[at + ld + lm :],
        raw[at + ld : at + ld + lm],
        raw[at : at + ld],
        created,
        start,
        expire,
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
            first_id, expire = DEDUP_REC.unpack(seen)
            if not expire or expire >= op.created_ms:
                return AppendResult(first_id, duplicate=True)

    raw_seq = tx.get(Table.META, b"seq")
    op_id = (U64.unpack(raw_seq)[0] if raw_seq else 0) + 1
    if op_id > MAX_ID:
        raise ValidationError("op_id", "sequence exhausted")
    id_bytes = U64.pack(op_id)
    tx.put(Table.META, b"seq", id_bytes)

    key = op.scope.key
    raw_scope = tx.get(Table.SCOPES, key)
    if raw_scope is None:
        trimmed = count = expired = 0
    elif len(raw_scope) == SCOPE_REC.size:
        _, trimmed, count, expired = SCOPE_REC.unpack(raw_scope)
    else:
        raise CorruptRecord("scopes", key, "wrong length")
    count += 1
    tx.put(Table.OPS, key + id_bytes, _encode_op(op))
    if op.expire_ms:
        tx.put(Table.EXPIRY, U64.pack(op.expire_ms) + id_bytes + key, b"")
    if op.dedup:
        tx.put(Table.DEDUP, op.dedup, DEDUP_REC.pack(op_id, op.expire_ms))

    _count_ops(tx, 1)

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
    tx.put(Table.SCOPES, key, SCOPE_REC.pack(op_id, trimmed, count, expired))
    return AppendResult(op_id)


def reserve_ids(tx: Tables, n: int) -> tuple[int, int]:
    """
    Take C{n} ids from the store-wide sequence for ops that are never
    stored (non-persistent configs), so that they order with stored ops.

    @return: the first and last id reserved.
    """
    if not 1 <= n <= 1_000_000:
        raise ValidationError("n", "must be from 1 to 1,000,000")
    raw_seq = tx.get(Table.META, b"seq")
    first = (U64.unpack(raw_seq)[0] if raw_seq else 0) + 1
    last = first + n - 1
    if last > MAX_ID:
        raise ValidationError("op_id", "sequence exhausted")
    tx.put(Table.META, b"seq", U64.pack(last))
    return first, last


def _count_ops(tx: Tables, delta: int) -> None:
    raw = tx.get(Table.META, b"ops")
    total = U64.unpack(raw)[0] if raw else 0
    tx.put(Table.META, b"ops", U64.pack(max(0, total + delta)))


def total_ops(tx: Tables) -> int:
    """How many ops the store holds, over every scope."""
    raw = tx.get(Table.META, b"ops")
    return int(U64.unpack(raw)[0]) if raw else 0


def _remove_op(tx: Tables, key: bytes, raw: bytes) -> int:
    """Delete one op and its index entries; return its id."""
    op = _decode_op(key, raw)
    _count_ops(tx, -1)
    scope_key = key[:-8]
    tx.delete(Table.OPS, key)
    if op.expire_ms:
        tx.delete(Table.EXPIRY, u64(op.expire_ms) + u64(op.op_id) + scope_key)
    if op.dedup:
        seen = tx.get(Table.DEDUP, op.dedup)
        if seen is not None and DEDUP_REC.unpack(seen)[0] == op.op_id:
            tx.delete(Table.DEDUP, op.dedup)
    return op.op_id


def read_after(
    tx: Tables, scope: Scope, after: int, limit: int, now_ms: int
) -> list[StoredOp]:
    """
    Return up to C{limit} ops of C{scope} with ids above C{after}, in id
    order, leaving out those that expired before C{now_ms}.
    """
    if after < 0 or after > MAX_ID:
        raise ValidationError("after", "must be an op id or zero")
    if limit < 1:
        raise ValidationError("limit", "must be positive")
    key = scope.key
    end = prefix_end(key)
    out: list[StoredOp] = []
    # Every push reads here: the record is taken apart in the loop
    # itself, as in _decode_op, the tuple made without the named tuple's
    # Python constructor, and an expired op is skipped unbuilt.
    add = out.append
    head = OP_HEAD.unpack_from
    at = OP_HEAD.size
    make = tuple.__new__
    left = limit
    for k, v in tx.walk(Table.OPS, key + u64(after + 1)):
        if end is not None and k >= end:
            break
        try:
            created, start, expire, ld, lm = head(v)
        except struct.error as e:
            raise CorruptRecord("ops", k, "short header") from e
        if expire and expire < now_ms:
            continue
        meta_at = at + ld
        body_at = meta_at + lm
        if body_at > len(v):
            raise CorruptRecord("ops", k, "lengths overrun the record")
        add(
            make(
                StoredOp,
                (
                    int.from_bytes(k[-8:]),
                    v[body_at:],
                    v[meta_at:body_at],
                    v[at:meta_at],
                    created,
                    start,
                    expire,
                ),
            )
        )
        left -= 1
        if not left:
            break
    return out


def read_newest(
    tx: Tables, scope: Scope, limit: int, now_ms: int
) -> list[StoredOp]:
    """
    Return up to C{limit} of the newest unexpired ops of C{scope}, newest
    first (for reports; delivery reads forward with L{read_after}).
    """
    if limit < 1:
        raise ValidationError("limit", "must be positive")
    key = scope.key
    out: list[StoredOp] = []
    for k, v in tx.scan(Table.OPS, key, prefix_end(key), reverse=True):
        op = _decode_op(k, v)
        if op.expire_ms and op.expire_ms < now_ms:
            continue
        out.append(op)
        if len(out) >= limit:
            break
    return out


def get_op(tx: Tables, scope: Scope, op_id: int) -> StoredOp | None:
    """Return one op of a scope, or L{None}."""
    key = scope.key + u64(op_id)
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
    for k, _ in tx.scan(Table.EXPIRY, b"", u64(now_ms)):
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
                SCOPE_REC.pack(
                    info.last_id,
                    info.trimmed_through,
                    max(0, info.count - n),
                    max(info.expired_through, top),
                ),
            )

    cutoff = U32.pack(max(0, now_ms // DAY_MS - retention_days))
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


#: The most done-above ids a shared point keeps.
MAX_ABOVE = 8192


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
    extra = len(raw) - POINT_REC.size
    if extra < 0 or extra % 8:
        raise CorruptRecord("points", key, "wrong length")
    epoch, op_id = POINT_REC.unpack_from(raw)
    above = struct.unpack_from(f">{extra // 8}Q", raw, POINT_REC.size)
    return SyncPoint(epoch, op_id, tuple(above))


def advance_points(
    tx: Tables,
    points: Iterable[tuple[Scope, str | None, SyncPoint]],
) -> list[SyncPoint]:
    """
    Move sync points forward, never back: within one epoch a point only
    grows, and ops listed as done above it stay done; a point of another
    epoch replaces the old one (the log it named is gone).

    @return: the point now stored for each input, in order.
    """
    out = []
    for scope, device_id, point in points:
        if not 0 <= point.op_id <= MAX_ID or not 0 <= point.epoch <= MAX_ID:
            raise ValidationError("sync_point", "out of range")
        if len(point.above) > MAX_ABOVE:
            raise ValidationError("sync_point", "too many ops above it")
        key = _point_key(scope, device_id)
        current = get_point(tx, scope, device_id)
        if current is not None and current.epoch == point.epoch:
            top = max(current.op_id, point.op_id)
            above = tuple(
                sorted(i for i in {*current.above, *point.above} if i > top)
            )
            point = SyncPoint(point.epoch, top, above)
            if point == current:
                out.append(current)
                continue
        tx.put(
            Table.POINTS,
            key,
            POINT_REC.pack(point.epoch, point.op_id)
            + struct.pack(f">{len(point.above)}Q", *point.above),
        )
        out.append(point)
    return out
