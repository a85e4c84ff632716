"""
The delivery engine, rule by rule (REQUIREMENTS section 3), on an
in-memory store and a clock.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from msync.model import Range, ResendMode, SyncPoint, Target
from msync.wire.messages import Gap, Point, Sync, Welcome
from tests.delivery_world import INSTANCE, Code, World


class DeviceTargetTests(SynchronousTestCase):
    """Configs addressed to devices."""

    def setUp(self) -> None:
        self.w = World(self)
        self.w.config("LOCK", Target.DEVICE)

    def test_online_device_gets_op_at_once(self) -> None:
        """An op for an online device is pushed when it is stored, and the
        answer says the target was online."""
        d = self.w.device("d1").connect()
        self.assertIsInstance(d.link.messages[0], Welcome)
        r = self.w.send("LOCK", "hi", "d1")
        self.assertEqual(r.code, Code.OK)
        self.assertEqual(d.link.ops(), [("LOCK", "d:d1", r.op_id, b"hi")])

    def test_offline_device_gets_backlog_in_order(self) -> None:
        """Ops stored while a device was offline arrive in id order when
        it connects, and the answer said it was not online."""
        r = self.w.send("LOCK", "a", "d1")
        self.assertEqual(r.code, Code.NOT_ONLINE)
        self.w.sent("LOCK", ["b", "c"], "d1")
        d = self.w.device("d1").connect()
        self.assertEqual(d.link.payloads(), [b"a", b"b", b"c"])
        ids = [i for *_, i, _ in d.link.ops()]
        self.assertEqual(ids, sorted(ids))

    def test_ack_is_cumulative_and_stored(self) -> None:
        """Acking the last op acks all before it; the point is stored, and
        a reconnect pushes nothing again."""
        ids = self.w.sent("LOCK", ["a", "b", "c"], "d1")
        d = self.w.device("d1").connect()
        d.ack(Point("LOCK", "d:d1", self.w.store.epoch, ids[-1]))
        self.assertEqual(d.session.inflight_ops, 0)  # type: ignore[union-attr]
        assert d.session is not None
        scope = d.session.streams[("LOCK", "d:d1")].scope
        # Positions are written with the next tick, not per ack.
        self.w.clock.advance(self.w.engine.tuning.tick)
        self.assertEqual(
            self.w.store.sync_point(scope, "d1"),
            SyncPoint(self.w.store.epoch, ids[-1]),
        )
        d.disconnect()
        d.points.clear()
        d.connect()
        self.assertEqual(d.link.ops(), [])

    def test_positions_written_per_tick_and_on_leaving(self) -> None:
        """Acks do not write the store each; the tick writes every moved
        position at once, and a leaving device writes its own."""
        ids = self.w.sent("LOCK", ["a", "b"], "d1")
        d = self.w.device("d1").connect()
        e = self.w.device("d2").connect()
        d.ack(Point("LOCK", "d:d1", self.w.store.epoch, ids[0]))
        assert d.session is not None and e.session is not None
        scope = d.session.streams[("LOCK", "d:d1")].scope
        self.assertIsNone(self.w.store.sync_point(scope, "d1"))
        self.w.clock.advance(self.w.engine.tuning.tick)
        self.assertEqual(
            self.w.store.sync_point(scope, "d1"),
            SyncPoint(self.w.store.epoch, ids[0]),
        )
        d.ack(Point("LOCK", "d:d1", self.w.store.epoch, ids[1]))
        d.disconnect()
        self.assertEqual(
            self.w.store.sync_point(scope, "d1"),
            SyncPoint(self.w.store.epoch, ids[1]),
        )

    def test_unacked_ops_pushed_again_on_reconnect(self) -> None:
        """Ops pushed but not acked are pushed again on the next connect."""
        self.w.sent("LOCK", ["a", "b"], "d1")
        d = self.w.device("d1").connect()
        d.ack(Point("LOCK", "d:d1", self.w.store.epoch, d.link.ops()[0][2]))
        d.disconnect()
        d.connect()
        self.assertEqual(d.link.payloads(), [b"b"])

    def test_redelivery_after_ack_timeout(self) -> None:
        """An op not acked within the timeout is pushed again."""
        d = self.w.device("d1").connect()
        self.w.send("LOCK", "a", "d1")
        self.w.clock.advance(10)
        d.ack(Point("LOCK", "d:d1", self.w.store.epoch, 0))
        self.assertEqual(d.link.payloads(), [b"a"])
        self.w.clock.advance(31)
        self.assertEqual(d.link.payloads(), [b"a", b"a"])

    def test_dropped_after_six_pushes(self) -> None:
        """An op pushed 6 times without an ack is dropped with a gap
        notice, and delivery moves on to the next op."""
        d = self.w.device("d1").connect()
        first = self.w.send("LOCK", "poison", "d1").op_id
        for _ in range(10):
            self.w.clock.advance(31)
            d.ack(Point("LOCK", "d:d1", self.w.store.epoch, 0))
        self.assertEqual(d.link.payloads().count(b"poison"), 6)
        gaps = d.link.of(Gap)
        self.assertEqual(
            [(g.through, g.reason) for g in gaps], [(first, "retries")]
        )
        self.w.send("LOCK", "next", "d1")
        self.assertEqual(d.link.payloads()[-1], b"next")
        [record] = self.w.store.device_deliveries(INSTANCE, "d1")
        self.assertEqual(record.reason, "retries")

    def test_attempts_survive_reconnects(self) -> None:
        """A device that reconnects instead of acking has the op dropped
        after 6 pushes in all, counted across its connections."""
        op_id = self.w.send("LOCK", "poison", "d1").op_id
        d = self.w.device("d1")
        pushes = 0
        for _ in range(6):
            d.connect()
            pushes += d.link.payloads().count(b"poison")
            d.disconnect()
        self.assertEqual(pushes, 6)
        d.connect()
        self.assertEqual(d.link.payloads(), [])
        [gap] = d.link.of(Gap)
        self.assertEqual((gap.through, gap.reason), (op_id, "retries"))

    def test_replaced_connection(self) -> None:
        """A device id connecting again closes its older connection."""
        d = self.w.device("d1").connect()
        old = d.link
        d.connect()
        self.assertEqual(old.closed[0], "REPLACED")  # type: ignore[index]
        self.assertEqual(self.w.engine.online, 1)

    def test_device_claimed(self) -> None:
        """Another secret cannot use a device id already bound."""
        self.w.device("d1").connect()
        thief = self.w.device("d1")
        self.assertEqual(thief.refused().code, "DEVICE_CLAIMED")

    def test_bad_hellos_refused(self) -> None:
        """Hellos for unknown instances, with a wrong app key or a bad app
        version are refused with their codes."""
        bad_version = self.w.device("d1", app_version="one")
        self.assertEqual(bad_version.refused().code, "BAD_MESSAGE")
        self.assertEqual(
            self.w.device("d2").refused(instance="nope").code,
            "UNKNOWN_INSTANCE",
        )
        from msync.model import Instance

        self.successResultOf(
            self.w.store.put_instance(Instance(INSTANCE, app_key="k" * 20))
        )
        self.assertEqual(self.w.device("d3").refused().code, "AUTH")
        ok = self.w.device("d3")
        ok.app_key = "k" * 20
        ok.connect()
        self.assertIsNotNone(ok.session)


class CountTests(SynchronousTestCase):
    """Figures the console shows."""

    def test_pushes_and_arrivals_counted(self) -> None:
        """Pushes and acks move the device's daily counters."""
        w = World(self)
        w.config("LOCK", Target.DEVICE)
        w.sent("LOCK", ["a", "b"], "d1")
        d = w.device("d1").connect()
        d.ack_all()
        w.clock.advance(w.engine.tuning.tick)
        day = int(w.clock.seconds()) // 86400
        self.assertEqual(
            w.store.daily_counts(INSTANCE, "d", "d1", day, day), [(day, 2, 2)]
        )


