"""
The device protocol's codec: frames, messages, fuzzing, and the document.

Everything here is sans-IO, so every test is bytes in, values out: no
reactor, no clock, no sockets.  Hypothesis runs derandomized and the
random-bytes fuzz uses a seeded generator, so a run is repeatable.
"""

from __future__ import annotations

import copy
import random
import re
import struct
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from twisted.trial.unittest import SynchronousTestCase

from msync.wire.frames import (
    HEADER,
    MAX_DEVICE_FRAME,
    MAX_SERVER_FRAME,
    FrameDecoder,
    ProtocolError,
    decode_body,
    encode,
    frame,
)
from msync.wire.messages import (
    ERROR_CODES,
    GAP_REASONS,
    MAX_POINTS,
    TYPES,
    Ack,
    Bind,
    Bound,
    Error,
    Gap,
    Group,
    Hello,
    Message,
    Ping,
    Point,
    Pong,
    Pull,
    Sync,
    Unbind,
    Welcome,
    WireOp,
    encode_sync,
    op_body,
    parse,
    to_frame,
    to_map,
)

#: The protocol document, found from this file so any working directory
#: will do.
PROTOCOL_DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

#: The largest integer the protocol carries (ids, epochs, times).
U63 = 2**63 - 1


def examples(n: int) -> settings:
    """
    Return Hypothesis settings for C{n} examples, without a deadline (a
    loaded machine must not fail a test) and derandomized, so every run
    tries the same inputs.
    """
    return settings(
        max_examples=n, deadline=None, derandomize=True, database=None
    )


def length(n: int) -> bytes:
    """Return a 4-byte big-endian length prefix of C{n}."""
    return struct.pack(">I", n)


def through_wire(
    data: bytes, max_frame: int = MAX_SERVER_FRAME
) -> list[Message]:
    """
    Feed C{data} to a fresh decoder in one piece and parse every frame,
    insisting that nothing is left over.
    """
    decoder = FrameDecoder(max_frame)
    maps = decoder.feed(data)
    assert decoder.buffered == 0, decoder.buffered
    return [parse(m) for m in maps]


def parse_map(m: dict[str, Any]) -> Message:
    """Encode C{m} as a frame, decode it again, and parse it."""
    (message,) = through_wire(encode(m))
    return message


# --- strategies ------------------------------------------------------------

#: Characters a field may hold: anything but C0 controls and surrogates
#: (which UTF-8 cannot carry).
_CHARS = st.characters(min_codepoint=0x20, codec="utf-8")


def _trim(value: str, most: int) -> str:
    """Drop characters from the end of C{value} until it fits C{most}."""
    while len(value.encode("utf-8")) > most:
        value = value[:-1]
    return value


def text(lo: int, hi: int) -> SearchStrategy[str]:
    """
    Strings a field bounded to C{lo}-C{hi} UTF-8 bytes accepts.

    At least C{lo} characters are at least C{lo} bytes, and a string
    trimmed to C{hi} bytes keeps more than C{hi - 4} (no character takes
    more than 4), which is above C{lo} for every field here.
    """
    return st.text(_CHARS, min_size=lo, max_size=hi).map(
        lambda s: _trim(s, hi)
    )


u63 = st.integers(0, U63)

points = st.lists(
    st.builds(Point, text(1, 64), text(1, 130), u63, u63), max_size=4
).map(tuple)


def _ops(ids: list[int]) -> SearchStrategy[tuple[WireOp, ...]]:
    """Ops carrying C{ids}, which are sorted here so they increase."""
    return st.tuples(
        *(
            st.builds(
                WireOp, st.just(i), st.binary(max_size=64), text(0, 64), u63
            )
            for i in sorted(ids)
        )
    )


groups = st.builds(
    Group,
    text(1, 64),
    text(1, 130),
    u63,
    st.lists(st.integers(1, U63), unique=True, max_size=4).flatmap(_ops),
)

syncs = st.builds(Sync, st.lists(groups, max_size=4).map(tuple))

#: A strategy for every message type, by the name its frame carries.
MESSAGES: dict[str, SearchStrategy[Message]] = {
    "hello": st.builds(
        Hello,
        instance=text(1, 128),
        device=text(1, 128),
        secret=text(16, 128),
        os=text(1, 16),
        app_version=text(1, 64),
        points=points,
        app_key=text(0, 128),
        user=text(0, 128),
        session=text(0, 512),
        version=u63,
    ),
    "welcome": st.builds(
        Welcome, text(1, 128), st.integers(1, 3600), u63, u63
    ),
    "bind": st.builds(Bind, text(1, 128), text(1, 512)),
    "bound": st.builds(Bound, text(0, 128), st.none() | st.booleans()),
    "unbind": st.builds(Unbind),
    "sync": syncs,
    "ack": st.builds(Ack, points),
    "pull": st.builds(Pull),
    "ping": st.builds(Ping, u63),
    "pong": st.builds(Pong, u63),
    "gap": st.builds(
        Gap,
        text(1, 64),
        text(1, 130),
        u63,
        u63,
        st.sampled_from(sorted(GAP_REASONS)),
    ),
    "error": st.builds(
        Error,
        st.sampled_from(sorted(ERROR_CODES)) | text(1, 64),
        text(0, 1024),
    ),
}

