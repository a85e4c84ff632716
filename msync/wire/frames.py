"""
Frames: a 4-byte big-endian length, then one msgpack map of that length.

Sans-IO: L{FrameDecoder} takes bytes and returns decoded maps; L{encode}
returns bytes.  Every failure to read a frame is one L{ProtocolError}
with a code from C{docs/protocol.md}.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

#: The largest frame a device may send the server.
MAX_DEVICE_FRAME = 64 * 1024

#: The largest frame the server sends a device.
MAX_SERVER_FRAME = 1024 * 1024

_LENGTH = struct.Struct(">I")
HEADER = _LENGTH.size


class ProtocolError(Exception):
    """
    The peer broke the protocol.  C{code} is the C{error} frame's code,
    C{text} says what was wrong for a person.
    """

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class FrameDecoder:
    """
    Turns a byte stream into msgpack maps, checking each length against
    C{max_frame} before buffering the frame's body.

    After an error the decoder stays broken: the connection must close.
    """

    def __init__(self, max_frame: int) -> None:
        self._max = max_frame
        self._buffer = bytearray()
        self._broken: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """How many bytes wait for the rest of their frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """
        Take C{data} and return every map it completes, in order.

        @raise ProtocolError: on a bad length or an undecodable body.
        """
        if self._broken is not None:
            raise self._broken
        self._buffer += data
        out: list[dict[str, Any]] = []
        view = self._buffer
        at = 0
        try:
            while len(view) - at >= HEADER:
                (length,) = _LENGTH.unpack_from(view, at)
                if length == 0:
                    raise ProtocolError("BAD_FRAME", "empty frame")
                if length > self._max:
                    raise ProtocolError(
                        "FRAME_TOO_LARGE",
                        f"frame of {length} bytes; the limit is {self._max}",
                    )
                end = at + HEADER + length
                if len(view) < end:
                    break
                out.append(decode_body(bytes(view[at + HEADER : end])))
                at = end
        except ProtocolError as e:
            self._broken = e
            self._buffer = bytearray()
            raise
        del self._buffer[:at]
        return out


def decode_body(body: bytes) -> dict[str, Any]:
    """
    Decode one frame body: exactly one msgpack map with a string C{t}.

    @raise ProtocolError: if it is anything else.
    """
    limit = len(body)
    try:
        value = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=limit,
            max_map_len=limit,
            max_ext_len=0,
        )
    except Exception as e:
        # msgpack raises many types (ExtraData, FormatError, ValueError,
        # RecursionError...): whatever it is, the frame is bad.
        raise ProtocolError(
            "BAD_FRAME", f"not a msgpack value: {type(e).__name__}"
        ) from e
    if not isinstance(value, dict):
        raise ProtocolError("BAD_FRAME", "a frame must hold a map")
    if not isinstance(value.get("t"), str):
        raise ProtocolError("BAD_FRAME", "a frame needs a string 't'")
    return value


def encode(message: dict[str, Any]) -> bytes:
    """Return C{message} as one frame."""
    body: bytes = msgpack.packb(message, use_bin_type=True)
    return _LENGTH.pack(len(body)) + body


def frame(body: bytes) -> bytes:
    """Return an already-encoded msgpack map as one frame."""
    return _LENGTH.pack(len(body)) + body
