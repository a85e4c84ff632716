"""
The backend gateway, C{POST /gateway.do} (REQUIREMENTS section 4 and
GATEWAY-SIGNING.md), in memory over the delivery world; its client and
C{msync push}; and one round trip over loopback.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import io
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import treq
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgent
from zope.interface import implementer

from msync import cli
from msync.delivery.sender import Sender, SendRequest, SendResult
from msync.gateway import signing
from msync.gateway.app import (
    GLOBAL_METHOD,
    MAX_BODY,
    METHOD,
    BodyTooLarge,
    GatewayApp,
    SeenRequests,
    read_body,
)
from msync.gateway.cli import push, request_from_args
from msync.gateway.client import (
    GatewayClient,
    GatewayResult,
    SignatureMismatch,
    UnexpectedAnswer,
    build_request,
)
from msync.model import (
    AccessKey,
    ConfigState,
    Instance,
    Range,
    Scope,
    ScopeKind,
    SyncConfig,
    Target,
)
from msync.web import site
from tests.delivery_world import INSTANCE, T0, World

AK = "AKTEST0001"
SECRET = "s3cret-of-the-backend"
URL = "http://gateway.example/gateway.do"
FORM = b"application/x-www-form-urlencoded"
SYSTEM = {
    "method",
    "version",
    "sign_type",
    "req_time",
    "req_msg_id",
    "access_key",
    "sign",
    "product_instance_id",
}


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def form(params: dict[str, str]) -> str:
    return "&".join(
        f"{signing.percent_encode(k)}={signing.percent_encode(v)}"
        for k, v in params.items()
    )


def sdk_split(body: bytes) -> tuple[str, str | None]:
    """Find the signed text and the sign as the SDKs do: by position."""
    text = body.decode("utf-8")
    start = text.index('"response":') + len('"response":')
    end = text.find('"sign"')
    if end < 0:
        return text[start:-1], None
    sign = json.loads(text)["sign"]
    return text[start : end - 1], sign


def hmac_b64(text: str, secret: str, algorithm: str = "HmacSHA1") -> str:
    digest = hashlib.sha256 if algorithm == "HmacSHA256" else hashlib.sha1
    mac = hmac.new(secret.encode(), text.encode(), digest).digest()
    return base64.b64encode(mac).decode()


@dataclass
class Answer:
    """One answer of the gateway, read apart."""

    status: int
    headers: Any
    body: bytes

    @property
    def whole(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def response(self) -> dict[str, Any]:
        response: dict[str, Any] = self.whole["response"]
        return response

    @property
    def code(self) -> str:
        code: str = self.response["result_code"]
        return code

    @property
    def biz(self) -> dict[str, str]:
        biz: dict[str, str] = self.response["bizResult"]
        return biz

    @property
    def signed(self) -> bool:
        return "sign" in self.whole


class RecordingSender(Sender):
    """A sender that keeps the requests it is given."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.requests: list[SendRequest] = []

    def send(self, request: SendRequest) -> Deferred[SendResult]:
        self.requests.append(request)
        return super().send(request)