class MergedPushTests(SynchronousTestCase):
    """The backlog of every scope goes out together."""

    def test_backlog_of_many_biz_types_in_one_frame(self) -> None:
        """A device's backlog across biz types arrives in one frame."""
        w = World(self)
        for biz in ("A", "B", "C"):
            w.config(biz, Target.DEVICE)
            w.sent(biz, ["1", "2"], "d1")
        d = w.device("d1").connect()
        syncs = d.link.of(Sync)
        self.assertEqual(len(syncs), 1)
        self.assertEqual({g.biz for g in syncs[0].groups}, {"A", "B", "C"})

    def test_large_backlog_cut_into_frames(self) -> None:
        """A backlog larger than a frame is cut into several, in order."""
        w = World(self)
        w.config("A", Target.DEVICE)
        w.sent("A", ["x" * 20000 for _ in range(120)], "d1")
        d = w.device("d1").connect()
        self.assertGreater(len(d.link.of(Sync)), 1)
        self.assertEqual(len(d.link.ops()), 120)


class WindowTests(SynchronousTestCase):
    """A slow device cannot make the server buffer without bound."""

    def test_window_bounds_unacked_ops(self) -> None:
        """No more than the window is in flight; acks let more out."""
        w = World(self, window_ops=10, page=4)
        w.config("A", Target.DEVICE)
        w.sent("A", [str(i) for i in range(25)], "d1")
        d = w.device("d1").connect()
        self.assertEqual(len(d.link.ops()), 10)
        d.ack_all()
        self.assertEqual(len(d.link.ops()), 20)
        d.ack_all()
        self.assertEqual(len(d.link.ops()), 25)

    def test_paused_link_gets_nothing(self) -> None:
        """While the transport is paused nothing is written; resuming
        pumps."""
        w = World(self)
        w.config("A", Target.DEVICE)
        d = w.device("d1").connect()
        d.link.paused = True
        w.sent("A", ["a"], "d1")
        self.assertEqual(d.link.ops(), [])
        d.link.paused = False
        w.engine.pump(d.session)  # type: ignore[arg-type]
        self.assertEqual(d.link.payloads(), [b"a"])


