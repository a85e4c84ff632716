"""
Password hashing away from the reactor thread: checks wait for their
runner, run a few at a time, refuse beyond a bounded queue, and the
console's login and admin creation go through them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from msync.auth import decoy_hash, verify_password
from msync.console.sessions import Busy, Passwords
from tests.test_console_api import PASSWORD, Console, Reply, cheap_hash


class Held:
    """A runner that runs at once, or, while C{hold}, keeps each
    function until C{release} runs it."""

    def __init__(self) -> None:
        self.hold = False
        self.pending: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, fn: Callable[[], Any]) -> Deferred[Any]:
        if not self.hold:
            return succeed(fn())
        d: Deferred[Any] = Deferred()
        self.pending.append((fn, d))
        return d

    def release(self) -> None:
        fn, d = self.pending.pop(0)
        d.callback(fn())


class PasswordsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.run = Held()
        self.run.hold = True

    def test_a_check_waits_for_its_runner(self) -> None:
        """Nothing is hashed on the caller's thread: the answer comes
        once the runner has run the check."""
        passwords = Passwords(self.run)
        d = passwords.verify(PASSWORD, cheap_hash(PASSWORD))
        self.assertNoResult(d)
        self.assertEqual(len(self.run.pending), 1)
        self.run.release()
        self.assertIs(self.successResultOf(d), True)

    def test_a_few_at_a_time(self) -> None:
        """At most C{parallel} checks are with the runner; the next one
        goes when one finishes."""
        passwords = Passwords(self.run, parallel=2)
        ds = [passwords.verify("guess", cheap_hash(PASSWORD)) for _ in "abc"]
        self.assertEqual(len(self.run.pending), 2)
        self.run.release()
        self.assertIs(self.successResultOf(ds[0]), False)
        self.assertEqual(len(self.run.pending), 2)
        self.run.release()
        self.run.release()
        self.assertEqual(
            [self.successResultOf(d) for d in ds[1:]], [False] * 2
        )

    def test_refused_beyond_the_backlog(self) -> None:
        """Once C{backlog} checks wait, the next is refused at once,
        and taken again when the queue shrinks."""
        passwords = Passwords(self.run, parallel=1, backlog=2)
        for _ in range(3):
            passwords.verify("guess", cheap_hash(PASSWORD))
        self.assertRaises(Busy, passwords.verify, "x", cheap_hash("x"))
        self.assertRaises(Busy, passwords.hash, "x")
        self.run.release()
        d = passwords.hash("pw")
        while self.run.pending:
            self.run.release()
        self.assertTrue(verify_password("pw", self.successResultOf(d)))

    def test_decoy_matches_nothing(self) -> None:
        """The decoy has a real hash's cost and format, and is fresh."""
        decoy = decoy_hash()
        self.assertEqual(decoy.split("$")[:4], ["scrypt", "16384", "8", "1"])
        self.assertFalse(verify_password("", decoy))
        self.assertNotEqual(decoy, decoy_hash())


class ThreadTests(TestCase):
    """With the daemon's runner, the work happens on another thread."""

    def test_hash_and_verify_on_a_thread(self) -> Deferred[None]:
        """Hashing and checking run on pool threads, not the caller's."""
        seen: list[threading.Thread] = []

        def run(fn: Callable[[], Any]) -> Deferred[Any]:
            def there() -> Any:
                seen.append(threading.current_thread())
                return fn()

            return deferToThread(there)

        passwords = Passwords(run)
        hashed = passwords.hash("pw")
        self.assertNoResult(hashed)

        def check(stored: str) -> Deferred[None]:
            return passwords.verify("pw", stored).addCallback(
                self.assertIs, True
            )

        def where(_: None) -> None:
            self.assertEqual(len(seen), 2)
            self.assertNotIn(threading.main_thread(), seen)

        return hashed.addCallback(check).addCallback(where)


class ConsoleTests(SynchronousTestCase):
    """The console's login and admin creation use the password work."""

    def setUp(self) -> None:
        self.run = Held()
        self.c = Console(self, run_blocking=self.run)
        self.assertEqual(self.c.login().status, 200)

    def fill(self) -> None:
        # Two checks running and 32 waiting: the defaults' whole queue.
        self.run.hold = True
        for _ in range(34):
            self.c.api.passwords.verify("x", cheap_hash("x"))

    def drain(self) -> None:
        self.run.hold = False
        while self.run.pending:
            self.run.release()

    def busy(self, r: Reply) -> None:
        self.assertEqual(r.error, (503, "busy", None), r.body)
        self.assertEqual(r.headers.getRawHeaders(b"retry-after"), [b"1"])

    def test_login_busy(self) -> None:
        """A login beyond the queue gets 503 and a Retry-After, and
        counts as no failure; once the queue drains, logins work."""
        self.fill()
        for _ in range(6):
            self.busy(self.c.stranger().login())
        self.drain()
        self.assertEqual(self.c.stranger().login().status, 200)

    def test_admin_creation_busy(self) -> None:
        """Adding an admin hashes through the same queue."""
        self.fill()
        body = {"user": "second", "password": "long enough password"}
        self.busy(self.c.post("/admins", body))
        self.drain()
        self.assertEqual(self.c.post("/admins", body).status, 201)
        self.assertEqual(
            self.c.stranger()
            .login(user="second", password="long enough password")
            .status,
            200,
        )