#: Any value msgpack carries in a frame, nested a little.
msgpack_values: SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


# --- framing ---------------------------------------------------------------

#: A few frames of different shapes and sizes, including a 16-bit-long
#: bin and string, so that splits fall inside headers and bodies alike.
_FRAMES = [
    to_frame(
        Hello(
            "WS_app",
            "d1",
            "s" * 16,
            "ANDROID",
            "1.2.0",
            (Point("UCHAT", "u:alice", 77, 1040),),
        )
    ),
    to_frame(Ping(1)),
    to_frame(
        Sync(
            (Group("UCHAT", "u:alice", 77, (WireOp(9, b"p" * 300, "m", 5),)),)
        )
    ),
    to_frame(Error("IDLE", "é" * 150)),
    to_frame(Pull()),
]
STREAM = b"".join(_FRAMES)
EXPECTED = [decode_body(f[HEADER:]) for f in _FRAMES]

#: Where each frame of L{STREAM} ends.
ENDS = [sum(len(f) for f in _FRAMES[: i + 1]) for i in range(len(_FRAMES))]


def padded(size: int) -> bytes:
    """Return a frame holding a ping padded to a body of C{size} bytes."""
    for pad in range(size, -1, -1):
        body: bytes = msgpack.packb(
            {"t": "ping", "n": 1, "pad": b"\x00" * pad}, use_bin_type=True
        )
        if len(body) == size:
            return frame(body)
    raise AssertionError(f"no padding gives {size} bytes")


