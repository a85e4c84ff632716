"""Reports on users and devices: online state, counters, push states."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from msync.delivery.lookup import device_report, user_report
from msync.model import Target
from msync.wire.messages import Point
from tests.delivery_world import INSTANCE, World


class LookupTests(SynchronousTestCase):
    """What an operator sees of a device and a user."""

    def setUp(self) -> None:
        self.w = World(self)
        self.w.config("CHAT", Target.USER)
        self.w.config("LOCK", Target.DEVICE)

    def now(self) -> int:
        return int(self.w.clock.seconds() * 1000)

    def test_states(self) -> None:
        """Acked, pushed and stored ops each show their state."""
        d = self.w.device("d1").connect("alice", "s")
        a, b = self.w.sent("CHAT", ["a", "b"], "alice")
        d.ack(Point("CHAT", "u:alice", self.w.store.epoch, a))
        d.disconnect()
        c = self.w.send("LOCK", "c", "d1", third_msg_id="m-c").op_id
        report = device_report(self.w.engine, INSTANCE, "d1", self.now())
        assert report is not None
        states = {p.op_id: (p.state, p.attempts) for p in report.pushes}
        self.assertEqual(
            states,
            {a: ("acked", 1), b: ("pushed", 1), c: ("stored", 0)},
        )
        self.assertFalse(report.online)
        self.assertEqual(report.pushes[0].third_msg_id, "m-c")
        [(_, pushes, arrivals)] = report.days
        self.assertEqual((pushes, arrivals), (2, 1))

    def test_in_flight_and_dropped(self) -> None:
        """An op in flight shows its pushes; a dropped one its reason."""
        d = self.w.device("d1").connect()
        op = self.w.send("LOCK", "x", "d1").op_id
        report = device_report(self.w.engine, INSTANCE, "d1", self.now())
        assert report is not None
        self.assertTrue(report.online)
        self.assertEqual(report.pushes[0].state, "pushed")
        for _ in range(7):
            self.w.clock.advance(31)
            d.ack(Point("LOCK", "d:d1", self.w.store.epoch, 0))
        report = device_report(self.w.engine, INSTANCE, "d1", self.now())
        assert report is not None
        [entry] = report.pushes
        self.assertEqual(
            (entry.op_id, entry.state, entry.reason),
            (op, "dropped", "retries"),
        )

    def test_user_report(self) -> None:
        """A user's report lists its devices and their pushes together."""
        a = self.w.device("a").connect("bob", "s")
        self.w.device("b").connect("bob", "s")
        self.w.sent("CHAT", ["hi"], "bob")
        a.ack_all()
        report = user_report(self.w.engine, INSTANCE, "bob", self.now())
        self.assertTrue(report.online)
        self.assertEqual(
            sorted(d.device_id for d in report.devices), ["a", "b"]
        )
        self.assertEqual(
            sorted((p.device_id, p.state) for p in report.pushes),
            [("a", "acked"), ("b", "pushed")],
        )
        self.assertIsNone(
            device_report(self.w.engine, INSTANCE, "nobody", self.now())
        )
