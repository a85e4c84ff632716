"""
The device SDK: hello, delivery into the local store, acks, gaps, errors,
heartbeats, reconnects and the command-line device.

Most tests play the server themselves: a fake endpoint hands the client a
L{StringTransport}, and the test reads the device's frames from it and
writes frames back, with a L{MemoryReactorClock} for time.  The last test
runs a small TLS server on loopback with a real reactor.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import lmdb
import pytest
from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from msync import cli as msync_cli
from msync.devcerts import ensure_dev_certs
from msync.device import DeviceClient, ServerRefused, SyncMessage
from msync.device import cli as device_cli
from msync.device.local import LocalStore, LocalStoreError
from msync.device.protocol import HELLO_TIMEOUT
from msync.tls import server_options
from msync.wire.frames import MAX_DEVICE_FRAME, FrameDecoder
from msync.wire.messages import (
    Ack,
    Bind,
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
    parse,
    to_frame,
)

EPOCH = 77
ALICE = "u:alice"


def temp_path(case: SynchronousTestCase) -> str:
    """Return a path in a fresh directory removed after C{case}."""
    parent = tempfile.mkdtemp(prefix="msync-device-test-")
    case.addCleanup(shutil.rmtree, parent, ignore_errors=True)
    return os.path.join(parent, "x")


def sync(*groups: tuple[str, str, int, list[int]]) -> Sync:
    """Build a sync frame whose op payloads say which op they are."""
    return Sync(
        tuple(
            Group(
                biz,
                scope,
                epoch,
                tuple(
                    WireOp(i, f"op {i}".encode(), f"m-{i}", 1000 + i)
                    for i in ids
                ),
            )
            for biz, scope, epoch, ids in groups
        )
    )


class Link:
    """The server's end of one fake connection."""

    def __init__(self, protocol: IProtocol, transport: StringTransport):
        self.protocol = protocol
        self.transport = transport
        self._decoder = FrameDecoder(MAX_DEVICE_FRAME)

    def received(self) -> list[Message]:
        """Return the messages the device wrote since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return [parse(m) for m in self._decoder.feed(data)]

    def send(self, message: Message) -> None:
        """Deliver C{message} to the device."""
        self.protocol.dataReceived(to_frame(message))

    def welcome(self, heartbeat: int = 30) -> Hello:
        """Read the hello and answer it; return the hello."""
        hello = self.received()[0]
        assert isinstance(hello, Hello)
        self.send(Welcome(hello.device, heartbeat, 0))
        return hello

    def lose(self) -> None:
        """End the connection, as the network would."""
        self.protocol.connectionLost(Failure(ConnectionDone()))


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """An endpoint whose connection attempts the test completes."""

    def __init__(self) -> None:
        self.attempts: list[tuple[IProtocolFactory, Deferred[IProtocol]]] = []
        self.current: Link | None = None

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        d: Deferred[IProtocol] = Deferred()
        self.attempts.append((factory, d))
        return d

    def accept(self, transport: StringTransport | None = None) -> Link:
        """Complete the oldest attempt over C{transport}."""
        factory, d = self.attempts.pop(0)
        protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1))
        assert protocol is not None
        transport = transport or StringTransport()
        protocol.makeConnection(transport)
        d.callback(protocol)
        self.current = Link(protocol, transport)
        return self.current

    def refuse(self) -> None:
        """Fail the oldest attempt."""
        _, d = self.attempts.pop(0)
        d.errback(ConnectionRefusedError())


class Harness:
    """A device client on a fake network, and what it delivered."""

    def __init__(
        self, case: SynchronousTestCase, data_dir: str, **kwargs: Any
    ) -> None:
        self.case = case
        self.data_dir = data_dir
        self.kwargs = kwargs
        self.clock = MemoryReactorClock()
        self.endpoint = FakeEndpoint()
        self.got: list[SyncMessage] = []
        self.client = self._make()
        self.closed = False

    def _make(self) -> DeviceClient:
        options: dict[str, Any] = {
            "endpoint": self.endpoint,
            "jitter": lambda: 0.0,
            "app_key": "key-1",
        }
        options.update(self.kwargs)
        return DeviceClient(
            self.clock,
            "msync.example",
            7443,
            "",
            "WS_app",
            "ANDROID",
            "1.2.0",
            self.data_dir,
            **options,
        )

    def register(self, biz: str = "UCHAT") -> None:
        """Register C{biz} and let its backlog through."""
        self.client.register_biz(biz, self.got.append)
        self.clock.advance(0)

    def connect(self, heartbeat: int = 30) -> Link:
        """Go to the foreground and complete the handshake."""
        self.client.app_to_foreground()
        link = self.endpoint.accept()
        link.welcome(heartbeat)
        return link

    def stop(self) -> None:
        """Close the client, as a quitting app would."""
        if self.closed:
            return
        self.closed = True
        done = self.client.close()
        if not done.called and self.endpoint.current is not None:
            self.endpoint.current.lose()
        self.case.successResultOf(done)

    def restart(self) -> None:
        """Close the client and open a new one on the same data dir."""
        self.stop()
        self.got = []
        self.endpoint = FakeEndpoint()
        self.client = self._make()
        self.closed = False


class DeviceTestCase(SynchronousTestCase):
    """Helpers to make devices that are closed after each test."""

    def device(self, data_dir: str | None = None, **kwargs: Any) -> Harness:
        if data_dir is None:
            data_dir = temp_path(self)
        harness = Harness(self, data_dir, **kwargs)
        self.addCleanup(harness.stop)
        return harness


class HelloTests(DeviceTestCase):
    """What the device says when it connects."""

    def test_device_identity(self) -> None:
        """A generated id is 32 hex digits, kept with its secret."""
        h = self.device()
        h.client.app_to_foreground()
        hello = h.endpoint.accept().received()[0]
        assert isinstance(hello, Hello)
        self.assertRegex(h.client.device_id, r"\A[0-9a-f]{32}\Z")
        self.assertEqual(hello.device, h.client.device_id)
        self.assertGreaterEqual(len(hello.secret), 40)

        first = hello
        h.stop()
        h = self.device(h.data_dir)
        h.client.app_to_foreground()
        again = h.endpoint.accept().received()[0]
        assert isinstance(again, Hello)
        self.assertEqual(
            (again.device, again.secret), (first.device, first.secret)
        )

    def test_given_device_id(self) -> None:
        """A device id passed in is used and kept for later clients."""
        h = self.device(device_id="phone-7")
        self.assertEqual(h.client.device_id, "phone-7")
        h.stop()
        self.assertEqual(self.device(h.data_dir).client.device_id, "phone-7")

    def test_hello_fields(self) -> None:
        """The hello names the app, its points and the bound user."""
        h = self.device()
        h.connect().send(Gap("UCHAT", ALICE, EPOCH, 40, "retries"))
        h.client.update_user_info("alice", "s-1")
        h.restart()
        h.client.app_to_foreground()
        hello = h.endpoint.accept().received()[0]
        assert isinstance(hello, Hello)
        self.assertEqual(
            hello,
            Hello(
                instance="WS_app",
                device=h.client.device_id,
                secret=hello.secret,
                os="ANDROID",
                app_version="1.2.0",
                points=(Point("UCHAT", ALICE, EPOCH, 40),),
                app_key="key-1",
                user="alice",
                session="s-1",
            ),
        )

    def test_many_points(self) -> None:
        """Points that do not fit a hello follow as acks after welcome."""
        data_dir = temp_path(self)
        store = LocalStore(data_dir, sync=False)
        wanted = [Point("UCHAT", f"u:user-{i:05}", 1, i) for i in range(5000)]
        for point in wanted:
            store.set_point(point)
        store.close()

        h = self.device(data_dir)
        h.client.app_to_foreground()
        link = h.endpoint.accept()
        raw = link.transport.value()
        hello = link.welcome()
        assert isinstance(hello, Hello)
        self.assertLessEqual(len(raw), MAX_DEVICE_FRAME + 4)
        self.assertLessEqual(len(hello.points), 4096)
        acks = link.received()
        later = [p for ack in acks if isinstance(ack, Ack) for p in ack.points]
        self.assertEqual(len(hello.points) + len(later), len(wanted))
        self.assertEqual(set(hello.points) | set(later), set(wanted))

    def test_user_binding(self) -> None:
        """Binding and unbinding while connected send bind and unbind."""
        h = self.device()
        link = h.connect()
        h.client.update_user_info("alice", "s-1")
        h.client.clear_user_info()
        self.assertEqual(link.received(), [Bind("alice", "s-1"), Unbind()])

        # A change between hello and welcome follows the welcome.
        link.lose()
        h.clock.advance(1)
        link = h.endpoint.accept()
        h.client.update_user_info("bob", "s-2")
        hello = link.welcome()
        self.assertEqual(hello.user, "")
        self.assertEqual(link.received(), [Bind("bob", "s-2")])

    def test_pull(self) -> None:
        """A pull is sent only on a connection the server welcomed."""
        h = self.device()
        h.client.pull()
        link = h.connect()
        h.client.pull()
        self.assertEqual(link.received(), [Pull()])

    def test_bad_arguments(self) -> None:
        """Malformed identifying arguments are refused at once."""
        for change in [
            {"os_type": "WINDOWS"},
            {"app_version": "1.x"},
            {"instance_id": ""},
            {"device_id": "a\nb"},
        ]:
            args: dict[str, Any] = {
                "instance_id": "WS_app",
                "os_type": "ios",
                "app_version": "1.0",
                "device_id": None,
            }
            args.update(change)
            self.assertRaises(
                ValueError,
                DeviceClient,
                MemoryReactorClock(),
                "h",
                1,
                "",
                args["instance_id"],
                args["os_type"],
                args["app_version"],
                temp_path(self),
                device_id=args["device_id"],
                endpoint=FakeEndpoint(),
            )


class SyncTests(DeviceTestCase):
    """How sync frames become stored, acknowledged, delivered messages."""

    def test_deliver_in_order_and_ack(self) -> None:
        """New ops are delivered in order; one ack names each scope's top."""
        h = self.device()
        h.register("UCHAT")
        h.register("CONFIG")
        link = h.connect()
        link.send(
            sync(
                ("UCHAT", ALICE, EPOCH, [1042, 1050]),
                ("CONFIG", "g", EPOCH, [12]),
            )
        )
        self.assertEqual(
            [(m.biz_type, m.op_id, m.text) for m in h.got],
            [
                ("UCHAT", 1042, "op 1042"),
                ("UCHAT", 1050, "op 1050"),
                ("CONFIG", 12, "op 12"),
            ],
        )
        self.assertEqual(h.got[0].third_msg_id, "m-1042")
        self.assertEqual(h.got[0].created_ms, 2042)
        self.assertEqual(
            link.received(),
            [
                Ack(
                    (
                        Point("UCHAT", ALICE, EPOCH, 1050),
                        Point("CONFIG", "g", EPOCH, 12),
                    )
                )
            ],
        )

    def test_stored_before_ack_before_delivery(self) -> None:
        """The ack is written after the store holds the ops, and before
        any callback runs."""
        h = self.device()
        seen: list[tuple[bytes, list[SyncMessage], list[Point]]] = []

        class Snooping(StringTransport):
            def write(self, data: bytes) -> None:
                seen.append(
                    (
                        data,
                        h.client.pending_messages(),
                        h.client.sync_points(),
                    )
                )
                super().write(data)

        h.client.app_to_foreground()
        transport = Snooping()
        link = h.endpoint.accept(transport)
        link.welcome()
        acks_at_delivery: list[int] = []
        h.client.register_biz(
            "UCHAT", lambda m: acks_at_delivery.append(len(seen))
        )
        h.clock.advance(0)
        seen.clear()

        link.send(sync(("UCHAT", ALICE, EPOCH, [1, 2])))
        self.assertEqual(len(seen), 1)
        data, pending, points = seen[0]
        self.assertIsInstance(parse(FrameDecoder(1 << 20).feed(data)[0]), Ack)
        self.assertEqual([m.op_id for m in pending], [1, 2])
        self.assertEqual(points, [Point("UCHAT", ALICE, EPOCH, 2)])
        self.assertEqual(acks_at_delivery, [1, 1])

    def test_duplicates_dropped(self) -> None:
        """Ops at or below the point are dropped, and the ack repeats it."""
        h = self.device()
        h.register()
        link = h.connect()
        link.send(sync(("UCHAT", ALICE, EPOCH, [5, 9])))
        link.received()
        link.send(sync(("UCHAT", ALICE, EPOCH, [5, 9, 12])))
        link.send(sync(("UCHAT", ALICE, EPOCH, [9])))
        self.assertEqual([m.op_id for m in h.got], [5, 9, 12])
        self.assertEqual(
            link.received(),
            [
                Ack((Point("UCHAT", ALICE, EPOCH, 12),)),
                Ack((Point("UCHAT", ALICE, EPOCH, 12),)),
            ],
        )

    def test_epoch_change(self) -> None:
        """A group of another epoch starts its scope again from op 0."""
        h = self.device()
        h.register()
        link = h.connect()
        link.send(sync(("UCHAT", ALICE, EPOCH, [50])))
        link.send(sync(("UCHAT", ALICE, EPOCH + 1, [3, 4])))
        self.assertEqual(
            [(m.epoch, m.op_id) for m in h.got],
            [(EPOCH, 50), (EPOCH + 1, 3), (EPOCH + 1, 4)],
        )
        self.assertEqual(
            link.received()[-1], Ack((Point("UCHAT", ALICE, EPOCH + 1, 4),))
        )

    def test_unregistered_biz_waits(self) -> None:
        """Messages of an unregistered biz wait, then come after register,
        from the reactor, before newer ones."""
        h = self.device()
        link = h.connect()
        link.send(sync(("UCHAT", ALICE, EPOCH, [1, 2])))
        h.client.register_biz("UCHAT", h.got.append)
        self.assertEqual(h.got, [])

        # Ops arriving before the backlog is out must not overtake it.
        link.send(sync(("UCHAT", ALICE, EPOCH, [3])))
        self.assertEqual(h.got, [])
        h.clock.advance(0)
        self.assertEqual([m.op_id for m in h.got], [1, 2, 3])

        # Unregistered again, new messages wait; delivered ones do not
        # come twice in one run.
        h.client.unregister_biz("UCHAT")
        link.send(sync(("UCHAT", ALICE, EPOCH, [4])))
        h.register()
        self.assertEqual([m.op_id for m in h.got], [1, 2, 3, 4])

    def test_report_survives_restart(self) -> None:
        """A reported message never comes back; unreported ones do."""
        h = self.device()
        h.register()
        h.connect().send(sync(("UCHAT", ALICE, EPOCH, [1, 2, 3])))
        h.client.report_msg_received(h.got[1])

        h.restart()
        h.register()
        self.assertEqual([m.op_id for m in h.got], [1, 3])
        self.assertEqual(h.got[0].payload, b"op 1")

        # The server pushes them again (it had the ack): still no repeat.
        h.connect().send(sync(("UCHAT", ALICE, EPOCH, [1, 2, 3])))
        self.assertEqual([m.op_id for m in h.got], [1, 3])

    def test_failing_callback(self) -> None:
        """A callback that raises leaves its message pending, and the
        others still come."""
        h = self.device()

        def fussy(message: SyncMessage) -> None:
            if message.op_id == 1:
                raise RuntimeError("app bug")
            h.got.append(message)

        h.client.register_biz("UCHAT", fussy)
        h.clock.advance(0)
        link = h.connect()
        link.send(sync(("UCHAT", ALICE, EPOCH, [1, 2])))
        self.assertEqual([m.op_id for m in h.got], [2])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(link.transport.disconnecting)
        self.assertEqual(
            [m.op_id for m in h.client.pending_messages()], [1, 2]
        )