class IdleTests(SynchronousTestCase):
    """Heartbeats and silence."""

    def test_silent_device_closed(self) -> None:
        """A device silent for three heartbeats is closed as idle."""
        w = World(self, heartbeat=10)
        d = w.device("d1").connect()
        w.clock.advance(25)
        w.engine.heard(d.session)  # type: ignore[arg-type]
        w.clock.advance(25)
        self.assertIsNone(d.link.closed)
        w.clock.advance(10)
        self.assertEqual(d.link.closed[0], "IDLE")  # type: ignore[index]
        self.assertEqual(w.engine.online, 0)

    def test_no_hello_closed(self) -> None:
        """A connection that never says hello is closed."""
        from tests.delivery_world import FakeLink

        w = World(self, hello_timeout=5)
        link = FakeLink()
        w.engine.waiting(link)
        w.clock.advance(7)
        self.assertEqual(link.closed[0], "IDLE")  # type: ignore[index]


class UserTargetTests(SynchronousTestCase):
    """Configs addressed to users, on every device of the user."""

    def setUp(self) -> None:
        self.w = World(self)
        self.w.config("CHAT", Target.USER)

    def test_every_device_of_user(self) -> None:
        """Each device of the user gets every op."""
        a = self.w.device("a").connect("alice", "s")
        b = self.w.device("b").connect("alice", "s")
        other = self.w.device("c").connect("bob", "s")
        self.w.sent("CHAT", ["hi"], "alice")
        self.assertEqual(a.link.payloads(), [b"hi"])
        self.assertEqual(b.link.payloads(), [b"hi"])
        self.assertEqual(other.link.payloads(), [])

    def test_new_device_gets_all_retained(self) -> None:
        """A device new to the user starts from the oldest op retained."""
        self.w.sent("CHAT", ["1", "2", "3"], "alice")
        n = self.w.device("new").connect("alice", "s")
        self.assertEqual(n.link.payloads(), [b"1", b"2", b"3"])
        self.assertEqual(n.link.of(Gap), [])

    def test_bind_after_connect(self) -> None:
        """Binding a user on a connected device pushes that user's ops."""
        self.w.sent("CHAT", ["1"], "alice")
        d = self.w.device("d").connect()
        self.assertEqual(d.link.payloads(), [])
        self.w.engine.bind(d.session, "alice", "s")  # type: ignore[arg-type]
        self.assertEqual(d.link.payloads(), [b"1"])
        self.w.engine.unbind(d.session)  # type: ignore[arg-type]
        self.w.sent("CHAT", ["2"], "alice")
        self.assertEqual(d.link.payloads(), [b"1"])

    def test_retry_drop_is_per_device(self) -> None:
        """An op dropped for one device after 6 pushes still reaches the
        user's other devices."""
        a = self.w.device("a").connect("alice", "s")
        self.w.send("CHAT", "x", "alice")
        for _ in range(7):
            self.w.clock.advance(31)
            a.ack(Point("CHAT", "u:alice", self.w.store.epoch, 0))
        self.assertEqual(a.link.of(Gap)[0].reason, "retries")
        b = self.w.device("b").connect("alice", "s")
        self.assertEqual(b.link.payloads(), [b"x"])

    def test_consistency_needs_validation(self) -> None:
        """With user consistency on, an unvalidated device gets nothing
        and keeps its backlog."""
        self.w.config("PAY", Target.USER, consistency=True)
        self.w.sent("PAY", ["paid"], "alice")
        answer: Deferred[bool] = Deferred()
        self.w.engine.validate = lambda *_: answer
        d = self.w.device("d").connect("alice", "s")
        self.assertEqual(d.link.payloads("PAY"), [])
        answer.callback(True)
        self.assertEqual(d.link.payloads("PAY"), [b"paid"])


