"""
TLS 1.3 after the handshake: the record layer on its own, bytes in and
bytes out, and handed a real connection by the device listener's TLS
layer, talking to OpenSSL clients.
"""

from __future__ import annotations

import gc
import os
import shutil
import ssl
import tempfile
import weakref
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from OpenSSL.SSL import (
    Connection,
    Error,
    SysCallError,
    WantReadError,
    ZeroReturnError,
)
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from msync.devcerts import ensure_dev_certs
from msync.link.records import (
    MAX_PLAINTEXT,
    SUITES,
    RecordError,
    RecordLayer,
)
from msync.link.tls import LeanTLSFactory
from msync.tls import server_options
from tests.test_link_tls import Conversation, Echo

SUITE = "TLS_AES_128_GCM_SHA256"


def pair(suite: str = SUITE) -> tuple[RecordLayer, RecordLayer]:
    """A client's and a server's record layers sharing fresh secrets."""
    size = SUITES[suite][2]().digest_size
    client_secret, server_secret = os.urandom(size), os.urandom(size)
    client = RecordLayer(suite, server_secret, client_secret)
    server = RecordLayer(suite, client_secret, server_secret)
    return client, server


def move(source: RecordLayer, sink: RecordLayer) -> bytes:
    """Hand everything C{source} would send to C{sink}; return it."""
    try:
        data = source.bio_read(2**20)
    except WantReadError:
        return b""
    sink.bio_write(data)
    return data


def received(layer: RecordLayer) -> bytes:
    """All the application data C{layer} can give now."""
    chunks = []
    while True:
        try:
            chunks.append(layer.recv(2**15))
        except WantReadError:
            return b"".join(chunks)


def seal(
    layer: RecordLayer, content: bytes, kind: int, padding: int = 0
) -> None:
    """Have C{layer} send one record of any type, with C{padding} zero
    bytes after its content type, as a peer might."""
    aead = SUITES[layer._suite][0](layer._write.key)
    if not padding:
        layer._seal(aead, content, kind)
        return
    inner = content + bytes((kind,)) + bytes(padding)
    header = bytes((23, 3, 3)) + (len(inner) + 16).to_bytes(2, "big")
    layer._outgoing.append(header)
    layer._outgoing.append(aead.encrypt(layer._write.nonce(), inner, header))


def headers(data: bytes) -> list[tuple[int, int]]:
    """Each record's type and length in C{data}."""
    found, at = [], 0
    while at < len(data):
        length = int.from_bytes(data[at + 3 : at + 5], "big")
        found.append((data[at], length))
        at += 5 + length
    return found