class FramingTests(SynchronousTestCase):
    """How L{FrameDecoder} cuts a byte stream into maps."""

    def test_whole(self) -> None:
        """A stream fed in one piece gives every map, with nothing left."""
        decoder = FrameDecoder(MAX_DEVICE_FRAME)
        self.assertEqual(decoder.feed(STREAM), EXPECTED)
        self.assertEqual(decoder.buffered, 0)

    def test_byte_at_a_time(self) -> None:
        """Fed one byte at a time, each map appears with its last byte."""
        decoder = FrameDecoder(MAX_DEVICE_FRAME)
        got = []
        for at in range(len(STREAM)):
            out = decoder.feed(STREAM[at : at + 1])
            self.assertEqual(bool(out), at + 1 in ENDS, at)
            got.extend(out)
        self.assertEqual(got, EXPECTED)
        self.assertEqual(decoder.buffered, 0)

    def test_every_split(self) -> None:
        """Split in two at any position, the stream gives the same maps."""
        for at in range(len(STREAM) + 1):
            decoder = FrameDecoder(MAX_DEVICE_FRAME)
            got = decoder.feed(STREAM[:at]) + decoder.feed(STREAM[at:])
            self.assertEqual(got, EXPECTED, at)

    @examples(200)
    @given(st.lists(st.integers(0, len(STREAM)), max_size=30))
    def test_any_chunks(self, cuts: list[int]) -> None:
        """
        Cut anywhere into any number of chunks, the stream gives the same
        maps, and C{buffered} counts exactly the bytes since the last
        complete frame.
        """
        decoder = FrameDecoder(MAX_DEVICE_FRAME)
        got = []
        edges = [0, *sorted(cuts), len(STREAM)]
        for start, end in pairwise(edges):
            got.extend(decoder.feed(STREAM[start:end]))
            done = max([0, *(e for e in ENDS if e <= end)])
            self.assertEqual(decoder.buffered, end - done)
        self.assertEqual(got, EXPECTED)

    def test_trailing_partial(self) -> None:
        """
        Bytes of an unfinished frame stay buffered and return nothing
        until the frame's last byte arrives.
        """
        last = to_frame(Ping(7))
        for at in range(1, len(last)):
            decoder = FrameDecoder(MAX_DEVICE_FRAME)
            self.assertEqual(decoder.feed(STREAM + last[:at]), EXPECTED)
            self.assertEqual(decoder.buffered, at)
            self.assertEqual(decoder.feed(b""), [])
            self.assertEqual(decoder.buffered, at)
            self.assertEqual(decoder.feed(last[at:]), [{"t": "ping", "n": 7}])
            self.assertEqual(decoder.buffered, 0)

    def test_too_large_header_only(self) -> None:
        """
        A 10 MB length is refused as soon as its 4 header bytes arrive,
        and none of it is kept.
        """
        decoder = FrameDecoder(MAX_DEVICE_FRAME)
        header = length(10 * 1024 * 1024)
        self.assertEqual(decoder.feed(header[:3]), [])
        self.assertEqual(decoder.buffered, 3)
        e = self.assertRaises(ProtocolError, decoder.feed, header[3:])
        self.assertEqual(e.code, "FRAME_TOO_LARGE")
        self.assertEqual(decoder.buffered, 0)

    def test_limit_is_inclusive(self) -> None:
        """
        A frame of exactly the limit decodes; one byte more is refused at
        its header, for both directions' limits.
        """
        for limit in (MAX_DEVICE_FRAME, MAX_SERVER_FRAME):
            decoder = FrameDecoder(limit)
            self.assertEqual(
                decoder.feed(padded(limit))[0]["t"], "ping", limit
            )
            e = self.assertRaises(
                ProtocolError, FrameDecoder(limit).feed, length(limit + 1)
            )
            self.assertEqual(e.code, "FRAME_TOO_LARGE")

    def test_too_large_after_good_frames(self) -> None:
        """An oversized length behind good frames in one chunk is refused."""
        decoder = FrameDecoder(MAX_DEVICE_FRAME)
        e = self.assertRaises(
            ProtocolError,
            decoder.feed,
            STREAM + length(MAX_DEVICE_FRAME + 1),
        )
        self.assertEqual(e.code, "FRAME_TOO_LARGE")
        self.assertEqual(decoder.buffered, 0)

    def test_zero_length(self) -> None:
        """A length of zero is a bad frame."""
        e = self.assertRaises(
            ProtocolError, FrameDecoder(MAX_DEVICE_FRAME).feed, length(0)
        )
        self.assertEqual(e.code, "BAD_FRAME")

    def test_stays_broken(self) -> None:
        """After any error, every later feed raises that same error."""
        for bad in [length(0), length(MAX_DEVICE_FRAME + 1), frame(b"\xc1")]:
            decoder = FrameDecoder(MAX_DEVICE_FRAME)
            first = self.assertRaises(ProtocolError, decoder.feed, bad)
            self.assertEqual(decoder.buffered, 0)
            for later in [b"", to_frame(Ping(1)), STREAM]:
                again = self.assertRaises(ProtocolError, decoder.feed, later)
                self.assertIs(again, first)
                self.assertEqual(decoder.buffered, 0)

    def test_bad_bodies(self) -> None:
        """Every body that is not one map with a string C{t} is BAD_FRAME."""
        ping: bytes = msgpack.packb({"t": "ping", "n": 1})
        cases = [
            ("a byte msgpack never uses", b"\xc1"),
            ("an array", msgpack.packb([1, 2])),
            ("a string", msgpack.packb("hello")),
            ("nil", msgpack.packb(None)),
            ("a map without t", msgpack.packb({"n": 1})),
            ("an integer t", msgpack.packb({"t": 1})),
            ("a nil t", msgpack.packb({"t": None})),
            ("a bin t", msgpack.packb({"t": b"ping"}, use_bin_type=True)),
            ("a bin key t", msgpack.packb({b"t": "ping"}, use_bin_type=True)),
            ("an integer key", msgpack.packb({"t": "ping", 1: 2})),
            ("a map key", b"\x82\xa1t\xa4ping\x80\x01"),
            ("trailing bytes", ping + b"\xc0"),
            ("two maps", ping + ping),
            ("a truncated map", ping[:-1]),
            ("a truncated string", b"\x81\xa1t\xa5ping"),
            ("invalid UTF-8", b"\x81\xa1t\xa2\xff\xfe"),
            ("a UTF-8 surrogate", b"\x81\xa1t\xa3\xed\xa0\x80"),
            (
                "an ext value",
                msgpack.packb({"t": "ping", "x": msgpack.ExtType(1, b"ab")}),
            ),
            (
                "a timestamp",
                msgpack.packb({"t": "ping", "x": msgpack.Timestamp(1, 0)}),
            ),
            # Lengths declared far beyond the body must fail on the
            # declaration, not by allocating for it.
            ("a 4G array", b"\x82\xa1t\xa4ping\xa1x\xdd\xff\xff\xff\xff"),
            ("a 4G map", b"\x82\xa1t\xa4ping\xa1x\xdf\xff\xff\xff\xff"),
            ("a 4G string", b"\x82\xa1t\xa4ping\xa1x\xdb\xff\xff\xff\xff"),
            ("a 4G bin", b"\x82\xa1t\xa4ping\xa1x\xc6\xff\xff\xff\xff"),
        ]
        for why, body in cases:
            decoder = FrameDecoder(MAX_DEVICE_FRAME)
            try:
                got = decoder.feed(frame(body))
            except ProtocolError as e:
                self.assertEqual(e.code, "BAD_FRAME", why)
            else:
                self.fail(f"{why}: decoded as {got!r}")

    def test_deep_nesting(self) -> None:
        """
        Deeply nested arrays or maps within the size limit are a bad frame,
        not a crash or a RecursionError.
        """
        head = b"\x82\xa1t\xa4ping\xa1x"
        cases = [
            (MAX_SERVER_FRAME, head + b"\x91" * 100_000 + b"\xc0"),
            (MAX_DEVICE_FRAME, head + b"\x81\xa1a" * 20_000 + b"\xc0"),
        ]
        for limit, body in cases:
            self.assertLessEqual(len(body), limit)
            e = self.assertRaises(
                ProtocolError, FrameDecoder(limit).feed, frame(body)
            )
            self.assertEqual(e.code, "BAD_FRAME")


