"""
End to end on loopback: a real C{twistd msync}, real SDK devices over TLS,
a backend calling the signed gateway, and the reference tenant validator.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import (
    Deferred,
    DeferredSemaphore,
    gatherResults,
    inlineCallbacks,
)
from twisted.internet.ssl import Certificate
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
)
from twisted.web.server import Site

from msync.consistency.reference import ReferenceValidator
from msync.device import DeviceClient, SyncMessage
from msync.gateway.client import GatewayClient, GatewayResult
from msync.model import (
    AccessKey,
    Instance,
    Range,
    ResendMode,
    SyncConfig,
    Target,
)
from msync.store import LMDBEngine, catalog, oplog
from msync.testing import BOUND, CERTS, Daemon

pytestmark = pytest.mark.process

INSTANCE = "E2E_app"
KEY, SECRET = "AKE2E", "e2e-secret-0123456789"
CONFIGS = [
    SyncConfig(INSTANCE, "LOCK", Target.DEVICE),
    SyncConfig(INSTANCE, "CHAT", Target.USER),
    SyncConfig(
        INSTANCE,
        "FEED",
        Target.DEVICE,
        resend_mode=ResendMode.THRESHOLD,
        threshold=10,
    ),
    SyncConfig(INSTANCE, "PAY", Target.USER, consistency=True),
    SyncConfig(INSTANCE, "CFG", Target.DEVICE, range=Range.GLOBAL),
]


def seed(data_dir: str, validation_url: str) -> None:
    """Prepare the daemon's data: an instance, a key, the configs."""

    def fill(tx: Any) -> None:
        oplog.initialize(tx, new_epoch=secrets.randbits(62) + 1)
        catalog.put_instance(
            tx, Instance(INSTANCE, validation_url=validation_url)
        )
        catalog.put_access_key(tx, AccessKey(KEY, SECRET, (INSTANCE,)))
        for config in CONFIGS:
            catalog.add_config(tx, config)

    LMDBEngine.offline(data_dir, fill)


class Inbox:
    """What one device's callbacks received, with a way to wait for it."""

    def __init__(self) -> None:
        self.messages: list[SyncMessage] = []
        self._waiting: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def __call__(self, message: SyncMessage) -> None:
        self.messages.append(message)
        for entry in list(self._waiting):
            if entry[0]():
                self._waiting.remove(entry)
                entry[1].callback(None)

    def until(self, condition: Callable[[], bool]) -> Deferred[None]:
        """Fire once C{condition} holds, failing after the bound."""
        d: Deferred[None] = Deferred()
        if condition():
            d.callback(None)
        else:
            self._waiting.append((condition, d))
        return d.addTimeout(BOUND, reactor)

    def count(self, n: int) -> Deferred[None]:
        return self.until(lambda: len(self.messages) >= n)

    def payloads(self, biz: str | None = None) -> list[bytes]:
        return [
            m.payload
            for m in self.messages
            if biz is None or m.biz_type == biz
        ]


