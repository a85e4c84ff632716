"""The lean gateway HTTP reader, bytes in, events out, and its channel."""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlencode

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from msync.delivery.sender import Sender
from msync.gateway import signing
from msync.gateway.app import METHOD, GatewayApp
from msync.gateway.http import (
    Continue,
    Event,
    Foreign,
    Refusal,
    Request,
    RequestReader,
    too_large,
)
from msync.gateway.lean import MAX_PIPELINED, GatewayChannel, GatewayFactory
from msync.gateway.workers import default_count
from msync.metrics import Metrics
from msync.model import AccessKey
from msync.web import RootApp, front, site
from tests.delivery_world import INSTANCE, World

LIMIT = 1024


def post(body: bytes, query: bytes = b"a=1", extra: bytes = b"") -> bytes:
    """A sized gateway request."""
    return (
        b"POST /gateway.do?" + query + b" HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def chunked(body: bytes, size: int = 3) -> bytes:
    """A chunked gateway request, in chunks of C{size} bytes."""
    parts = [
        b"%x;ext=1\r\n" % len(body[i : i + size])
        + body[i : i + size]
        + b"\r\n"
        for i in range(0, len(body), size)
    ]
    return (
        b"POST /gateway.do HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + b"".join(parts)
        + b"0\r\nX-Trailer: 1\r\n\r\n"
    )


def read(data: bytes, limit: int = LIMIT) -> list[Event]:
    """Every event of C{data} fed at once."""
    return RequestReader(limit).feed(data)


def read_bytewise(data: bytes, limit: int = LIMIT) -> list[Event]:
    """Every event of C{data} fed one byte at a time."""
    reader = RequestReader(limit)
    events: list[Event] = []
    for i in range(len(data)):
        events.extend(reader.feed(data[i : i + 1]))
    return events


class ReaderTests(SynchronousTestCase):
    """L{RequestReader}: framing, limits and refusals."""

    def test_sized(self) -> None:
        """A sized request gives its query, headers and body."""
        [event] = read(post(b"x=1&y=2"))
        assert isinstance(event, Request)
        self.assertEqual(event.query, b"a=1")
        self.assertEqual(event.body, b"x=1&y=2")
        self.assertEqual(
            event.headers[b"content-type"],
            b"application/x-www-form-urlencoded",
        )
        self.assertTrue(event.keep_alive)

    def test_repeated_header(self) -> None:
        """A repeated header keeps its last value, as twisted.web's
        getHeader has it; repeated lengths must agree."""
        [event] = read(post(b"", extra=b"Content-Type: text/plain\r\n"))
        assert isinstance(event, Request)
        self.assertEqual(event.headers[b"content-type"], b"text/plain")
        [same] = read(post(b"ab", extra=b"Content-Length: 2\r\n"))
        assert isinstance(same, Request)
        self.assertEqual(same.body, b"ab")

    def test_bytewise(self) -> None:
        """Fed one byte at a time, the same requests come out."""
        data = post(b"x=1") + chunked(b"hello world") + post(b"")
        self.assertEqual(read_bytewise(data), read(data))
        self.assertEqual(len(read(data)), 3)

    def test_chunked(self) -> None:
        """A chunked body is joined; extensions and trailers are skipped."""
        [event] = read(chunked(b"payload=abcdefg"))
        assert isinstance(event, Request)
        self.assertEqual(event.body, b"payload=abcdefg")

    def test_pipelined(self) -> None:
        """Requests sent back to back come out in order."""
        data = b"".join(post(b"n=%d" % i) for i in range(5))
        bodies = [e.body for e in read(data) if isinstance(e, Request)]
        self.assertEqual(bodies, [b"n=%d" % i for i in range(5)])

    def test_partial(self) -> None:
        """Half a request gives nothing yet; the rest completes it."""
        data = post(b"x=1")
        reader = RequestReader(LIMIT)
        self.assertEqual(reader.feed(data[:-2]), [])
        [event] = reader.feed(data[-2:])
        assert isinstance(event, Request)
        self.assertEqual(event.body, b"x=1")

    def test_declared_too_large(self) -> None:
        """A declared length over the limit is refused before the body."""
        head = b"POST /gateway.do HTTP/1.1\r\nContent-Length: 1025\r\n\r\n"
        self.assertEqual(read(head), [Refusal(413, "body too large")])

    def test_chunked_too_large(self) -> None:
        """Chunks adding up to more than the limit are refused."""
        events = read(chunked(b"x" * 1100, size=500))
        self.assertEqual(events, [Refusal(413, "body too large")])

    def test_limit_exact(self) -> None:
        """A body of exactly the limit is read."""
        [event] = read(post(b"x" * LIMIT))
        assert isinstance(event, Request)
        self.assertEqual(len(event.body), LIMIT)

    def test_malformed(self) -> None:
        """Malformed framing is refused with 400 (or 501, 431)."""
        cases = {
            b"Content-Length: abc\r\n": 400,
            b"Content-Length: 1\r\nContent-Length: 2\r\n": 400,
            b"Content-Length: -1\r\n": 400,
            b"Transfer-Encoding: chunked\r\nContent-Length: 1\r\n": 400,
            b"Transfer-Encoding: gzip\r\n": 501,
            b"Bad Header: 1\r\n": 400,
            b" folded: 1\r\n": 400,
            b"NoColon\r\n": 400,
            b"X: a\x00b\r\n": 400,
        }
        for header, status in cases.items():
            data = b"POST /gateway.do HTTP/1.1\r\n" + header + b"\r\n"
            [event] = read(data)
            assert isinstance(event, Refusal), header
            self.assertEqual(event.status, status, header)

    def test_bad_chunk(self) -> None:
        """A chunk size that is not hex, or a chunk without its CRLF, is
        refused."""
        head = (
            b"POST /gateway.do HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for rest in (b"zz\r\n", b"3\r\nabcX\r\n", b"-1\r\n"):
            [event] = read(head + rest)
            self.assertEqual(type(event), Refusal, rest)

    def test_head_too_large(self) -> None:
        """Headers that never end are refused at the head limit."""
        data = b"POST /gateway.do HTTP/1.1\r\n" + b"X: " + b"a" * 20_000
        [event] = read(data)
        assert isinstance(event, Refusal)
        self.assertEqual(event.status, 431)

    def test_foreign(self) -> None:
        """Any other route gives back every byte from its first one."""
        rest = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nmore"
        events = read(post(b"x=1") + rest)
        self.assertEqual(type(events[0]), Request)
        self.assertEqual(events[1], Foreign(rest))
        for line in (
            b"GET /gateway.do HTTP/1.1\r\n",
            b"POST /gateway.do/ HTTP/1.1\r\n",
            b"POST /api/x HTTP/1.1\r\n",
            b"POST http://h/gateway.do HTTP/1.1\r\n",
            b"POST /gateway.do HTTP/2.0\r\n",
            b"garbage\r\n",
        ):
            self.assertEqual(read(line), [Foreign(line)], line)

    def test_nothing_after_end(self) -> None:
        """After a refusal or a foreign request no more events come."""
        reader = RequestReader(LIMIT)
        reader.feed(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(reader.feed(post(b"x=1")), [])

    def test_keep_alive(self) -> None:
        """HTTP/1.1 keeps alive unless told to close; 1.0 only if asked."""
        close = read(post(b"", extra=b"Connection: close\r\n"))[0]
        old = read(post(b"").replace(b"HTTP/1.1", b"HTTP/1.0"))[0]
        asked = read(
            post(b"", extra=b"Connection: Keep-Alive\r\n").replace(
                b"HTTP/1.1", b"HTTP/1.0"
            )
        )[0]
        assert isinstance(close, Request)
        assert isinstance(old, Request)
        assert isinstance(asked, Request)
        self.assertEqual(
            [close.keep_alive, old.keep_alive, asked.keep_alive],
            [False, False, True],
        )

    def test_expect(self) -> None:
        """C{Expect: 100-continue} is nodded to before the body comes."""
        data = post(b"x=1", extra=b"Expect: 100-continue\r\n")
        reader = RequestReader(LIMIT)
        self.assertEqual(reader.feed(data[:-3]), [Continue()])
        [event] = reader.feed(data[-3:])
        self.assertEqual(type(event), Request)

    @settings(max_examples=300)
    @given(st.binary(max_size=300), st.integers(1, 50))
    def test_fuzz_garbage(self, data: bytes, cut: int) -> None:
        """Arbitrary bytes never raise, and split anywhere give the same
        events."""
        whole = read(b"POST /gateway.do HTTP/1.1\r\n" + data)
        reader = RequestReader(LIMIT)
        split = reader.feed(b"POST /gateway.do HTTP/1.1\r\n" + data[:cut])
        split += reader.feed(data[cut:])
        self.assertEqual(split, whole)

    @given(
        st.lists(
            st.tuples(st.binary(max_size=200), st.booleans()), max_size=6
        ),
        st.integers(1, 64),
    )
    def test_fuzz_round_trip(
        self, bodies: list[tuple[bytes, bool]], size: int
    ) -> None:
        """Any pipelined mix of sized and chunked bodies reads back."""
        data = b"".join(
            chunked(body, size) if is_chunked else post(body)
            for body, is_chunked in bodies
        )
        events = read_bytewise(data) if size < 8 else read(data)
        self.assertEqual(
            [e.body for e in events if isinstance(e, Request)],
            [body for body, _ in bodies],
        )


class WorkerCountTests(SynchronousTestCase):
    """How many gateway workers the daemon starts by default."""

    def test_default_count(self) -> None:
        """One per core but one, never below none nor above four."""
        self.assertEqual(
            [default_count(n) for n in (None, 1, 2, 3, 8, 64)],
            [0, 0, 1, 2, 4, 4],
        )


class FakeGateway:
    """Answers calls when told to, recording what was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes, Deferred[bytes]]] = []

    def answer(
        self, query: bytes, body: bytes, kind: bytes | None, peer: str
    ) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.calls.append((query, body, d))
        return d


class Inner(Protocol):
    """The protocol a foreign request is handed to."""

    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class IdleTests(SynchronousTestCase):
    """Idle keep-alive connections are closed by one shared sweep."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.gateway = FakeGateway()
        self.factory = GatewayFactory(
            self.gateway.answer, self.handoff, LIMIT, self.clock, 100.0
        )

    def handoff(self, transport: Any, data: bytes, fresh: bool) -> None:
        raise AssertionError("nothing is handed over here")

    def connect(self) -> tuple[GatewayChannel, StringTransport]:
        channel = self.factory.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def test_idle_closed_busy_kept(self) -> None:
        """A connection silent past the timeout is closed; one waiting
        for an answer, or heard from lately, is kept."""
        _, idle_t = self.connect()
        busy, busy_t = self.connect()
        lively, lively_t = self.connect()
        busy.dataReceived(post(b"n=1"))
        self.clock.advance(75)
        lively.dataReceived(post(b"n=2"))
        self.gateway.calls[-1][2].callback(b"{}")
        self.clock.advance(50)
        self.assertTrue(idle_t.disconnecting)
        self.assertFalse(busy_t.disconnecting)
        self.assertFalse(lively_t.disconnecting)
        self.clock.advance(100)
        self.assertFalse(busy_t.disconnecting)
        self.assertTrue(lively_t.disconnecting)
        self.gateway.calls[0][2].callback(b"{}")
        self.clock.advance(125)
        self.assertTrue(busy_t.disconnecting)

    def test_sweep_stops_with_the_last_connection(self) -> None:
        """No timer runs while no connection is open."""
        channel, _ = self.connect()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        channel.connectionLost()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ChannelTests(SynchronousTestCase):
    """L{GatewayChannel} over a string transport."""

    def setUp(self) -> None:
        self.gateway = FakeGateway()
        self.handed: list[tuple[bytes, bool]] = []
        self.inner = Inner()
        self.channel = GatewayChannel(self.gateway.answer, self.handoff, LIMIT)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def handoff(self, transport: Any, data: bytes, fresh: bool) -> Inner:
        self.handed.append((data, fresh))
        self.inner.makeConnection(transport)
        self.inner.dataReceived(data)
        return self.inner

    def test_answers_in_order(self) -> None:
        """Pipelined answers go out in request order, whatever order they
        are ready in."""
        self.channel.dataReceived(post(b"n=1") + post(b"n=2"))
        first, second = (d for _, _, d in self.gateway.calls)
        second.callback(b'{"two":2}')
        self.assertEqual(self.transport.value(), b"")
        first.callback(b'{"one":1}')
        out = self.transport.value()
        self.assertLess(out.index(b'{"one":1}'), out.index(b'{"two":2}'))
        self.assertEqual(out.count(b"HTTP/1.1 200 OK"), 2)
        self.assertIn(b"Content-Length: 9\r\n", out)
        self.assertFalse(self.transport.disconnecting)

    def test_close(self) -> None:
        """A request asking to close is answered, then the connection
        closes."""
        self.channel.dataReceived(post(b"", extra=b"Connection: close\r\n"))
        self.gateway.calls[0][2].callback(b"{}")
        self.assertIn(b"Connection: close", self.transport.value())
        self.assertTrue(self.transport.disconnecting)

    def test_too_large(self) -> None:
        """An oversized body is answered as the Site answers it: 413, with
        the same body, then a close."""
        self.channel.dataReceived(
            b"POST /gateway.do HTTP/1.1\r\nContent-Length: 9999\r\n\r\n"
        )
        self.assertEqual(self.transport.value(), too_large(LIMIT))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.gateway.calls, [])

    def test_malformed(self) -> None:
        """A malformed request is answered 400 and the connection
        closes."""
        self.channel.dataReceived(
            b"POST /gateway.do HTTP/1.1\r\nContent-Length: x\r\n\r\n"
        )
        self.assertTrue(
            self.transport.value().startswith(b"HTTP/1.1 400 Bad Request")
        )
        self.assertTrue(self.transport.disconnecting)

    def test_handoff_after_answers(self) -> None:
        """A foreign request is handed over only once every earlier answer
        is written, and what follows goes to the new protocol."""
        self.channel.dataReceived(post(b"n=1") + b"GET /x HTTP/1.1\r\n")
        self.assertEqual(self.handed, [])
        self.gateway.calls[0][2].callback(b"{}")
        self.assertEqual(self.handed, [(b"GET /x HTTP/1.1\r\n", False)])
        self.channel.dataReceived(b"\r\n")
        self.assertEqual(self.inner.received, b"GET /x HTTP/1.1\r\n\r\n")

    def test_handoff_fresh(self) -> None:
        """A connection whose first request is foreign is handed over as
        fresh."""
        self.channel.dataReceived(b"GET /healthz HTTP/1.1\r\n\r\n")
        self.assertEqual(
            self.handed, [(b"GET /healthz HTTP/1.1\r\n\r\n", True)]
        )

    def test_pipeline_bound(self) -> None:
        """Reading pauses while too many answers are outstanding."""
        self.channel.dataReceived(post(b"") * MAX_PIPELINED)
        self.assertEqual(self.transport.producerState, "paused")
        for _, _, d in self.gateway.calls:
            d.callback(b"{}")
        self.assertEqual(self.transport.producerState, "producing")

    def test_answer_fires_after_close(self) -> None:
        """An answer ready after the client left is dropped quietly."""
        self.channel.dataReceived(post(b""))
        self.channel.connectionLost()
        self.gateway.calls[0][2].callback(b"{}")
        self.assertEqual(self.transport.value(), b"")


class SocketTransport(StringTransport):
    """A string transport over a real socket, as TCP transports are."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        # Only what the channel uses of a TCP transport is here.
        directlyProvides(self, ITCPTransport)

    def getHandle(self) -> socket.socket:
        return self.sock


class DirectSendTests(SynchronousTestCase):
    """Answers go straight to a TCP socket while it takes them."""

    def setUp(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self.addCleanup(self.ours.close)
        self.addCleanup(self.theirs.close)
        self.gateway = FakeGateway()
        self.channel = GatewayChannel(
            self.gateway.answer, lambda *a: None, LIMIT
        )
        self.transport = SocketTransport(self.ours)
        self.channel.makeConnection(self.transport)

    def test_straight_to_socket(self) -> None:
        """A small answer is sent on the socket, not buffered."""
        self.channel.dataReceived(post(b""))
        self.gateway.calls[0][2].callback(b"{}")
        self.assertEqual(self.transport.value(), b"")
        self.assertTrue(self.theirs.recv(1000).endswith(b"\r\n\r\n{}"))

    def test_full_socket_falls_back_in_order(self) -> None:
        """Once the socket is full, the rest and everything after it goes
        through the transport, in order."""
        self.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.channel.dataReceived(post(b"") * 3)
        big = b"x" * 2_000_000
        self.gateway.calls[0][2].callback(big)
        self.gateway.calls[1][2].callback(b'"second"')
        self.gateway.calls[2][2].callback(b'"third"')
        buffered = self.transport.value()
        self.assertTrue(buffered.endswith(b'"third"'))
        self.assertLess(buffered.index(b'"second"'), buffered.index(b"third"))
        self.assertGreater(len(buffered), 0)


class FrontTests(SynchronousTestCase):
    """The daemon's HTTP front: lean gateway, twisted.web for the rest."""

    def setUp(self) -> None:
        w = World(self)
        self.successResultOf(
            w.store.put_access_key(AccessKey("AK", "SECRET", (INSTANCE,)))
        )
        gateway = GatewayApp(w.store, Sender(w.engine), w.clock)
        http = site(RootApp(w.store, gateway, Metrics()).resource())
        http.timeOut = None
        self.factory = front(http, gateway, w.clock)
        self.w = w

    def exchange(self, raw: bytes) -> bytes:
        channel = self.factory.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        out: bytes = transport.value()
        return out

    def test_gateway_then_health(self) -> None:
        """A gateway call and a health check on one connection are both
        answered, in order, the first by the lean path."""
        params = {
            "method": METHOD,
            "version": "1.0",
            "sign_type": "HmacSHA1",
            "req_time": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.w.clock.seconds())
            ),
            "req_msg_id": "0" * 32,
            "access_key": "AK",
        }
        params["sign"] = signing.sign(params, "SECRET")
        body = urlencode(params).encode()
        out = self.exchange(
            post(body, query=b"") + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        first, _, second = out.partition(b"HTTP/1.1 200 OK\r\n")[2].partition(
            b"HTTP/1.1 200 OK"
        )
        answer, text, sign = signing.read_answer(first.split(b"\r\n\r\n")[1])
        self.assertEqual(answer["result_code"], "OK")
        self.assertEqual(sign, signing.sign_response(text, "SECRET"))
        self.assertIn(b"Content-Type: application/json;charset=utf-8", first)
        self.assertIn(b'"status":"ok"', second)

    def test_console_alone(self) -> None:
        """A connection that never calls the gateway is twisted.web's."""
        out = self.exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"msync_ops_pushed_total", out)

    def test_gateway_get(self) -> None:
        """A GET of the gateway is refused as before, by Klein."""
        out = self.exchange(b"GET /gateway.do HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 405"))