# --- messages --------------------------------------------------------------

#: One good map of every type (mostly from the protocol document's
#: sequence), the starting point of every bad case below.
VALID: dict[str, dict[str, Any]] = {
    "hello": {
        "t": "hello",
        "v": 1,
        "instance": "WS_app",
        "device": "d1",
        "secret": "s" * 16,
        "os": "ANDROID",
        "app_version": "1.2.0",
        "points": [["UCHAT", "u:alice", 77, 1040]],
    },
    "welcome": {
        "t": "welcome",
        "v": 1,
        "device": "d1",
        "heartbeat": 30,
        "time": 1767225600000,
    },
    "bind": {"t": "bind", "user": "alice", "session": "sess"},
    "bound": {"t": "bound", "user": "alice", "validated": True},
    "unbind": {"t": "unbind"},
    "sync": {
        "t": "sync",
        "groups": [
            [
                "UCHAT",
                "u:alice",
                77,
                [
                    [1042, [b"hi", "m-9", 1767225590000]],
                    [1050, [b"yo", "m-10", 1767225599000]],
                ],
            ]
        ],
    },
    "ack": {"t": "ack", "points": [["UCHAT", "u:alice", 77, 1050]]},
    "pull": {"t": "pull"},
    "ping": {"t": "ping", "n": 1},
    "pong": {"t": "pong", "n": 1},
    "gap": {
        "t": "gap",
        "biz": "UCHAT",
        "scope": "u:alice",
        "epoch": 77,
        "through": 1050,
        "reason": "retries",
    },
    "error": {"t": "error", "code": "IDLE", "text": "nothing heard"},
}


def with_(name: str, **changes: Any) -> dict[str, Any]:
    """Return the valid C{name} map with C{changes} made."""
    m = copy.deepcopy(VALID[name])
    m.update(changes)
    return m


def without(name: str, key: str) -> dict[str, Any]:
    """Return the valid C{name} map without C{key}."""
    m = copy.deepcopy(VALID[name])
    del m[key]
    return m


def op(raw: Any) -> dict[str, Any]:
    """Return a sync whose one group holds the ops C{raw}."""
    return with_("sync", groups=[["UCHAT", "g", 1, raw]])


def point(raw: Any) -> dict[str, Any]:
    """Return a hello whose one point is C{raw}."""
    return with_("hello", points=[raw])


_BODY = [b"x", "m", 1]