class RecordLayerTests(SynchronousTestCase):
    """The record layer protects and opens records, bytes in and bytes
    out, and refuses whatever RFC 8446 forbids."""

    def test_round_trip_every_suite(self) -> None:
        """Data goes both ways intact under each TLS 1.3 suite."""
        for suite in SUITES:
            client, server = pair(suite)
            client.send(b"ping")
            move(client, server)
            self.assertEqual(received(server), b"ping")
            server.send(b"pong" * 5000)
            move(server, client)
            self.assertEqual(received(client), b"pong" * 5000)

    def test_large_writes_cut_into_full_records(self) -> None:
        """A write larger than a record goes out in records of at most
        16 KiB of plaintext, each protected on its own."""
        client, server = pair()
        data = os.urandom(3 * MAX_PLAINTEXT + 10)
        client.send(data)
        wire = move(client, server)
        self.assertEqual(
            [length for _, length in headers(wire)],
            [MAX_PLAINTEXT + 17] * 3 + [10 + 17],
        )
        self.assertEqual(received(server), data)

    def test_byte_at_a_time(self) -> None:
        """Records that arrive one byte at a time open once whole."""
        client, server = pair()
        client.send(b"first")
        client.send(b"second")
        wire = client.bio_read(2**20)
        got = b""
        for i in range(len(wire)):
            server.bio_write(wire[i : i + 1])
            got += received(server)
        self.assertEqual(got, b"firstsecond")

    def test_partial_reads_of_both_sides(self) -> None:
        """C{bio_read} and C{recv} give at most what they are asked for
        and keep the rest, in order."""
        client, server = pair()
        client.send(b"abcdefgh")
        wire = client.bio_read(2**20)
        client.send(b"ij")
        rest = client.bio_read(3) + client.bio_read(2**20)
        server.bio_write(wire + rest)
        self.assertEqual(server.recv(3), b"abc")
        self.assertEqual(server.recv(100), b"defghij")
        self.assertRaises(WantReadError, server.recv, 100)
        self.assertRaises(WantReadError, server.bio_read, 100)

    def test_key_update_requested_by_the_peer(self) -> None:
        """A peer's key update moves the read key; when it asks, this side
        answers with its own and moves its write key too."""
        client, server = pair()
        client_write, server_write = client._write.secret, server._write.secret
        client.update_keys(request=True)
        client.send(b"under the new key")
        move(client, server)
        self.assertEqual(received(server), b"under the new key")
        self.assertEqual(server._read.secret, client._write.secret)
        self.assertNotEqual(client._write.secret, client_write)

        server.send(b"answer")
        move(server, client)
        self.assertEqual(received(client), b"answer")
        self.assertNotEqual(server._write.secret, server_write)
        self.assertEqual(client._read.secret, server._write.secret)

    def test_rekeys_before_the_usage_limit(self) -> None:
        """After L{RecordLayer.rekey_after} records this side moves to its
        next key on its own, and the peer follows."""
        client, server = pair()
        server.rekey_after = 3
        first = server._write.secret
        for i in range(10):
            server.send(b"%d" % i)
        move(server, client)
        self.assertEqual(received(client), b"0123456789")
        self.assertNotEqual(server._write.secret, first)
        self.assertLessEqual(server._write.sequence, 3)
        self.assertEqual(client._read.secret, server._write.secret)

    def test_written_records_are_counted(self) -> None:
        """Records sent before the hand-over (session tickets) count: the
        layer's first record takes the nonce after theirs."""
        client, _ = pair()
        server = RecordLayer(
            SUITE, client._write.secret, client._read.secret, written=2
        )
        server.send(b"late")
        wire = server.bio_read(2**20)
        client.bio_write(wire)
        self.assertRaises(RecordError, client.recv, 100)

        after_tickets = RecordLayer(
            SUITE, client._read.secret, client._write.secret
        )
        after_tickets._read.sequence = 2
        after_tickets.bio_write(wire)
        self.assertEqual(received(after_tickets), b"late")

    def test_close_notify_ends_the_stream_after_its_data(self) -> None:
        """Data before a peer's close is delivered, then the close shows as
        C{ZeroReturnError}; a close of one's own is sent once."""
        client, server = pair()
        client.send(b"last words")
        self.assertFalse(client.shutdown())
        self.assertFalse(client.shutdown())
        move(client, server)
        self.assertEqual(server.recv(100), b"last words")
        self.assertRaises(ZeroReturnError, server.recv, 100)
        self.assertTrue(server.shutdown())
        self.assertEqual(len(headers(server.bio_read(100))), 1)
        self.assertRaises(Error, server.send, b"after the close")

    def test_eof_without_close(self) -> None:
        """A stream that ends mid-record, with no close alert, reads as an
        unexpected end of file."""
        client, server = pair()
        client.send(b"cut")
        server.bio_write(client.bio_read(2**20)[:-3])
        server.bio_shutdown()
        with self.assertRaises(SysCallError) as caught:
            server.recv(100)
        self.assertEqual(caught.exception.args, (-1, "Unexpected EOF"))

    def test_tampered_record(self) -> None:
        """A record that fails authentication is refused, and the peer is
        told with a fatal bad_record_mac alert."""
        client, server = pair()
        client.send(b"genuine")
        wire = bytearray(client.bio_read(2**20))
        wire[8] ^= 1
        server.bio_write(bytes(wire))
        with self.assertRaises(RecordError) as caught:
            server.recv(100)
        self.assertIn("bad record mac", str(caught.exception))
        self.assertAlert(server, client, 20)

    def test_oversized_record(self) -> None:
        """A record longer than RFC 8446 allows is refused from its header
        alone, with a record_overflow alert."""
        client, server = pair()
        server.bio_write(b"\x17\x03\x03" + (2**14 + 257).to_bytes(2, "big"))
        self.assertRaises(RecordError, server.recv, 100)
        self.assertAlert(server, client, 22)

    def test_unprotected_record(self) -> None:
        """After the handshake every record is protected: a plaintext one
        is an unexpected message."""
        client, server = pair()
        server.bio_write(b"\x16\x03\x03\x00\x01\x00")
        self.assertRaises(RecordError, server.recv, 100)
        self.assertAlert(server, client, 10)

    def test_forbidden_contents(self) -> None:
        """Handshake messages other than a key update, empty handshake
        records, malformed key updates and alerts, and unknown content
        types are each refused with an alert."""
        cases = [
            (b"\x04\x00\x00\x01\x00", 22, 10),
            (b"", 22, 10),
            (b"\x18\x00\x00\x01\x07", 22, 47),
            (b"\x18\x00\x00\x02\x00\x00", 22, 50),
            (b"\x18\x00\x00\x01\x00extra", 22, 10),
            (b"\x01", 21, 50),
            (b"\x01", 20, 10),
            (b"hello", 99, 10),
            (b"", 0, 10),
        ]
        for content, kind, alert in cases:
            client, server = pair()
            seal(client, content, kind)
            move(client, server)
            self.assertRaises(RecordError, server.recv, 100)
            self.assertAlert(server, client, alert)

    def test_peer_alerts(self) -> None:
        """A peer's fatal alert ends the connection unanswered; its
        user_canceled warning is ignored."""
        client, server = pair()
        seal(client, b"\x01\x5a", 21)
        client.send(b"still here")
        move(client, server)
        self.assertEqual(received(server), b"still here")

        seal(client, b"\x02\x28", 21)
        move(client, server)
        with self.assertRaises(RecordError) as caught:
            server.recv(100)
        self.assertIn("alert 40", str(caught.exception))
        self.assertRaises(WantReadError, server.bio_read, 100)

    def test_many_key_update_requests_one_answer(self) -> None:
        """However often a peer asks for a key update without reading,
        nothing piles up: one KeyUpdate goes out, before the next record
        this side sends."""
        client, server = pair()
        for _ in range(50):
            client.update_keys(request=True)
        move(client, server)
        self.assertRaises(WantReadError, server.recv, 100)
        self.assertRaises(WantReadError, server.bio_read, 2**16)
        first = server._write.secret
        server.send(b"a")
        server.send(b"b")
        self.assertNotEqual(server._write.secret, first)
        self.assertEqual(server._write.sequence, 2)
        move(server, client)
        self.assertEqual(received(client), b"ab")
        self.assertEqual(client._read.secret, server._write.secret)

    def test_inner_plaintext_bound(self) -> None:
        """Content, type and padding together may not pass 2^14 + 1
        bytes: padding that takes a full record over is an overflow."""
        client, server = pair()
        seal(client, b"x" * MAX_PLAINTEXT, 23)
        move(client, server)
        self.assertEqual(len(received(server)), MAX_PLAINTEXT)
        seal(client, b"x" * MAX_PLAINTEXT, 23, padding=1)
        move(client, server)
        self.assertRaises(RecordError, server.recv, 100)
        self.assertAlert(server, client, 22)

    def test_padding_is_stripped(self) -> None:
        """Zero padding after the content type is taken off, however
        long."""
        client, server = pair()
        seal(client, b"padded\x00", 23, padding=4000)
        move(client, server)
        self.assertEqual(received(server), b"padded\x00")

    def test_record_inside_a_handshake_message(self) -> None:
        """A handshake message's fragments come one after another: any
        other record between them is refused."""
        client, server = pair()
        seal(client, b"\x18\x00", 22)
        seal(client, b"data", 23)
        move(client, server)
        self.assertRaises(RecordError, server.recv, 100)
        self.assertAlert(server, client, 10)

    def test_key_update_across_records(self) -> None:
        """A key update split over two records still moves the read
        key."""
        client, server = pair()
        seal(client, b"\x18\x00", 22)
        seal(client, b"\x00\x01\x00", 22)
        client._write = client._write.following(SUITE)
        client.send(b"after")
        move(client, server)
        self.assertEqual(received(server), b"after")

    def test_unknown_suite(self) -> None:
        """A suite that is not TLS 1.3's is refused at once."""
        self.assertRaises(
            ValueError, RecordLayer, "ECDHE-RSA-AES128-GCM-SHA256", b"", b""
        )

    @settings(
        max_examples=300,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        st.lists(
            st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4
        ),
        st.integers(0, 400),
        st.binary(max_size=64),
    )
    def test_fuzz(
        self, flips: list[tuple[int, int]], cut: int, junk: bytes
    ) -> None:
        """Valid streams with bytes flipped, cut short or followed by junk
        give data, want more, or fail with a record error; nothing else
        escapes."""
        client, server = pair()
        client.send(b"a" * 50)
        seal(client, b"\x18\x00\x00\x01\x01", 22)
        client._write = client._write.following(SUITE)
        client.send(b"b" * 100)
        seal(client, b"\x01\x00", 21)
        wire = bytearray(client.bio_read(2**20))
        for at, value in flips:
            if at < len(wire):
                wire[at] = value
        server.bio_write(bytes(wire[: len(wire) - cut % len(wire)]) + junk)
        for _ in range(10):
            try:
                server.recv(2**15)
            except (WantReadError, ZeroReturnError, RecordError):
                break

    def assertAlert(
        self, sender: RecordLayer, peer: RecordLayer, description: int
    ) -> None:
        """C{sender} queued one fatal alert C{description}, which C{peer}
        reads as such, and sends nothing more."""
        move(sender, peer)
        with self.assertRaises(RecordError) as caught:
            peer.recv(100)
        self.assertIn(f"alert {description}", str(caught.exception))
        self.assertRaises(Error, sender.send, b"more")