class DaemonCase(TestCase):
    """One daemon per test, with devices and a backend around it."""

    timeout = 240
    http_port: list[str] = []

    def setUp(self) -> Any:
        self.tenant = ReferenceValidator({(INSTANCE, "alice", "good-session")})
        site = Site(self.tenant.resource())
        self.validator_port = reactor.listenTCP(  # type: ignore[attr-defined]
            0, site, interface="127.0.0.1"
        )
        self.addCleanup(self.validator_port.stopListening)
        port = self.validator_port.getHost().port

        self.data_dir = tempfile.mkdtemp(prefix="msync-e2e-")
        self.addCleanup(shutil.rmtree, self.data_dir, True)
        seed(self.data_dir, f"http://127.0.0.1:{port}/validate")
        self.seed_more(self.data_dir)
        self.daemon = Daemon(self.data_dir, *self.http_port)
        self.addCleanup(self.daemon.kill)
        self.daemon.start(wait_for=("HTTP", "devices"))

        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        self.backend = GatewayClient(
            self.http,
            self.daemon.http_url + "/gateway.do",
            KEY,
            SECRET,
            clock=reactor,
        )

    def seed_more(self, data_dir: str) -> None:
        """Add to the daemon's data before it starts (nothing here)."""

    def device(
        self, device_id: str | None = None, **kw: Any
    ) -> tuple[DeviceClient, Inbox]:
        data = tempfile.mkdtemp(prefix="msync-device-")
        self.addCleanup(shutil.rmtree, data, True)
        client = DeviceClient(
            reactor,
            "127.0.0.1",
            self.daemon.ports["devices"],
            os.path.join(CERTS, "ca.pem"),
            INSTANCE,
            "ANDROID",
            "1.0.0",
            data,
            server_name="localhost",
            device_id=device_id,
            **kw,
        )
        self.addCleanup(client.close)
        inbox = Inbox()
        for config in CONFIGS:
            client.register_biz(config.biz_type, inbox)
        return client, inbox

    def connect(self, client: DeviceClient) -> Deferred[Any]:
        d = client.when_connected()
        client.app_to_foreground()
        return d.addTimeout(BOUND, reactor)

    def send(
        self, biz: str, link: str, payload: bytes, **kw: Any
    ) -> Deferred[GatewayResult]:
        return self.backend.sync_data(
            INSTANCE, biz, link, payload, secrets.token_hex(8), **kw
        )


