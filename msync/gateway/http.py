"""
A lean HTTP/1.1 request reader for C{POST /gateway.do}, sans-IO: bytes
in, events out, no sockets and no clock.

It reads only what the gateway needs, strictly: the request line, the
headers, and a body framed by C{Content-Length} or chunked transfer
coding, every length checked against its limit before anything more is
buffered.  A request for anything but C{POST /gateway.do} is not read at
all: the reader gives back every byte from its first one (L{Foreign}) so
that a full HTTP server (twisted.web) can take the connection over.

Events, in the order their requests arrived (pipelining keeps them in
order):

  - L{Request}: a whole gateway request;
  - L{Continue}: the client waits for C{100 Continue} before its body;
  - L{Refusal}: the stream cannot be read further (malformed, or over a
    limit): answer with its status and close;
  - L{Foreign}: a request for another route, and everything after it.

After a L{Refusal} or a L{Foreign} the reader takes no more input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = [
    "MAX_HEAD",
    "Continue",
    "Foreign",
    "Refusal",
    "Request",
    "RequestReader",
    "response",
    "too_large",
]

#: The largest request line plus headers read, in bytes.
MAX_HEAD = 16 * 1024

#: The most headers a request may carry.
MAX_HEADERS = 100

# A chunk-size line is a few hex digits and perhaps an extension.
_MAX_CHUNK_LINE = 1024

_PATH = b"/gateway.do"
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DIGITS = re.compile(rb"[0-9]{1,19}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

_REASONS = {
    100: b"Continue",
    200: b"OK",
    400: b"Bad Request",
    413: b"Payload Too Large",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
}


@dataclass(frozen=True, slots=True)
class Request:
    """One whole C{POST /gateway.do}."""

    target: bytes
    headers: dict[bytes, bytes]
    """Lower-cased names; a repeated header keeps its last value."""
    body: bytes
    keep_alive: bool

    @property
    def query(self) -> bytes:
        """The query string, undecoded (empty if there is none)."""
        return self.target.partition(b"?")[2]


@dataclass(frozen=True, slots=True)
class Continue:
    """The client sent C{Expect: 100-continue} and waits for the nod."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """The stream is unreadable from here: answer C{status} and close."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Foreign:
    """A request for another route: C{data} is it and all that follows."""

    data: bytes


Event = Request | Continue | Refusal | Foreign


@dataclass(slots=True)
class _Head:
    target: bytes
    headers: dict[bytes, bytes]
    keep_alive: bool
    length: int | None
    """The body's length; None for a chunked body."""