class AckOnReportTests(DeviceTestCase):
    """The C{ack_on_receive=False} mode: acks follow the app's reports."""

    def test_ack_on_report(self) -> None:
        """Nothing is acked on receipt; a report acks its scope up to it."""
        h = self.device(ack_on_receive=False)
        h.register()
        link = h.connect()
        link.send(sync(("UCHAT", ALICE, EPOCH, [1, 2, 3])))
        self.assertEqual(link.received(), [])

        h.client.report_msg_received(h.got[1])
        self.assertEqual(
            link.received(), [Ack((Point("UCHAT", ALICE, EPOCH, 2),))]
        )

        # An earlier op reported later moves nothing backwards.
        h.client.report_msg_received(h.got[0])
        self.assertEqual(link.received(), [])
        self.assertEqual(
            h.client.sync_points(), [Point("UCHAT", ALICE, EPOCH, 2)]
        )

    def test_pending_resent(self) -> None:
        """An op pushed again while pending is not delivered again."""
        h = self.device(ack_on_receive=False)
        h.register()
        link = h.connect()
        link.send(sync(("UCHAT", ALICE, EPOCH, [1, 2])))
        link.send(sync(("UCHAT", ALICE, EPOCH, [1, 2, 3])))
        self.assertEqual([m.op_id for m in h.got], [1, 2, 3])

        # Across a restart, the store still knows what is pending.
        h.client.report_msg_received(h.got[0])
        h.restart()
        h.register()
        self.assertEqual([m.op_id for m in h.got], [2, 3])
        link = h.connect()
        link.send(sync(("UCHAT", ALICE, EPOCH, [2, 3])))
        self.assertEqual([m.op_id for m in h.got], [2, 3])

    def test_report_across_epochs(self) -> None:
        """Reporting an op of a rebuilt log leaves the new log's point."""
        h = self.device(ack_on_receive=False)
        h.register()
        link = h.connect()
        link.send(sync(("UCHAT", ALICE, EPOCH, [50])))
        link.send(sync(("UCHAT", ALICE, EPOCH + 1, [3])))
        old, new = h.got
        h.client.report_msg_received(new)
        h.client.report_msg_received(old)
        self.assertEqual(
            link.received(), [Ack((Point("UCHAT", ALICE, EPOCH + 1, 3),))]
        )
        self.assertEqual(h.client.pending_messages(), [])


