"""
How store records are laid out: fixed-width integer structs and msgpack
maps, and the helpers every rules module shares.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from msync.store.errors import CorruptRecord
from msync.store.tables import Table

SCHEMA_VERSION = 1

DAY_MS = 86_400_000

U64 = struct.Struct(">Q")
U32 = struct.Struct(">I")
SCOPE_REC = struct.Struct(">QQQQ")
POINT_REC = struct.Struct(">QQ")
DEDUP_REC = struct.Struct(">QQ")
COUNT_REC = struct.Struct(">QQ")
# created ms, start ms, expire ms, dedup length, meta length
OP_HEAD = struct.Struct(">QQQHI")
MAX_ID = 2**63 - 1


def u64(n: int) -> bytes:
    return U64.pack(n)


def pack(record: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(record, use_bin_type=True)
    return packed


def unpack(table: Table, key: bytes, raw: bytes) -> dict[str, Any]:
    try:
        record = msgpack.unpackb(raw, raw=False)
    except Exception as e:
        raise CorruptRecord(table.value, key, str(e)) from e
    if not isinstance(record, dict):
        raise CorruptRecord(table.value, key, "not a map")
    return record


def join(*parts: str) -> bytes:
    return "\x00".join(parts).encode("utf-8")