#: Maps that reach L{parse} (each has a string C{t}) yet break a rule.
BAD_MESSAGES: list[tuple[str, dict[str, Any]]] = [
    ("unknown type", {"t": "hullo"}),
    ("empty type", {"t": ""}),
    ("type in capitals", {"t": "HELLO"}),
    ("type with a space", {"t": "ping "}),
    *(
        (f"hello without {key}", without("hello", key))
        for key in ("v", "instance", "device", "secret", "os", "app_version")
    ),
    ("hello v a bool", with_("hello", v=True)),
    ("hello v a string", with_("hello", v="1")),
    ("hello v a float", with_("hello", v=1.0)),
    ("hello v negative", with_("hello", v=-1)),
    ("hello v 2**63", with_("hello", v=2**63)),
    ("hello instance empty", with_("hello", instance="")),
    ("hello instance an int", with_("hello", instance=5)),
    ("hello instance bin", with_("hello", instance=b"WS_app")),
    ("hello device 129 bytes", with_("hello", device="d" * 129)),
    # 65 characters, but 130 bytes: the limit counts bytes.
    ("hello device 130 UTF-8 bytes", with_("hello", device="é" * 65)),
    ("hello device with NUL", with_("hello", device="d\x00")),
    ("hello device with newline", with_("hello", device="d\n")),
    ("hello device with 0x1f", with_("hello", device="\x1f")),
    ("hello secret 15 bytes", with_("hello", secret="s" * 15)),
    ("hello secret 129 bytes", with_("hello", secret="s" * 129)),
    ("hello os empty", with_("hello", os="")),
    ("hello os 17 bytes", with_("hello", os="A" * 17)),
    ("hello app_version 65 bytes", with_("hello", app_version="1" * 65)),
    ("hello app_key an int", with_("hello", app_key=1)),
    ("hello app_key with a tab", with_("hello", app_key="k\t")),
    ("hello user 129 bytes", with_("hello", user="u" * 129)),
    ("hello session 513 bytes", with_("hello", session="s" * 513)),
    ("hello session a list", with_("hello", session=["s"])),
    ("hello points nil", with_("hello", points=None)),
    ("hello points a map", with_("hello", points={})),
    ("hello points a string", with_("hello", points="x")),
    (
        "hello too many points",
        with_("hello", points=[["B", "g", 0, 0]] * (MAX_POINTS + 1)),
    ),
    ("point not an array", point("UCHAT")),
    ("point of 3", point(["UCHAT", "g", 1])),
    ("point of 5", point(["UCHAT", "g", 1, 2, 3])),
    ("point biz empty", point(["", "g", 1, 2])),
    ("point biz 65 bytes", point(["B" * 65, "g", 1, 2])),
    ("point biz with a tab", point(["B\t", "g", 1, 2])),
    ("point biz an int", point([1, "g", 1, 2])),
    ("point scope empty", point(["B", "", 1, 2])),
    ("point scope 131 bytes", point(["B", "s" * 131, 1, 2])),
    ("point epoch negative", point(["B", "g", -1, 2])),
    ("point epoch a bool", point(["B", "g", True, 2])),
    ("point op_id 2**63", point(["B", "g", 1, 2**63])),
    ("point op_id a string", point(["B", "g", 1, "2"])),
    ("point op_id nil", point(["B", "g", 1, None])),
    ("welcome without device", without("welcome", "device")),
    ("welcome without v", without("welcome", "v")),
    ("welcome without time", without("welcome", "time")),
    ("welcome heartbeat 0", with_("welcome", heartbeat=0)),
    ("welcome heartbeat 3601", with_("welcome", heartbeat=3601)),
    ("welcome heartbeat a bool", with_("welcome", heartbeat=True)),
    ("welcome time negative", with_("welcome", time=-1)),
    ("bind without user", without("bind", "user")),
    ("bind without session", without("bind", "session")),
    ("bind user empty", with_("bind", user="")),
    ("bind session empty", with_("bind", session="")),
    ("bind session 513 bytes", with_("bind", session="s" * 513)),
    ("bind user an int", with_("bind", user=1)),
    ("bound validated an int", with_("bound", validated=1)),
    ("bound validated a string", with_("bound", validated="yes")),
    ("bound user an int", with_("bound", user=5)),
    ("bound user with ESC", with_("bound", user="\x1b")),
    ("sync groups nil", with_("sync", groups=None)),
    ("sync groups a map", with_("sync", groups={})),
    ("group not an array", with_("sync", groups=["UCHAT"])),
    ("group of 3", with_("sync", groups=[["UCHAT", "g", 1]])),
    ("group of 5", with_("sync", groups=[["UCHAT", "g", 1, [], 0]])),
    ("group biz empty", with_("sync", groups=[["", "g", 1, []]])),
    ("group scope an int", with_("sync", groups=[["B", 1, 1, []]])),
    ("group epoch negative", with_("sync", groups=[["B", "g", -1, []]])),
    ("group ops a map", op({})),
    ("group ops nil", op(None)),
    ("op not an array", op([5])),
    ("op of 1", op([[5]])),
    ("op of 3", op([[5, _BODY, 0]])),
    ("op body not an array", op([[5, b"x"]])),
    ("op body of 2", op([[5, [b"x", "m"]]])),
    ("op body of 4", op([[5, [b"x", "m", 1, 2]]])),
    ("op id 0", op([[0, _BODY]])),
    ("op id negative", op([[-1, _BODY]])),
    ("op id a bool", op([[True, _BODY]])),
    ("op id a string", op([["5", _BODY]])),
    ("op payload a string", op([[5, ["x", "m", 1]]])),
    ("op third_msg_id bin", op([[5, [b"x", b"m", 1]]])),
    ("op created a bool", op([[5, [b"x", "m", False]]])),
    ("op created a string", op([[5, [b"x", "m", "1"]]])),
    ("op created a float", op([[5, [b"x", "m", 1.0]]])),
    ("op ids equal", op([[5, _BODY], [5, _BODY]])),
    ("op ids decreasing", op([[6, _BODY], [5, _BODY]])),
    ("op ids dip after rising", op([[1, _BODY], [3, _BODY], [2, _BODY]])),
    ("ack points nil", with_("ack", points=None)),
    ("ack points an int", with_("ack", points=3)),
    ("ack bad point", with_("ack", points=[["B", "g", 1, -5]])),
    (
        "ack too many points",
        with_("ack", points=[["B", "g", 0, 0]] * (MAX_POINTS + 1)),
    ),
    *(
        (f"{name} n {why}", bad)
        for name in ("ping", "pong")
        for why, bad in [
            ("missing", without(name, "n")),
            ("nil", with_(name, n=None)),
            ("a bool", with_(name, n=True)),
            ("negative", with_(name, n=-1)),
            ("2**63", with_(name, n=2**63)),
            ("a float", with_(name, n=1.5)),
            ("a string", with_(name, n="1")),
        ]
    ),
    ("gap reason unknown", with_("gap", reason="later")),
    ("gap reason in capitals", with_("gap", reason="EXPIRED")),
    ("gap reason empty", with_("gap", reason="")),
    ("gap reason an int", with_("gap", reason=1)),
    ("gap without reason", without("gap", "reason")),
    ("gap without biz", without("gap", "biz")),
    ("gap without through", without("gap", "through")),
    ("gap through negative", with_("gap", through=-1)),
    ("gap epoch a bool", with_("gap", epoch=False)),
    ("gap scope 131 bytes", with_("gap", scope="s" * 131)),
    ("error without code", without("error", "code")),
    ("error without text", without("error", "text")),
    ("error code empty", with_("error", code="")),
    ("error code 65 bytes", with_("error", code="C" * 65)),
    ("error code nil", with_("error", code=None)),
    ("error text 1025 bytes", with_("error", text="x" * 1025)),
    ("error text an int", with_("error", text=5)),
    ("error text with a newline", with_("error", text="a\nb")),
]