class EndToEndTests(DaemonCase):
    """Devices, a backend and the tenant validator around one daemon."""

    @inlineCallbacks
    def test_online_device_gets_op(self) -> Any:
        """An op sent through the gateway reaches the online device's
        callback, and the answer carries its op id."""
        client, inbox = self.device()
        yield self.connect(client)
        result = yield self.send("LOCK", client.device_id, b"unlock")
        self.assertEqual(
            (result.result_code, result.return_code), ("OK", "OK")
        )
        yield inbox.count(1)
        self.assertEqual(inbox.messages[0].payload, b"unlock")
        self.assertEqual(str(inbox.messages[0].op_id), result.op_log_id)

    @inlineCallbacks
    def test_offline_device_gets_whole_backlog(self) -> Any:
        """A device offline while 1,000 ops arrive gets all of them, in
        order, when it connects; a threshold config gives the newest 10."""
        client, inbox = self.device("phone-1")
        gate = DeferredSemaphore(20)
        sends = [
            gate.run(self.send, "LOCK", "phone-1", b"%d" % i)
            for i in range(1000)
        ]
        results = yield gatherResults(sends)
        self.assertEqual({r.return_code for r in results}, {"NOT_ONLINE"})
        for i in range(50):
            yield self.send("FEED", "phone-1", b"feed %d" % i)

        yield self.connect(client)
        yield inbox.until(lambda: len(inbox.payloads("LOCK")) >= 1000)
        yield inbox.until(lambda: len(inbox.payloads("FEED")) >= 10)
        # Sends ran 20 at a time, so the server's order is the op ids'.
        by_id = {int(r.op_log_id): b"%d" % i for i, r in enumerate(results)}
        locks = [m for m in inbox.messages if m.biz_type == "LOCK"]
        self.assertEqual(
            [(m.op_id, m.payload) for m in locks], sorted(by_id.items())
        )
        self.assertEqual(
            inbox.payloads("FEED"), [b"feed %d" % i for i in range(40, 50)]
        )

    @inlineCallbacks
    def test_user_devices_and_global(self) -> Any:
        """Every device of a user gets the user's ops; every device gets
        a global op."""
        a, inbox_a = self.device()
        b, inbox_b = self.device()
        a.update_user_info("bob", "any")
        b.update_user_info("bob", "any")
        yield gatherResults([self.connect(a), self.connect(b)])
        yield self.send("CHAT", "bob", b"hello bob")
        result = yield self.backend.sync_global(
            INSTANCE, "CFG", b"flag=on", secrets.token_hex(8)
        )
        self.assertEqual(result.return_code, "OK")
        for inbox in (inbox_a, inbox_b):
            yield inbox.count(2)
            self.assertEqual(
                sorted(inbox.payloads()), [b"flag=on", b"hello bob"]
            )

    @inlineCallbacks
    def test_user_consistency(self) -> Any:
        """With user consistency on, the device whose session the tenant
        confirms gets the op; the one with a forged session does not."""
        good, good_inbox = self.device()
        bad, bad_inbox = self.device()
        good.update_user_info("alice", "good-session")
        bad.update_user_info("alice", "forged-session")
        yield gatherResults([self.connect(good), self.connect(bad)])
        yield self.send("PAY", "alice", b"paid 42")
        yield self.send("CHAT", "alice", b"after")
        yield good_inbox.until(
            lambda: good_inbox.payloads("PAY") == [b"paid 42"]
        )
        yield bad_inbox.until(lambda: bad_inbox.payloads("CHAT") == [b"after"])
        self.assertEqual(bad_inbox.payloads("PAY"), [])
        self.assertGreaterEqual(self.tenant.asked, 2)

    @inlineCallbacks
    def test_metrics_after_traffic(self) -> Any:
        """/metrics shows the traffic: calls answered by code, ops pushed
        and acked, devices connected."""
        client, inbox = self.device()
        yield self.connect(client)
        for i in range(3):
            yield self.send("LOCK", client.device_id, b"%d" % i)
        yield self.send("NO-SUCH", client.device_id, b"x")
        yield inbox.count(3)

        def scrape() -> Deferred[dict[tuple[str, str], float]]:
            d = self.http.get(self.daemon.http_url + "/metrics")
            d.addCallback(lambda r: r.text())
            return d.addCallback(_samples)

        metrics = {}

        @inlineCallbacks
        def acked() -> Any:
            found = yield scrape()
            metrics.update(found)
            return found.get(("msync_ops_acked_total", "")) == 3

        yield _poll_async(acked)
        self.assertEqual(metrics[("msync_connected_devices", "")], 1)
        self.assertEqual(metrics[("msync_ops_accepted_total", "OK")], 3)
        self.assertEqual(
            metrics[("msync_ops_accepted_total", "BIZ_NOT_ONLINE")], 1
        )
        self.assertEqual(metrics[("msync_ops_pushed_total", "")], 3)
        self.assertEqual(metrics[("msync_backlog_ops", "")], 3)

    @inlineCallbacks
    def test_bad_signature_refused(self) -> Any:
        """A call signed with the wrong secret is refused and nothing is
        delivered."""
        client, inbox = self.device()
        yield self.connect(client)
        forger = GatewayClient(
            self.http,
            self.daemon.http_url + "/gateway.do",
            KEY,
            "wrong-secret",
            clock=reactor,
        )
        result = yield forger.sync_data(
            INSTANCE, "LOCK", client.device_id, b"x", "m1"
        )
        self.assertEqual(result.result_code, "INVALID_SIGNATURE")
        # Query strings carry signatures: none may reach the log.
        self.assertNotIn("sign=", self.daemon.log())
        self.assertNotIn(SECRET, self.daemon.log())
        yield self.send("LOCK", client.device_id, b"real")
        yield inbox.count(1)
        self.assertEqual(inbox.payloads(), [b"real"])


