"""
Fuzzing past the codec: the device session state machine with random
message sequences, and C{/gateway.do} through the real HTTP parser with
random input.  The server must never fail on its own (no C{INTERNAL} or
C{SYSTEM_ERROR}), never show a traceback, and always answer or close.
"""

from __future__ import annotations

import json
import random
import time
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from msync.delivery.sender import Sender
from msync.gateway.app import GatewayApp
from msync.gateway.client import METHOD, build_request, business_params
from msync.link.protocol import DeviceFactory
from msync.metrics import Metrics
from msync.model import AccessKey, Range, Target
from msync.web import RootApp, site
from msync.wire.frames import MAX_SERVER_FRAME, FrameDecoder, encode
from msync.wire.messages import (
    Ack,
    Bind,
    Error,
    Hello,
    Ping,
    Point,
    Pong,
    Pull,
    Unbind,
    parse,
    to_frame,
)
from tests.delivery_world import INSTANCE, World

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

names = st.sampled_from(["A", "B", "NOPE", "x" * 64])
scopes = st.sampled_from(
    ["d:dev1", "u:alice", "g", "d:other", "u:" + "z" * 128]
)
points = st.builds(
    Point,
    names,
    scopes,
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1),
)
hellos = st.builds(
    Hello,
    instance=st.sampled_from([INSTANCE, "unknown"]),
    device=st.sampled_from(["dev1", "dev2", "d" * 128]),
    secret=st.sampled_from(["s" * 20, "t" * 20]),
    os=st.sampled_from(["IOS", "ANDROID", "WINDOWS"]),
    app_version=st.sampled_from(["1.0", "99.99.99", "x"]),
    points=st.lists(points, max_size=5).map(tuple),
    user=st.sampled_from(["", "alice"]),
    session=st.sampled_from(["", "s"]),
    version=st.sampled_from([1, 2]),
)
messages = st.one_of(
    hellos,
    st.builds(Ack, st.lists(points, max_size=5).map(tuple)),
    st.builds(Bind, st.sampled_from(["alice", "bob"]), st.just("s")),
    st.just(Unbind()),
    st.just(Pull()),
    st.builds(Ping, st.integers(0, 2**63 - 1)),
    st.builds(Pong, st.integers(0, 2**63 - 1)),
    st.builds(Error, st.just("INTERNAL"), st.text(max_size=20)),
)
frames = st.one_of(
    messages.map(to_frame),
    st.binary(max_size=64).map(lambda b: len(b).to_bytes(4, "big") + b),
    st.dictionaries(
        st.sampled_from(["t", "v", "points", "n", "user"]),
        # msgpack holds integers from -2**63 to 2**64 - 1.
        st.one_of(
            st.integers(-(2**63), 2**64 - 1), st.text(max_size=5), st.none()
        ),
        max_size=4,
    ).map(encode),
)


VALID_HELLO = Hello(INSTANCE, "dev1", "s" * 20, "IOS", "1.0")

#: Well-formed messages a device may send once admitted, so that random
#: sequences reach deep into the state machine instead of closing early.
admitted = st.one_of(
    st.builds(Ack, st.lists(points, max_size=5).map(tuple)),
    st.builds(Bind, st.sampled_from(["alice", "bob"]), st.just("s")),
    st.just(Unbind()),
    st.just(Pull()),
    st.builds(Ping, st.integers(0, 2**63 - 1)),
    st.builds(Pong, st.integers(0, 2**63 - 1)),
).map(to_frame)


class SessionFuzzTests(SynchronousTestCase):
    """Random frames, in random order, on live connections."""

    @FUZZ
    @given(st.lists(st.tuples(frames, st.integers(0, 40)), max_size=25))
    def test_random_sequences(self, steps: list[tuple[bytes, int]]) -> None:
        """Whatever a device sends, the server answers or closes; it never
        fails on its own and writes nothing after closing."""
        self.run_steps(steps)

    @FUZZ
    @given(
        st.lists(st.tuples(admitted, st.integers(0, 40)), max_size=30),
        st.lists(st.tuples(frames, st.integers(0, 40)), max_size=3),
    )
    def test_admitted_sequences(
        self,
        steps: list[tuple[bytes, int]],
        tail: list[tuple[bytes, int]],
    ) -> None:
        """An admitted device sending any well-formed messages, then
        anything, never makes the server fail on its own."""
        self.run_steps([(to_frame(VALID_HELLO), 0), *steps, *tail])

    def run_steps(self, steps: list[tuple[bytes, int]]) -> None:
        w = World(self)
        w.config("A", Target.DEVICE)
        w.config("B", Target.USER, range=Range.GLOBAL)
        w.send("A", "x", "dev1")
        transport = StringTransport()
        proto = DeviceFactory(w.engine).buildProtocol(None)
        proto.makeConnection(transport)
        closed_at = None
        for data, wait in steps:
            if proto.closed and closed_at is None:
                closed_at = len(transport.value())
            proto.dataReceived(data)
            w.clock.advance(wait)
        written = [
            parse(m)
            for m in FrameDecoder(MAX_SERVER_FRAME).feed(transport.value())
        ]
        codes = [m.code for m in written if isinstance(m, Error)]
        self.assertNotIn("INTERNAL", codes)
        if closed_at is not None:
            self.assertEqual(len(transport.value()), closed_at)
        proto.connectionLost()
        self.assertEqual(w.engine.online, 0)


