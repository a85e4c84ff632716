"""First-start bootstrap against an in-memory store."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from msync.auth import hash_password, verify_password
from msync.bootstrap import Bootstrap, BootstrapService, load
from msync.model import Instance
from msync.store import MemoryEngine, Store


class BootstrapTests(SynchronousTestCase):
    """What the first start creates, and what later starts reuse."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.store = Store(MemoryEngine())
        self.store.open()
        self.said: list[str] = []

    def start(self) -> Bootstrap | None:
        svc = BootstrapService(self.store, self.dir, Clock(), self.said.append)
        svc.startService()
        return self.successResultOf(svc.ready)

    def test_first_start_creates_and_says_once(self) -> None:
        """An empty store gets an instance, a key bound to it and an admin,
        written to a 0600 file and said once."""
        record = self.start()
        path = os.path.join(self.dir, "bootstrap.json")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(load(path), record)
        with open(path) as f:
            raw = json.load(f)
        key = self.store.access_key(raw["access_key"])
        assert key is not None
        self.assertEqual(key.secret, raw["secret"])
        self.assertTrue(key.allows(raw["instance_id"]))
        stored = self.store.admin_hash(raw["admin_user"])
        assert stored is not None
        self.assertTrue(verify_password(raw["admin_password"], stored))
        self.assertEqual(len(self.said), 1)
        self.assertIn(raw["secret"], self.said[0])

        self.assertEqual(self.start(), record)
        self.assertEqual(len(self.said), 1)

    def test_heals_after_crash_between_file_and_store(self) -> None:
        """A file whose records never reached the store is replayed."""
        record = self.start()
        fresh = Store(MemoryEngine())
        fresh.open()
        self.store = fresh
        self.assertEqual(self.start(), record)
        self.assertIsNotNone(fresh.access_key(record.access_key))

    def test_no_rebootstrap_over_existing_data(self) -> None:
        """A store with instances but no file is left alone."""
        self.successResultOf(self.store.put_instance(Instance("ws_app")))
        self.assertIsNone(self.start())
        self.assertFalse(
            os.path.exists(os.path.join(self.dir, "bootstrap.json"))
        )

    def test_corrupt_file_refused(self) -> None:
        """A bootstrap file that is not a record is a clear error."""
        path = os.path.join(self.dir, "bootstrap.json")
        with open(path, "w") as f:
            f.write('{"instance_id": 1}')
        self.assertRaises(ValueError, load, path)


class PasswordTests(SynchronousTestCase):
    """Password hashes."""

    def test_hash_round_trip(self) -> None:
        """A password verifies against its hash; others and junk do not."""
        h = hash_password("pw")
        self.assertTrue(verify_password("pw", h))
        self.assertFalse(verify_password("pW", h))
        self.assertFalse(verify_password("pw", "junk"))
        self.assertNotEqual(hash_password("pw"), h)
