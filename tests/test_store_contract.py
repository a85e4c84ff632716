"""
The store contract: every rule of the store, run against every backend.

A new backend (a clustered one, say) passes by subclassing L{Contract}
with a C{make_store} that opens it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from msync.model import (
    AccessKey,
    ConfigState,
    DeliveryEvent,
    DeliveryState,
    Device,
    Instance,
    NewOp,
    Range,
    ResendMode,
    Scope,
    ScopeKind,
    SyncConfig,
    SyncPoint,
    Target,
    ValidationError,
)
from msync.store import (
    AlreadyExists,
    CorruptRecord,
    DeviceClaimed,
    LMDBEngine,
    MemoryEngine,
    NotFound,
    Store,
)
from msync.store.records import DAY_MS
from msync.store.tables import Table

DAY = DAY_MS
NOW = 1_700_000_000_000
ALICE = Scope("ws_app", "UCHAT", ScopeKind.USER, "alice")
BOB = Scope("ws_app", "UCHAT", ScopeKind.USER, "bob")


def op(
    scope: Scope = ALICE,
    body: bytes = b"x",
    dedup: bytes = b"",
    keep: int = 0,
    created: int = NOW,
    expire: int = NOW + 30 * DAY,
) -> NewOp:
    return NewOp(
        scope=scope,
        body=body,
        meta=b"m",
        dedup=dedup,
        created_ms=created,
        expire_ms=expire,
        keep=keep,
    )


class Contract:
    """Tests every backend must pass; mixed into a trial TestCase."""

    store: Store

    def make_store(self) -> Store:
        raise NotImplementedError

    def setUp(self) -> None:
        self.store = self.make_store()
        self.store.open()
        self.addCleanup(self.store.close)

    # --- appends ---------------------------------------------------------

    @inlineCallbacks
    def test_ids_increase_under_concurrent_appends(self) -> Any:
        """Appends issued together get distinct ids, increasing in call
        order within each scope."""
        ds = [
            self.store.append(op(ALICE if i % 2 else BOB, b"%d" % i))
            for i in range(200)
        ]
        results = yield gatherResults(ds)
        ids = [r.op_id for r in results]
        self.assertEqual(len(set(ids)), 200)
        self.assertEqual(ids, sorted(ids))
        stored = self.store.read_after(ALICE, 0, 1000, NOW)
        self.assertEqual(
            [o.body for o in stored], [b"%d" % i for i in range(1, 200, 2)]
        )
        self.assertEqual(
            [o.op_id for o in stored], sorted(o.op_id for o in stored)
        )

    @inlineCallbacks
    def test_read_after_pages(self) -> Any:
        """Reads start above the given id and stop at the limit."""
        ids = []
        for i in range(10):
            r = yield self.store.append(op(body=b"%d" % i))
            ids.append(r.op_id)
        page = self.store.read_after(ALICE, ids[3], 4, NOW)
        self.assertEqual([o.op_id for o in page], ids[4:8])
        self.assertEqual(page[0].meta, b"m")
        self.assertEqual(page[0].body, b"4")
        self.assertEqual(self.store.read_after(ALICE, ids[-1], 4, NOW), [])

    @inlineCallbacks
    def test_read_after_stays_in_its_scope(self) -> Any:
        """
        A read stops where its scope's keys end, whatever sorts next (a
        user whose name extends this one's, or the next table entry), and
        every field of a stored op comes back.
        """
        longer = Scope("ws_app", "UCHAT", ScopeKind.USER, "alice2")
        mine = yield self.store.append(
            NewOp(
                scope=ALICE,
                body=b"mine",
                meta=b"mm",
                dedup=b"k1",
                created_ms=NOW,
                start_ms=NOW + 5,
                expire_ms=NOW + DAY,
            )
        )
        for scope in (longer, BOB):
            yield self.store.append(op(scope=scope, body=b"theirs"))
        [got] = self.store.read_after(ALICE, 0, 10, NOW)
        self.assertEqual(
            tuple(got),
            (mine.op_id, b"mine", b"mm", b"k1", NOW, NOW + 5, NOW + DAY),
        )
        self.assertEqual(
            [o.body for o in self.store.read_after(BOB, 0, 10, NOW)],
            [b"theirs"],
        )

    @inlineCallbacks
    def test_read_newest(self) -> Any:
        """The newest ops come back newest first, expired ones left out."""
        ids = []
        for i in range(5):
            r = yield self.store.append(op(body=b"%d" % i))
            ids.append(r.op_id)
        yield self.store.append(op(body=b"old", expire=NOW + 1))
        newest = self.store.read_newest(ALICE, 3, NOW + 2)
        self.assertEqual([o.op_id for o in newest], ids[::-1][:3])
        self.assertEqual(self.store.read_newest(BOB, 3, NOW), [])

    @inlineCallbacks
    def test_dedup_returns_original_id(self) -> Any:
        """A repeated idempotency key stores nothing and answers with the
        first op's id."""
        first = yield self.store.append(op(dedup=b"k1", body=b"a"))
        again = yield self.store.append(op(dedup=b"k1", body=b"b"))
        self.assertFalse(first.duplicate)
        self.assertTrue(again.duplicate)
        self.assertEqual(again.op_id, first.op_id)
        self.assertEqual(
            [o.body for o in self.store.read_after(ALICE, 0, 10, NOW)],
            [b"a"],
        )

    @inlineCallbacks
    def test_dedup_forgets_trimmed_ops(self) -> Any:
        """Once an op is trimmed away its idempotency key is free again."""
        yield self.store.append(op(dedup=b"k1", keep=1))
        yield self.store.append(op(dedup=b"k2", keep=1))
        again = yield self.store.append(op(dedup=b"k1", keep=1))
        self.assertFalse(again.duplicate)

    @inlineCallbacks
    def test_threshold_keeps_newest(self) -> Any:
        """A scope appended with keep=N holds exactly the newest N ops and
        reports what it trimmed."""
        ids = []
        for i in range(25):
            r = yield self.store.append(op(body=b"%d" % i, keep=10))
            ids.append(r.op_id)
        kept = self.store.read_after(ALICE, 0, 100, NOW)
        self.assertEqual([o.op_id for o in kept], ids[-10:])
        self.assertEqual(self.store.total_ops(), 10)
        info = self.store.scope_info(ALICE)
        self.assertEqual(info.count, 10)
        self.assertEqual(info.last_id, ids[-1])
        self.assertEqual(info.trimmed_through, ids[-11])
        self.assertEqual(info.epoch, self.store.epoch)

    @inlineCallbacks
    def test_expired_ops_hidden_then_swept(self) -> Any:
        """Expired ops are never returned, and the sweep removes them and
        their idempotency keys."""
        short = yield self.store.append(
            op(dedup=b"k", expire=NOW + 1000, body=b"short")
        )
        yield self.store.append(op(body=b"long"))
        later = NOW + 2000
        bodies = [o.body for o in self.store.read_after(ALICE, 0, 9, later)]
        self.assertEqual(bodies, [b"long"])
        swept = yield self.store.sweep(later)
        self.assertEqual(swept.ops, 1)
        self.assertEqual(self.store.total_ops(), 1)
        self.assertIsNone(self.store.get_op(ALICE, short.op_id))
        info = self.store.scope_info(ALICE)
        self.assertEqual((info.count, info.expired_through), (1, short.op_id))
        self.assertEqual(info.trimmed_through, 0)
        again = yield self.store.append(op(dedup=b"k", created=later))
        self.assertFalse(again.duplicate)

    @inlineCallbacks
    def test_expired_dedup_before_sweep(self) -> Any:
        """An expired op's idempotency key is free even before the sweep."""
        yield self.store.append(op(dedup=b"k", expire=NOW + 10))
        again = yield self.store.append(op(dedup=b"k", created=NOW + 20))
        self.assertFalse(again.duplicate)

    @inlineCallbacks
    def test_sweep_in_slices(self) -> Any:
        """A sweep larger than its budget says more is left."""
        import msync.store.api as api

        self.patch(api, "SWEEP_BUDGET", 3)
        for _ in range(7):
            yield self.store.append(op(expire=NOW + 5))
        first = yield self.store.sweep(NOW + 10)
        self.assertEqual((first.ops, first.more), (3, True))
        yield self.store.sweep(NOW + 10)
        last = yield self.store.sweep(NOW + 10)
        self.assertEqual((last.ops, last.more), (1, False))
        self.assertEqual(self.store.scope_info(ALICE).count, 0)

    @inlineCallbacks
    def test_bad_append_refused(self) -> Any:
        """An op whose window ends before it starts is refused clearly and
        stores nothing."""
        bad = NewOp(ALICE, b"x", start_ms=NOW + 10, expire_ms=NOW + 5)
        yield self.assertFailure(self.store.append(bad), ValidationError)
        self.assertEqual(self.store.scope_info(ALICE).count, 0)

    @inlineCallbacks
    def test_failed_write_keeps_group_intact(self) -> Any:
        """A failing write among concurrent ones changes nothing itself
        and does not disturb the others."""
        bad = NewOp(ALICE, b"x", start_ms=NOW + 10, expire_ms=NOW + 5)
        good1 = self.store.append(op(body=b"1"))
        failing = self.store.append(bad)
        good2 = self.store.append(op(body=b"2"))
        yield good1
        yield self.assertFailure(failing, ValidationError)
        yield good2
        bodies = [o.body for o in self.store.read_after(ALICE, 0, 9, NOW)]
        self.assertEqual(bodies, [b"1", b"2"])

    @inlineCallbacks
    def test_listeners_hear_after_store(self) -> Any:
        """Listeners are told of each new op once it can be read, and not
        of duplicates."""
        heard = []

        def listener(scope: Scope, op_id: int) -> None:
            heard.append((scope, op_id, self.store.get_op(scope, op_id)))

        stop = self.store.subscribe(listener)
        r = yield self.store.append(op(dedup=b"d"))
        yield self.store.append(op(dedup=b"d"))
        self.assertEqual(len(heard), 1)
        self.assertEqual(heard[0][:2], (ALICE, r.op_id))
        self.assertIsNotNone(heard[0][2])
        stop()
        yield self.store.append(op())
        self.assertEqual(len(heard), 1)

    @inlineCallbacks
    def test_reserved_ids_order_with_appends(self) -> Any:
        """Reserved ids are never handed out again and sit between the
        appends made before and after."""
        a = yield self.store.append(op())
        first, last = yield self.store.reserve_ids(10)
        b = yield self.store.append(op())
        self.assertEqual(last - first, 9)
        self.assertLess(a.op_id, first)
        self.assertLess(last, b.op_id)
        yield self.assertFailure(self.store.reserve_ids(0), ValidationError)

    # --- sync points -----------------------------------------------------

    @inlineCallbacks
    def test_sync_points_never_go_back(self) -> Any:
        """Within one epoch a sync point only grows."""
        e = self.store.epoch
        yield self.store.advance_sync_points([(ALICE, "d1", SyncPoint(e, 9))])
        now = yield self.store.advance_sync_points(
            [(ALICE, "d1", SyncPoint(e, 4))]
        )
        self.assertEqual(now, [SyncPoint(e, 9)])
        self.assertEqual(self.store.sync_point(ALICE, "d1"), SyncPoint(e, 9))
        yield self.store.advance_sync_points([(ALICE, "d1", SyncPoint(e, 12))])
        self.assertEqual(self.store.sync_point(ALICE, "d1"), SyncPoint(e, 12))

    @inlineCallbacks
    def test_shared_point_keeps_done_ops_above(self) -> Any:
        """Ops done above a shared point stay done until the point passes
        them."""
        e = self.store.epoch
        yield self.store.advance_sync_points(
            [(ALICE, None, SyncPoint(e, 5, (9, 12)))]
        )
        yield self.store.advance_sync_points(
            [(ALICE, None, SyncPoint(e, 10, (15,)))]
        )
        self.assertEqual(
            self.store.sync_point(ALICE, None), SyncPoint(e, 10, (12, 15))
        )

    @inlineCallbacks
    def test_sync_point_of_new_epoch_replaces(self) -> Any:
        """A point from another epoch replaces the old one."""
        yield self.store.advance_sync_points([(ALICE, "d1", SyncPoint(1, 9))])
        yield self.store.advance_sync_points([(ALICE, "d1", SyncPoint(2, 3))])
        self.assertEqual(self.store.sync_point(ALICE, "d1"), SyncPoint(2, 3))

    @inlineCallbacks
    def test_shared_point_separate(self) -> Any:
        """The scope's shared point and device points are kept apart."""
        e = self.store.epoch
        yield self.store.advance_sync_points(
            [(ALICE, None, SyncPoint(e, 5)), (ALICE, "d1", SyncPoint(e, 2))]
        )
        self.assertEqual(self.store.sync_point(ALICE, None), SyncPoint(e, 5))
        self.assertEqual(self.store.sync_point(ALICE, "d1"), SyncPoint(e, 2))
        self.assertIsNone(self.store.sync_point(BOB, "d1"))

    # --- catalog ---------------------------------------------------------

    @inlineCallbacks
    def _instance(self) -> Any:
        yield self.store.put_instance(Instance("ws_app", created_ms=NOW))

    @inlineCallbacks
    def test_configs_validate_and_keep_identity(self) -> Any:
        """Configs are validated, unique per biz type, and refuse changes
        of biz type or target."""
        yield self._instance()
        c = SyncConfig("ws_app", "UCHAT", Target.USER, created_ms=NOW)
        yield self.store.add_config(c)
        yield self.assertFailure(self.store.add_config(c), AlreadyExists)
        self.assertEqual(self.store.config("ws_app", "UCHAT"), c)
        off = c.modified(state=ConfigState.OFFLINE, threshold=7)
        yield self.store.update_config(off)
        self.assertEqual(self.store.config("ws_app", "UCHAT"), off)
        moved = SyncConfig("ws_app", "UCHAT", Target.DEVICE)
        yield self.assertFailure(
            self.store.update_config(moved), ValidationError
        )
        self.assertRaises(ValidationError, c.modified, target=Target.DEVICE)
        self.assertRaises(ValidationError, c.modified, biz_type="OTHER")
        self.assertEqual(
            [x.biz_type for x in self.store.configs("ws_app")], ["UCHAT"]
        )

    @inlineCallbacks
    def test_config_rules(self) -> Any:
        """Malformed configs are refused with the field at fault."""
        yield self._instance()
        cases = [
            (SyncConfig("ws_app", "bad type", Target.USER), "biz_type"),
            (SyncConfig("ws_app", "A", Target.USER, threshold=0), "threshold"),
            (
                SyncConfig(
                    "ws_app",
                    "A",
                    Target.USER,
                    threshold=100_001,
                    resend_mode=ResendMode.THRESHOLD,
                ),
                "threshold",
            ),
            (
                SyncConfig("ws_app", "A", Target.DEVICE, consistency=True),
                "consistency",
            ),
            (
                SyncConfig(
                    "ws_app",
                    "A",
                    Target.USER,
                    range=Range.GLOBAL,
                    multi_device=False,
                ),
                "multi_device",
            ),
        ]
        for config, field in cases:
            e = yield self.assertFailure(
                self.store.add_config(config), ValidationError
            )
            self.assertEqual(e.field, field)
        missing = SyncConfig("nope", "A", Target.USER)
        yield self.assertFailure(self.store.add_config(missing), NotFound)

    @inlineCallbacks
    def test_instances_keys_admins_settings(self) -> Any:
        """Instances, access keys, admin logins and settings read back."""
        yield self._instance()
        key = AccessKey("AK1", "s3cret", ("ws_app",), NOW)
        yield self.store.put_access_key(key)
        yield self.store.put_admin("admin", "hash")
        yield self.store.put_setting("signature_check", False)
        self.assertEqual(self.store.access_key("AK1"), key)
        self.assertTrue(key.allows("ws_app"))
        self.assertFalse(key.allows("other"))
        self.assertIsNone(self.store.access_key("AK2"))
        self.assertEqual(self.store.admin_hash("admin"), "hash")
        self.assertIs(self.store.setting("signature_check", True), False)
        self.assertEqual(self.store.setting("absent", 3), 3)
        self.assertEqual(
            [i.instance_id for i in self.store.instances()], ["ws_app"]
        )
        self.assertEqual(self.store.access_keys(), [key])

    @inlineCallbacks
    def test_catalog_remembered_until_changed(self) -> Any:
        """Instances, keys and settings read again after any change to
        them, and each durable change is announced once."""
        changes: list[object] = []
        self.store.on_catalog_change(
            lambda: changes.append(self.store.access_key("AK1"))
        )
        self.assertIsNone(self.store.instance("ws_app"))
        self.assertIsNone(self.store.access_key("AK1"))
        self.assertEqual(self.store.setting("signature_check", True), True)
        yield self._instance()
        self.assertEqual(self.store.instance("ws_app").instance_id, "ws_app")
        key = AccessKey("AK1", "s3cret", ("ws_app",), NOW)
        yield self.store.put_access_key(key)
        self.assertEqual(self.store.access_key("AK1"), key)
        revoked = AccessKey("AK1", "s3cret", ("ws_app",), NOW, revoked=True)
        yield self.store.put_access_key(revoked)
        self.assertTrue(self.store.access_key("AK1").revoked)
        yield self.store.put_setting("signature_check", False)
        self.assertIs(self.store.setting("signature_check", True), False)
        # Each listener call saw its change already readable.
        self.assertEqual(changes, [None, key, revoked, revoked])
        self.store.probe()

    @inlineCallbacks
    def test_admins_and_tokens(self) -> Any:
        """Admins list by name; tokens read back and can be revoked."""
        yield self.store.put_admin("root", "h1")
        yield self.store.put_admin("ops", "h2")
        self.assertEqual(self.store.admins(), ["ops", "root"])
        yield self.store.put_token("t1", b"hash", "ops", NOW)
        self.assertEqual(self.store.token("t1"), (b"hash", "ops"))
        removed = yield self.store.delete_token("t1")
        self.assertTrue(removed)
        self.assertIsNone(self.store.token("t1"))
        again = yield self.store.delete_token("t1")
        self.assertFalse(again)

    @inlineCallbacks
    def test_device_registry_and_claim(self) -> Any:
        """Devices are recorded with their user, and a device id stays
        bound to the first secret that used it."""
        d = Device(
            "ws_app", "dev1", b"h1", "alice", False, "IOS", "1.0", NOW, NOW
        )
        yield self.store.save_device(d)
        thief = Device("ws_app", "dev1", b"h2", last_seen_ms=NOW + 1)
        yield self.assertFailure(self.store.save_device(thief), DeviceClaimed)
        moved = Device(
            "ws_app", "dev1", b"h1", "bob", True, "IOS", "1.1", 0, NOW + 5
        )
        yield self.store.save_device(moved)
        got = self.store.device("ws_app", "dev1")
        assert got is not None
        self.assertEqual((got.user_id, got.first_seen_ms), ("bob", NOW))
        self.assertEqual(self.store.devices_of_user("ws_app", "alice"), [])
        self.assertEqual(
            [x.device_id for x in self.store.devices_of_user("ws_app", "bob")],
            ["dev1"],
        )

    @inlineCallbacks
    def test_delivery_records(self) -> Any:
        """Pushes and acks are recorded per op and device with attempt
        counts, and an ack is final."""
        r = yield self.store.append(op())

        def event(state: DeliveryState, at: int, **kw: Any) -> DeliveryEvent:
            return DeliveryEvent(
                ALICE, r.op_id, "dev1", state, at, "alice", **kw
            )

        yield self.store.record_deliveries(
            [
                event(DeliveryState.PUSHED, NOW),
                event(DeliveryState.PUSHED, NOW + 1),
                event(DeliveryState.PUSHED, NOW + 2, attempts=5),
                event(DeliveryState.ACKED, NOW + 3),
                event(DeliveryState.DROPPED, NOW + 4, reason="retries"),
            ]
        )
        [rec] = self.store.device_deliveries("ws_app", "dev1")
        self.assertEqual(
            (rec.state, rec.attempts, rec.scope, rec.op_id, rec.reason),
            (DeliveryState.ACKED, 5, ALICE, r.op_id, ""),
        )
        self.assertEqual(
            self.store.delivery_record(ALICE, r.op_id, "dev1"), rec
        )
        self.assertIsNone(self.store.delivery_record(ALICE, r.op_id, "x"))

    @inlineCallbacks
    def test_daily_counters(self) -> Any:
        """Pushes and arrivals add up per day for the device and its
        user."""
        yield self.store.add_counts("ws_app", "dev1", "alice", NOW, 3, 2)
        yield self.store.add_counts("ws_app", "dev1", "", NOW + 1, 1, 0)
        yield self.store.add_counts("ws_app", "dev1", "alice", NOW + DAY, 1, 1)
        day = NOW // DAY
        self.assertEqual(
            self.store.daily_counts("ws_app", "d", "dev1", day - 1, day + 1),
            [(day, 4, 2), (day + 1, 1, 1)],
        )
        self.assertEqual(
            self.store.daily_counts("ws_app", "u", "alice", day, day),
            [(day, 3, 2)],
        )
        yield self.assertFailure(
            self.store.add_counts("ws_app", "dev1", "", NOW, -1, 0),
            ValidationError,
        )

    @inlineCallbacks
    def test_save_progress(self) -> Any:
        """Many devices' points and counters go in one write, with the
        same rules as apart; a bad count writes nothing."""
        e = self.store.epoch
        yield self.store.advance_sync_points([(ALICE, "d1", SyncPoint(e, 9))])
        yield self.store.save_progress(
            [(ALICE, "d1", SyncPoint(e, 4)), (ALICE, "d2", SyncPoint(e, 7))],
            [
                ("ws_app", "d1", "alice", NOW, 3, 2),
                ("ws_app", "d2", "", NOW, 1, 1),
            ],
        )
        self.assertEqual(self.store.sync_point(ALICE, "d1"), SyncPoint(e, 9))
        self.assertEqual(self.store.sync_point(ALICE, "d2"), SyncPoint(e, 7))
        day = NOW // DAY
        self.assertEqual(
            self.store.daily_counts("ws_app", "d", "d2", day, day),
            [(day, 1, 1)],
        )
        self.assertEqual(
            self.store.daily_counts("ws_app", "u", "alice", day, day),
            [(day, 3, 2)],
        )
        yield self.assertFailure(
            self.store.save_progress(
                [(ALICE, "d3", SyncPoint(e, 5))],
                [("ws_app", "d3", "", NOW, -1, 0)],
            ),
            ValidationError,
        )
        self.assertIsNone(self.store.sync_point(ALICE, "d3"))

    @inlineCallbacks
    def test_delivery_records_swept_after_retention(self) -> Any:
        """Delivery records and counters older than 30 days are swept."""
        yield self.store.record_deliveries(
            [DeliveryEvent(ALICE, 1, "dev1", DeliveryState.PUSHED, NOW)]
        )
        yield self.store.add_counts("ws_app", "dev1", "", NOW, 1, 0)
        swept = yield self.store.sweep(NOW + 31 * DAY)
        self.assertEqual((swept.deliveries, swept.counters), (1, 1))
        self.assertEqual(self.store.device_deliveries("ws_app", "dev1"), [])

    def test_unknown_input_refused(self) -> None:
        """Malformed names and ranges raise a clear validation error."""
        self.assertRaises(
            ValidationError, Scope, "ws app", "A", ScopeKind.USER, "u"
        )
        self.assertRaises(
            ValidationError, Scope, "ws", "A", ScopeKind.USER, ""
        )
        self.assertRaises(
            ValidationError, Scope, "ws", "A", ScopeKind.USER, "a\x00b"
        )
        self.assertRaises(
            ValidationError, Scope, "ws", "A", ScopeKind.GLOBAL, "u"
        )
        self.assertRaises(
            ValidationError, self.store.read_after, ALICE, -1, 5, NOW
        )
        self.assertRaises(ValidationError, Scope.from_key, b"\x00junk")