class GapAndErrorTests(DeviceTestCase):
    """Gap notices, error frames and broken frames from the server."""

    def test_gap(self) -> None:
        """A gap sets the point, keeps pending messages and is told."""
        h = self.device()
        gaps: list[tuple[str, str, int, str]] = []
        h.client.on_gap(lambda *a: gaps.append(a))
        link = h.connect()
        link.send(sync(("UCHAT", ALICE, EPOCH, [1, 2])))
        link.send(Gap("UCHAT", ALICE, EPOCH, 30, "retries"))
        self.assertEqual(gaps, [("UCHAT", ALICE, 30, "retries")])
        self.assertEqual(
            h.client.sync_points(), [Point("UCHAT", ALICE, EPOCH, 30)]
        )
        link.send(sync(("UCHAT", ALICE, EPOCH, [30, 31])))
        h.register()
        self.assertEqual([m.op_id for m in h.got], [1, 2, 31])

    def test_error_reconnects(self) -> None:
        """An error that is not fatal is recorded; the device comes back."""
        h = self.device()
        link = h.connect()
        link.send(Error("SHUTDOWN", "bye"))
        self.assertEqual(h.client.last_error, Error("SHUTDOWN", "bye"))
        self.assertTrue(link.transport.disconnecting)
        link.lose()
        self.assertFalse(h.client.is_connected())
        h.clock.advance(0.5)
        self.assertEqual(len(h.endpoint.attempts), 1)

    def test_fatal_error(self) -> None:
        """A fatal error stops reconnecting until the next foreground."""
        h = self.device()
        errors: list[Error] = []
        h.client.on_error(errors.append)
        h.client.app_to_foreground()
        link = h.endpoint.accept()
        waiting = h.client.when_connected()
        link.send(Error("DEVICE_CLAIMED", "not yours"))
        link.lose()
        failure = self.failureResultOf(waiting, ServerRefused)
        self.assertEqual(failure.value.code, "DEVICE_CLAIMED")
        self.assertEqual(errors, [Error("DEVICE_CLAIMED", "not yours")])
        h.clock.advance(3600)
        self.assertEqual(h.endpoint.attempts, [])

        h.client.app_to_foreground()
        self.assertEqual(len(h.endpoint.attempts), 1)

    def test_bad_frame(self) -> None:
        """A frame that breaks the protocol is answered with an error and
        the connection closes."""
        h = self.device()
        link = h.connect()
        link.protocol.dataReceived(b"\x00\x00\x00\x00")
        self.assertEqual(link.received(), [Error("BAD_FRAME", "empty frame")])
        self.assertTrue(link.transport.disconnecting)

    def test_out_of_order(self) -> None:
        """A sync before welcome, or a welcome for another device, is
        refused."""
        h = self.device()
        h.client.app_to_foreground()
        link = h.endpoint.accept()
        link.received()
        link.send(sync(("UCHAT", ALICE, EPOCH, [1])))
        self.assertEqual([type(m) for m in link.received()], [Error])
        self.assertTrue(link.transport.disconnecting)
        link.lose()

        h.clock.advance(0.5)
        link = h.endpoint.accept()
        link.received()
        link.send(Welcome("someone-else", 30, 0))
        (error,) = link.received()
        assert isinstance(error, Error)
        self.assertEqual(error.code, "BAD_MESSAGE")
        self.assertFalse(h.client.is_connected())