class SingleDeviceTests(SynchronousTestCase):
    """Single-device configs: each op to one device of the user, once."""

    def setUp(self) -> None:
        self.w = World(self)
        self.w.config("PAY", Target.USER, multi_device=False)

    def test_most_recent_device_only(self) -> None:
        """An op goes to the most recently connected device only."""
        a = self.w.device("a").connect("alice", "s")
        self.w.clock.advance(1)
        b = self.w.device("b").connect("alice", "s")
        self.w.sent("PAY", ["1"], "alice")
        self.assertEqual((a.link.payloads(), b.link.payloads()), ([], [b"1"]))

    def test_moves_on_when_device_leaves_unacked(self) -> None:
        """An op the device left without acking goes to the next device;
        once acked no other device ever gets it."""
        a = self.w.device("a").connect("alice", "s")
        self.w.clock.advance(1)
        b = self.w.device("b").connect("alice", "s")
        self.w.sent("PAY", ["1"], "alice")
        b.disconnect()
        self.assertEqual(a.link.payloads(), [b"1"])
        a.ack_all()
        b.connect("alice", "s")
        self.w.clock.advance(100)
        self.assertEqual(b.link.payloads(), [])

    def test_acked_never_again_after_restart(self) -> None:
        """After an engine restart, an op acked by one device is not
        given to another."""
        a = self.w.device("a").connect("alice", "s")
        ids = self.w.sent("PAY", ["1", "2"], "alice")
        a.ack(Point("PAY", "u:alice", self.w.store.epoch, ids[0]))
        a.disconnect()
        self.successResultOf(self.w.engine.stop())
        from msync.delivery.engine import Engine

        self.w.engine = Engine(self.w.store, self.w.clock)
        self.w.engine.start()
        b = self.w.device("b").connect("alice", "s")
        self.assertEqual(b.link.payloads(), [b"2"])


