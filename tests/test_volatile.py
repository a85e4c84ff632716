"""
The in-memory logs of non-persistent configs: ids from reserved blocks,
reads above a position, and what they keep.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from msync.delivery.volatile import BLOCK, NoIds, VolatileLogs
from msync.model import Scope, ScopeKind
from msync.store import MemoryEngine, Store

SCOPE = Scope("inst", "LIVE", ScopeKind.DEVICE, "d1")
OTHER = Scope("inst", "LIVE", ScopeKind.DEVICE, "d2")


class VolatileLogsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = Store(MemoryEngine())
        self.store.open()

    def logs(self, keep: int = 4096, ttl: float = 120.0) -> VolatileLogs:
        logs = VolatileLogs(self.store, self.clock, keep=keep, ttl=ttl)
        logs.start()
        return logs

    def append(
        self, logs: VolatileLogs, n: int, scope: Scope = SCOPE
    ) -> list[int]:
        now = int(self.clock.seconds() * 1000)
        return [logs.append(scope, b"body%d" % i, b"", now) for i in range(n)]

    def test_no_ids_until_reserved(self) -> None:
        # Before the store has answered, there is nothing to number with.
        logs = VolatileLogs(self.store, self.clock)
        with self.assertRaises(NoIds):
            logs.append(SCOPE, b"x", b"", 0)

    def test_ids_increase_across_scopes(self) -> None:
        logs = self.logs()
        a = self.append(logs, 3)
        b = self.append(logs, 2, OTHER)
        ids = a + b
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(len(set(ids)), 5)
        self.assertEqual(logs.last_id(SCOPE), a[-1])
        self.assertEqual(logs.last_id(OTHER), b[-1])
        self.assertEqual(
            logs.last_id(Scope("inst", "X", ScopeKind.DEVICE, "z")), 0
        )

    def test_read_after_returns_what_is_above_in_order(self) -> None:
        logs = self.logs()
        ids = self.append(logs, 10)
        self.assertEqual(
            [op.op_id for op in logs.read_after(SCOPE, 0, 100)], ids
        )
        self.assertEqual(
            [op.op_id for op in logs.read_after(SCOPE, ids[3], 100)], ids[4:]
        )
        self.assertEqual(
            [op.body for op in logs.read_after(SCOPE, ids[7], 100)],
            [b"body8", b"body9"],
        )
        self.assertEqual(logs.read_after(SCOPE, ids[-1], 100), [])
        self.assertEqual(logs.read_after(OTHER, 0, 100), [])

    def test_read_after_takes_the_oldest_first_up_to_the_limit(self) -> None:
        logs = self.logs()
        ids = self.append(logs, 10)
        self.assertEqual(
            [op.op_id for op in logs.read_after(SCOPE, ids[1], 3)], ids[2:5]
        )
        self.assertEqual(
            [op.op_id for op in logs.read_after(SCOPE, 0, 4)], ids[:4]
        )

    def test_position_between_sparse_ids(self) -> None:
        # Ids are store-wide, so a scope's ids have gaps: a position in a
        # gap reads from the next op above it.
        logs = self.logs()
        mine = []
        for _ in range(4):
            mine += self.append(logs, 1)
            self.append(logs, 1, OTHER)
        self.assertEqual(
            [op.op_id for op in logs.read_after(SCOPE, mine[1] + 1, 10)],
            mine[2:],
        )

    def test_keeps_only_the_newest(self) -> None:
        logs = self.logs(keep=5)
        ids = self.append(logs, 12)
        self.assertEqual(
            [op.op_id for op in logs.read_after(SCOPE, 0, 100)], ids[-5:]
        )

    def test_forgets_ops_past_their_time(self) -> None:
        logs = self.logs(ttl=10)
        old = self.append(logs, 3)
        self.clock.advance(6)
        new = self.append(logs, 2)
        self.clock.advance(6)
        self.assertEqual(
            [op.op_id for op in logs.read_after(SCOPE, 0, 100)], new
        )
        self.assertLess(old[-1], new[0])

    def test_next_block_is_reserved_before_this_one_runs_out(self) -> None:
        logs = self.logs()
        ids = self.append(logs, BLOCK + 10)
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(len(set(ids)), len(ids))