class MemoryContractTests(Contract, TestCase):
    """The contract, on the in-memory backend."""

    def make_store(self) -> Store:
        return Store(MemoryEngine())


class LMDBContractTests(Contract, TestCase):
    """The contract, on the LMDB backend with its writer thread."""

    def make_store(self) -> Store:
        path = tempfile.mkdtemp(prefix="msync-store-")
        self.addCleanup(_rmtree, path)
        return Store(LMDBEngine(path, reactor, map_size=2**28))


class LMDBOnlyTests(TestCase):
    """Behaviour that only a disk-backed store has."""

    def setUp(self) -> None:
        self.path = tempfile.mkdtemp(prefix="msync-store-")
        self.addCleanup(_rmtree, self.path)

    def _open(self) -> Store:
        store = Store(LMDBEngine(self.path, reactor, map_size=2**28))
        store.open()
        return store

    @inlineCallbacks
    def test_reopen_keeps_everything(self) -> Any:
        """Ops, ids and the epoch survive a close and reopen."""
        store = self._open()
        r = yield store.append(op())
        epoch = store.epoch
        yield store.close()
        store = self._open()
        self.addCleanup(store.close)
        self.assertEqual(store.epoch, epoch)
        again = yield store.append(op())
        self.assertGreater(again.op_id, r.op_id)
        self.assertEqual(len(store.read_after(ALICE, 0, 9, NOW)), 2)

    @inlineCallbacks
    def test_reader_remembers_until_told(self) -> Any:
        """A read-only view of a store another writer changes keeps what
        it read until told to forget (the daemon tells gateway
        workers)."""
        engine = LMDBEngine(self.path, reactor, map_size=2**28)
        store = Store(engine)
        store.open()
        self.addCleanup(store.close)
        key = AccessKey("AK1", "s3cret", (), NOW)
        yield store.put_access_key(key)
        view = Store(engine)
        self.assertEqual(view.access_key("AK1"), key)
        yield store.put_access_key(replace(key, revoked=True))
        self.assertFalse(view.access_key("AK1").revoked)
        view.forget()
        self.assertTrue(view.access_key("AK1").revoked)

    @inlineCallbacks
    def test_group_commit_shares_transactions(self) -> Any:
        """Appends issued together share far fewer commits than appends."""
        store = self._open()
        self.addCleanup(store.close)
        engine = store._engine
        assert isinstance(engine, LMDBEngine)
        before = engine.commits
        yield gatherResults([store.append(op()) for _ in range(500)])
        self.assertLess(engine.commits - before, 100)

    @inlineCallbacks
    def test_corrupt_record_reported(self) -> Any:
        """A damaged record gives an error naming its table and key."""
        store = self._open()
        self.addCleanup(store.close)
        yield store.put_instance(Instance("ws_app"))
        yield store._engine.write(
            lambda tx: tx.put(Table.INSTANCES, b"ws_app", b"\xc1")
        )
        e = self.assertRaises(CorruptRecord, store.instance, "ws_app")
        self.assertEqual(e.table, "instances")

    @inlineCallbacks
    def test_schema_mismatch_refused(self) -> Any:
        """A data dir of another schema version is refused at open."""
        from msync.store import SchemaMismatch

        store = self._open()
        yield store._engine.write(
            lambda tx: tx.put(Table.META, b"schema", b"999")
        )
        yield store.close()
        self.assertRaises(SchemaMismatch, self._open)

    def test_files_private(self) -> None:
        """The data directory and files are readable by their owner only,
        even when the directory was made open beforehand."""
        os.chmod(self.path, 0o755)
        store = self._open()
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o700)
        self.addCleanup(store.close)
        for name in os.listdir(self.path):
            mode = os.stat(os.path.join(self.path, name)).st_mode
            self.assertEqual(mode & 0o077, 0, name)