class RequestReader:
    """Reads gateway requests from a byte stream; see the module."""

    def __init__(self, max_body: int, max_head: int = MAX_HEAD) -> None:
        self._max_body = max_body
        self._max_head = max_head
        self._buffer = bytearray()
        self._head: _Head | None = None
        self._chunks: list[bytes] = []
        self._chunked_size = 0
        self._in_trailers = False
        self._done = False

    def feed(self, data: bytes) -> list[Event]:
        """Take more bytes; return the events they complete."""
        if self._done:
            return []
        self._buffer += data
        events: list[Event] = []
        while not self._done:
            event = self._next()
            if event is None:
                break
            events.append(event)
            if isinstance(event, Refusal | Foreign):
                self._done = True
                self._buffer.clear()
        return events

    def _next(self) -> Event | None:
        if self._head is None:
            return self._read_head()
        if self._head.length is None:
            return self._read_chunked()
        return self._read_sized(self._head.length)

    # --- the head ----------------------------------------------------

    def _read_head(self) -> Event | None:
        buffer = self._buffer
        # Empty lines between requests are tolerated, as RFC 9112 asks.
        while buffer.startswith(b"\r\n"):
            del buffer[:2]
        line_end = buffer.find(b"\r\n", 0, self._max_head)
        if line_end < 0:
            if len(buffer) >= self._max_head:
                return self._foreign_or(431, "request line too long")
            return None
        line = bytes(buffer[:line_end])
        method, _, rest = line.partition(b" ")
        target, _, version = rest.partition(b" ")
        path = target.partition(b"?")[0]
        if method != b"POST" or path != _PATH or version not in _VERSIONS:
            return Foreign(bytes(buffer))

        end = buffer.find(b"\r\n\r\n", line_end, self._max_head + 2)
        if end < 0:
            if len(buffer) >= self._max_head:
                return Refusal(431, "request head too large")
            return None
        if _CONTROL.search(target) or b" " in target:
            return Refusal(400, "bad request target")
        lines = bytes(buffer[line_end + 2 : end]).split(b"\r\n")
        del buffer[: end + 4]
        if len(lines) > MAX_HEADERS:
            return Refusal(431, "too many headers")
        headers: dict[bytes, bytes] = {}
        joined: dict[bytes, bytes] = {}
        for header in lines:
            if not header:
                continue
            name, colon, value = header.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                return Refusal(400, "malformed header")
            value = value.strip(b" \t")
            if _CONTROL.search(value):
                return Refusal(400, "control character in a header")
            name = name.lower()
            # The request keeps the last value, as twisted.web's
            # getHeader gives it; framing looks at every value.
            headers[name] = value
            if name in joined:
                joined[name] += b", " + value
            else:
                joined[name] = value
        return self._framing(target, version, headers, joined)

    def _foreign_or(self, status: int, reason: str) -> Event:
        # A long first line that is plainly not ours is twisted.web's to
        # refuse, as it refuses every other route's errors.
        if not self._buffer.startswith(b"POST " + _PATH + b"?"):
            return Foreign(bytes(self._buffer))
        return Refusal(status, reason)

    def _framing(
        self,
        target: bytes,
        version: bytes,
        headers: dict[bytes, bytes],
        joined: dict[bytes, bytes],
    ) -> Event | None:
        tokens = {
            t.strip().lower()
            for t in joined.get(b"connection", b"").split(b",")
        }
        if version == b"HTTP/1.1":
            keep_alive = b"close" not in tokens
        else:
            keep_alive = b"keep-alive" in tokens
        coding = joined.get(b"transfer-encoding")
        declared = joined.get(b"content-length")
        length: int | None
        if coding is not None:
            # Both framings at once is how requests are smuggled.
            if declared is not None:
                return Refusal(400, "both Content-Length and chunked")
            if coding.lower() != b"chunked" or version != b"HTTP/1.1":
                return Refusal(501, "unsupported transfer coding")
            length = None
        elif declared is not None:
            values = {v.strip() for v in declared.split(b",")}
            if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
                return Refusal(400, "bad Content-Length")
            length = int(next(iter(values)))
            if length > self._max_body:
                return Refusal(413, "body too large")
        else:
            length = 0
        self._head = _Head(target, headers, keep_alive, length)
        self._chunks = []
        self._chunked_size = 0
        self._in_trailers = False
        expect = joined.get(b"expect", b"").lower()
        if expect == b"100-continue" and length != 0:
            return Continue()
        return self._next()

    # --- the body ----------------------------------------------------

    def _read_sized(self, length: int) -> Event | None:
        if len(self._buffer) < length:
            return None
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return self._finish(body)

    def _read_chunked(self) -> Event | None:
        buffer = self._buffer
        while True:
            if self._in_trailers:
                end = buffer.find(b"\r\n", 0, self._max_head)
                if end < 0:
                    if len(buffer) >= self._max_head:
                        return Refusal(431, "trailers too large")
                    return None
                del buffer[: end + 2]
                if end == 0:
                    return self._finish(b"".join(self._chunks))
                continue

            end = buffer.find(b"\r\n", 0, _MAX_CHUNK_LINE)
            if end < 0:
                if len(buffer) >= _MAX_CHUNK_LINE:
                    return Refusal(400, "chunk size line too long")
                return None
            size_text = bytes(buffer[:end]).partition(b";")[0].strip()
            if not _HEX.fullmatch(size_text):
                return Refusal(400, "bad chunk size")
            size = int(size_text, 16)
            if self._chunked_size + size > self._max_body:
                return Refusal(413, "body too large")
            if size == 0:
                del buffer[: end + 2]
                self._in_trailers = True
                continue
            if len(buffer) < end + 2 + size + 2:
                return None
            start = end + 2
            if buffer[start + size : start + size + 2] != b"\r\n":
                return Refusal(400, "chunk not followed by CRLF")
            self._chunks.append(bytes(buffer[start : start + size]))
            self._chunked_size += size
            del buffer[: start + size + 2]

    def _finish(self, body: bytes) -> Request:
        head = self._head
        assert head is not None
        self._head = None
        self._chunks = []
        return Request(head.target, head.headers, body, head.keep_alive)


def response(
    status: int,
    body: bytes,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    keep_alive: bool = True,
) -> bytes:
    """The bytes of one HTTP/1.1 response with a sized body."""
    lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error"))]
    lines.extend(name + b": " + value for name, value in headers)
    if not keep_alive:
        lines.append(b"Connection: close")
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def continue_response() -> bytes:
    """The interim response a client sending C{Expect} waits for."""
    return b"HTTP/1.1 100 Continue\r\n\r\n"


def too_large(limit: int) -> bytes:
    """The answer to a body over C{limit}: 413, then the close."""
    body = json.dumps(
        {"error": "request body too large", "limit": limit},
        separators=(",", ":"),
    ).encode()
    return response(
        413, body, ((b"Content-Type", b"application/json"),), False
    )


def refusal_response(refusal: Refusal, max_body: int) -> bytes:
    """The answer to an unreadable stream, then the close."""
    if refusal.status == 413:
        return too_large(max_body)
    body = json.dumps(
        {"error": refusal.reason}, separators=(",", ":")
    ).encode()
    return response(
        refusal.status, body, ((b"Content-Type", b"application/json"),), False
    )