#: Maps at the edge of every limit, with what they parse to.
EDGES: list[tuple[dict[str, Any], Message]] = [
    (
        with_(
            "hello",
            v=U63,
            instance="i" * 128,
            device="é" * 64,
            secret="s" * 16,
            os="A" * 16,
            app_version="1" * 64,
            app_key="",
            user="u" * 128,
            session="s" * 512,
            points=[
                ["B" * 64, "s" * 130, U63, 0],
                *[["B", "g", 0, 0]] * (MAX_POINTS - 1),
            ],
        ),
        Hello(
            version=U63,
            instance="i" * 128,
            device="é" * 64,
            secret="s" * 16,
            os="A" * 16,
            app_version="1" * 64,
            user="u" * 128,
            session="s" * 512,
            points=(
                Point("B" * 64, "s" * 130, U63, 0),
                *(Point("B", "g", 0, 0),) * (MAX_POINTS - 1),
            ),
        ),
    ),
    # Optional fields may be nil, and DEL is not a C0 control.
    (
        with_("hello", app_key=None, user=None, session=None, os="\x7f"),
        Hello(
            "WS_app",
            "d1",
            "s" * 16,
            "\x7f",
            "1.2.0",
            (Point("UCHAT", "u:alice", 77, 1040),),
        ),
    ),
    (
        without("hello", "points"),
        Hello("WS_app", "d1", "s" * 16, "ANDROID", "1.2.0"),
    ),
    (with_("welcome", heartbeat=1), Welcome("d1", 1, 1767225600000, 1)),
    (with_("welcome", heartbeat=3600), Welcome("d1", 3600, 1767225600000, 1)),
    (with_("bound", user="", validated=None), Bound("", None)),
    (without("bound", "user"), Bound("", True)),
    (with_("ping", n=0), Ping(0)),
    (with_("pong", n=U63), Pong(U63)),
    (
        op([[U63, [b"", "", 0]]]),
        Sync((Group("UCHAT", "g", 1, (WireOp(U63, b"", "", 0),)),)),
    ),
    (with_("sync", groups=[]), Sync(())),
    (with_("error", code="C" * 64, text=""), Error("C" * 64, "")),
    (with_("error", text="x" * 1024), Error("IDLE", "x" * 1024)),
]


