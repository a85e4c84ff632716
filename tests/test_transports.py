"""Writes that leave on the socket at once when nothing is queued."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from msync.transports import send_now, straight


class _Queued:
    """A stand-in for a connected UNIX transport: a real socket, and the
    queues Twisted keeps of what it has not sent yet."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.dataBuffer = b""
        self._tempDataBuffer: list[bytes] = []
        self._sendmsgQueue: list[Any] = []
        self.connected = True
        self.disconnecting = False
        self.written: list[bytes] = []

    def getHandle(self) -> socket.socket:
        return self._sock

    def write(self, data: bytes) -> None:
        self.written.append(data)


class SendNowTests(SynchronousTestCase):
    """Writes that leave at once when nothing is queued before them."""

    def setUp(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.addCleanup(self.ours.close)
        self.addCleanup(self.theirs.close)
        self.ours.setblocking(False)
        self.theirs.setblocking(False)
        self.transport = _Queued(self.ours)
        self.write = straight(self.transport)

    def test_nothing_queued(self) -> None:
        """With the transport's queues empty, bytes go to the socket."""
        self.write(b"now")
        self.assertEqual(self.theirs.recv(100), b"now")
        self.assertEqual(self.transport.written, [])

    def test_bytes_or_descriptors_queued(self) -> None:
        """Anything queued in the transport keeps its place: the bytes
        go behind it."""
        for queue in ("dataBuffer", "_tempDataBuffer", "_sendmsgQueue"):
            transport = _Queued(self.ours)
            setattr(transport, queue, b"x" if queue == "dataBuffer" else [1])
            straight(transport)(queue.encode())
            self.assertEqual(transport.written, [queue.encode()])
        self.assertRaises(BlockingIOError, self.theirs.recv, 100)

    def test_socket_full(self) -> None:
        """What the socket does not take goes to the transport, in
        order after what it took."""
        data = b"y" * (8 * 2**20)
        self.write(data)
        self.assertEqual(len(self.transport.written), 1)
        rest = self.transport.written[0]
        got = b""
        while True:
            try:
                got += self.theirs.recv(2**20)
            except BlockingIOError:
                break
        self.assertEqual(got + rest, data)
        self.assertTrue(got)

    def test_unknown_transport(self) -> None:
        """A transport without a socket, or whose queues cannot be
        seen, always gets the bytes itself."""
        plain = StringTransport()
        straight(plain)(b"a")
        self.assertEqual(plain.value(), b"a")

        class Opaque:
            written: list[bytes] = []

            def getHandle(self) -> socket.socket:
                return self_ours

            def write(self, data: bytes) -> None:
                self.written.append(data)

        self_ours = self.ours
        opaque = Opaque()
        straight(opaque)(b"b")
        self.assertEqual(opaque.written, [b"b"])
        self.assertRaises(BlockingIOError, self.theirs.recv, 100)

    def test_closing(self) -> None:
        """A transport that is closing gets the bytes itself (it drops
        them or sends them before it closes)."""
        self.transport.disconnecting = True
        send_now(self.transport, b"late")
        self.assertEqual(self.transport.written, [b"late"])
        self.assertRaises(BlockingIOError, self.theirs.recv, 100)

    def test_lost(self) -> None:
        """A transport whose connection is lost gets the bytes itself
        (and drops them), whether it still says it is connected while
        its socket is already gone, or no longer does."""

        class SocketGone(_Queued):
            def getHandle(self) -> socket.socket:
                raise AttributeError("socket")

        gone = SocketGone(self.ours)
        closed = _Queued(self.ours)
        closed.connected = False
        for transport in (gone, closed):
            send_now(transport, b"late")
            self.assertEqual(transport.written, [b"late"])
        self.assertRaises(BlockingIOError, self.theirs.recv, 100)

    def test_tls_layer(self) -> None:
        """A TLS layer over the socket gets the bytes itself: its handle
        is the TLS connection, and the queues it shows are the socket's
        below it."""
        tls = _Queued(self.ours)
        directlyProvides(tls, ISSLTransport)
        send_now(tls, b"secret")
        self.assertEqual(tls.written, [b"secret"])
        self.assertRaises(BlockingIOError, self.theirs.recv, 100)

    def test_tcp_transport(self) -> None:
        """A TCP transport has no descriptor queue: its byte queues
        alone decide."""
        transport = _Queued(self.ours)
        del transport._sendmsgQueue
        send_now(transport, b"tcp")
        self.assertEqual(self.theirs.recv(100), b"tcp")
        transport.dataBuffer = b"x"
        send_now(transport, b"behind")
        self.assertEqual(transport.written, [b"behind"])