class GatewayTestCase(SynchronousTestCase):
    """A gateway over a delivery world, with one key on its instance."""

    max_body = MAX_BODY

    def setUp(self) -> None:
        self.w = World(self)
        self.w.config("UCHAT")
        self.w.config("LOCK", Target.DEVICE)
        self.w.config("NEWS", range=Range.GLOBAL)
        self.successResultOf(
            self.w.store.put_access_key(AccessKey(AK, SECRET, (INSTANCE,)))
        )
        self.sender = RecordingSender(self.w.engine)
        self.gateway = GatewayApp(
            self.w.store, self.sender, self.w.clock, max_body=self.max_body
        )
        self.http = StubTreq(self.gateway.resource())

    def params(self, **changes: str | None) -> dict[str, str]:
        """A good syncdata call's parameters, with C{changes} (None
        removes one)."""
        params = {
            "method": METHOD,
            "version": "1.0",
            "sign_type": "HmacSHA1",
            "req_time": utc(self.w.clock.seconds()),
            "req_msg_id": uuid.uuid4().hex,
            "access_key": AK,
            "instance_id": INSTANCE,
            "biz_type": "UCHAT",
            "link_token": "alice",
            "payload": b64("hello"),
            "third_msg_id": uuid.uuid4().hex,
        }
        params.update(changes)  # type: ignore[arg-type]
        return {k: v for k, v in params.items() if v is not None}

    def signed(
        self, params: dict[str, str], secret: str = SECRET
    ) -> dict[str, str]:
        """C{params} with their sign added."""
        algorithm = params.get("sign_type") or "HmacSHA1"
        return {**params, "sign": signing.sign(params, secret, algorithm)}

    def post(
        self,
        query: str,
        body: bytes | str,
        content_type: bytes | None = FORM,
        path: str = "/gateway.do",
    ) -> Answer:
        """Post raw bytes and read the answer."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        headers = {}
        if content_type is not None:
            headers[b"content-type"] = [content_type]
        url = "http://gateway.example" + path + ("?" + query if query else "")
        d = self.http.post(url, data=body, headers=headers)
        self.http.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(treq.content(response))
        return Answer(response.code, response.headers, content)

    def call(
        self,
        params: dict[str, str] | None = None,
        *,
        sign: bool = True,
        secret: str = SECRET,
        split: bool = True,
    ) -> Answer:
        """
        Sign and post C{params} as the newer SDKs do (system parameters
        in the query, business ones in the body), or all in the body.
        """
        params = self.params() if params is None else params
        if sign:
            params = self.signed(params, secret)
        if split:
            query = {k: v for k, v in params.items() if k in SYSTEM}
            body = {k: v for k, v in params.items() if k not in SYSTEM}
        else:
            query, body = {}, params
        answer = self.post(form(query), form(body))
        self.assertEqual(answer.status, 200)
        return answer

    def assert_verified(
        self, answer: Answer, secret: str = SECRET, algorithm: str = "HmacSHA1"
    ) -> None:
        """The answer is signed, over its response text as SDKs find it."""
        text, sign = sdk_split(answer.body)
        self.assertEqual(sign, hmac_b64(text, secret, algorithm))
        self.assertEqual(json.loads(text), answer.response)

    def assert_refused(
        self, answer: Answer, code: str, *, signed: bool
    ) -> None:
        """A gateway-level refusal with C{code}, signed or not."""
        self.assertEqual(answer.status, 200)
        self.assertEqual((answer.code, answer.biz["returnCode"]), (code, code))
        self.assertEqual(answer.biz["success"], "false")
        self.assertNotIn("opLogId", answer.biz)
        self.assertTrue(answer.response["result_msg"])
        self.assertEqual(answer.signed, signed)
        if signed:
            self.assert_verified(answer)
        self.assertNotIn(b"Traceback", answer.body)

    def assert_business(
        self, answer: Answer, code: str, success: bool = False
    ) -> None:
        """A call the gateway accepted, with the business C{code}."""
        self.assertEqual(answer.code, "OK")
        self.assertEqual(answer.biz["returnCode"], code)
        self.assertEqual(answer.biz["success"], "true" if success else "false")
        self.assertEqual("opLogId" in answer.biz, success)
        self.assert_verified(answer)


class BusinessCodeTests(GatewayTestCase):
    """Every result code of the manual, through the gateway."""

    def test_ok_device_receives(self) -> None:
        """A call for a connected user answers OK with the op's id, and
        the user's device receives the payload."""
        device = self.w.device("d1").connect(user="alice", session="s")
        params = self.params(payload=b64("hello, 世界"))
        answer = self.call(params)
        self.assert_business(answer, "OK", success=True)
        self.assertEqual(answer.response["req_msg_id"], params["req_msg_id"])
        self.assertEqual(answer.response["result_msg"], "SUCCESS")
        self.assertEqual(device.link.payloads(), ["hello, 世界".encode()])
        (op_id,) = [i for *_, i, _ in device.link.ops()]
        self.assertEqual(answer.biz["opLogId"], str(op_id))

    def test_answer_headers(self) -> None:
        """Answers are JSON in UTF-8, not cached, status 200."""
        answer = self.call()
        self.assertEqual(
            answer.headers.getRawHeaders(b"content-type"),
            [b"application/json;charset=utf-8"],
        )
        self.assertEqual(
            answer.headers.getRawHeaders(b"cache-control"), [b"no-store"]
        )

    def test_answer_shape(self) -> None:
        """The body is exactly C{{"response":R,"sign":"S"}}, R compact,
        with its keys in the documented order."""
        answer = self.call()
        self.assertTrue(answer.body.startswith(b'{"response":{"result_code"'))
        self.assertEqual(list(answer.whole), ["response", "sign"])
        self.assertEqual(
            list(answer.response),
            ["result_code", "result_msg", "req_msg_id", "bizResult"],
        )
        self.assertEqual(
            list(answer.biz),
            ["success", "returnCode", "returnReason", "opLogId"],
        )
        self.assertNotIn(b" ", answer.body.split(b'"returnReason"')[0])

    def test_not_online(self) -> None:
        """A call for a user with no device online is a success that
        says so, with the op's id."""
        answer = self.call()
        self.assert_business(answer, "NOT_ONLINE", success=True)
        self.assertTrue(answer.biz["opLogId"].isdigit())

    def test_duplicated_biz_id(self) -> None:
        """Repeating a third_msg_id answers DUPLICATED_BIZ_ID with the
        first call's op id."""
        first = self.call(self.params(third_msg_id="m-1"))
        again = self.call(self.params(third_msg_id="m-1"))
        self.assert_business(again, "DUPLICATED_BIZ_ID", success=True)
        self.assertEqual(again.biz["opLogId"], first.biz["opLogId"])

    def test_third_msg_id_null(self) -> None:
        """A missing or empty third_msg_id is THIRDMSGID_IS_NULL."""
        for value in (None, ""):
            answer = self.call(self.params(third_msg_id=value))
            self.assert_business(answer, "THIRDMSGID_IS_NULL")

    def test_biz_not_online(self) -> None:
        """An unknown or offline biz type is BIZ_NOT_ONLINE."""
        answer = self.call(self.params(biz_type="NOPE"))
        self.assert_business(answer, "BIZ_NOT_ONLINE")
        self.w.update("UCHAT", state=ConfigState.OFFLINE)
        answer = self.call(self.params())
        self.assert_business(answer, "BIZ_NOT_ONLINE")

    def test_args_is_null(self) -> None:
        """A missing instance_id, biz_type, payload or link_token is
        ARGS_IS_NULL."""
        for name in ("instance_id", "biz_type", "payload", "link_token"):
            for value in (None, ""):
                answer = self.call(self.params(**{name: value}))
                self.assert_business(answer, "ARGS_IS_NULL")

    def test_not_support_global(self) -> None:
        """syncglobal on a specified config, and syncdata on a global
        one, are NOT_SUPPORT_GLOBAL."""
        answer = self.call(self.params(method=GLOBAL_METHOD, link_token=None))
        self.assert_business(answer, "NOT_SUPPORT_GLOBAL")
        answer = self.call(self.params(biz_type="NEWS"))
        self.assert_business(answer, "NOT_SUPPORT_GLOBAL")

    def test_global_ok(self) -> None:
        """syncglobal on a global config reaches a connected device."""
        device = self.w.device("d1").connect(user="bob", session="s")
        params = self.params(
            method=GLOBAL_METHOD, biz_type="NEWS", link_token=None
        )
        answer = self.call(params)
        self.assert_business(answer, "OK", success=True)
        self.w.clock.advance(0)  # global ops go out after the turn
        self.assertEqual(device.link.payloads("NEWS"), [b"hello"])
        self.assertTrue(self.sender.requests[-1].to_all)

    def test_global_link_token(self) -> None:
        """syncglobal with a link_token is
        GLOBAL_OPLOG_LINKTOKEN_NOT_EMPTY."""
        answer = self.call(self.params(method=GLOBAL_METHOD, biz_type="NEWS"))
        self.assert_business(answer, "GLOBAL_OPLOG_LINKTOKEN_NOT_EMPTY")

    def test_payload_long(self) -> None:
        """A payload of 24 KiB is PAYLOAD_LONG; one byte less is fine,
        even when its base64 is all C{+} and C{/}, which the form
        encoding triples."""
        answer = self.call(self.params(payload=b64(b"\xfb" * 24 * 1024)))
        self.assert_business(answer, "PAYLOAD_LONG")
        answer = self.call(self.params(payload=b64(b"\xfb" * (24 * 1024 - 1))))
        self.assert_business(answer, "NOT_ONLINE", success=True)

    def test_third_msg_id_long(self) -> None:
        """A third_msg_id of 100 bytes is THIRD_MSG_ID_LONG."""
        answer = self.call(self.params(third_msg_id="é" * 50))
        self.assert_business(answer, "THIRD_MSG_ID_LONG")
        answer = self.call(self.params(third_msg_id="x" * 99))
        self.assert_business(answer, "NOT_ONLINE", success=True)

    def test_invalid_signature(self) -> None:
        """A wrong or missing sign is INVALID_SIGNATURE, in result_code
        and bizResult, and nothing is sent."""
        self.assert_refused(
            self.call(secret="wrong"), "INVALID_SIGNATURE", signed=False
        )
        self.assert_refused(
            self.call(sign=False), "INVALID_SIGNATURE", signed=False
        )
        self.assertEqual(self.sender.requests, [])

    def test_store_fails_while_sending(self) -> None:
        """A store that fails to append is the business SYSTEM_ERROR."""
        self.patch(
            self.w.store, "append", lambda op: fail(RuntimeError("disk"))
        )
        answer = self.call()
        self.assert_business(answer, "SYSTEM_ERROR")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unexpected_failure(self) -> None:
        """An exception in the gateway itself is the gateway's
        SYSTEM_ERROR, logged, with no traceback in the answer."""

        def broken(name: str) -> None:
            raise RuntimeError("the store is gone")

        self.patch(self.w.store, "access_key", broken)
        answer = self.call()
        self.assert_refused(answer, "SYSTEM_ERROR", signed=False)
        self.assertNotIn(b"the store is gone", answer.body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unexpected_failure_after_auth(self) -> None:
        """An exception once the caller is known is answered signed."""

        def broken(instance_id: str) -> None:
            raise RuntimeError("the store is gone")

        self.patch(self.w.store, "instance", broken)
        answer = self.call()
        self.assert_refused(answer, "SYSTEM_ERROR", signed=True)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_invalid_value_from_sender(self) -> None:
        """Values the sender finds malformed (an OS, a version, a link
        with control characters) are the gateway's INVALID_PARAMETER."""
        for change in (
            {"os_type": "WINDOWS"},
            {"app_min_version": "one"},
            {"link_token": "al\x00ice"},
            {"app_min_version": "2.0", "app_max_version": "1.0"},
        ):
            answer = self.call(self.params(**change))
            self.assert_refused(answer, "INVALID_PARAMETER", signed=True)


class MappingTests(GatewayTestCase):
    """Business parameters become the sender's request."""

    def test_all_parameters(self) -> None:
        """Every business parameter reaches the sender, dates read in
        the instance's time zone."""
        self.successResultOf(
            self.w.store.put_instance(Instance(INSTANCE, "Asia/Shanghai"))
        )
        answer = self.call(
            self.params(
                payload=b64(b"\x00\xff"),
                third_msg_id="t-1",
                immediate_sync="False",
                os_type="IOS",
                app_min_version="1.2",
                app_max_version="3.4.5",
                device_id="dev-9",
                start_date="2026-01-01 12:00:00",
                expire_date="2026-01-03 08:00:00",
            )
        )
        self.assert_business(answer, "OK", success=True)
        self.assertEqual(
            self.sender.requests,
            [
                SendRequest(
                    instance_id=INSTANCE,
                    biz_type="UCHAT",
                    payload=b"\x00\xff",
                    third_msg_id="t-1",
                    link_token="alice",
                    to_all=False,
                    immediate=False,
                    os_type="IOS",
                    app_min_version="1.2",
                    app_max_version="3.4.5",
                    device_id="dev-9",
                    start_ms=int(T0 + 4 * 3600) * 1000,
                    expire_ms=int(T0 + 2 * 86400) * 1000,
                )
            ],
        )
        scope = Scope(INSTANCE, "UCHAT", ScopeKind.USER, "alice")
        op = self.w.store.get_op(scope, int(answer.biz["opLogId"]))
        assert op is not None
        self.assertEqual(op.start_ms, int(T0 + 4 * 3600) * 1000)

    def test_immediate_sync(self) -> None:
        """immediate_sync reads true and false in any case, defaults to
        true (also when empty), and refuses anything else."""
        for value, expected in [
            ("true", True),
            ("TRUE", True),
            ("True", True),
            ("false", False),
            ("False", False),
            ("", True),
            (None, True),
        ]:
            answer = self.call(self.params(immediate_sync=value))
            self.assertEqual(answer.code, "OK", value)
            self.assertIs(self.sender.requests[-1].immediate, expected)
        for value in ("yes", "1", "0", "tru", " true"):
            answer = self.call(self.params(immediate_sync=value))
            self.assert_refused(answer, "INVALID_PARAMETER", signed=True)
            self.assertIn("immediate_sync", answer.response["result_msg"])

    def test_not_immediate_waits(self) -> None:
        """With immediate_sync false the op is stored, answered OK, and
        not pushed to the device that is online."""
        device = self.w.device("d1").connect(user="alice", session="s")
        answer = self.call(self.params(immediate_sync="false"))
        self.assert_business(answer, "OK", success=True)
        self.assertEqual(device.link.payloads(), [])

    def test_bad_base64(self) -> None:
        """A payload that is not canonical standard base64 is refused
        with a reason."""
        for value in ("aGk", "a$==", "aGk=\x00", "YR==", "a-_b", "aGk= "):
            answer = self.call(self.params(payload=value))
            self.assert_refused(answer, "INVALID_PARAMETER", signed=True)
            self.assertIn("payload", answer.response["result_msg"])
        self.assertEqual(self.sender.requests, [])

    def test_base64_line_breaks(self) -> None:
        """Base64 broken into MIME lines, as the manual's Java sample
        sends it, is read."""
        data = bytes(range(256))
        text = b64(data)
        lines = "\r\n".join(text[i : i + 76] for i in range(0, len(text), 76))
        answer = self.call(self.params(payload=lines))
        self.assert_business(answer, "NOT_ONLINE", success=True)
        self.assertEqual(self.sender.requests[-1].payload, data)

    def test_bad_dates(self) -> None:
        """Dates not in yyyy-MM-dd HH:mm:ss are refused, naming the
        parameter."""
        for name in ("start_date", "expire_date"):
            for value in ("2026-01-01", "2026-01-01T12:00:00", "tomorrow"):
                answer = self.call(self.params(**{name: value}))
                self.assert_refused(answer, "INVALID_PARAMETER", signed=True)
                self.assertIn(name, answer.response["result_msg"])

    def test_expired(self) -> None:
        """An expire_date already past is refused by the sender."""
        answer = self.call(self.params(expire_date="2020-01-01 00:00:00"))
        self.assert_refused(answer, "INVALID_PARAMETER", signed=True)


class SystemParameterTests(GatewayTestCase):
    """Method, version, time, id, key and signature checks."""

    def test_missing(self) -> None:
        """Each required system parameter, missing or empty, is
        MISSING_PARAMETER, named, unsigned."""
        for name in (
            "method",
            "version",
            "access_key",
            "req_time",
            "req_msg_id",
            "sign_type",
        ):
            for value in (None, ""):
                answer = self.call(self.params(**{name: value}))
                self.assert_refused(answer, "MISSING_PARAMETER", signed=False)
                self.assertIn(name, answer.response["result_msg"])

    def test_method_not_found(self) -> None:
        """An unknown method or version is METHOD_NOT_FOUND."""
        for change in (
            {"method": "mpaas.msync.sync.other"},
            {"version": "2.0"},
            {"method": "x" * 5000},
        ):
            answer = self.call(self.params(**change))
            self.assert_refused(answer, "METHOD_NOT_FOUND", signed=True)
            self.assertLess(len(answer.body), 1000)

    def test_req_time_format(self) -> None:
        """A req_time not in yyyy-MM-ddTHH:mm:ssZ, or not a date, is
        INVALID_PARAMETER."""
        now = self.w.clock.seconds()
        for value in (
            utc(now).replace("T", " "),
            utc(now)[:-1],
            utc(now)[:-1] + "+00:00",
            "2026-1-1T0:0:0Z",
            "2026-02-30T00:00:00Z",
            "٢٠٢٦-01-01T00:00:00Z",
            str(int(now)),
        ):
            answer = self.call(self.params(req_time=value))
            self.assert_refused(answer, "INVALID_PARAMETER", signed=True)
            self.assertIn("req_time", answer.response["result_msg"])

    def test_skew(self) -> None:
        """req_time may be up to 15 minutes from the server's clock,
        either way, and no more."""
        now = self.w.clock.seconds()
        for off in (-900, 900, 0):
            answer = self.call(self.params(req_time=utc(now + off)))
            self.assert_business(answer, "NOT_ONLINE", success=True)
        for off in (-901, 901, -86400 * 365):
            answer = self.call(self.params(req_time=utc(now + off)))
            self.assert_refused(answer, "INVALID_PARAMETER", signed=True)
            self.assertIn("server's clock", answer.response["result_msg"])

    def test_req_msg_id_format(self) -> None:
        """req_msg_id must be 32 lower-case hex characters."""
        good = uuid.uuid4().hex
        for value in (good.upper(), good[:31], good + "0", "g" * 32):
            answer = self.call(self.params(req_msg_id=value))
            self.assert_refused(answer, "INVALID_PARAMETER", signed=True)
            self.assertEqual(answer.response["req_msg_id"], value)

    def test_replay(self) -> None:
        """The same call again is refused as a replay, and not sent."""
        params = self.signed(self.params())
        self.assert_business(self.call(params, sign=False), "NOT_ONLINE", True)
        self.w.clock.advance(60)
        answer = self.call(params, sign=False)
        self.assert_refused(answer, "INVALID_PARAMETER", signed=True)
        self.assertIn("replayed", answer.response["result_msg"])
        self.assertEqual(len(self.sender.requests), 1)

    def test_replay_after_window(self) -> None:
        """Once the window has passed, the old call is refused for its
        time, and its id is forgotten."""
        params = self.signed(self.params())
        self.call(params, sign=False)
        self.w.clock.advance(901)
        answer = self.call(params, sign=False)
        self.assertIn("server's clock", answer.response["result_msg"])
        fresh = self.params(req_msg_id=params["req_msg_id"])
        self.assert_business(self.call(fresh), "NOT_ONLINE", True)

    def test_refused_calls_not_remembered(self) -> None:
        """An id seen only on a call with a bad sign is not taken."""
        params = self.params()
        self.call(params, secret="wrong")
        self.assert_business(self.call(params), "NOT_ONLINE", True)

    def test_seen_requests_bounded(self) -> None:
        """The replay memory forgets expired ids, and the oldest when
        full."""
        seen = SeenRequests(2)
        self.assertTrue(seen.add("a", 10, now=0))
        self.assertFalse(seen.add("a", 10, now=5))
        self.assertTrue(seen.add("b", 20, now=5))
        self.assertTrue(seen.add("c", 30, now=5))
        self.assertEqual(len(seen), 2)
        self.assertTrue(seen.add("a", 40, now=5))
        self.assertFalse(seen.add("c", 40, now=25))
        self.assertEqual(len(seen), 2)
        self.assertTrue(seen.add("d", 50, now=45))
        self.assertEqual(len(seen), 1)

    def test_unknown_key(self) -> None:
        """An unknown or revoked key is ACCESS_DENIED, unsigned."""
        answer = self.call(self.params(access_key="AKNOBODY"))
        self.assert_refused(answer, "ACCESS_DENIED", signed=False)
        self.successResultOf(
            self.w.store.put_access_key(
                AccessKey(AK, SECRET, (INSTANCE,), revoked=True)
            )
        )
        self.assert_refused(self.call(), "ACCESS_DENIED", signed=False)

    def test_other_instance(self) -> None:
        """A key used on an instance it is not allowed on is
        ACCESS_DENIED, and nothing is sent."""
        self.successResultOf(self.w.store.put_instance(Instance("WS_other")))
        self.successResultOf(
            self.w.store.put_access_key(AccessKey("AK2", "s2", ("WS_other",)))
        )
        answer = self.call(self.params(instance_id="WS_other"))
        self.assert_refused(answer, "ACCESS_DENIED", signed=True)
        answer = self.call(self.params(access_key="AK2"), secret="s2")
        self.assertEqual(answer.code, "ACCESS_DENIED")
        self.assert_verified(answer, secret="s2")
        self.assertEqual(self.sender.requests, [])

    def test_unknown_sign_type(self) -> None:
        """A sign_type other than HmacSHA1 and HmacSHA256 is
        INVALID_PARAMETER."""
        params = self.params(sign_type="HmacMD5")
        params["sign"] = signing.sign(params, SECRET)
        answer = self.call(params, sign=False)
        self.assert_refused(answer, "INVALID_PARAMETER", signed=False)
        self.assertIn("sign_type", answer.response["result_msg"])

    def test_sha256(self) -> None:
        """An HmacSHA256 call is checked with SHA-256 and answered with
        an SHA-256 signature."""
        answer = self.call(self.params(sign_type="HmacSHA256"))
        self.assertEqual(answer.code, "OK")
        self.assert_verified(answer, algorithm="HmacSHA256")
        text, sign = sdk_split(answer.body)
        self.assertNotEqual(sign, hmac_b64(text, SECRET, "HmacSHA1"))
        params = self.params(sign_type="HmacSHA256")
        params["sign"] = signing.sign(params, SECRET, "HmacSHA1")
        answer = self.call(params, sign=False)
        self.assert_refused(answer, "INVALID_SIGNATURE", signed=False)

    def test_signature_switch(self) -> None:
        """With the server-wide switch off, unsigned calls are accepted
        and still answered signed; on again, they are refused."""
        self.successResultOf(
            self.w.store.put_setting("signature_check", False)
        )
        answer = self.call(self.params(sign_type=None), sign=False)
        self.assert_business(answer, "NOT_ONLINE", success=True)
        answer = self.call(self.params(sign_type="HmacSHA256"), sign=False)
        self.assert_verified(answer, algorithm="HmacSHA256")
        answer = self.call(self.params(), secret="wrong")
        self.assertEqual(answer.code, "OK")
        self.assert_refused(
            self.call(self.params(access_key="AKNOBODY"), sign=False),
            "ACCESS_DENIED",
            signed=False,
        )

        self.successResultOf(self.w.store.put_setting("signature_check", True))
        answer = self.call(self.params(), sign=False)
        self.assert_refused(answer, "INVALID_SIGNATURE", signed=False)

    def test_sign_never_in_response(self) -> None:
        """A value that would write C{"sign"} in the answer is escaped:
        the SDKs still find the signed text, and it reads back."""
        answer = self.call(self.params(req_msg_id="sign"))
        self.assert_refused(answer, "INVALID_PARAMETER", signed=True)
        self.assertEqual(answer.body.count(b'"sign"'), 1)
        self.assertEqual(answer.response["req_msg_id"], "sign")
        answer = self.call(self.params(req_msg_id='x"sign'))
        self.assertEqual(answer.body.count(b'"sign"'), 1)
        self.assert_verified(answer)


class FormTests(GatewayTestCase):
    """Reading parameters from the query string and the body."""

    def test_all_in_body(self) -> None:
        """Older SDKs put everything in the body."""
        answer = self.call(split=False)
        self.assert_business(answer, "NOT_ONLINE", success=True)

    def test_all_in_query(self) -> None:
        """Everything in the query string, with an empty body, works."""
        params = self.signed(self.params())
        answer = self.post(form(params), b"", content_type=None)
        self.assert_business(answer, "NOT_ONLINE", success=True)

    def test_split_anyhow(self) -> None:
        """Parameters split between query and body in any way are
        merged before the signature is checked."""
        params = self.signed(self.params())
        names = sorted(params)
        query = {k: params[k] for k in names[::2]}
        body = {k: params[k] for k in names[1::2]}
        answer = self.post(form(query), form(body))
        self.assert_business(answer, "NOT_ONLINE", success=True)

    def test_form_encodings(self) -> None:
        """Spaces as C{+} or C{%20}, lower-case hex, and raw UTF-8 all
        decode to the same values."""
        params = self.signed(self.params(link_token="al ice é"))
        body = form(params).replace("al%20ice", "al+ice")
        body = body.replace("%C3%A9", "%c3%a9")
        answer = self.post("", body)
        self.assert_business(answer, "NOT_ONLINE", success=True)
        self.assertEqual(self.sender.requests[-1].link_token, "al ice é")
        params = self.signed(self.params(link_token="é"))
        body = form(params).replace("%C3%A9", "é")
        self.assert_business(self.post("", body), "NOT_ONLINE", True)

    def test_both_places(self) -> None:
        """A name in both the query string and the body is refused."""
        params = self.signed(self.params())
        query = form(params)
        answer = self.post(query, form({"biz_type": "UCHAT"}))
        self.assert_refused(answer, "INVALID_PARAMETER", signed=False)
        self.assertIn("both", answer.response["result_msg"])
        self.assertEqual(self.sender.requests, [])

    def test_repeated(self) -> None:
        """A name twice in the body, or in the query, is refused."""
        params = self.signed(self.params())
        answer = self.post("", form(params) + "&biz_type=UCHAT")
        self.assert_refused(answer, "INVALID_PARAMETER", signed=False)
        self.assertIn("repeated in the body", answer.response["result_msg"])
        answer = self.post(form(params) + "&version=1.0", b"")
        self.assertIn("repeated in the query", answer.response["result_msg"])

    def test_unknown_parameters_signed(self) -> None:
        """Unknown parameters are accepted and covered by the sign:
        changing one after signing is INVALID_SIGNATURE."""
        params = self.signed(
            self.params(base_sdk_version="TeaSDK-2.0", _prod_code="X", zz="1")
        )
        self.assert_business(self.call(params, sign=False), "NOT_ONLINE", True)
        params = {**params, "zz": "2", "req_msg_id": uuid.uuid4().hex}
        answer = self.call(params, sign=False)
        self.assert_refused(answer, "INVALID_SIGNATURE", signed=False)

    def test_empty_values_signed(self) -> None:
        """An empty parameter is signed as C{name=}: dropping it after
        signing breaks the sign."""
        params = self.params(product_instance_id="", os_type="")
        signed = self.signed(params)
        self.assertIn("&os_type=&", signing.canonical(params))
        self.assert_business(self.call(signed, sign=False), "NOT_ONLINE", True)
        signed = self.signed(self.params(product_instance_id=""))
        del signed["product_instance_id"]
        answer = self.call(signed, sign=False)
        self.assert_refused(answer, "INVALID_SIGNATURE", signed=False)

    def test_malformed(self) -> None:
        """Bad percent-encoding, bytes that are not UTF-8 and nameless
        parameters are INVALID_PARAMETER, in the query or the body."""
        good = form(self.signed(self.params()))
        for bad in ("x=%zz", "x=%4", "x=%", "%FF=1", "x=%C3%28", "=1"):
            for query, body in ((bad, good), (good, bad)):
                answer = self.post(query, body)
                self.assert_refused(answer, "INVALID_PARAMETER", signed=False)
        answer = self.post("", good.encode() + b"&x=\xff")
        self.assert_refused(answer, "INVALID_PARAMETER", signed=False)
        self.assertEqual(self.sender.requests, [])

    def test_other_content_types(self) -> None:
        """A body that is not a UTF-8 form is refused."""
        body = form(self.signed(self.params()))
        for content_type in (
            b"application/json",
            b"text/plain",
            b"application/x-www-form-urlencoded; charset=latin-1",
        ):
            answer = self.post("", body, content_type=content_type)
            self.assert_refused(answer, "INVALID_PARAMETER", signed=False)
        multipart = (
            b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n'
            b"1\r\n--x--\r\n"
        )
        answer = self.post(
            "", multipart, content_type=b"multipart/form-data; boundary=x"
        )
        self.assert_refused(answer, "INVALID_PARAMETER", signed=False)
        answer = self.post(
            "", body, b"Application/X-WWW-Form-Urlencoded; Charset=UTF-8"
        )
        self.assert_business(answer, "NOT_ONLINE", success=True)

    def test_empty_request(self) -> None:
        """A call with no parameters at all is MISSING_PARAMETER."""
        answer = self.post("", b"")
        self.assert_refused(answer, "MISSING_PARAMETER", signed=False)
        self.assertEqual(answer.response["req_msg_id"], "")

    def test_absurd_values(self) -> None:
        """Huge, numerous or odd values get clear answers, small ones."""
        cases = [
            ({"biz_type": "B" * 20000}, "BIZ_NOT_ONLINE"),
            ({"third_msg_id": "t" * 20000}, "THIRD_MSG_ID_LONG"),
            ({"link_token": "u" * 20000}, "INVALID_PARAMETER"),
            ({"instance_id": "I" * 20000}, "ACCESS_DENIED"),
            ({"k" * 20000: "v"}, "NOT_ONLINE"),
            ({f"x{i}": "" for i in range(3000)}, "NOT_ONLINE"),
            ({"payload": "=" * 20000}, "INVALID_PARAMETER"),
            ({"start_date": "9999-12-31 23:59:59"}, "INVALID_PARAMETER"),
        ]
        for change, code in cases:
            answer = self.call(self.params(**change))
            self.assertIn(code, (answer.code, answer.biz["returnCode"]))
            self.assertLess(len(answer.body), 2000)
            self.assertNotIn(b"Traceback", answer.body)

    def test_other_methods(self) -> None:
        """Only POST is served."""
        d = self.http.get(URL)
        self.http.flush()
        self.assertEqual(self.successResultOf(d).code, 405)


class BodyLimitTests(GatewayTestCase):
    """Bodies over the limit are refused before they are read."""

    max_body = 1024

    def test_declared_too_large(self) -> None:
        """A body over the limit is answered 413, unsigned, not sent."""
        params = self.params(payload=b64(b"x" * 2000))
        answer = self.post("", form(self.signed(params)))
        self.assertEqual(answer.status, 413)
        self.assertFalse(answer.signed)
        self.assertEqual(answer.code, "INVALID_PARAMETER")
        self.assertIn("1024", answer.response["result_msg"])
        self.assertEqual(self.sender.requests, [])

    def test_at_limit(self) -> None:
        """A body of exactly the limit is read."""
        business = {
            k: v for k, v in self.params(zz="").items() if k not in SYSTEM
        }
        business["zz"] = "z" * (1024 - len(form(business)))
        self.assertEqual(len(form(business)), 1024)
        params = self.signed({**self.params(), **business})
        query = {k: v for k, v in params.items() if k in SYSTEM}
        answer = self.post(form(query), form(business))
        self.assert_business(answer, "NOT_ONLINE", success=True)

    def test_declared_length_not_read(self) -> None:
        """With a Content-Length over the limit, none of it is read."""
        content = SpyFile(b"x" * 5000)
        request = FakeRequest(content, {b"content-length": b"5000"})
        self.assertRaises(BodyTooLarge, read_body, request, 1024)
        self.assertEqual(content.taken, 0)

    def test_undeclared_length_read_bounded(self) -> None:
        """Without a Content-Length (chunked), at most one byte over the
        limit is read."""
        content = SpyFile(b"x" * 100_000)
        request = FakeRequest(content, {})
        self.assertRaises(BodyTooLarge, read_body, request, 1024)
        self.assertEqual(content.taken, 1025)
        content = SpyFile(b"x" * 1024)
        self.assertEqual(
            read_body(FakeRequest(content, {}), 1024), b"x" * 1024
        )


class SpyFile(io.BytesIO):
    """A body that counts the bytes taken from it."""

    taken = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.taken += len(data)
        return data


class FakeRequest:
    """Just enough of a request for L{read_body}."""

    def __init__(self, content: io.BytesIO, headers: dict[bytes, bytes]):
        self.content = content
        self._headers = headers

    def getHeader(self, name: bytes) -> bytes | None:
        return self._headers.get(name)


class LoggingTests(GatewayTestCase):
    """What the gateway tells the operator."""

    @contextlib.contextmanager
    def events(self) -> Iterator[list[dict[str, Any]]]:
        seen: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(seen.append)
        try:
            yield seen
        finally:
            globalLogPublisher.removeObserver(seen.append)

    def test_refusals_logged_without_secrets(self) -> None:
        """Auth refusals are logged with the key id and code, never
        with the secret or the sign."""
        params = self.signed(self.params(), secret="wrong")
        with self.events() as seen:
            self.call(params, sign=False)
            self.call(self.params(access_key="AKNOBODY"))
        refusals = [e for e in seen if e.get("code")]
        self.assertEqual(
            [(e["access_key"], e["code"]) for e in refusals],
            [(AK, "INVALID_SIGNATURE"), ("AKNOBODY", "ACCESS_DENIED")],
        )
        for event in seen:
            self.assertNotIn(SECRET, repr(event))
            self.assertNotIn(params["sign"], repr(event))


class WorkedExampleTests(SynchronousTestCase):
    """GATEWAY-SIGNING.md section 4, byte for byte."""

    QUERY = (
        "method=mpaas.msync.sync.syncdata&version=1.0&sign_type=HmacSHA1"
        "&req_time=2017-04-01T04%3A00%3A00Z"
        "&req_msg_id=0123456789abcdef0123456789abcdef"
        "&access_key=ACCESS_KEY_EXAMPLE&base_sdk_version=TeaSDK-2.0"
        "&sdk_version=1.2.10&_prod_code=MPAASFACEVERIFY"
        "&_prod_channel=undefined&sign=KJF%2Bo5HIAGyuCDofnZrnBWidWJ8%3D"
    )
    BODY = (
        b"biz_type=UCHAT&expire_date=2017-04-02+12%3A00%3A00"
        b"&immediate_sync=true&instance_id=ONEX123456789-default"
        b"&link_token=user+01&os_type=ANDROID"
        b"&payload=aGVsbG8sIOS4lueVjA%3D%3D"
        b"&start_date=2017-04-01+12%3A00%3A00&third_msg_id=msg~001%2A"
    )
    INSTANCE = "ONEX123456789-default"

    def test_accepted_as_is(self) -> None:
        """The example request, sent as the SDK sends it, is accepted
        and answered with a response signed with its secret."""
        w = World(self)
        # The example was signed at 2017-04-01T04:00:00Z; the world's
        # clock is put back there, before anything is scheduled on it.
        w.clock.rightNow = 1491019200.0
        store = w.store
        self.successResultOf(store.put_instance(Instance(self.INSTANCE)))
        self.successResultOf(
            store.put_access_key(
                AccessKey(
                    "ACCESS_KEY_EXAMPLE", "SECRET_EXAMPLE", (self.INSTANCE,)
                )
            )
        )
        self.successResultOf(
            store.add_config(SyncConfig(self.INSTANCE, "UCHAT", Target.USER))
        )
        w.engine.config_changed(self.INSTANCE)
        sender = RecordingSender(w.engine)
        http = StubTreq(GatewayApp(store, sender, w.clock).resource())

        d = http.post(
            "https://gw.example/gateway.do?" + self.QUERY,
            data=self.BODY,
            headers={b"Content-Type": [FORM]},
        )
        http.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(treq.content(response))

        answer = json.loads(body)["response"]
        self.assertEqual(answer["result_code"], "OK")
        self.assertEqual(
            answer["req_msg_id"], "0123456789abcdef0123456789abcdef"
        )
        self.assertEqual(answer["bizResult"]["returnCode"], "NOT_ONLINE")
        self.assertEqual(answer["bizResult"]["success"], "true")
        text, sign = sdk_split(body)
        self.assertEqual(sign, hmac_b64(text, "SECRET_EXAMPLE"))
        start = 1491048000 * 1000
        self.assertEqual(
            sender.requests,
            [
                SendRequest(
                    instance_id=self.INSTANCE,
                    biz_type="UCHAT",
                    payload="hello, 世界".encode(),
                    third_msg_id="msg~001*",
                    link_token="user 01",
                    os_type="ANDROID",
                    start_ms=start,
                    expire_ms=start + 86400 * 1000,
                )
            ],
        )


class FakeHTTP:
    """A treq-like client whose posts fail, or never answer."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def post(self, url: str, **kw: Any) -> Deferred[Any]:
        if self.error is not None:
            return fail(self.error)
        return Deferred()


@implementer(IAgent)
class RecordingAgent:
    """An agent that records requests and never answers."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes, Any]] = []

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Any = None,
        # The interface names it so, and treq passes it by name.
        bodyProducer: Any = None,  # noqa: N803
    ) -> Deferred[Any]:
        self.requests.append((method, uri, headers))
        return Deferred()


