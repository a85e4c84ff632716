"""
The messages of the device protocol (C{docs/protocol.md}), as frozen
values, with their parsing from and writing to msgpack maps.

L{parse} checks every field it reads; anything wrong is a
L{ProtocolError} with code C{BAD_MESSAGE}.  The server writes sync frames
with L{encode_sync}, which splices op bodies that are already msgpack into
the frame instead of packing them again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import msgpack

from msync.wire.frames import ProtocolError, encode, frame

VERSION = 1

#: The most points a hello or an ack may carry.
MAX_POINTS = 1024

_packer = msgpack.Packer(use_bin_type=True)


@dataclass(frozen=True, slots=True)
class Point:
    """The largest op id a device has in one scope of one biz type."""

    biz: str
    scope: str
    epoch: int
    op_id: int

    def to_wire(self) -> list[object]:
        return [self.biz, self.scope, self.epoch, self.op_id]


@dataclass(frozen=True, slots=True)
class Hello:
    """The device's first frame: who it is and where it stands."""

    instance: str
    device: str
    secret: str
    os: str
    app_version: str
    points: tuple[Point, ...] = ()
    app_key: str = ""
    user: str = ""
    session: str = ""
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Welcome:
    """The server's answer to a good hello."""

    device: str
    heartbeat: int
    time: int
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Bind:
    """Bind a user (with its session) to the device."""

    user: str
    session: str


@dataclass(frozen=True, slots=True)
class Bound:
    """The user now bound (empty: none) and whether it was validated."""

    user: str
    validated: bool | None = None


@dataclass(frozen=True, slots=True)
class Unbind:
    """Unbind the device's user."""


@dataclass(frozen=True, slots=True)
class WireOp:
    """One op as the device receives it."""

    op_id: int
    payload: bytes
    third_msg_id: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class Group:
    """The ops of one scope in a sync frame, in id order."""

    biz: str
    scope: str
    epoch: int
    ops: tuple[WireOp, ...]


@dataclass(frozen=True, slots=True)
class Sync:
    """A batch of ops, grouped by scope."""

    groups: tuple[Group, ...]


@dataclass(frozen=True, slots=True)
class Ack:
    """Cumulative acknowledgements, one point per scope."""

    points: tuple[Point, ...]


@dataclass(frozen=True, slots=True)
class Pull:
    """The device asks for everything not yet received."""


