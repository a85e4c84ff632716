"""The link between gateway workers and the daemon: codec and both ends."""

from __future__ import annotations

import os
import socket
from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from msync.delivery.sender import SendRequest
from msync.gateway.calls import Answer, Call, Checked, refused
from msync.gateway.relay import (
    ANSWERS,
    BATCH_CALLS,
    CALLS,
    HANDOFF,
    READY,
    TAKEN,
    DaemonLink,
    LinkError,
    MessageReader,
    WorkerLink,
    pack_call,
    unpack_answer,
    unpack_call,
)

SEND = SendRequest(
    instance_id="I",
    biz_type="B",
    payload=b"\x00\xffdata",
    third_msg_id="t",
    link_token="alice",
    immediate=False,
    start_ms=5,
    expire_ms=7,
)


class CodecTests(SynchronousTestCase):
    """Messages and items, bytes in, values out."""

    def test_call_round_trip(self) -> None:
        """A checked call with an op, or with a refusal, reads back."""
        call = Call(peer="P", req_msg_id="r" * 32, access_key="AK")
        for checked in (
            Checked("r" * 32, 12.5, SEND),
            Checked("r" * 32, 12.5, None, refused("X", "why")),
        ):
            item = pack_call(7, checked, call)
            wire = msgpack.unpackb(msgpack.packb(item), raw=False)
            call_id, back, back_call = unpack_call(wire)
            self.assertEqual((call_id, back), (7, checked))
            self.assertEqual(
                (back_call.peer, back_call.access_key), ("P", "AK")
            )
            self.assertIsNone(back_call.secret)

    def test_answer_round_trip(self) -> None:
        """An answer reads back, op id and all."""
        answer = Answer("OK", "SUCCESS", "OK", "", True, 42)
        item = [3, ["OK", "SUCCESS", "OK", "", True, 42]]
        self.assertEqual(unpack_answer(item), (3, answer))

    def test_malformed_items(self) -> None:
        """Items of the wrong shape raise L{LinkError}."""
        calls: list[object] = [[1, 2], "x", [1, "r", 1.0, "a", "p", [1], None]]
        for item in calls:
            self.assertRaises(LinkError, unpack_call, item)
        answers: list[object] = [[1], [1, [1, 2]], None]
        for item in answers:
            self.assertRaises(LinkError, unpack_answer, item)

    def test_reader_splits(self) -> None:
        """Messages fed byte by byte come out whole, in order."""
        data = msgpack.packb([READY, 5]) + msgpack.packb([TAKEN])
        reader = MessageReader()
        out: list[Any] = []
        for i in range(len(data)):
            out.extend(reader.feed(data[i : i + 1]))
        self.assertEqual(out, [[READY, 5], [TAKEN]])

    def test_reader_refuses(self) -> None:
        """A non-array, or a message over the limit, is a L{LinkError}."""
        self.assertRaises(LinkError, MessageReader().feed, msgpack.packb(5))
        self.assertRaises(LinkError, MessageReader().feed, msgpack.packb([]))
        big = msgpack.packb([CALLS, b"x" * 2000])
        self.assertRaises(LinkError, MessageReader(limit=1000).feed, big)

    @given(st.binary(max_size=200))
    def test_reader_fuzz(self, data: bytes) -> None:
        """Arbitrary bytes give messages or a L{LinkError}, nothing else."""
        try:
            for message in MessageReader(limit=4096).feed(data):
                self.assertIsInstance(message[0], int)
        except LinkError:
            pass


class Intake:
    """Answers calls when told to."""

    def __init__(self) -> None:
        self.taken: list[tuple[Checked, Call, Deferred[Answer]]] = []

    def take(self, checked: Checked, call: Call) -> Deferred[Answer]:
        d: Deferred[Answer] = Deferred()
        self.taken.append((checked, call, d))
        return d