class ClientTests(GatewayTestCase):
    """L{GatewayClient} and L{build_request}, against the gateway."""

    def client(self, http: Any = None, **kw: Any) -> GatewayClient:
        return GatewayClient(
            self.http if http is None else http,
            URL,
            AK,
            SECRET,
            clock=self.w.clock,
            **kw,
        )

    def result(self, d: Deferred[GatewayResult]) -> GatewayResult:
        self.http.flush()
        return self.successResultOf(d)

    def test_build_request(self) -> None:
        """System parameters and sign go in the query, business ones in
        the body, and the sign covers both."""
        business = {"instance_id": INSTANCE, "payload": "YQ==", "e": ""}
        url, body = build_request(
            URL,
            AK,
            SECRET,
            METHOD,
            business,
            now=T0,
            req_msg_id="f" * 32,
        )
        parts = urlsplit(url)
        self.assertEqual(parts.path, "/gateway.do")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.assertEqual(
            sorted(query),
            sorted(SYSTEM - {"product_instance_id"}),
        )
        self.assertEqual(query["req_time"], "2026-01-01T00:00:00Z")
        self.assertEqual(
            dict(parse_qsl(body.decode(), keep_blank_values=True)), business
        )
        self.assertTrue(
            signing.verify({**query, **business}, SECRET, query["sign"])
        )

    def test_build_request_urls(self) -> None:
        """A bare host means /gateway.do; URLs with a query, or not
        http(s), and business names that clash are refused."""
        url, _ = build_request(
            "http://h:8080", AK, SECRET, METHOD, {}, now=0, req_msg_id="a"
        )
        self.assertTrue(url.startswith("http://h:8080/gateway.do?method="))
        for bad in ("http://h/gateway.do?x=1", "ftp://h/", "h/gateway.do"):
            self.assertRaises(
                ValueError,
                build_request,
                bad,
                AK,
                SECRET,
                METHOD,
                {},
                now=0,
                req_msg_id="a",
            )
        for name in ("method", "sign"):
            self.assertRaises(
                ValueError,
                build_request,
                URL,
                AK,
                SECRET,
                METHOD,
                {name: "x"},
                now=0,
                req_msg_id="a",
            )

    def test_sync_data(self) -> None:
        """sync_data reaches a connected device and reads the signed
        answer."""
        device = self.w.device("d1").connect(user="alice", session="s")
        d = self.client().sync_data(
            INSTANCE, "UCHAT", "alice", b"\x01\x02", "m-1", os_type="ANDROID"
        )
        result = self.result(d)
        self.assertEqual(
            (result.result_code, result.success, result.return_code),
            ("OK", True, "OK"),
        )
        self.assertEqual(device.link.payloads(), [b"\x01\x02"])
        self.assertEqual(result.op_log_id, str(device.link.ops()[0][2]))
        self.assertEqual(len(result.req_msg_id), 32)

    def test_sync_global_sha256(self) -> None:
        """sync_global with HmacSHA256 is accepted and verified."""
        client = self.client(sign_type="HmacSHA256")
        d = client.sync_global(INSTANCE, "NEWS", b"all", "m-2")
        result = self.result(d)
        self.assertEqual(result.return_code, "NOT_ONLINE")
        self.assertTrue(self.sender.requests[-1].to_all)

    def test_fresh_ids(self) -> None:
        """Each call has its own req_msg_id."""
        client = self.client()
        ids = {
            self.result(
                client.sync_data(INSTANCE, "UCHAT", "a", b"x", f"m{i}")
            ).req_msg_id
            for i in range(3)
        }
        self.assertEqual(len(ids), 3)

    def test_business_failure(self) -> None:
        """A refused business call is a result, not an error."""
        d = self.client().sync_data(INSTANCE, "NOPE", "a", b"x", "m")
        result = self.result(d)
        self.assertEqual((result.success, result.op_log_id), (False, ""))
        self.assertEqual(result.return_code, "BIZ_NOT_ONLINE")

    def test_unsigned_refusal(self) -> None:
        """A gateway refusal needs no signature to be read."""
        client = GatewayClient(
            self.http, URL, "AKNOBODY", "x", clock=self.w.clock
        )
        result = self.result(client.sync_data(INSTANCE, "U", "a", b"x", "m"))
        self.assertEqual(result.result_code, "ACCESS_DENIED")

    def test_answer_signed_with_another_secret(self) -> None:
        """An OK answer not signed with the client's secret is a
        SignatureMismatch (the switch lets the wrong secret's call in)."""
        self.successResultOf(
            self.w.store.put_setting("signature_check", False)
        )
        client = GatewayClient(
            self.http, URL, AK, "not-the-secret", clock=self.w.clock
        )
        d = client.sync_data(INSTANCE, "UCHAT", "a", b"x", "m")
        self.http.flush()
        self.failureResultOf(d, SignatureMismatch)

    def test_answer_checks(self) -> None:
        """Answers that are unsigned but OK, for another call, or not
        answers at all are refused."""
        from msync.gateway.client import read_result

        ok = {
            "result_code": "OK",
            "req_msg_id": "a" * 32,
            "bizResult": {"success": "true", "returnCode": "OK"},
        }
        unsigned = signing.seal_answer(ok, None)
        self.assertRaises(
            SignatureMismatch, read_result, unsigned, SECRET, "a" * 32
        )
        signed = signing.seal_answer(ok, SECRET)
        result = read_result(signed, SECRET, "a" * 32)
        self.assertTrue(result.success)
        self.assertRaises(
            UnexpectedAnswer, read_result, signed, SECRET, "b" * 32
        )
        self.assertRaises(
            SignatureMismatch,
            read_result,
            signed.replace(b'"OK"}', b'"NOT_ONLINE"}'),
            SECRET,
            "a" * 32,
        )
        self.assertRaises(
            UnexpectedAnswer, read_result, b"<html>", SECRET, "a" * 32
        )
        lowercase = signing.seal_answer({**ok, "result_code": "ok"}, None)
        self.assertRaises(
            SignatureMismatch, read_result, lowercase, SECRET, "a" * 32
        )

    def test_timeout(self) -> None:
        """A gateway that never answers times out on the client's
        clock."""
        client = self.client(FakeHTTP(), timeout=5)
        d = client.sync_data(INSTANCE, "UCHAT", "a", b"x", "m")
        self.assertNoResult(d)
        self.w.clock.advance(5)
        self.failureResultOf(d, defer.TimeoutError)

    def test_agent(self) -> None:
        """An IAgent is used through treq: the call is a form POST to the
        gateway URL carrying the system parameters."""
        agent = RecordingAgent()
        client = self.client(agent)
        client.sync_data(INSTANCE, "UCHAT", "a", b"x", "m")
        ((method, uri, headers),) = agent.requests
        self.assertEqual(method, b"POST")
        self.assertTrue(uri.startswith(URL.encode() + b"?method="))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [FORM])