@dataclass(frozen=True, slots=True)
class Ping:
    """A heartbeat; answered by a L{Pong} with the same number."""

    n: int


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to a L{Ping}."""

    n: int


@dataclass(frozen=True, slots=True)
class Gap:
    """Ops of a scope the device had not acked were dropped."""

    biz: str
    scope: str
    epoch: int
    through: int
    reason: str


@dataclass(frozen=True, slots=True)
class Error:
    """A protocol or service error; the sender closes after it."""

    code: str
    text: str


Message = (
    Hello
    | Welcome
    | Bind
    | Bound
    | Unbind
    | Sync
    | Ack
    | Pull
    | Ping
    | Pong
    | Gap
    | Error
)

GAP_REASONS = frozenset({"threshold", "expired", "retries", "reset"})

#: Every code an C{error} frame may carry (C{docs/protocol.md}).
ERROR_CODES = frozenset(
    {
        "BAD_FRAME",
        "FRAME_TOO_LARGE",
        "BAD_MESSAGE",
        "UNEXPECTED",
        "VERSION",
        "UNKNOWN_INSTANCE",
        "AUTH",
        "DEVICE_CLAIMED",
        "REPLACED",
        "IDLE",
        "RATE",
        "SHUTDOWN",
        "INTERNAL",
    }
)

#: Errors after which a device should not reconnect by itself: retrying
#: cannot succeed until a person changes something.
FATAL_ERRORS = frozenset(
    {"VERSION", "UNKNOWN_INSTANCE", "AUTH", "DEVICE_CLAIMED", "REPLACED"}
)


# --- reading ---------------------------------------------------------------


def _bad(text: str) -> ProtocolError:
    return ProtocolError("BAD_MESSAGE", text)


def _str(
    m: dict[str, Any],
    key: str,
    *,
    required: bool = True,
    lo: int = 0,
    hi: int = 128,
) -> str:
    value = m.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise _bad(f"{m['t']}.{key} must be a string")
    size = len(value.encode("utf-8"))
    if not lo <= size <= hi:
        raise _bad(f"{m['t']}.{key} must be {lo}-{hi} bytes")
    if any(ord(c) < 0x20 for c in value):
        raise _bad(f"{m['t']}.{key} must not hold control characters")
    return value


def _int(m: dict[str, Any], key: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    value = m.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{m['t']}.{key} must be an integer")
    if not lo <= value <= hi:
        raise _bad(f"{m['t']}.{key} out of range")
    return value


def _list(m: dict[str, Any], key: str, most: int) -> list[Any]:
    value = m.get(key, [])
    if not isinstance(value, list):
        raise _bad(f"{m['t']}.{key} must be an array")
    if len(value) > most:
        raise _bad(f"{m['t']}.{key} holds more than {most} items")
    return value


def _point(m: dict[str, Any], raw: object) -> Point:
    if not (isinstance(raw, list) and len(raw) == 4):
        raise _bad(f"{m['t']}: a point is [biz, scope, epoch, op_id]")
    fields = dict(zip(("biz", "scope", "epoch", "op_id"), raw, strict=True))
    fields["t"] = m["t"]
    return Point(
        _str(fields, "biz", lo=1, hi=64),
        _str(fields, "scope", lo=1, hi=130),
        _int(fields, "epoch"),
        _int(fields, "op_id"),
    )


def _points(m: dict[str, Any]) -> tuple[Point, ...]:
    return tuple(_point(m, p) for p in _list(m, "points", MAX_POINTS))


def _hello(m: dict[str, Any]) -> Hello:
    return Hello(
        version=_int(m, "v"),
        instance=_str(m, "instance", lo=1),
        device=_str(m, "device", lo=1),
        secret=_str(m, "secret", lo=16),
        os=_str(m, "os", lo=1, hi=16),
        app_version=_str(m, "app_version", lo=1, hi=64),
        app_key=_str(m, "app_key", required=False),
        user=_str(m, "user", required=False),
        session=_str(m, "session", required=False, hi=512),
        points=_points(m),
    )


def _welcome(m: dict[str, Any]) -> Welcome:
    return Welcome(
        version=_int(m, "v"),
        device=_str(m, "device", lo=1),
        heartbeat=_int(m, "heartbeat", 1, 3600),
        time=_int(m, "time"),
    )


def _bound(m: dict[str, Any]) -> Bound:
    validated = m.get("validated")
    if validated is not None and not isinstance(validated, bool):
        raise _bad("bound.validated must be a boolean or nil")
    return Bound(_str(m, "user", required=False), validated)


def _wire_op(raw: object) -> WireOp:
    if not (
        isinstance(raw, list)
        and len(raw) == 2
        and isinstance(raw[1], list)
        and len(raw[1]) == 3
    ):
        raise _bad("sync: an op is [op_id, [payload, third_msg_id, created]]")
    op_id, (payload, msg_id, created) = raw
    if not (
        isinstance(op_id, int)
        and not isinstance(op_id, bool)
        and 0 < op_id < 2**63
        and isinstance(payload, bytes)
        and isinstance(msg_id, str)
        and len(msg_id) <= 100
        and isinstance(created, int)
        and not isinstance(created, bool)
        and 0 <= created < 2**63
    ):
        raise _bad("sync: an op field has the wrong type")
    return WireOp(op_id, payload, msg_id, created)


def _sync(m: dict[str, Any]) -> Sync:
    groups = []
    for raw in _list(m, "groups", 1 << 20):
        if not (isinstance(raw, list) and len(raw) == 4):
            raise _bad("sync: a group is [biz, scope, epoch, ops]")
        head = _point(m, [*raw[:3], 0])
        if not isinstance(raw[3], list):
            raise _bad("sync: a group's ops must be an array")
        ops = tuple(_wire_op(op) for op in raw[3])
        if any(a.op_id >= b.op_id for a, b in pairwise(ops)):
            raise _bad("sync: a group's ops must increase")
        groups.append(Group(head.biz, head.scope, head.epoch, ops))
    return Sync(tuple(groups))


def _gap(m: dict[str, Any]) -> Gap:
    reason = _str(m, "reason", lo=1, hi=32)
    if reason not in GAP_REASONS:
        raise _bad(f"gap.reason {reason!r} is unknown")
    return Gap(
        biz=_str(m, "biz", lo=1, hi=64),
        scope=_str(m, "scope", lo=1, hi=130),
        epoch=_int(m, "epoch"),
        through=_int(m, "through"),
        reason=reason,
    )


_PARSERS: dict[str, Callable[[dict[str, Any]], Message]] = {
    "hello": _hello,
    "welcome": _welcome,
    "bind": lambda m: Bind(
        _str(m, "user", lo=1), _str(m, "session", lo=1, hi=512)
    ),
    "bound": _bound,
    "unbind": lambda m: Unbind(),
    "sync": _sync,
    "ack": lambda m: Ack(_points(m)),
    "pull": lambda m: Pull(),
    "ping": lambda m: Ping(_int(m, "n")),
    "pong": lambda m: Pong(_int(m, "n")),
    "gap": _gap,
    "error": lambda m: Error(
        _str(m, "code", lo=1, hi=64), _str(m, "text", hi=1024)
    ),
}

#: Every message type name, as C{docs/protocol.md} lists them.
TYPES = frozenset(_PARSERS)


def parse(m: dict[str, Any]) -> Message:
    """
    Read one decoded frame as a message.

    @raise ProtocolError: C{BAD_MESSAGE} if its type is unknown or a
        field is wrong.
    """
    parser = _PARSERS.get(m["t"])
    if parser is None:
        raise _bad(f"unknown message type {m['t']!r}")
    return parser(m)


# --- writing ---------------------------------------------------------------


def to_map(message: Message) -> dict[str, Any]:
    """Return C{message} as the map its frame holds."""
    match message:
        case Hello():
            m: dict[str, Any] = {
                "t": "hello",
                "v": message.version,
                "instance": message.instance,
                "device": message.device,
                "secret": message.secret,
                "os": message.os,
                "app_version": message.app_version,
                "points": [p.to_wire() for p in message.points],
            }
            for key in ("app_key", "user", "session"):
                if getattr(message, key):
                    m[key] = getattr(message, key)
            return m
        case Welcome():
            return {
                "t": "welcome",
                "v": message.version,
                "device": message.device,
                "heartbeat": message.heartbeat,
                "time": message.time,
            }
        case Bind():
            return {
                "t": "bind",
                "user": message.user,
                "session": message.session,
            }
        case Bound():
            return {
                "t": "bound",
                "user": message.user,
                "validated": message.validated,
            }
        case Unbind():
            return {"t": "unbind"}
        case Sync():
            return {
                "t": "sync",
                "groups": [
                    [
                        g.biz,
                        g.scope,
                        g.epoch,
                        [
                            [
                                o.op_id,
                                [o.payload, o.third_msg_id, o.created_ms],
                            ]
                            for o in g.ops
                        ],
                    ]
                    for g in message.groups
                ],
            }
        case Ack():
            return {
                "t": "ack",
                "points": [p.to_wire() for p in message.points],
            }
        case Pull():
            return {"t": "pull"}
        case Ping():
            return {"t": "ping", "n": message.n}
        case Pong():
            return {"t": "pong", "n": message.n}
        case Gap():
            return {
                "t": "gap",
                "biz": message.biz,
                "scope": message.scope,
                "epoch": message.epoch,
                "through": message.through,
                "reason": message.reason,
            }
        case Error():
            return {"t": "error", "code": message.code, "text": message.text}
    raise TypeError(f"not a message: {message!r}")


def to_frame(message: Message) -> bytes:
    """Return C{message} as one frame."""
    return encode(to_map(message))


def op_body(payload: bytes, third_msg_id: str, created_ms: int) -> bytes:
    """
    Return an op's body as the msgpack the sync frame carries, so that
    the server can store it once and splice it into frames as it is.
    """
    body: bytes = _packer.pack([payload, third_msg_id, created_ms])
    return body


#: The bytes a sync frame starts with: a two-key map, "t": "sync", "groups".
_SYNC_HEAD = (
    _packer.pack_map_header(2)
    + _packer.pack("t")
    + _packer.pack("sync")
    + _packer.pack("groups")
)

#: A group's fixed cost in a frame, beyond its names and op bodies.
GROUP_OVERHEAD = 32

#: An op's fixed cost in a frame, beyond its body.
OP_OVERHEAD = 12


def encode_sync(
    groups: Sequence[tuple[str, str, int, Sequence[tuple[int, bytes]]]],
) -> bytes:
    """
    Write a sync frame from groups of C{(biz, scope, epoch, ops)}, where
    each op is C{(op_id, body)} and C{body} came from L{op_body}.
    """
    pack = _packer.pack
    header = _packer.pack_array_header
    parts = [_SYNC_HEAD, header(len(groups))]
    for biz, scope, epoch, ops in groups:
        parts.append(b"\x94" + pack(biz) + pack(scope) + pack(epoch))
        parts.append(header(len(ops)))
        for op_id, body in ops:
            parts.append(b"\x92" + pack(op_id))
            parts.append(body)
    return frame(b"".join(parts))


def decode_all(decoded: list[dict[str, Any]]) -> list[Message]:
    """Parse every decoded frame (a convenience for clients and tests)."""
    return [parse(m) for m in decoded]