class LinkTests(SynchronousTestCase):
    """A worker end and a daemon end, wired through string transports."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.intake = Intake()
        self.adopted: list[tuple[int, bytes]] = []
        self.ready: list[int] = []
        self.lost: list[str] = []
        self.daemon = DaemonLink(
            self.intake.take,
            lambda fd, data: self.adopted.append((fd, data)),
            self.clock,
            lambda link, pid: self.ready.append(pid),
            lambda link: self.lost.append("daemon"),
        )
        self.catalog: list[str] = []
        self.worker = WorkerLink(
            self.clock,
            lambda: self.lost.append("w"),
            lambda: self.catalog.append("changed"),
        )
        self.to_daemon = StringTransport()
        self.to_worker = StringTransport()
        self.daemon.makeConnection(self.to_worker)
        self.worker.makeConnection(self.to_daemon)

    def pump(self) -> None:
        """Run due batches and move bytes both ways."""
        self.clock.advance(0)
        for transport, protocol in (
            (self.to_daemon, self.daemon),
            (self.to_worker, self.worker),
        ):
            data = transport.value()
            transport.clear()
            if data:
                protocol.dataReceived(data)
        self.clock.advance(0)

    def test_ready(self) -> None:
        """A worker says it is ready, with its pid, as it connects."""
        self.pump()
        self.assertEqual(self.ready, [os.getpid()])

    def test_batch_round_trip(self) -> None:
        """Calls of one turn go as one message; each gets its own answer,
        whatever order the daemon answers them in."""
        self.pump()
        call = Call(peer="P", access_key="AK")
        first = self.worker.take(Checked("a" * 32, 1.0, SEND), call)
        second = self.worker.take(Checked("b" * 32, 1.0, SEND), call)
        self.clock.advance(0)
        sent = msgpack.unpackb(self.to_daemon.value(), raw=False)
        self.assertEqual((sent[0], len(sent[1])), (CALLS, 2))
        self.pump()
        self.assertEqual(len(self.intake.taken), 2)
        self.intake.taken[1][2].callback(refused("NO", "second"))
        self.intake.taken[0][2].callback(Answer("OK", "S", "OK", "", True, 9))
        self.pump()
        self.assertEqual(self.successResultOf(first).op_id, 9)
        self.assertEqual(self.successResultOf(second).result_code, "NO")

    def test_burst_cut(self) -> None:
        """A burst of calls in one turn leaves in messages of
        BATCH_CALLS, the first before the turn ends."""
        self.pump()
        self.to_daemon.clear()
        for n in range(BATCH_CALLS + 1):
            self.worker.take(Checked(f"{n:032d}", 1.0, SEND), Call())
        first = msgpack.unpackb(self.to_daemon.value(), raw=False)
        self.assertEqual((first[0], len(first[1])), (CALLS, BATCH_CALLS))
        self.to_daemon.clear()
        self.clock.advance(0)
        rest = msgpack.unpackb(self.to_daemon.value(), raw=False)
        self.assertEqual((rest[0], len(rest[1])), (CALLS, 1))

    def test_catalog_changed(self) -> None:
        """The daemon's word that the catalog changed reaches the
        worker's callback, once per change."""
        self.pump()
        self.daemon.catalog_changed()
        self.daemon.catalog_changed()
        self.pump()
        self.assertEqual(self.catalog, ["changed", "changed"])

    def test_answers_batched(self) -> None:
        """Answers ready in one turn go back as one message."""
        self.pump()
        for n in range(3):
            self.worker.take(Checked(f"{n:032d}", 1.0, SEND), Call())
        self.pump()
        for _, _, d in self.intake.taken:
            d.callback(refused("X", "y"))
        self.clock.advance(0)
        sent = msgpack.unpackb(self.to_worker.value(), raw=False)
        self.assertEqual((sent[0], len(sent[1])), (ANSWERS, 3))

    def test_garbage_drops_link(self) -> None:
        """An unreadable message makes the daemon drop the link."""
        self.daemon.dataReceived(msgpack.packb("nonsense"))
        self.assertTrue(self.to_worker.disconnecting)

    def test_lost_link_fails_waiting_calls(self) -> None:
        """When the link closes, calls still waiting fail, and the worker
        is told (it then stops)."""
        d = self.worker.take(Checked("a" * 32, 1.0, SEND), Call())
        self.worker.connectionLost()
        self.failureResultOf(d, LinkError)
        self.assertEqual(self.lost, ["w"])

    def test_handoff(self) -> None:
        """A handed connection reaches the daemon with its bytes and a
        descriptor; the worker closes its copy when told it was taken."""
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        sent: list[int] = []
        self.to_daemon.sendFileDescriptor = sent.append  # type: ignore
        connection = StringTransport()
        connection.fileno = a.fileno  # type: ignore[attr-defined]
        self.worker.handoff(connection, b"GET / HTTP/1.1\r\n", True)
        self.assertTrue(connection.disconnecting)
        self.assertEqual(len(sent), 1)
        self.daemon.fileDescriptorReceived(os.dup(sent[0]))
        self.pump()
        self.assertEqual(self.adopted[0][1], b"GET / HTTP/1.1\r\n")
        # The daemon said TAKEN and the worker closed its duplicate.
        self.assertRaises(OSError, os.fstat, sent[0])

    def test_handoff_adopt_fails(self) -> None:
        """A handed connection the daemon cannot adopt (its client left)
        is logged and the link goes on."""

        def refuse(fd: int, data: bytes) -> None:
            raise OSError("gone")

        self.daemon._adopt = refuse
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.daemon.fileDescriptorReceived(os.dup(a.fileno()))
        self.daemon.dataReceived(msgpack.packb([HANDOFF, b"GET /"]))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertFalse(self.to_worker.disconnecting)
        self.assertEqual(
            msgpack.unpackb(self.to_worker.value(), raw=False), [TAKEN]
        )

    def test_handoff_after_answers_closes(self) -> None:
        """A connection that already carried answers is closed, not
        handed over."""
        connection = StringTransport()
        self.worker.handoff(connection, b"GET / HTTP/1.1\r\n", False)
        self.assertTrue(connection.disconnecting)
        self.pump()
        self.assertEqual(self.adopted, [])

    def test_unknown_kind(self) -> None:
        """A message of a kind this end does not take drops the link."""
        self.worker.dataReceived(msgpack.packb([HANDOFF, b""]))
        self.assertTrue(self.to_daemon.disconnecting)
