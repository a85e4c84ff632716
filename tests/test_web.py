"""The HTTP root: health, the gateway mount, bounded bodies."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from msync.delivery.sender import Sender
from msync.gateway.app import MAX_BODY, GatewayApp
from msync.metrics import Metrics
from msync.store import LMDBEngine, Store
from msync.web import RootApp, site
from tests.delivery_world import World


class SiteTests(SynchronousTestCase):
    """Requests through the real HTTP parser."""

    def setUp(self) -> None:
        w = World(self)
        app = RootApp(
            w.store, GatewayApp(w.store, Sender(w.engine), w.clock), Metrics()
        )
        self.site = site(app.resource())
        # Channels here live on a string transport: no idle timers on the
        # global reactor to outlive the test.
        self.site.timeOut = None

    def request(self, raw: bytes) -> bytes:
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        return transport.value()

    def test_health(self) -> None:
        """The health route answers 200 with the store usable."""
        out = self.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"200 OK", out)
        self.assertIn(b'"status":"ok"', out)

    def test_metrics(self) -> None:
        """The metrics route answers in Prometheus text format."""
        out = self.request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"200 OK", out)
        self.assertIn(b"msync_ops_pushed_total", out)

    def test_gateway_mounted(self) -> None:
        """POST /gateway.do reaches the gateway (which wants parameters)."""
        body = b"a=b"
        out = self.request(
            b"POST /gateway.do HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        self.assertIn(b"MISSING_PARAMETER", out)

    def test_declared_oversize_refused_before_body(self) -> None:
        """A declared length over the limit is refused at once with 413,
        before any of the body arrives."""
        out = self.request(
            b"POST /gateway.do HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1)
        )
        self.assertIn(b"413", out)

    def test_chunked_oversize_refused(self) -> None:
        """A chunked body is refused once it grows past the limit."""
        chunk = b"x" * 60000
        raw = (
            b"POST /gateway.do HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(4):
            raw += b"%x\r\n" % len(chunk) + chunk + b"\r\n"
        out = self.request(raw)
        self.assertIn(b"413", out)
        self.assertNotIn(b"Traceback", out)


class HealthTests(TestCase):
    """Health follows the store."""

    @inlineCallbacks
    def test_unusable_store_is_unhealthy(self) -> Any:
        """Once the store cannot be read, /healthz answers 503."""
        path = tempfile.mkdtemp(prefix="msync-health-")
        self.addCleanup(shutil.rmtree, path, True)
        store = Store(LMDBEngine(path, reactor, map_size=2**24))
        store.open()
        w = World(self)
        app = RootApp(
            store, GatewayApp(store, Sender(w.engine), w.clock), Metrics()
        )
        http = StubTreq(app.resource())
        ok = yield http.get("http://x/healthz")
        self.assertEqual(ok.code, 200)
        yield store.close()
        bad = yield http.get("http://x/healthz")
        self.assertEqual(bad.code, 503)
        body = yield bad.json()
        self.assertEqual(body["status"], "unavailable")