class ConnectionTests(DeviceTestCase):
    """Heartbeats, silence, backoff and going to the background."""

    def test_heartbeats(self) -> None:
        """The device pings every heartbeat and answers pings."""
        h = self.device()
        link = h.connect(heartbeat=10)
        h.clock.advance(10)
        h.clock.advance(10)
        link.send(Ping(7))
        self.assertEqual(link.received(), [Ping(1), Ping(2), Pong(7)])

    def test_silence_drops(self) -> None:
        """Three silent heartbeats drop the connection, then it comes
        back."""
        h = self.device()
        link = h.connect(heartbeat=10)
        h.clock.advance(15)
        link.send(Pong(1))
        h.clock.advance(29)
        self.assertFalse(link.transport.disconnecting)
        h.clock.advance(1)
        self.assertTrue(link.transport.disconnecting)
        link.lose()
        h.clock.advance(0.5)
        self.assertEqual(len(h.endpoint.attempts), 1)

    def test_hello_unanswered(self) -> None:
        """A server that never answers the hello is dropped."""
        h = self.device()
        h.client.app_to_foreground()
        link = h.endpoint.accept()
        h.clock.advance(HELLO_TIMEOUT)
        self.assertTrue(link.transport.disconnecting)

    def test_backoff(self) -> None:
        """Reconnects back off from 0.5 s up to 30 s, and start over after
        a welcome but not after a mere connection."""
        h = self.device()
        h.client.app_to_foreground()
        delays = []
        for _ in range(9):
            h.endpoint.refuse()
            waited = 0.0
            while not h.endpoint.attempts:
                h.clock.advance(0.25)
                waited += 0.25
            delays.append(waited)
        self.assertEqual(delays, [0.5, 1, 2, 4, 8, 16, 30, 30, 30])

        # Connected but never welcomed: still backing off.
        h.endpoint.accept().lose()
        h.clock.advance(29)
        self.assertEqual(h.endpoint.attempts, [])
        h.clock.advance(1)

        link = h.endpoint.accept()
        link.welcome()
        link.lose()
        h.clock.advance(0.5)
        self.assertEqual(len(h.endpoint.attempts), 1)

    def test_jitter(self) -> None:
        """Jitter adds to each delay."""
        h = self.device(jitter=lambda: 0.25)
        h.client.app_to_foreground()
        h.endpoint.refuse()
        h.clock.advance(0.5)
        self.assertEqual(h.endpoint.attempts, [])
        h.clock.advance(0.25)
        self.assertEqual(len(h.endpoint.attempts), 1)

    def test_background(self) -> None:
        """Background disconnects and stays disconnected."""
        h = self.device()
        link = h.connect()
        self.assertTrue(h.client.is_connected())
        done = h.client.app_to_background()
        self.assertNoResult(done)
        self.assertTrue(link.transport.disconnecting)
        link.lose()
        self.successResultOf(done)
        self.assertFalse(h.client.is_connected())
        h.clock.advance(3600)
        self.assertEqual(h.endpoint.attempts, [])

    def test_when_connected(self) -> None:
        """when_connected fires with the next welcome."""
        h = self.device()
        waiting = h.client.when_connected()
        h.client.app_to_foreground()
        link = h.endpoint.accept()
        self.assertNoResult(waiting)
        link.welcome(heartbeat=12)
        self.assertEqual(self.successResultOf(waiting).heartbeat, 12)

    def test_default_endpoint(self) -> None:
        """Without an endpoint, the client connects to host and port and
        retries refusals."""
        certs = ensure_dev_certs(temp_path(self))
        clock = MemoryReactorClock()
        client = DeviceClient(
            clock,
            "127.0.0.1",
            7443,
            certs.ca,
            "WS_app",
            "IOS",
            "1.0",
            temp_path(self),
            jitter=lambda: 0.0,
        )
        client.app_to_foreground()
        clock.advance(0)
        self.assertEqual(
            [(c[0], c[1]) for c in clock.tcpClients], [("127.0.0.1", 7443)]
        )
        factory = clock.tcpClients[0][2]
        factory.clientConnectionFailed(
            clock.connectors[0], Failure(ConnectionRefusedError())
        )

        # HostnameEndpoint notices that no address is left on its next
        # attempt (0.3 s), then the first retry waits 0.5 s.
        clock.advance(0.3)
        self.assertEqual(len(clock.tcpClients), 1)
        clock.advance(0.5)
        self.assertEqual(len(clock.tcpClients), 2)
        self.successResultOf(client.close())


