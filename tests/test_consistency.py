"""User consistency: the validator client and the reference tenant app."""

from __future__ import annotations

from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from msync.consistency.reference import ReferenceValidator
from msync.consistency.validator import SessionValidator, read_answer
from msync.model import Instance, Target
from msync.store import MemoryEngine, Store
from tests.delivery_world import INSTANCE, World

URL = "http://tenant.example/validate"


def store_with(url: str = URL) -> Store:
    store = Store(MemoryEngine())
    store.open()
    store.put_instance(Instance(INSTANCE, validation_url=url))
    return store


class HangingHTTP:
    """An HTTP client whose calls never answer until told to."""

    def __init__(self) -> None:
        self.pending: list[Deferred[Any]] = []

    def post(self, url: str, **kw: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d


class ValidatorTests(SynchronousTestCase):
    """Asking the tenant."""

    def setUp(self) -> None:
        self.tenant = ReferenceValidator({(INSTANCE, "alice", "good")})
        self.http = StubTreq(self.tenant.resource())
        self.clock = Clock()

    def validator(
        self, store: Store | None = None, **kw: Any
    ) -> SessionValidator:
        return SessionValidator(
            self.http, self.clock, store or store_with(), **kw
        )

    def ask(self, v: SessionValidator, user: str, session: str) -> bool:
        d = v(INSTANCE, user, session)
        self.http.flush()
        return self.successResultOf(d)

    def test_valid_and_invalid(self) -> None:
        """The tenant's listed pair is valid; others are not."""
        v = self.validator()
        self.assertTrue(self.ask(v, "alice", "good"))
        self.assertFalse(self.ask(v, "alice", "forged"))
        self.assertFalse(self.ask(v, "mallory", "good"))

    def test_cached(self) -> None:
        """A repeated question is answered from the cache until it ages."""
        v = self.validator(ttl=60)
        self.ask(v, "alice", "good")
        self.ask(v, "alice", "good")
        self.assertEqual(self.tenant.asked, 1)
        self.clock.advance(61)
        self.ask(v, "alice", "good")
        self.assertEqual(self.tenant.asked, 2)

    def test_no_endpoint(self) -> None:
        """Without an endpoint nobody is validated and nothing is called."""
        v = self.validator(store_with(url=""))
        self.assertFalse(self.ask(v, "alice", "good"))
        self.assertEqual(self.tenant.asked, 0)

    def test_slow_endpoint_times_out(self) -> None:
        """An endpoint that does not answer in time leaves the pair
        unvalidated."""
        http = HangingHTTP()
        v = SessionValidator(http, self.clock, store_with(), timeout=5)
        d = v(INSTANCE, "alice", "good")
        self.assertNoResult(d)
        self.clock.advance(5)
        self.assertIs(self.successResultOf(d), False)

    def test_bounded_in_flight(self) -> None:
        """No more than the bound of calls are in flight; the rest wait."""
        http = HangingHTTP()
        v = SessionValidator(http, self.clock, store_with(), in_flight=3)
        ds = [v(INSTANCE, f"u{i}", "s") for i in range(5)]
        self.assertEqual(len(http.pending), 3)
        self.clock.advance(10)
        self.assertEqual(len(http.pending), 5)
        self.clock.advance(10)
        self.assertEqual([self.successResultOf(d) for d in ds], [False] * 5)

    def test_queue_bound(self) -> None:
        """Past the queue bound, calls are answered unvalidated at once."""
        http = HangingHTTP()
        v = SessionValidator(
            http, self.clock, store_with(), in_flight=1, queue=1
        )
        v(INSTANCE, "a", "s")
        v(INSTANCE, "b", "s")
        self.assertIs(self.successResultOf(v(INSTANCE, "c", "s")), False)

    def test_wrong_operation_refused(self) -> None:
        """The reference app answers other operations with an error."""
        d = self.http.post(
            URL, data=b"[]", headers={b"Operation-Type": [b"x"]}
        )
        self.http.flush()
        body = self.successResultOf(self.http.content(self.successResultOf(d)))
        self.assertIn(b"OPERATION_ERROR", body)


class AnswerTests(SynchronousTestCase):
    """Reading the tenant's answer strictly."""

    def test_shapes(self) -> None:
        """Only a well-formed OK answer for the same session validates."""
        good = (
            b'{"response":{"resultCode":"OK","success":"true",'
            b'"result":{"sid":"s1","valid":"true"}}}'
        )
        self.assertTrue(read_answer(good, "s1"))
        self.assertFalse(read_answer(good, "s2"))
        self.assertTrue(
            read_answer(good.replace(b'"true"}}', b"true}}"), "s1")
        )
        bare = (
            b'{"resultCode":"OK","success":true,'
            b'"result":{"sid":"s1","valid":false}}'
        )
        self.assertFalse(read_answer(bare, "s1"))
        for bad in (
            b"not json",
            b"[]",
            b"\xff",
            b'{"resultCode":"FAIL","success":"true","result":{}}',
            b'{"resultCode":"OK","success":"true"}',
        ):
            self.assertRaises(ValueError, read_answer, bad, "s1")


class EngineValidationTests(SynchronousTestCase):
    """Consistency configs push only to validated devices."""

    def world(self) -> tuple[World, StubTreq]:
        tenant = ReferenceValidator(
            {(INSTANCE, "alice", "good"), (INSTANCE, "bob", "bobs")}
        )
        http = StubTreq(tenant.resource())
        w = World(self)
        self.successResultOf(
            w.store.put_instance(Instance(INSTANCE, validation_url=URL))
        )
        w.engine.validate = SessionValidator(http, w.clock, w.store)
        w.config("PAY", Target.USER, consistency=True)
        w.config("CHAT", Target.USER)
        return w, http

    def test_valid_session_gets_data(self) -> None:
        """A device whose session the tenant confirms gets the data."""
        w, http = self.world()
        w.sent("PAY", ["paid"], "alice")
        d = w.device("d1").connect("alice", "good")
        http.flush()
        self.assertEqual(d.link.payloads("PAY"), [b"paid"])
        device = w.store.device(INSTANCE, "d1")
        assert device is not None
        self.assertTrue(device.session_validated)

    def test_forged_session_gets_nothing(self) -> None:
        """A device with a session the tenant denies gets no consistency
        data but still gets other configs' data."""
        w, http = self.world()
        w.sent("PAY", ["paid"], "alice")
        w.sent("CHAT", ["hi"], "alice")
        d = w.device("d1").connect("alice", "forged")
        http.flush()
        self.assertEqual(d.link.payloads("PAY"), [])
        self.assertEqual(d.link.payloads("CHAT"), [b"hi"])

    def test_another_users_session_refused(self) -> None:
        """Binding a user with another user's genuine session gets none of
        that user's consistency data."""
        w, http = self.world()
        w.sent("PAY", ["paid"], "alice")
        d = w.device("thief").connect("alice", "bobs")
        http.flush()
        self.assertEqual(d.link.payloads("PAY"), [])
        device = w.store.device(INSTANCE, "thief")
        assert device is not None
        self.assertFalse(device.session_validated)

    def test_device_id_hijack_refused(self) -> None:
        """Another client cannot take over a validated device's id."""
        w, http = self.world()
        w.device("phone").connect("alice", "good")
        http.flush()
        thief = w.device("phone")
        self.assertEqual(thief.refused().code, "DEVICE_CLAIMED")