class GatewayFuzzTests(SynchronousTestCase):
    """Random requests through the HTTP parser to the gateway."""

    def setUp(self) -> None:
        self.w = World(self)
        self.w.config("A", Target.DEVICE)
        self.successResultOf(
            self.w.store.put_access_key(AccessKey("AK", "sec", (INSTANCE,)))
        )
        self.w.clock.advance(time.time() - self.w.clock.seconds())
        app = RootApp(
            self.w.store,
            GatewayApp(self.w.store, Sender(self.w.engine), self.w.clock),
            Metrics(),
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

    def check(self, out: bytes) -> None:
        self.assertNotIn(b"Traceback", out)
        self.assertNotIn(b"SYSTEM_ERROR", out)
        if b" 200 " in out.split(b"\r\n", 1)[0]:
            body = out.split(b"\r\n\r\n", 1)[1]
            self.assertIn("response", json.loads(body))

    @FUZZ
    @given(
        st.dictionaries(
            st.sampled_from(
                [
                    "payload",
                    "biz_type",
                    "link_token",
                    "third_msg_id",
                    "immediate_sync",
                    "os_type",
                    "app_min_version",
                    "app_max_version",
                    "start_date",
                    "expire_date",
                    "device_id",
                    "instance_id",
                    "zzz",
                ]
            ),
            st.text(max_size=40),
            max_size=8,
        ),
        st.booleans(),
    )
    def test_signed_random_business(
        self, business: dict[str, str], valid_payload: bool
    ) -> None:
        """Correctly signed calls with random business values are answered
        with a code, never a failure of the server."""
        business = {**business}
        if valid_payload:
            business.update(business_params(INSTANCE, "A", b"p", "m"))
        url, body = build_request(
            "http://h/gateway.do",
            "AK",
            "sec",
            METHOD,
            business,
            now=self.w.clock.seconds(),
            req_msg_id=uuid.uuid4().hex,
        )
        target = url[url.index("/gateway.do") :].encode()
        out = self.request(
            b"POST " + target + b" HTTP/1.1\r\nHost: h\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        self.check(out)

    def test_random_bytes(self) -> None:
        """Random bytes after a request line never break the server."""
        rng = random.Random(1234)
        for _ in range(300):
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
            query = bytes(rng.randrange(32, 127) for _ in range(30))
            out = self.request(
                b"POST /gateway.do?"
                + query.replace(b" ", b"+")
                + b" HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n"
                % len(junk)
                + junk
            )
            self.check(out)


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(max_size=30),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=10), inner, max_size=4),
    ),
    max_leaves=12,
)
config_fields = st.sampled_from(
    [
        "biz_type",
        "target",
        "range",
        "description",
        "multi_device",
        "persistent",
        "resend_mode",
        "threshold",
        "consistency",
        "link_token",
        "payload",
        "payload_base64",
        "third_msg_id",
        "instances",
        "instance_id",
        "signature_check",
        "user",
        "password",
        "time_zone",
        "validation_url",
        "app_key",
        "start_date",
        "expire_date",
        "global",
    ]
)
routes = st.sampled_from(
    [
        ("POST", "/instances"),
        ("PATCH", f"/instances/{INSTANCE}"),
        ("POST", "/keys"),
        ("POST", f"/instances/{INSTANCE}/configs"),
        ("PATCH", f"/instances/{INSTANCE}/configs/A"),
        ("POST", f"/instances/{INSTANCE}/send"),
        ("PATCH", "/settings"),
        ("POST", "/admins"),
        ("POST", "/login"),
        ("GET", f"/instances/{INSTANCE}/users/alice"),
        ("GET", f"/instances/{INSTANCE}/devices/%2F..%2F"),
        ("POST", f"/instances/{INSTANCE}/configs/A/offline"),
    ]
)


class AdminApiFuzzTests(SynchronousTestCase):
    """Random JSON to the admin API, logged in."""

    @FUZZ
    @given(
        routes,
        st.one_of(
            st.dictionaries(config_fields, json_values, max_size=8),
            json_values,
        ),
    )
    def test_random_bodies(self, route: tuple[str, str], body: object) -> None:
        """Whatever JSON a logged-in operator sends, the API answers with
        a status and a JSON error or result, never a failure of its own."""
        from tests.test_console_api import Console

        console = Console(self)
        console.world.config("A", Target.DEVICE)
        self.assertEqual(console.login().status, 200)
        method, path = route
        reply = console.request(method, path, body)
        self.assertLess(reply.status, 500, reply.body)
        self.assertTrue(
            reply.body is None or isinstance(reply.body, (dict, list))
        )
