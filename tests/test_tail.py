"""
The in-memory tail of a busy scope (L{msync.delivery.tail}), alone and
under the engine's global fan-out.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from msync.delivery.sender import SendRequest
from msync.delivery.tail import TAIL_OPS, Tail
from msync.model import Range, StoredOp, Target
from tests.delivery_world import INSTANCE, Sync, World


def op(op_id: int, expire_ms: int = 0) -> StoredOp:
    return StoredOp(op_id, b"b%d" % op_id, b"", b"", 0, 0, expire_ms)


class Log:
    """A scope's stored ops, counting the reads the tail makes."""

    def __init__(self) -> None:
        self.ops: list[StoredOp] = []
        self.reads = 0

    def fetch(self, after: int, limit: int) -> list[StoredOp]:
        self.reads += 1
        return [o for o in self.ops if o.op_id > after][:limit]


class TailTests(SynchronousTestCase):
    def test_reads_once_then_from_memory(self) -> None:
        """Readers at any position above the base share one store read."""
        log = Log()
        log.ops = [op(i) for i in (3, 7, 9)]
        tail = Tail(0)
        for after in (0, 3, 7, 0):
            got = tail.read(after, 10, 0, log.fetch, 4)
            assert got is not None
            self.assertEqual(
                [o.op_id for o in got], [i for i in (3, 7, 9) if i > after]
            )
        self.assertEqual(log.reads, 1)

    def test_announced_ops_are_read(self) -> None:
        """After an announcement the tail reads what is new, only that."""
        log = Log()
        log.ops = [op(1)]
        tail = Tail(0)
        tail.read(0, 10, 0, log.fetch, 4)
        log.ops.append(op(5))
        got = tail.read(1, 10, 0, log.fetch, 4)
        self.assertEqual(got, [])  # not announced yet: still current
        tail.announced()
        got = tail.read(1, 10, 0, log.fetch, 4)
        assert got is not None
        self.assertEqual([o.op_id for o in got], [5])
        self.assertEqual(log.reads, 2)

    def test_below_base_is_not_answered(self) -> None:
        """A reader below the base is sent to the store."""
        tail = Tail(10)
        self.assertIsNone(tail.read(9, 10, 0, Log().fetch, 4))

    def test_limit_and_pages(self) -> None:
        """A read fills page by page up to its limit, in order."""
        log = Log()
        log.ops = [op(i) for i in range(1, 12)]
        tail = Tail(0)
        got = tail.read(0, 6, 0, log.fetch, 4)
        assert got is not None
        self.assertEqual([o.op_id for o in got], [1, 2, 3, 4, 5, 6])
        got = tail.read(6, 100, 0, log.fetch, 4)
        assert got is not None
        self.assertEqual([o.op_id for o in got], [7, 8, 9, 10, 11])

    def test_expired_ops_leave(self) -> None:
        """An op past its expiry is no longer answered."""
        log = Log()
        log.ops = [op(1, expire_ms=100), op(2), op(3, expire_ms=500)]
        tail = Tail(0)
        tail.read(0, 10, 50, log.fetch, 8)
        got = tail.read(0, 10, 200, log.fetch, 8)
        assert got is not None
        self.assertEqual([o.op_id for o in got], [2, 3])
        got = tail.read(0, 10, 600, log.fetch, 8)
        assert got is not None
        self.assertEqual([o.op_id for o in got], [2])

    def test_bounded(self) -> None:
        """The tail keeps at most TAIL_OPS ops and raises its base."""
        log = Log()
        log.ops = [op(i) for i in range(1, TAIL_OPS + 10)]
        tail = Tail(0)
        got = tail.read(TAIL_OPS - 5, 10, 0, log.fetch, 1024)
        assert got is not None
        self.assertEqual(got[0].op_id, TAIL_OPS - 4)
        self.assertLessEqual(len(tail), TAIL_OPS)
        self.assertGreater(tail.base, 0)
        self.assertIsNone(tail.read(1, 10, 0, log.fetch, 1024))


class GlobalFanoutTests(SynchronousTestCase):
    def test_ops_of_one_turn_go_out_together(self) -> None:
        """Global ops stored in one reactor turn reach each device in one
        frame, in order, and a late device reads them all."""
        w = World(self)
        w.config("CFG", Target.DEVICE, range=Range.GLOBAL)
        devices = [w.device(f"d{i}").connect() for i in range(3)]
        results = [
            w.tc.successResultOf(
                w.sender.send(
                    SendRequest(
                        instance_id=INSTANCE,
                        biz_type="CFG",
                        payload=b"%d" % n,
                        to_all=True,
                        third_msg_id=f"m{n}",
                    )
                )
            )
            for n in range(5)
        ]
        self.assertTrue(all(r.success for r in results))
        for d in devices:
            self.assertEqual(d.link.of(Sync), [])
        w.clock.advance(0)
        for d in devices:
            self.assertEqual(len(d.link.of(Sync)), 1)
            self.assertEqual(d.link.payloads(), [b"0", b"1", b"2", b"3", b"4"])
        late = w.device("late").connect()
        self.assertEqual(late.link.payloads(), [b"0", b"1", b"2", b"3", b"4"])

    def test_device_behind_the_tail_gets_everything(self) -> None:
        """A device below the tail's base reads from the store, in order,
        while the others are served by the tail."""
        w = World(self)
        w.config("CFG", Target.DEVICE, range=Range.GLOBAL)
        w.sent("CFG", ["a", "b"], to_all=True)
        front = w.device("front").connect()
        front.ack_all()
        front.disconnect()
        # The tail starts again where the first reader stands: after b.
        front.connect()
        behind = w.device("behind").connect()
        w.sent("CFG", ["c", "d"], to_all=True)
        self.assertEqual(front.link.payloads(), [b"c", b"d"])
        self.assertEqual(behind.link.payloads(), [b"a", b"b", b"c", b"d"])