class LocalStoreTests(SynchronousTestCase):
    """The local store on its own."""

    def test_biz_prefixes(self) -> None:
        """A biz type's pending messages exclude those of longer names."""
        store = LocalStore(temp_path(self), sync=False)
        self.addCleanup(store.close)
        store.receive(
            sync(
                ("AB", "g", 1, [1]), ("A", "g", 1, [2]), ("A", "d:x", 1, [3])
            ),
            advance=True,
        )
        self.assertEqual(
            [(m.biz_type, m.scope, m.op_id) for m in store.pending("A")],
            [("A", "d:x", 3), ("A", "g", 2)],
        )
        self.assertEqual(len(store.pending()), 3)

    def test_in_use(self) -> None:
        """A data dir open in this process, or of another layout, is
        refused."""
        path = temp_path(self)
        store = LocalStore(path, sync=False)
        self.assertRaises(LocalStoreError, LocalStore, path)
        store.close()

        env = lmdb.open(path, max_dbs=3)
        with env.begin(write=True) as txn:
            txn.put(b"schema", b"99", db=env.open_db(b"meta", txn=txn))
        env.close()
        self.assertRaises(LocalStoreError, LocalStore, path)

    def test_text(self) -> None:
        """A message's text is its UTF-8 payload, or None."""
        m = SyncMessage("B", "g", 1, 1, "héllo".encode(), "", 0)
        self.assertEqual(m.text, "héllo")
        self.assertIsNone(SyncMessage("B", "g", 1, 1, b"\xff", "", 0).text)


