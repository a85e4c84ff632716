"""
The device connection adapter: bytes in, the engine called, errors as
error frames and a close.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from msync.delivery.session import Refused
from msync.link.protocol import AddressGate, DeviceFactory, DeviceProtocol
from msync.model import Target
from msync.wire.frames import MAX_SERVER_FRAME, FrameDecoder, encode
from msync.wire.messages import (
    Ack,
    Error,
    Hello,
    Message,
    Ping,
    Point,
    Pong,
    Sync,
    Welcome,
    parse,
    to_frame,
)
from tests.delivery_world import INSTANCE, World

HELLO = Hello(
    instance=INSTANCE,
    device="dev1",
    secret="s" * 20,
    os="IOS",
    app_version="1.0",
)


class Conn:
    """A protocol on a string transport, and what it wrote."""

    def __init__(
        self, world: World, factory: DeviceFactory | None = None
    ) -> None:
        factory = factory or DeviceFactory(world.engine)
        self.proto = factory.buildProtocol(None)
        assert isinstance(self.proto, DeviceProtocol)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self._decoder = FrameDecoder(MAX_SERVER_FRAME)
        self.received: list[Message] = []

    def feed(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def read(self) -> list[Message]:
        data = self.transport.value()
        self.transport.clear()
        self.received += [parse(m) for m in self._decoder.feed(data)]
        return self.received

    @property
    def lost(self) -> bool:
        return bool(self.transport.disconnecting)

    def error(self) -> Error:
        errors = [m for m in self.read() if isinstance(m, Error)]
        assert errors, self.received
        return errors[-1]


class LinkTests(SynchronousTestCase):
    """Frames from devices, good and bad."""

    def setUp(self) -> None:
        self.w = World(self)
        self.w.config("A", Target.DEVICE)

    def test_hello_then_ping(self) -> None:
        """A hello is welcomed and a ping answered with its number."""
        c = Conn(self.w)
        c.feed(to_frame(HELLO) + to_frame(Ping(7)))
        self.assertIsInstance(c.read()[0], Welcome)
        self.assertEqual(c.read()[-1], Pong(7))
        self.assertFalse(c.lost)

    def test_byte_at_a_time(self) -> None:
        """Frames split into single bytes work the same."""
        c = Conn(self.w)
        for byte in to_frame(HELLO) + to_frame(Ping(1)):
            c.feed(bytes([byte]))
        self.assertEqual(c.read()[-1], Pong(1))

    def test_ops_and_acks(self) -> None:
        """Ops reach the connection and its acks free the window."""
        c = Conn(self.w)
        c.feed(to_frame(HELLO))
        r = self.w.send("A", "x", "dev1")
        [sync] = [m for m in c.read() if isinstance(m, Sync)]
        self.assertEqual(sync.groups[0].ops[0].op_id, r.op_id)
        point = Point("A", "d:dev1", self.w.store.epoch, r.op_id)
        c.feed(to_frame(Ack((point,))))
        assert c.proto.session is not None
        self.assertEqual(c.proto.session.inflight_ops, 0)

    def test_frames_before_hello_refused(self) -> None:
        """Anything but hello first is refused, then the link closes."""
        c = Conn(self.w)
        c.feed(to_frame(Ping(1)))
        self.assertEqual(c.error().code, "UNEXPECTED")
        self.assertTrue(c.lost)

    def test_second_hello_refused(self) -> None:
        """A second hello is out of order."""
        c = Conn(self.w)
        c.feed(to_frame(HELLO) + to_frame(HELLO))
        self.assertEqual(c.error().code, "UNEXPECTED")

    def test_server_messages_from_device_refused(self) -> None:
        """Messages only the server sends are refused from a device."""
        c = Conn(self.w)
        c.feed(to_frame(HELLO) + to_frame(Welcome("dev1", 30, 0)))
        self.assertEqual(c.error().code, "UNEXPECTED")

    def test_bad_frames(self) -> None:
        """Undecodable, oversized and malformed frames each get their
        code, and nothing after them is read."""
        cases = [
            (struct.pack(">I", 3) + b"\xc1\xc1\xc1", "BAD_FRAME"),
            (struct.pack(">I", 10**7), "FRAME_TOO_LARGE"),
            (encode({"t": "hello", "v": "1"}), "BAD_MESSAGE"),
            (encode({"t": "nonsense"}), "BAD_MESSAGE"),
        ]
        for data, code in cases:
            c = Conn(self.w)
            c.feed(data + to_frame(HELLO))
            self.assertEqual(c.error().code, code)
            self.assertTrue(c.lost)
            self.assertFalse(any(isinstance(m, Welcome) for m in c.read()))

    def test_nothing_after_error(self) -> None:
        """Frames arriving after an error are ignored."""
        c = Conn(self.w)
        c.feed(to_frame(Ping(1)))
        c.read()
        c.feed(to_frame(HELLO))
        self.assertEqual(c.transport.value(), b"")

    def test_refused_hello(self) -> None:
        """A refused hello gets its code and a close."""
        c = Conn(self.w)
        c.feed(to_frame(Hello("nope", "d", "s" * 20, "IOS", "1")))
        self.assertEqual(c.error().code, "UNKNOWN_INSTANCE")
        self.assertTrue(c.lost)

    def test_device_error_closes(self) -> None:
        """A device's error frame closes its connection quietly."""
        c = Conn(self.w)
        c.feed(to_frame(HELLO) + to_frame(Error("INTERNAL", "bye")))
        self.assertTrue(c.lost)
        self.assertFalse(any(isinstance(m, Error) for m in c.read()))

    def test_connection_lost_forgets_session(self) -> None:
        """A lost connection takes its device offline."""
        c = Conn(self.w)
        c.feed(to_frame(HELLO))
        self.assertEqual(self.w.engine.online, 1)
        c.proto.connectionLost()
        self.assertEqual(self.w.engine.online, 0)

    def test_pause_and_resume(self) -> None:
        """While the transport pauses us nothing is written; on resume the
        pending ops go out."""
        c = Conn(self.w)
        c.feed(to_frame(HELLO))
        c.read()
        c.proto.pauseProducing()
        self.w.send("A", "x", "dev1")
        self.assertEqual(c.transport.value(), b"")
        c.proto.resumeProducing()
        self.assertTrue(any(isinstance(m, Sync) for m in c.read()))