class GlobalTests(SynchronousTestCase):
    """Global configs."""

    def test_device_target_reaches_every_device(self) -> None:
        """Every device gets each global op, including later ones."""
        w = World(self)
        w.config("CFG", Target.DEVICE, range=Range.GLOBAL)
        a = w.device("a").connect()
        r = w.send("CFG", "on", to_all=True)
        self.assertEqual(r.code, Code.OK)
        b = w.device("b").connect()
        self.assertEqual(a.link.payloads(), [b"on"])
        self.assertEqual(b.link.payloads(), [b"on"])

    def test_user_target_needs_bound_user(self) -> None:
        """A user-target global op reaches only devices with a user."""
        w = World(self)
        w.config("NEWS", Target.USER, range=Range.GLOBAL)
        w.send("NEWS", "x", to_all=True)
        anon = w.device("a").connect()
        user = w.device("b").connect("bob", "s")
        self.assertEqual(anon.link.payloads(), [])
        self.assertEqual(user.link.payloads(), [b"x"])

    def test_global_rules(self) -> None:
        """The global method refuses link tokens and specified configs;
        the specified method refuses global configs."""
        w = World(self)
        w.config("CFG", Target.DEVICE, range=Range.GLOBAL)
        w.config("LOCK", Target.DEVICE)
        self.assertEqual(
            w.send("CFG", "x", "d1", to_all=True).code,
            Code.GLOBAL_OPLOG_LINKTOKEN_NOT_EMPTY,
        )
        self.assertEqual(
            w.send("LOCK", "x", to_all=True).code, Code.NOT_SUPPORT_GLOBAL
        )
        self.assertEqual(
            w.send("CFG", "x", "d1").code, Code.NOT_SUPPORT_GLOBAL
        )


class PersistenceTests(SynchronousTestCase):
    """Persistent and non-persistent configs, thresholds and caps."""

    def test_non_persistent_online_only(self) -> None:
        """A non-persistent op reaches online targets and is otherwise
        dropped for good."""
        w = World(self)
        w.config("LIVE", Target.DEVICE, persistent=False)
        self.assertEqual(w.send("LIVE", "lost", "d1").code, Code.NOT_ONLINE)
        d = w.device("d1").connect()
        self.assertEqual(d.link.payloads(), [])
        self.assertEqual(w.send("LIVE", "seen", "d1").code, Code.OK)
        self.assertEqual(d.link.payloads(), [b"seen"])

    def test_threshold_keeps_newest(self) -> None:
        """A threshold config pushes only the newest N of the backlog, and
        a device that had seen older ops gets a gap notice."""
        w = World(self)
        w.config(
            "FEED",
            Target.DEVICE,
            resend_mode=ResendMode.THRESHOLD,
            threshold=10,
        )
        first = w.sent("FEED", ["0"], "d1")
        d = w.device("d1").connect()
        d.ack_all()
        d.disconnect()
        w.sent("FEED", [str(i) for i in range(1, 51)], "d1")
        d.connect()
        self.assertEqual(
            d.link.payloads(), [str(i).encode() for i in range(41, 51)]
        )
        [gap] = d.link.of(Gap)
        self.assertEqual(gap.reason, "threshold")
        self.assertGreater(gap.through, first[0])

    def test_resend_all_has_a_cap(self) -> None:
        """Resend mode 'all' still keeps at most the server's cap."""
        w = World(self, resend_cap=5)
        w.config("ALL", Target.DEVICE)
        w.sent("ALL", [str(i) for i in range(8)], "d1")
        d = w.device("d1").connect()
        self.assertEqual(d.link.payloads(), [b"3", b"4", b"5", b"6", b"7"])

    def test_epoch_reset(self) -> None:
        """A point from another epoch is answered with a reset gap and the
        device gets the retained ops again."""
        w = World(self)
        w.config("A", Target.DEVICE)
        w.sent("A", ["1"], "d1")
        d = w.device("d1")
        d.points[("A", "d:d1")] = Point("A", "d:d1", w.store.epoch + 1, 99)
        d.connect()
        self.assertEqual(d.link.of(Gap)[0].reason, "reset")
        self.assertEqual(d.link.payloads(), [b"1"])