@dataclass
class Watch:
    """An C{msync device} run on a fake network: its exit status to come,
    and what it wrote."""

    clock: MemoryReactorClock = field(default_factory=MemoryReactorClock)
    endpoint: FakeEndpoint = field(default_factory=FakeEndpoint)
    out: io.StringIO = field(default_factory=io.StringIO)
    err: io.StringIO = field(default_factory=io.StringIO)
    status: Deferred[int] = field(default_factory=Deferred)


def device_args(*extra: str) -> argparse.Namespace:
    """Parse an C{msync device} command line."""
    return msync_cli.parser().parse_args(
        [
            "device",
            "--host",
            "localhost",
            "--port",
            "7443",
            "--ca",
            "ca.pem",
            "--instance",
            "WS_app",
            "--biz",
            "UCHAT",
            *extra,
        ]
    )


class CommandLineTests(DeviceTestCase):
    """The command-line device."""

    def test_format(self) -> None:
        """Text payloads print as text, others as base64."""
        text = SyncMessage("UCHAT", ALICE, 1, 9, "hé".encode(), "m", 0)
        binary = SyncMessage("UCHAT", ALICE, 1, 10, b"\x00\xff", "m", 0)
        self.assertEqual(
            json.loads(device_cli.format_message(text)),
            {"biz_type": "UCHAT", "op_id": 9, "text": "hé"},
        )
        self.assertEqual(
            json.loads(device_cli.format_message(binary)),
            {
                "biz_type": "UCHAT",
                "op_id": 10,
                "base64": base64.b64encode(b"\x00\xff").decode(),
            },
        )
        self.assertNotIn("\n", device_cli.format_message(text))

    def test_arguments(self) -> None:
        """The subcommand's defaults are those documented."""
        args = device_args("--biz", "CONFIG")
        self.assertEqual(args.biz, ["UCHAT", "CONFIG"])
        self.assertEqual((args.os, args.app_version), ("ANDROID", "1.0.0"))
        self.assertFalse(args.no_ack)
        self.assertIs(args.run, device_cli.run)

    def run_watch(self, *extra: str) -> Watch:
        """Start C{msync device} with C{extra} options on a fake network."""
        w = Watch()
        args = device_args("--data-dir", temp_path(self), *extra)
        w.status = Deferred.fromCoroutine(
            device_cli.watch(
                w.clock, args, endpoint=w.endpoint, out=w.out, err=w.err
            )
        )
        return w

    def test_count(self) -> None:
        """With --count, the device prints and reports that many ops."""
        w = self.run_watch("--count", "2")
        w.clock.advance(0)
        link = w.endpoint.accept()
        link.welcome()
        link.send(
            Sync(
                (
                    Group(
                        "UCHAT",
                        ALICE,
                        EPOCH,
                        (
                            WireOp(1, b"hi", "m-1", 0),
                            WireOp(2, b"\xff", "m-2", 0),
                            WireOp(3, b"later", "m-3", 0),
                        ),
                    ),
                )
            )
        )
        link.lose()
        self.assertEqual(self.successResultOf(w.status), 0)
        self.assertEqual(
            [json.loads(line) for line in w.out.getvalue().splitlines()],
            [
                {"biz_type": "UCHAT", "op_id": 1, "text": "hi"},
                {"biz_type": "UCHAT", "op_id": 2, "base64": "/w=="},
            ],
        )
        self.assertEqual(
            link.received(),
            [
                Ack((Point("UCHAT", ALICE, EPOCH, 1),)),
                Ack((Point("UCHAT", ALICE, EPOCH, 2),)),
            ],
        )

    def test_timeout(self) -> None:
        """Ops that do not come in time exit 1 with a reason."""
        w = self.run_watch("--count", "1", "--timeout", "5", "--no-ack")
        w.clock.advance(4)
        self.assertNoResult(w.status)
        w.clock.advance(1)
        self.assertEqual(self.successResultOf(w.status), 1)
        self.assertIn("timed out after 5 s with 0 of 1 ops", w.err.getvalue())
        self.assertEqual(w.out.getvalue(), "")

    def test_refused(self) -> None:
        """A fatal error from the server exits 2 with its code."""
        w = self.run_watch()
        link = w.endpoint.accept()
        link.send(Error("AUTH", "wrong app key"))
        link.lose()
        self.assertEqual(self.successResultOf(w.status), 2)
        self.assertIn("AUTH: wrong app key", w.err.getvalue())