class MessageTests(SynchronousTestCase):
    """How messages are written as frames and parsed back."""

    def test_every_type_has_a_strategy(self) -> None:
        """The round-trip strategies and the valid maps cover every type."""
        self.assertEqual(set(MESSAGES), TYPES)
        self.assertEqual(set(VALID), TYPES)

    def round_trip(self, name: str) -> None:
        """Check that messages of type C{name} survive the wire."""

        @examples(60)
        @given(MESSAGES[name])
        def check(message: Message) -> None:
            self.assertEqual(to_map(message)["t"], name)
            self.assertEqual(through_wire(to_frame(message)), [message])

        check()

    def test_round_trip(self) -> None:
        """
        Every message of every type survives L{to_frame}, the decoder and
        L{parse} unchanged.
        """
        for name in sorted(TYPES):
            self.round_trip(name)

    @examples(150)
    @given(syncs)
    def test_encode_sync(self, sync: Sync) -> None:
        """
        A sync spliced by L{encode_sync} from L{op_body} bodies decodes
        to the same map, and parses to the same L{Sync}, as L{to_frame}.
        """
        spliced = encode_sync(
            [
                (
                    g.biz,
                    g.scope,
                    g.epoch,
                    [
                        (
                            o.op_id,
                            op_body(o.payload, o.third_msg_id, o.created_ms),
                        )
                        for o in g.ops
                    ],
                )
                for g in sync.groups
            ]
        )
        plain = to_frame(sync)
        self.assertEqual(
            FrameDecoder(MAX_SERVER_FRAME).feed(spliced),
            FrameDecoder(MAX_SERVER_FRAME).feed(plain),
        )
        self.assertEqual(through_wire(spliced), [sync])

    def test_encode_sync_long_arrays(self) -> None:
        """
        L{encode_sync} writes the 16- and 32-bit array headers that many
        groups and many ops need, as L{to_frame} does.
        """
        body = op_body(b"", "", 0)
        sizes = [0, 1, 15, 16, 300]
        many = [
            ("B", "g", n, [(i + 1, body) for i in range(n)]) for n in sizes
        ]
        many += [("B", "g", 0, [])] * 12
        huge = [("B", "g", 0, [(i + 1, body) for i in range(70_000)])]
        for spliced in (encode_sync(many), encode_sync(huge)):
            (got,) = through_wire(spliced)
            self.assertIsInstance(got, Sync)
            self.assertEqual(to_frame(got), spliced)

    def test_valid_maps(self) -> None:
        """Each valid map parses, so each bad case breaks only its change."""
        for name, m in VALID.items():
            self.assertEqual(to_map(parse_map(m))["t"], name)
        self.assertEqual(
            parse_map(VALID["sync"]),
            Sync(
                (
                    Group(
                        "UCHAT",
                        "u:alice",
                        77,
                        (
                            WireOp(1042, b"hi", "m-9", 1767225590000),
                            WireOp(1050, b"yo", "m-10", 1767225599000),
                        ),
                    ),
                )
            ),
        )

    def test_field_rules(self) -> None:
        """Every broken field rule is a BAD_MESSAGE protocol error."""
        for why, m in BAD_MESSAGES:
            try:
                parsed = parse_map(m)
            except ProtocolError as e:
                self.assertEqual(e.code, "BAD_MESSAGE", why)
            else:
                self.fail(f"{why}: parsed as {parsed!r}")

    def test_edges(self) -> None:
        """Values at the very edge of every limit are accepted."""
        for m, expected in EDGES:
            self.assertEqual(parse_map(m), expected)

    def test_unknown_keys_ignored(self) -> None:
        """Keys a message does not define are ignored, whatever they hold."""
        extra = {"zz": [1, {"x": b"\x00"}], "future": None, "T": "hello"}
        for m in VALID.values():
            self.assertEqual(parse_map({**m, **extra}), parse_map(m))


# --- fuzzing ---------------------------------------------------------------


