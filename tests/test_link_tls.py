"""
The device listener's TLS layer: a TLS 1.3 connection is handed from
OpenSSL to the record layer after its handshake, a TLS 1.2 one keeps
OpenSSL and gives back its BIO buffers, and neither loses a byte.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from OpenSSL._util import ffi as _ffi
from OpenSSL.SSL import Connection
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import Certificate, TLSVersion, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from msync.devcerts import ensure_dev_certs
from msync.link.tls import RELEASE_AT, LeanTLSFactory, renewable
from msync.tls import server_options


class Sink(Protocol):
    """Says its greeting and keeps what it receives."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.received = b""
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        if self.greeting:
            self.transport.write(self.greeting)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


class Echo(Sink):
    """A L{Sink} that also writes back whatever it receives."""

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self.transport.write(data)  # type: ignore[union-attr]


class Conversation:
    """A L{LeanTLSFactory} server echoing to a plain Twisted TLS client,
    in memory, on one clock."""

    def __init__(
        self,
        case: SynchronousTestCase,
        server_says: bytes = b"",
        client_says: bytes = b"",
        tls12: bool = False,
        connect: bool = True,
        echo: type[Echo] | None = None,
    ) -> None:
        folder = tempfile.mkdtemp(prefix="msync-tls-")
        case.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        certs = ensure_dev_certs(folder)
        with open(certs.ca, "rb") as f:
            ca = Certificate.loadPEM(f.read())
        self.clock = Clock()
        self.echo = (echo or Echo)(server_says)
        self.sink = Sink(client_says)
        server = LeanTLSFactory(
            server_options(certs.cert, certs.key),
            False,
            Factory.forProtocol(lambda: self.echo),
            self.clock,
        )
        most = {"lowerMaximumSecurityTo": TLSVersion.TLSv1_2} if tls12 else {}
        client = TLSMemoryBIOFactory(
            optionsForClientTLS(
                "localhost", trustRoot=ca, extraCertificateOptions=most
            ),
            True,
            Factory.forProtocol(lambda: self.sink),
            self.clock,
        )
        address = IPv4Address("TCP", "127.0.0.1", 8443)
        self.server: Any
        self.client: Any
        self.pump: IOPump
        self.client, self.server, self.pump = connectedServerAndClient(
            lambda: server.buildProtocol(address),
            lambda: client.buildProtocol(address),
            clock=self.clock,
        )
        if connect:
            self.flush()

    def flush(self) -> None:
        """Move every byte both ways until nothing is left."""
        self.pump.flush()

    def bios(self) -> tuple[int, int]:
        """Addresses of the server's two memory BIOs now."""
        tls = self.server._tlsConnection
        return (address(tls._into_ssl), address(tls._from_ssl))


def address(pointer: Any) -> int:
    """Where a C pointer points."""
    return int(_ffi.cast("uintptr_t", pointer))


class LeanTLSTests(SynchronousTestCase):
    """A TLS 1.2 connection stays with OpenSSL, and the server's memory
    BIOs are replaced when empty, never in use."""

    def test_pyopenssl_keeps_memory_bios(self) -> None:
        """The installed pyOpenSSL keeps a connection's memory BIOs where
        the lean layer expects them (else it silently saves nothing)."""
        folder = tempfile.mkdtemp(prefix="msync-tls-")
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        certs = ensure_dev_certs(folder)
        context = server_options(certs.cert, certs.key).getContext()
        self.assertTrue(renewable(Connection(context, None)))

    def test_renewed_after_handshake(self) -> None:
        """The handshake's buffers are given back, and bytes still flow
        both ways afterwards."""
        c = Conversation(self, tls12=True)
        self.assertIsInstance(c.server, BufferingTLSTransport)
        self.assertIsInstance(c.server._tlsConnection, Connection)
        self.assertEqual(c.server._held, 0)
        before = c.bios()

        c.client.write(b"ping")
        c.flush()
        self.assertEqual(c.echo.received, b"ping")
        self.assertEqual(c.sink.received, b"ping")
        # Small traffic leaves the new BIOs alone.
        self.assertEqual(c.bios(), before)

    def test_large_burst_then_released(self) -> None:
        """A burst larger than L{RELEASE_AT} in both directions arrives
        whole, and the BIOs that carried it are replaced afterwards."""
        c = Conversation(self, tls12=True)
        before = c.bios()
        burst = bytes(range(256)) * (4 * RELEASE_AT // 256 + 7)
        c.client.write(burst)
        c.flush()
        self.assertEqual(c.echo.received, burst)
        self.assertEqual(c.sink.received, burst)
        after = c.bios()
        self.assertNotEqual(after[0], before[0])
        self.assertNotEqual(after[1], before[1])

        c.client.write(b"and after")
        c.flush()
        self.assertEqual(c.sink.received, burst + b"and after")

    def test_many_records_in_one_chunk(self) -> None:
        """Records that arrive together, each answered while the rest
        still wait in the incoming BIO, are all delivered and echoed."""
        c = Conversation(self, tls12=True)
        parts = [bytes([i]) * (RELEASE_AT + i) for i in range(20)]
        # Each write is its own TLS record; the pump hands the server all
        # of them in one chunk.
        for part in parts:
            c.client._write(part)
        c.flush()
        self.assertEqual(c.echo.received, b"".join(parts))
        self.assertEqual(c.sink.received, b"".join(parts))

    def test_greetings_during_the_handshake(self) -> None:
        """Writes waiting for the handshake go out when it ends, and the
        client's first data, in the same chunk as its last handshake
        message, is not lost."""
        hers, mine = b"h" * (3 * RELEASE_AT), b"m" * (2 * RELEASE_AT)
        c = Conversation(self, server_says=hers, client_says=mine, tls12=True)
        self.assertEqual(c.echo.received, mine)
        self.assertEqual(c.sink.received, hers + mine)

    def test_records_split_across_chunks(self) -> None:
        """Records cut anywhere by the network, with the BIOs replaced
        between the pieces, arrive whole and in order."""
        c = Conversation(self, tls12=True)
        parts = [bytes([i]) * (2 * RELEASE_AT + 37 * i) for i in range(12)]
        for part in parts:
            c.client._write(part)
        wire = c.client.transport.getOutBuffer()
        swaps = set()
        for at in range(0, len(wire), 1500):
            c.server.dataReceived(wire[at : at + 1500])
            swaps.add(c.bios())
        c.flush()
        self.assertGreater(len(swaps), 1)
        self.assertEqual(c.echo.received, b"".join(parts))
        self.assertEqual(c.sink.received, b"".join(parts))

    def test_small_writes_still_gathered(self) -> None:
        """Writes are still gathered until the clock turns, as Twisted's
        own TLS layer does."""
        c = Conversation(self, tls12=True)
        c.server.write(b"one")
        c.server.write(b"two")
        c.pump.pump(advanceClock=False)
        self.assertEqual(c.sink.received, b"")
        c.flush()
        self.assertEqual(c.sink.received, b"onetwo")