class WindowOfValidityTests(SynchronousTestCase):
    """start_date and expire_date."""

    def test_expired_not_delivered(self) -> None:
        """An op whose validity ended is not pushed."""
        w = World(self)
        w.config("A", Target.DEVICE)
        now = int(w.clock.seconds() * 1000)
        w.send("A", "soon gone", "d1", expire_ms=now + 5000)
        w.clock.advance(10)
        d = w.device("d1").connect()
        self.assertEqual(d.link.payloads(), [])

    def test_start_holds_scope_until_then(self) -> None:
        """An op that starts later is pushed then, and what follows it in
        its scope waits, so order is kept."""
        w = World(self)
        w.config("A", Target.DEVICE)
        d = w.device("d1").connect()
        now = int(w.clock.seconds() * 1000)
        w.send("A", "later", "d1", start_ms=now + 60_000)
        w.send("A", "after", "d1")
        self.assertEqual(d.link.payloads(), [])
        w.engine.heard(d.session)  # type: ignore[arg-type]
        w.clock.advance(61)
        self.assertEqual(d.link.payloads(), [b"later", b"after"])

    def test_bad_window_refused(self) -> None:
        """A window that ended already or ends before it starts is
        refused."""
        w = World(self)
        w.config("A", Target.DEVICE)
        now = int(w.clock.seconds() * 1000)
        self.assertEqual(
            w.send("A", "x", "d1", expire_ms=now - 1).code,
            Code.INVALID_PARAMETER,
        )
        self.assertEqual(
            w.send("A", "x", "d1", start_ms=now + 10, expire_ms=now + 5).code,
            Code.INVALID_PARAMETER,
        )


class FilterTests(SynchronousTestCase):
    """Filters by platform, app version and device."""

    def test_filters_skip_non_matching(self) -> None:
        """Each device gets only the ops whose filters it matches, and its
        position moves past the others."""
        w = World(self)
        w.config("CHAT", Target.USER)
        ios = w.device("i", os="IOS", app_version="2.5").connect("u", "s")
        old = w.device("o", app_version="1.0").connect("u", "s")
        w.send("CHAT", "ios", "u", os_type="IOS")
        w.send("CHAT", "new", "u", app_min_version="2.0")
        w.send("CHAT", "old", "u", app_max_version="1.9.9")
        w.send("CHAT", "to o", "u", device_id="o")
        w.send("CHAT", "all", "u")
        self.assertEqual(ios.link.payloads(), [b"ios", b"new", b"all"])
        self.assertEqual(old.link.payloads(), [b"old", b"to o", b"all"])
        ios.ack_all()
        assert ios.session is not None
        stream = ios.session.streams[("CHAT", "u:u")]
        self.assertEqual(stream.point, stream.sent)

    def test_bad_filters_refused(self) -> None:
        """Malformed filters are refused with a clear reason."""
        w = World(self)
        w.config("CHAT", Target.USER)
        for kw in (
            {"os_type": "WINDOWS"},
            {"app_min_version": "abc"},
            {"app_min_version": "3", "app_max_version": "2"},
        ):
            r = w.send("CHAT", "x", "u", **kw)
            self.assertEqual(r.code, Code.INVALID_PARAMETER, kw)
            self.assertTrue(r.reason)


class ImmediateTests(SynchronousTestCase):
    """immediate_sync=false."""

    def test_deferred_until_pull_or_next_push(self) -> None:
        """A deferred op is not pushed alone; it goes on pull, and before
        the next immediate op of its scope."""
        w = World(self)
        w.config("A", Target.DEVICE)
        d = w.device("d1").connect()
        r = w.send("A", "quiet", "d1", immediate=False)
        self.assertEqual(r.code, Code.OK)
        self.assertEqual(d.link.payloads(), [])
        w.engine.pull(d.session)  # type: ignore[arg-type]
        self.assertEqual(d.link.payloads(), [b"quiet"])
        w.send("A", "quiet2", "d1", immediate=False)
        w.send("A", "loud", "d1")
        self.assertEqual(d.link.payloads(), [b"quiet", b"quiet2", b"loud"])