def leaves(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Return the path to every value inside C{value}, C{value} first."""
    found = [at]
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return found
    for key, inner in items:
        found.extend(leaves(inner, (*at, key)))
    return found


def replaced(
    m: dict[str, Any], at: tuple[Any, ...], new: Any
) -> dict[str, Any]:
    """Return a copy of C{m} with the value at path C{at} set to C{new}."""
    out = copy.deepcopy(m)
    inner = out
    for key in at[:-1]:
        inner = inner[key]
    inner[at[-1]] = new
    return out


@st.composite
def near_valid(draw: Callable[..., Any]) -> dict[str, Any]:
    """
    A valid map with one value, anywhere in it but C{t}, replaced; a
    type without fields gets an unknown key instead.
    """
    m = VALID[draw(st.sampled_from(sorted(VALID)))]
    paths = [p for p in leaves(m) if p and p != ("t",)]
    if not paths:
        return {**m, "x": draw(msgpack_values)}
    return replaced(m, draw(st.sampled_from(paths)), draw(msgpack_values))


#: Every key some message defines, besides C{t}.
_KEYS = sorted({k for m in VALID.values() for k in m} - {"t"})

#: Maps with a string C{t} that break the rules near and far: one value
#: of a valid map replaced, a ping with random keys, and a real type
#: with real keys holding random values.
odd_maps = st.one_of(
    near_valid(),
    st.dictionaries(st.text(max_size=8), msgpack_values).map(
        lambda d: {**d, "t": "ping"}
    ),
    st.builds(
        lambda t, d: {**d, "t": t},
        st.sampled_from(sorted(TYPES)),
        st.dictionaries(st.sampled_from(_KEYS), msgpack_values),
    ),
)


def survive(test: SynchronousTestCase, data: bytes, chunks: int = 1) -> int:
    """
    Feed C{data} to a device-side decoder in about C{chunks} pieces and
    parse what it gives, letting only a L{ProtocolError} stop it.

    @return: how many messages parsed.
    """
    decoder = FrameDecoder(MAX_DEVICE_FRAME)
    step = max(1, len(data) // chunks)
    parsed = 0
    try:
        for at in range(0, max(len(data), 1), step):
            for m in decoder.feed(data[at : at + step]):
                parse(m)
                parsed += 1
            test.assertLessEqual(decoder.buffered, MAX_DEVICE_FRAME + HEADER)
    except ProtocolError as e:
        test.assertIn(e.code, ERROR_CODES)
    return parsed


#: Good frames for the random fuzz to mutate.
_CORPUS = [encode(m) for m in VALID.values()] + _FRAMES

#: The start of every two-key map of a real type and a key some message
#: defines: a random body behind one of these is that key's value.
_HEADS = [
    b"\x82" + msgpack.packb("t") + msgpack.packb(t) + msgpack.packb(key)
    for t in sorted(TYPES)
    for key in _KEYS
]


class FuzzTests(SynchronousTestCase):
    """Whatever bytes arrive, the codec fails only with L{ProtocolError}."""

    @examples(300)
    @given(st.binary(max_size=400), st.integers(1, 8))
    def test_any_bytes(self, data: bytes, chunks: int) -> None:
        """Arbitrary bytes raise nothing but L{ProtocolError}."""
        survive(self, data, chunks)

    @examples(300)
    @given(st.lists(st.binary(min_size=1, max_size=100), max_size=5))
    def test_any_bodies(self, bodies: list[bytes]) -> None:
        """Well-framed arbitrary bodies raise nothing but L{ProtocolError}."""
        survive(self, b"".join(frame(b) for b in bodies), 3)

    @examples(400)
    @given(odd_maps)
    def test_any_map(self, m: dict[str, Any]) -> None:
        """
        Any msgpack map with a string C{t}, however wrong its fields, parses
        or raises L{ProtocolError}.
        """
        try:
            parse_map(m)
        except ProtocolError as e:
            self.assertEqual(e.code, "BAD_MESSAGE")

    @examples(100)
    @given(
        st.lists(
            st.integers(MAX_DEVICE_FRAME - 300, MAX_DEVICE_FRAME), max_size=3
        ),
        st.integers(1000, 40_000),
    )
    def test_buffer_bound(self, sizes: list[int], chunk: int) -> None:
        """
        Frames near the limit, fed in large chunks, never leave more than
        one frame's worth of bytes buffered.
        """
        data = b"".join(padded(n) for n in sizes)
        decoder = FrameDecoder(MAX_DEVICE_FRAME)
        got = []
        for at in range(0, len(data), chunk):
            got.extend(decoder.feed(data[at : at + chunk]))
            self.assertLessEqual(decoder.buffered, MAX_DEVICE_FRAME + HEADER)
        self.assertEqual(len(got), len(sizes))

    def test_random_bytes(self) -> None:
        """
        Twenty thousand seeded random inputs (noise, noise framed with a
        true length, and good frames with a few bytes damaged) raise
        nothing but L{ProtocolError}, and some still parse.
        """
        rng = random.Random(20250101)
        parsed = 0
        for _ in range(20_000):
            kind = rng.randrange(3)
            if kind == 0:
                data = rng.randbytes(rng.randrange(301))
            elif kind == 1:
                # Half of these bodies are a map with a real type and a
                # real key, so that short noise often makes one whole
                # value and reaches the field checks.
                body = rng.randbytes(rng.choice([1, 2, 3, 5, 9, 200]))
                if rng.random() < 0.5:
                    body = rng.choice(_HEADS) + body
                tail = rng.randbytes(rng.randrange(8))
                data = length(len(body)) + body + tail
            else:
                damaged = bytearray(rng.choice(_CORPUS))
                for _ in range(rng.randrange(1, 4)):
                    at = rng.randrange(len(damaged))
                    how = rng.randrange(3)
                    if how == 0:
                        damaged[at] = rng.randrange(256)
                    elif how == 1:
                        del damaged[at]
                    else:
                        damaged.insert(at, rng.randrange(256))
                data = bytes(damaged)
            parsed += survive(self, data, rng.randrange(1, 4))
        # A damaged frame that still parses proves the fuzz reaches parse.
        self.assertGreater(parsed, 0)


# --- the protocol document -------------------------------------------------


class DocumentTests(SynchronousTestCase):
    """C{docs/protocol.md} names everything the code speaks."""

    def setUp(self) -> None:
        self.doc = PROTOCOL_DOC.read_text(encoding="utf-8")
        self.quoted = set(re.findall(r"`([^`\n]+)`", self.doc))

    def headings(self, text: str) -> set[str]:
        """Every name quoted in a C{###} heading of C{text}."""
        names: set[str] = set()
        for line in text.splitlines():
            if line.startswith("### "):
                names.update(re.findall(r"`([^`]+)`", line))
        return names

    def test_every_type_has_a_heading(self) -> None:
        """Every message type is quoted in a C{###} heading."""
        self.assertEqual(TYPES - self.headings(self.doc), set())

    def test_every_message_heading_is_a_type(self) -> None:
        """The Messages section's headings quote the types and nothing else."""
        section = self.doc.split("\n## Messages\n", 1)[1].split("\n## ")[0]
        self.assertEqual(self.headings(section), TYPES)

    def test_every_error_code(self) -> None:
        """Every error code is quoted in the document, in its code table."""
        self.assertEqual(ERROR_CODES - self.quoted, set())
        table = set(re.findall(r"^\| `([A-Z_]+)` \|", self.doc, re.M))
        self.assertEqual(table, ERROR_CODES)

    def test_every_gap_reason(self) -> None:
        """Every gap reason is quoted in the document."""
        self.assertEqual(GAP_REASONS - self.quoted, set())