def _rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class OfflineTests(TestCase):
    """Preparing a data directory without a running daemon."""

    def test_offline_writes_are_seen_by_the_daemon_store(self) -> None:
        """What an offline transaction writes, a store opened later reads,
        with the schema in place."""
        from msync.store import catalog, oplog

        path = tempfile.mkdtemp(prefix="msync-store-")
        self.addCleanup(_rmtree, path)

        def seed(tx: Any) -> int:
            oplog.initialize(tx, new_epoch=42)
            catalog.put_instance(tx, Instance("ws_app"))
            return oplog.append(tx, op()).op_id

        op_id = LMDBEngine.offline(path, seed)
        store = Store(LMDBEngine(path, reactor, map_size=2**28))
        store.open()
        self.addCleanup(store.close)
        self.assertEqual(store.epoch, 42)
        self.assertIsNotNone(store.instance("ws_app"))
        self.assertEqual(
            [o.op_id for o in store.read_after(ALICE, 0, 9, NOW)], [op_id]
        )


class SweepLoopTests(TestCase):
    """The daemon's periodic sweep."""

    def test_sweeps_every_slice(self) -> None:
        """One sweep run removes everything expired, slice after slice,
        and reports the sum."""
        from twisted.internet.task import Clock

        import msync.store.api as api
        from msync.store import sweep_expired

        self.patch(api, "SWEEP_BUDGET", 4)
        store = Store(MemoryEngine())
        store.open()
        for _ in range(10):
            store.append(op(expire=NOW + 5))
        clock = Clock()
        clock.advance((NOW + 10) / 1000)
        total = self.successResultOf(sweep_expired(store, clock))
        self.assertEqual((total.ops, total.more), (10, False))
        self.assertEqual(store.total_ops(), 0)