class ReadTests(SynchronousTestCase):
    """How often the engine reads the store."""

    def test_no_read_after_a_whole_one(self) -> None:
        """A read that took every op above the device's position leaves
        the stream caught up: the op's ack reads nothing, and the next
        op stored is read and pushed."""
        w = World(self)
        w.config("A", Target.DEVICE)
        d = w.device("d1").connect()
        reads: list[int] = []
        read_after = w.store.read_after

        def counted(*args: object, **kw: object) -> object:
            reads.append(1)
            return read_after(*args, **kw)  # type: ignore[arg-type]

        w.store.read_after = counted  # type: ignore[method-assign]
        w.send("A", "one", "d1")
        self.assertEqual((d.link.payloads(), len(reads)), ([b"one"], 1))
        d.ack_all()
        self.assertEqual(len(reads), 1)
        w.send("A", "two", "d1")
        self.assertEqual(d.link.payloads(), [b"one", b"two"])
        self.assertEqual(len(reads), 2)


class ConfigStateTests(SynchronousTestCase):
    """Offline configs."""

    def test_offline_refuses_and_pauses(self) -> None:
        """An offline config refuses data and pauses pushing; online again
        resumes."""
        w = World(self)
        w.config("A", Target.DEVICE)
        w.sent("A", ["1"], "d1")
        from msync.model import ConfigState

        w.update("A", state=ConfigState.OFFLINE)
        self.assertEqual(w.send("A", "x", "d1").code, Code.BIZ_NOT_ONLINE)
        d = w.device("d1").connect()
        self.assertEqual(d.link.payloads(), [])
        w.update("A", state=ConfigState.ONLINE)
        self.assertEqual(d.link.payloads(), [b"1"])


class SenderCodeTests(SynchronousTestCase):
    """Every result code of sending."""

    def test_codes(self) -> None:
        """Each refusal comes with its code and a reason."""
        w = World(self)
        w.config("A", Target.DEVICE)
        cases = [
            ({"biz": "", "link": "d"}, Code.ARGS_IS_NULL),
            ({"biz": "A", "link": ""}, Code.ARGS_IS_NULL),
            ({"biz": "A", "link": "d", "payload": b""}, Code.ARGS_IS_NULL),
            (
                {"biz": "A", "link": "d", "third_msg_id": ""},
                Code.THIRDMSGID_IS_NULL,
            ),
            (
                {"biz": "A", "link": "d", "third_msg_id": "x" * 100},
                Code.THIRD_MSG_ID_LONG,
            ),
            (
                {"biz": "A", "link": "d", "payload": b"x" * 24576},
                Code.PAYLOAD_LONG,
            ),
            ({"biz": "NOPE", "link": "d"}, Code.BIZ_NOT_ONLINE),
            ({"biz": "A", "link": "a\x01b"}, Code.INVALID_PARAMETER),
        ]
        for args, code in cases:
            payload = args.pop("payload", b"p")
            r = w.send(args.pop("biz"), payload, args.pop("link"), **args)
            self.assertEqual(r.code, code, (args, r))
            self.assertFalse(r.success)
            self.assertTrue(r.reason)
        ok = w.send("A", b"x" * 24575, "d", third_msg_id="x" * 99)
        self.assertTrue(ok.success)

    def test_duplicate(self) -> None:
        """A repeated third_msg_id answers DUPLICATED_BIZ_ID with the first
        op's id and stores nothing more."""
        w = World(self)
        w.config("A", Target.DEVICE)
        first = w.send("A", "1", "d", third_msg_id="m1")
        again = w.send("A", "2", "d", third_msg_id="m1")
        self.assertEqual(
            (again.code, again.op_id), (Code.DUPLICATED_BIZ_ID, first.op_id)
        )
        d = w.device("d").connect()
        self.assertEqual(d.link.payloads(), [b"1"])