class PushCommandTests(GatewayTestCase):
    """C{msync push}: arguments, the request they build, exit status."""

    def args(self, *extra: str) -> argparse.Namespace:
        argv = [
            "push",
            "--endpoint",
            URL,
            "--access-key",
            AK,
            "--secret",
            SECRET,
            "--instance",
            INSTANCE,
            "--biz",
            "UCHAT",
            "--third-msg-id",
            "t-1",
            *extra,
        ]
        return cli.parser().parse_args(argv)

    def push(
        self, args: argparse.Namespace, http: Any = None
    ) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        d = ensureDeferred(
            push(
                self.w.clock,
                args,
                self.http if http is None else http,
                out=out,
                err=err,
            )
        )
        self.http.flush()
        return self.successResultOf(d), out.getvalue(), err.getvalue()

    def test_all_options(self) -> None:
        """Every option becomes its business parameter."""
        args = self.args(
            "--link-token",
            "alice",
            "--payload",
            "héllo",
            "--os",
            "IOS",
            "--app-min-version",
            "1.0",
            "--app-max-version",
            "2.0",
            "--device-id",
            "d9",
            "--start-date",
            "2026-01-01 00:00:00",
            "--expire-date",
            "2026-01-02 00:00:00",
            "--no-immediate",
            "--sign-type",
            "HmacSHA256",
        )
        self.assertEqual(args.run.__module__, "msync.gateway.cli")
        method, business = request_from_args(args)
        self.assertEqual(method, METHOD)
        self.assertEqual(
            business,
            {
                "instance_id": INSTANCE,
                "biz_type": "UCHAT",
                "payload": b64("héllo"),
                "third_msg_id": "t-1",
                "immediate_sync": "false",
                "link_token": "alice",
                "os_type": "IOS",
                "app_min_version": "1.0",
                "app_max_version": "2.0",
                "device_id": "d9",
                "start_date": "2026-01-01 00:00:00",
                "expire_date": "2026-01-02 00:00:00",
            },
        )
        self.assertEqual(args.sign_type, "HmacSHA256")

    def test_global_and_file(self) -> None:
        """--global calls syncglobal without a link token; a payload
        file is sent byte for byte."""
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(b"\x00\xffbin")
        self.addCleanup(os.unlink, f.name)
        args = self.args("--global", "--payload-file", f.name)
        method, business = request_from_args(args)
        self.assertEqual(method, GLOBAL_METHOD)
        self.assertNotIn("link_token", business)
        self.assertEqual(business["payload"], b64(b"\x00\xffbin"))
        self.assertEqual(business["immediate_sync"], "true")

    def test_refused_arguments(self) -> None:
        """Conflicting or missing targets and payloads are usage
        errors."""
        for extra in (
            ("--payload", "x"),
            ("--global", "--link-token", "a", "--payload", "x"),
            ("--global",),
            ("--global", "--payload", "x", "--payload-file", "f"),
            ("--global", "--payload", "x", "--os", "WINDOWS"),
            ("--global", "--payload", "x", "--sign-type", "HmacMD5"),
        ):
            with contextlib.redirect_stderr(io.StringIO()):
                with self.assertRaises(SystemExit) as e:
                    self.args(*extra)
            self.assertEqual(e.exception.code, 2)

    def test_success_prints_answer(self) -> None:
        """A successful push prints the answer as one JSON object and
        exits 0."""
        device = self.w.device("d1").connect(user="alice", session="s")
        args = self.args("--link-token", "alice", "--payload", "hi")
        status, out, err = self.push(args)
        self.assertEqual((status, err), (0, ""))
        printed = json.loads(out)
        self.assertEqual(printed["return_code"], "OK")
        self.assertEqual(printed["success"], True)
        self.assertEqual(out.count("\n"), 1)
        self.assertEqual(device.link.payloads(), [b"hi"])

    def test_business_failure_exits_1(self) -> None:
        """A refused push prints the answer and exits 1."""
        args = self.args("--global", "--payload", "hi")
        status, out, _ = self.push(args)
        self.assertEqual(status, 1)
        self.assertEqual(json.loads(out)["return_code"], "NOT_SUPPORT_GLOBAL")

    def test_gateway_refusal_exits_1(self) -> None:
        """A push with a wrong secret prints the refusal and exits 1."""
        args = self.args("--link-token", "a", "--payload", "hi")
        args.secret = "wrong"
        status, out, _ = self.push(args)
        self.assertEqual(status, 1)
        self.assertEqual(json.loads(out)["result_code"], "INVALID_SIGNATURE")

    def test_unreachable_exits_2(self) -> None:
        """A gateway that cannot be reached is said so, exit 2."""
        args = self.args("--link-token", "a", "--payload", "hi")
        http = FakeHTTP(ConnectionRefusedError("nobody home"))
        status, out, err = self.push(args, http)
        self.assertEqual((status, out), (2, ""))
        self.assertIn("cannot reach " + URL, err)
        self.assertIn("nobody home", err)

    def test_unreadable_file_exits_1(self) -> None:
        """A payload file that cannot be read is said so, exit 1."""
        args = self.args("--link-token", "a", "--payload-file", "/nonexistent")
        status, out, err = self.push(args)
        self.assertEqual((status, out), (1, ""))
        self.assertIn("/nonexistent", err)

    def test_bad_endpoint_exits_1(self) -> None:
        """An endpoint that is not an http(s) URL is said so, exit 1."""
        args = self.args("--link-token", "a", "--payload", "x")
        args.endpoint = "gateway.example"
        status, _, err = self.push(args)
        self.assertEqual(status, 1)
        self.assertIn("not an http(s) URL", err)


@pytest.mark.process
class LoopbackTests(TestCase):
    """The client and the gateway over a real loopback HTTP listener."""

    async def test_round_trip(self) -> None:
        """A push over real HTTP reaches a connected device and the
        signed answer verifies."""
        from twisted.internet import reactor

        w = World(self)
        w.config("UCHAT")
        self.successResultOf(
            w.store.put_access_key(AccessKey(AK, SECRET, (INSTANCE,)))
        )
        gateway = GatewayApp(w.store, w.sender, w.clock)
        port = reactor.listenTCP(
            0, site(gateway.resource()), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        client = GatewayClient(
            Agent(reactor, pool=pool),
            f"http://127.0.0.1:{port.getHost().port}/gateway.do",
            AK,
            SECRET,
            clock=w.clock,
        )
        device = w.device("d1").connect(user="alice", session="s")

        result = await client.sync_data(
            INSTANCE, "UCHAT", "alice", b"over the wire", "m-1"
        )

        self.assertEqual(
            (result.result_code, result.return_code), ("OK", "OK")
        )
        self.assertEqual(device.link.payloads(), [b"over the wire"])
        self.assertEqual(result.op_log_id, str(device.link.ops()[0][2]))