class HandOverTests(SynchronousTestCase):
    """A TLS 1.3 connection goes from OpenSSL to the record layer once
    its handshake is done, and real OpenSSL clients never notice."""

    def test_handed_over(self) -> None:
        """After the handshake the connection is a record layer, and data
        flows both ways, in many records."""
        c = Conversation(self)
        self.assertIsInstance(c.server._tlsConnection, RecordLayer)
        big = os.urandom(5 * MAX_PLAINTEXT + 99)
        c.client.write(b"ping" + big)
        c.flush()
        self.assertEqual(c.echo.received, b"ping" + big)
        self.assertEqual(c.sink.received, b"ping" + big)

    def test_greetings_during_the_handshake(self) -> None:
        """The server's writes waiting for the handshake, and the client's
        first data in the same chunk as its Finished, both arrive."""
        hers, mine = b"h" * 5000, b"m" * 3000
        c = Conversation(self, server_says=hers, client_says=mine)
        self.assertIsInstance(c.server._tlsConnection, RecordLayer)
        self.assertEqual(c.echo.received, mine)
        self.assertEqual(c.sink.received, hers + mine)

    def test_byte_at_a_time(self) -> None:
        """A handshake and data that reach the server one byte at a time
        lose nothing."""
        c = Conversation(self, client_says=b"early", connect=False)
        for _ in range(50):
            c.clock.advance(0)
            out = c.client.transport.getOutBuffer() or b""
            for i in range(len(out)):
                c.server.dataReceived(out[i : i + 1])
            c.clock.advance(0)
            back = c.server.transport.getOutBuffer() or b""
            if back:
                c.client.dataReceived(back)
            if not out and not back:
                break
        self.assertIsInstance(c.server._tlsConnection, RecordLayer)
        self.assertEqual(c.echo.received, b"early")
        self.assertEqual(c.sink.received, b"early")

    def test_key_updates_with_openssl(self) -> None:
        """The server moves to new keys and asks the client to; OpenSSL
        follows, answers with its own update, and data still flows."""
        c = Conversation(self)
        layer = c.server._tlsConnection
        read, write = layer._read.secret, layer._write.secret
        layer.update_keys(request=True)
        c.server.write(b"after update")
        c.flush()
        self.assertEqual(c.sink.received, b"after update")
        c.client.write(b"reply")
        c.flush()
        self.assertEqual(c.echo.received, b"reply")
        self.assertEqual(c.sink.received, b"after update" + b"reply")
        self.assertNotEqual(layer._read.secret, read)
        self.assertNotEqual(layer._write.secret, write)

        layer.rekey_after = layer._write.sequence + 2
        for i in range(6):
            c.server.write(b"%d" % i)
            c.flush()
        self.assertEqual(c.sink.received, b"after updatereply012345")

    def test_tampered_record_from_the_client(self) -> None:
        """A record altered on the way ends the connection with a record
        error, and the client is told why."""
        c = Conversation(self)
        c.client._write(b"x" * 100)
        wire = bytearray(c.client.transport.getOutBuffer())
        wire[20] ^= 0x40
        c.server.dataReceived(bytes(wire))
        c.flush()
        self.assertEqual(c.echo.received, b"")
        assert c.echo.lost is not None and c.sink.lost is not None
        self.assertIsInstance(c.echo.lost.value, RecordError)
        self.assertIsInstance(c.sink.lost.value, Error)
        self.assertIn("bad record mac", str(c.sink.lost.value))

    def test_client_closes(self) -> None:
        """A client's close alert gets one back, and both sides see a
        clean close."""
        c = Conversation(self)
        c.client.write(b"bye")
        c.client.loseConnection()
        c.flush()
        self.assertEqual(c.echo.received, b"bye")
        assert c.echo.lost is not None and c.sink.lost is not None
        c.echo.lost.trap(ConnectionDone)
        c.sink.lost.trap(ConnectionDone)

    def test_server_closes(self) -> None:
        """The server's close goes out after its last data, and both sides
        see a clean close."""
        c = Conversation(self)
        c.server.write(b"last")
        c.server.loseConnection()
        c.flush()
        self.assertEqual(c.sink.received, b"last")
        assert c.echo.lost is not None and c.sink.lost is not None
        c.echo.lost.trap(ConnectionDone)
        c.sink.lost.trap(ConnectionDone)

    def test_connection_cut(self) -> None:
        """A connection cut with no close alert is lost, not done."""
        c = Conversation(self)
        c.server.connectionLost(Failure(ConnectionDone()))
        assert c.echo.lost is not None
        c.echo.lost.trap(ConnectionLost)

    def test_written_while_the_handshake_completes(self) -> None:
        """
        What a protocol writes as it hears that the handshake is done,
        before the hand-over could count OpenSSL's records (more than
        Twisted gathers, or a close), keeps the connection with OpenSSL:
        handed over, the record layer would reuse the nonces of those
        records.
        """

        @implementer(IHandshakeListener)
        class Eager(Echo):
            def handshakeCompleted(self) -> None:
                self.transport.write(b"w" * 70_000)  # type: ignore[union-attr]

        c = Conversation(self, echo=Eager)
        self.assertIsInstance(c.server._tlsConnection, Connection)
        self.assertEqual(c.sink.received, b"w" * 70_000)
        c.client.write(b"ping")
        c.flush()
        self.assertEqual(c.sink.received, b"w" * 70_000 + b"ping")

    def test_tls12_stays_with_openssl(self) -> None:
        """A TLS 1.2 connection is not handed over and still works."""
        c = Conversation(self, tls12=True)
        self.assertIsInstance(c.server._tlsConnection, Connection)
        c.client.write(b"old")
        c.flush()
        self.assertEqual(c.sink.received, b"old")

    def test_stdlib_client(self) -> None:
        """A client on Python's own ssl module (OpenSSL 3, as the load
        generators and many apps use) talks to the handed-over layer,
        both ways, in many records, and the server's OpenSSL connection
        is freed."""
        folder = tempfile.mkdtemp(prefix="msync-tls-")
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        certs = ensure_dev_certs(folder)
        clock = Clock()
        echo = Echo()
        factory = LeanTLSFactory(
            server_options(certs.cert, certs.key),
            False,
            Factory.forProtocol(lambda: echo),
            clock,
        )
        server: Any = factory.buildProtocol(IPv4Address("TCP", "1.2.3.4", 5))
        transport = StringTransport()
        server.makeConnection(transport)
        openssl = weakref.ref(server._tlsConnection)
        self.assertIsInstance(openssl(), Connection)
        context = ssl.create_default_context(cafile=certs.ca)
        into, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = context.wrap_bio(into, out, server_hostname="localhost")

        def pump() -> None:
            for _ in range(20):
                try:
                    client.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                sent = out.read()
                if sent:
                    server.dataReceived(sent)
                clock.advance(0)
                back = transport.value()
                transport.clear()
                into.write(back)
                if not sent and not back:
                    return

        pump()
        self.assertEqual(client.version(), "TLSv1.3")
        self.assertIsInstance(server._tlsConnection, RecordLayer)
        gc.collect()
        self.assertIsNone(openssl())
        data = os.urandom(100_000)
        client.write(data)
        pump()
        got = b""
        while len(got) < len(data):
            got += client.read(2**16)
        self.assertEqual(echo.received, data)
        self.assertEqual(got, data)


class FactoryTests(SynchronousTestCase):
    """The lean factory is for servers only."""

    def test_client_refused(self) -> None:
        """Asking for client connections is an error at once."""
        self.assertRaises(ValueError, LeanTLSFactory, None, True, Factory())