class TinyServer(Protocol):
    """Just enough of a server: welcome the hello, push one op, take the
    ack."""

    def __init__(self, acked: Deferred[Ack], gone: Deferred[None]) -> None:
        self.acked = acked
        self.gone = gone
        self.decoder = FrameDecoder(MAX_DEVICE_FRAME)

    def dataReceived(self, data: bytes) -> None:
        for raw in self.decoder.feed(data):
            message = parse(raw)
            if isinstance(message, Hello):
                assert self.transport is not None
                self.transport.write(
                    to_frame(Welcome(message.device, 30, 0))
                    + to_frame(sync(("UCHAT", ALICE, EPOCH, [42])))
                )
            elif isinstance(message, Ack) and not self.acked.called:
                self.acked.callback(message)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.gone.called:
            self.gone.callback(None)


@pytest.mark.process
class LoopbackTests(TestCase):
    """A real TLS connection on loopback."""

    async def test_receive_and_ack(self) -> None:
        """The device connects over TLS, gets an op and acks it."""
        certs = ensure_dev_certs(temp_path(self))
        acked: Deferred[Ack] = Deferred()
        gone: Deferred[None] = Deferred()
        factory = Factory.forProtocol(lambda: TinyServer(acked, gone))
        port = await SSL4ServerEndpoint(
            global_reactor,
            0,
            server_options(certs.cert, certs.key),
            interface="127.0.0.1",
        ).listen(factory)
        self.addCleanup(port.stopListening)

        client = DeviceClient(
            global_reactor,
            "127.0.0.1",
            port.getHost().port,
            certs.ca,
            "WS_app",
            "ANDROID",
            "1.0.0",
            temp_path(self),
            server_name="localhost",
        )
        got: Deferred[SyncMessage] = Deferred()
        client.register_biz("UCHAT", got.callback)
        client.app_to_foreground()
        try:
            message = await got.addTimeout(30, global_reactor)
            ack = await acked.addTimeout(30, global_reactor)
        finally:
            await client.close()
        await gone.addTimeout(30, global_reactor)
        self.assertEqual((message.op_id, message.text), (42, "op 42"))
        self.assertEqual(ack, Ack((Point("UCHAT", ALICE, EPOCH, 42),)))