class SlowHelloTests(SynchronousTestCase):
    """Frames that arrive while the hello is still being checked."""

    def setUp(self) -> None:
        self.w = World(self)
        self.w.config("A", Target.DEVICE)
        self.gate: Deferred[None] = Deferred()
        admit = self.w.engine.hello

        def slow(link: Any, hello: Hello) -> Deferred[Any]:
            return self.gate.addCallback(lambda _: admit(link, hello))

        self.patch(self.w.engine, "hello", slow)

    def test_frames_wait_for_the_hello(self) -> None:
        """Frames sent with and after a pending hello are handled in
        order once it is admitted, and none before."""
        c = Conn(self.w)
        c.feed(to_frame(HELLO) + to_frame(Ping(1)) + to_frame(Ping(2)))
        c.feed(to_frame(Ping(3)))
        self.assertEqual(c.read(), [])
        self.gate.callback(None)
        messages = c.read()
        self.assertIsInstance(messages[0], Welcome)
        self.assertEqual(
            [m for m in messages if isinstance(m, Pong)],
            [Pong(1), Pong(2), Pong(3)],
        )
        c.feed(to_frame(Ping(4)))
        self.assertEqual(c.read()[-1], Pong(4))
        self.assertFalse(c.lost)

    def test_refused_hello_drops_waiting_frames(self) -> None:
        """A refused hello closes the link and what waited behind it is
        never answered."""
        c = Conn(self.w)
        c.feed(to_frame(HELLO) + to_frame(Ping(1)))
        self.gate.errback(Refused("NOPE", "not today"))
        self.assertEqual(c.error().code, "NOPE")
        self.assertEqual([m for m in c.read() if isinstance(m, Pong)], [])
        self.assertTrue(c.lost)


class HostileTests(SynchronousTestCase):
    """Clients that flood."""

    def setUp(self) -> None:
        self.w = World(self)

    def test_frame_flood_closed(self) -> None:
        """A device sending frames faster than the rate is closed with
        RATE; one within the rate is not."""
        factory = DeviceFactory(self.w.engine, frame_rate=10)
        c = Conn(self.w, factory)
        c.feed(to_frame(HELLO) + to_frame(Ping(0)) * 15)
        self.assertFalse(c.lost)
        self.w.clock.advance(1)
        c.feed(to_frame(Ping(1)) * 9)
        self.assertFalse(c.lost)
        c.feed(to_frame(Ping(2)) * 30)
        self.assertEqual(c.error().code, "RATE")
        self.assertTrue(c.lost)

    def test_per_address_limit(self) -> None:
        """Past the limit, new connections from one address are refused
        before any protocol runs; other addresses still get in; closing
        one makes room."""
        devices = DeviceFactory(self.w.engine)
        gate = AddressGate(devices, devices, per_address=2)
        a1 = IPv4Address("TCP", "10.0.0.1", 1)
        b1 = IPv4Address("TCP", "10.0.0.2", 1)
        first = gate.buildProtocol(a1)
        gate.buildProtocol(a1)
        self.assertIsNone(gate.buildProtocol(a1))
        self.assertIsNotNone(gate.buildProtocol(b1))
        self.assertEqual(gate.refused, 1)
        first.makeConnection(StringTransport())
        first.connectionLost()
        self.assertIsNotNone(gate.buildProtocol(a1))