class CommandLineTests(DaemonCase):
    """The commands people use, as real processes against the daemon."""

    def _msync(self, *args: str) -> Deferred[tuple[bytes, bytes, int]]:
        msync = os.path.join(os.path.dirname(sys.executable), "msync")
        d = getProcessOutputAndValue(msync, args, env=os.environ)
        return d.addTimeout(BOUND, reactor)

    @inlineCallbacks
    def test_msync_device_and_push(self) -> Any:
        """`msync push` sends through the gateway, and `msync device`
        prints each op it receives as a JSON line and exits after
        --count."""
        data = tempfile.mkdtemp(prefix="msync-cli-device-")
        self.addCleanup(shutil.rmtree, data, True)
        device = self._msync(
            "device",
            "--host",
            "localhost",
            "--port",
            str(self.daemon.ports["devices"]),
            "--ca",
            os.path.join(CERTS, "ca.pem"),
            "--instance",
            INSTANCE,
            "--device-id",
            "cli-phone",
            "--biz",
            "LOCK",
            "--data-dir",
            data,
            "--count",
            "2",
            "--timeout",
            "60",
        )
        yield _poll(lambda: "cli-phone of" in self.daemon.log())

        push = [
            "push",
            "--endpoint",
            self.daemon.http_url,
            "--access-key",
            KEY,
            "--secret",
            SECRET,
            "--instance",
            INSTANCE,
            "--biz",
            "LOCK",
            "--link-token",
            "cli-phone",
        ]
        out, err, code = yield self._msync(
            *push, "--payload", "héllo", "--third-msg-id", "m-1"
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["return_code"], "OK")
        binary = os.path.join(data, "blob")
        with open(binary, "wb") as f:
            f.write(b"\xff\x00\x01")
        out, err, code = yield self._msync(
            *push, "--payload-file", binary, "--third-msg-id", "m-2"
        )
        self.assertEqual(code, 0, err)

        out, err, code = yield device
        self.assertEqual(code, 0, err)
        lines = [json.loads(line) for line in out.splitlines()]
        self.assertEqual([x["biz_type"] for x in lines], ["LOCK", "LOCK"])
        self.assertEqual(lines[0]["text"], "héllo")
        self.assertEqual(base64.b64decode(lines[1]["base64"]), b"\xff\x00\x01")

    @inlineCallbacks
    def test_push_refusal_exit_status(self) -> Any:
        """`msync push` exits 1 and says why when the business call is
        refused."""
        out, _, code = yield self._msync(
            "push",
            "--endpoint",
            self.daemon.http_url,
            "--access-key",
            KEY,
            "--secret",
            SECRET,
            "--instance",
            INSTANCE,
            "--biz",
            "NO-SUCH-BIZ",
            "--link-token",
            "x",
            "--payload",
            "x",
            "--third-msg-id",
            "m",
        )
        self.assertEqual(code, 1)
        self.assertEqual(json.loads(out)["return_code"], "BIZ_NOT_ONLINE")


class HTTPSTests(DaemonCase):
    """The gateway over HTTPS, with the same listener code and certs."""

    http_port = [
        "--http-port",
        "ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}".format(
            key=os.path.join(CERTS, "server.key"),
            cert=os.path.join(CERTS, "server.pem"),
        ),
    ]

    def setUp(self) -> Any:
        super().setUp()
        with open(os.path.join(CERTS, "ca.pem"), "rb") as f:
            ca = Certificate.loadPEM(f.read())
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        agent = Agent(
            reactor,
            contextFactory=BrowserLikePolicyForHTTPS(trustRoot=ca),
            pool=pool,
        )
        url = f"https://localhost:{self.daemon.ports['HTTP']}/gateway.do"
        self.backend = GatewayClient(
            HTTPClient(agent), url, KEY, SECRET, clock=reactor
        )

    @inlineCallbacks
    def test_https_gateway(self) -> Any:
        """A signed call over HTTPS reaches the device."""
        client, inbox = self.device()
        yield self.connect(client)
        result = yield self.send("LOCK", client.device_id, b"over tls")
        self.assertEqual(result.return_code, "OK")
        yield inbox.count(1)
        self.assertEqual(inbox.payloads(), [b"over tls"])


def _poll(condition: Callable[[], bool]) -> Deferred[None]:
    """Fire once C{condition} holds, checking every 50 ms, within the
    bound."""
    d: Deferred[None] = Deferred()

    def check() -> None:
        if d.called:
            return
        if condition():
            d.callback(None)
        else:
            reactor.callLater(0.05, check)  # type: ignore[attr-defined]

    check()
    return d.addTimeout(BOUND, reactor)


def _samples(text: str) -> dict[tuple[str, str], float]:
    """Samples by name and the value of their one label (or "")."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = next(iter(sample.labels.values()), "")
            out[(sample.name, label)] = sample.value
    return out


@inlineCallbacks
def _poll_async(check: Callable[[], Deferred[bool]]) -> Any:
    """Run C{check} every 50 ms until it says yes, within the bound."""
    deadline = reactor.seconds() + BOUND  # type: ignore[attr-defined]
    while True:
        ok = yield check()
        if ok:
            return
        if reactor.seconds() > deadline:  # type: ignore[attr-defined]
            raise AssertionError("condition not met in time")
        yield deferLater(reactor, 0.05, lambda: None)
