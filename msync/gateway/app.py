"""
The backend gateway, C{POST /gateway.do}: read a signed form, check the
caller, hand the op to the L{Sender} and answer with a signed result.

The wire contract is C{GATEWAY-SIGNING.md}.  Checks run in this order,
cheapest and unauthenticated first:

  1. the body fits (413 otherwise, before it is read);
  2. query string and body decode as UTF-8 forms, no name twice;
  3. the system parameters are present;
  4. the access key exists and the signature matches.

Answers to requests refused at those steps are unsigned: the caller is
not known yet.  From then on every answer is signed with the key's
secret:

  5. method and version, C{req_time} within the allowed skew, a fresh
     C{req_msg_id} (remembered, so a replay is refused);
  6. the key may write to C{instance_id}; the business parameters are
     well formed;
  7. the L{Sender}'s outcome, in C{bizResult}.
"""

from __future__ import annotations

import base64
import binascii
import re
from calendar import timegm
from dataclasses import dataclass
from time import strptime
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from msync.delivery.sender import (
    Code,
    Sender,
    SendRequest,
    SendResult,
    parse_date,
)
from msync.gateway import signing
from msync.gateway.forms import (
    BodyTooLarge,
    GatewayError,
    check_form_type,
    clip,
    decode_form,
    merge,
    read_body,
    shown,
)
from msync.model import AccessKey, ValidationError
from msync.store import Store

__all__ = [
    "GLOBAL_METHOD",
    "MAX_BODY",
    "METHOD",
    "VERSION",
    "BodyTooLarge",
    "GatewayApp",
    "GatewayError",
    "SeenRequests",
    "decode_form",
    "read_body",
]

_log = Logger()

#: The method that sends to one user or device.
METHOD = "mpaas.msync.sync.syncdata"

#: The method that sends to every device.
GLOBAL_METHOD = "mpaas.msync.sync.syncglobal"

#: The one API version there is.
VERSION = "1.0"

#: The default limit on a request body, in bytes.  The largest payload
#: (24 KiB - 1) is 32 KiB of base64, and a form may percent-encode every
#: C{+} and C{/} of it as three characters: up to 96 KiB in the worst
#: case, before the other parameters.
MAX_BODY = 128 * 1024

#: The store setting that turns request signature checks off when False.
SIGNATURE_CHECK = "signature_check"

# Gateway-level result codes (business codes are the Sender's).
OK = "OK"
MISSING_PARAMETER = "MISSING_PARAMETER"
INVALID_PARAMETER = "INVALID_PARAMETER"
INVALID_SIGNATURE = "INVALID_SIGNATURE"
ACCESS_DENIED = "ACCESS_DENIED"
METHOD_NOT_FOUND = "METHOD_NOT_FOUND"
SYSTEM_ERROR = "SYSTEM_ERROR"

_REQUIRED = ("method", "version", "access_key", "req_time", "req_msg_id")
_FORM = "application/x-www-form-urlencoded"
_JSON = b"application/json;charset=utf-8"
_REQ_MSG_ID = re.compile(r"[0-9a-f]{32}")
_REQ_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z"
)
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_TRUE, _FALSE = "true", "false"

# Names and values echoed in messages are cut to this many characters,
# and messages to _SAID, so that an absurd parameter cannot make an
# absurd answer.
_SHOWN = 64
_SAID = 300

# When rendering itself fails there is nothing left to sign with.
_LAST_RESORT = (
    b'{"response":{"result_code":"SYSTEM_ERROR","result_msg":'
    b'"internal error","req_msg_id":"","bizResult":{"success":"false",'
    b'"returnCode":"SYSTEM_ERROR","returnReason":"internal error"}}}'
)


class SeenRequests:
    """
    The C{req_msg_id}s of accepted requests, each kept until a request
    carrying it would be refused for its C{req_time} anyway.

    At most C{limit} ids are kept: when full, the oldest is forgotten.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._until: dict[str, float] = {}
        self._warned = False

    def __len__(self) -> int:
        return len(self._until)

    def add(self, req_msg_id: str, until: float, now: float) -> bool:
        """
        Remember C{req_msg_id} until C{until}.

        @return: False if it was already remembered (a replay).
        """
        self._forget(now)
        if req_msg_id in self._until:
            if self._until[req_msg_id] > now:
                return False
            del self._until[req_msg_id]
        if len(self._until) >= self._limit:
            # XXX: a flood of accepted requests shortens replay protection
            # to the busiest window; req_time still bounds replays.
            if not self._warned:
                _log.warn(
                    "replay memory full at {limit} ids; forgetting early",
                    limit=self._limit,
                )
                self._warned = True
            del self._until[next(iter(self._until))]
        self._until[req_msg_id] = until
        return True

    def _forget(self, now: float) -> None:
        # Ids come in roughly in expiry order: drop from the oldest end
        # until one is still live; stragglers go on a later call.
        while self._until:
            oldest = next(iter(self._until))
            if self._until[oldest] > now:
                return
            del self._until[oldest]


@dataclass
class _Call:
    """What is known of one request while it is checked."""

    req_msg_id: str = ""
    secret: str | None = None
    """Set once the caller is authenticated: answers are then signed."""
    algorithm: str = signing.DEFAULT_ALGORITHM
    access_key: str = ""


@dataclass(frozen=True, slots=True)
class _Answer:
    result_code: str
    result_msg: str
    return_code: str
    return_reason: str
    success: bool = False
    op_id: int | None = None

    def response(self, req_msg_id: str) -> dict[str, Any]:
        biz: dict[str, str] = {
            "success": _TRUE if self.success else _FALSE,
            "returnCode": self.return_code,
            "returnReason": clip(self.return_reason, _SAID),
        }
        if self.op_id is not None:
            biz["opLogId"] = str(self.op_id)
        return {
            "result_code": self.result_code,
            "result_msg": clip(self.result_msg, _SAID),
            # A well-formed id is 32 characters; a longer one is echoed
            # cut, which is enough to recognise it.
            "req_msg_id": clip(req_msg_id, _SHOWN),
            "bizResult": biz,
        }


def _refused(code: str, message: str) -> _Answer:
    return _Answer(code, message, code, message)


def _business(result: SendResult) -> _Answer:
    code = result.code.value
    if result.code is Code.INVALID_PARAMETER:
        return _refused(INVALID_PARAMETER, result.reason)
    op_id = result.op_id if result.success else None
    return _Answer(OK, "SUCCESS", code, result.reason, result.success, op_id)


class GatewayApp:
    """
    The C{/gateway.do} route, over a store (for keys, instances and the
    signature switch), a sender and a clock.
    """

    app = Klein()

    def __init__(
        self,
        store: Store,
        sender: Sender,
        clock: IReactorTime,
        *,
        max_body: int = MAX_BODY,
        skew_seconds: float = 900,
        replay_memory: int = 250_000,
    ) -> None:
        """
        @param max_body: The largest request body read, in bytes.
        @param skew_seconds: How far C{req_time} may be from C{clock}.
        @param replay_memory: The most C{req_msg_id}s remembered.
        """
        self._store = store
        self._sender = sender
        self._clock = clock
        self._max_body = max_body
        self._skew = skew_seconds
        self._seen = SeenRequests(replay_memory)

    def resource(self) -> IResource:
        """The route as a resource to mount."""
        resource: IResource = self.app.resource()
        return resource

    @app.route("/gateway.do", methods=["POST"])
    def gateway(self, request: IRequest) -> bytes | Deferred[bytes]:
        """Answer one backend call; the answer is always a JSON body."""
        request.setHeader(b"content-type", _JSON)
        request.setHeader(b"cache-control", b"no-store")
        call = _Call()
        try:
            body = read_body(request, self._max_body)
        except BodyTooLarge as e:
            request.setResponseCode(413)
            return _sized(
                request,
                self._render(_refused(INVALID_PARAMETER, str(e)), call),
            )

        d = maybeDeferred(self._answer, request, body, call)
        d.addErrback(self._unexpected, call)
        rendered = d.addCallback(self._render, call)
        # A length, not chunks: cheaper for every client to read.
        return rendered.addCallback(_sized_after, request)

    def _answer(
        self, request: IRequest, body: bytes, call: _Call
    ) -> Deferred[_Answer]:
        try:
            params = self._params(request, body)
            call.req_msg_id = params.get("req_msg_id", "")
            key = self._authenticate(request, params, call)
            send = self._send_request(request, params, key)
        except GatewayError as e:
            return succeed(_refused(e.code, e.message))

        return self._sender.send(send).addCallback(self._sent, send, call)

    def _params(self, request: IRequest, body: bytes) -> dict[str, str]:
        _, _, query = request.uri.partition(b"?")
        if body:
            check_form_type(request)
        return merge(
            [
                ("query string", decode_form(query, "query string")),
                ("body", decode_form(body, "body")),
            ]
        )

    def _authenticate(
        self, request: IRequest, params: dict[str, str], call: _Call
    ) -> AccessKey:
        # Nothing the caller sent is trusted until the signature matches;
        # only then is the id remembered, so strangers cannot fill the
        # replay memory.
        checking = self._store.setting(SIGNATURE_CHECK, True) is not False
        required = (*_REQUIRED, "sign_type") if checking else _REQUIRED
        missing = [name for name in required if not params.get(name)]
        if missing:
            raise GatewayError(
                MISSING_PARAMETER, f"missing {', '.join(missing)}"
            )

        key = self._store.access_key(params["access_key"])
        if key is None or key.revoked:
            self._warn(request, params, ACCESS_DENIED, "unknown key")
            raise GatewayError(ACCESS_DENIED, "unknown or revoked access_key")
        algorithm = params.get("sign_type") or signing.DEFAULT_ALGORITHM
        if algorithm not in signing.ALGORITHMS:
            raise GatewayError(
                INVALID_PARAMETER,
                f"sign_type {shown(algorithm)} is not one of "
                f"{', '.join(signing.ALGORITHMS)}",
            )
        if checking and not signing.verify(
            params, key.secret, params.get(signing.SIGN, ""), algorithm
        ):
            self._warn(request, params, INVALID_SIGNATURE, "bad sign")
            raise GatewayError(INVALID_SIGNATURE, "the sign does not match")
        call.secret, call.algorithm = key.secret, algorithm
        call.access_key = key.access_key

        method, version = params["method"], params["version"]
        if method not in (METHOD, GLOBAL_METHOD) or version != VERSION:
            raise GatewayError(
                METHOD_NOT_FOUND,
                f"no method {shown(method)} version {shown(version)}",
            )
        sent_at = self._req_time(params["req_time"])
        if not _REQ_MSG_ID.fullmatch(params["req_msg_id"]):
            raise GatewayError(
                INVALID_PARAMETER, "req_msg_id must be 32 lower-case hex"
            )
        if not self._seen.add(
            params["req_msg_id"], sent_at + self._skew, self._clock.seconds()
        ):
            self._warn(request, params, INVALID_PARAMETER, "replayed")
            raise GatewayError(INVALID_PARAMETER, "replayed req_msg_id")
        return key

    def _req_time(self, text: str) -> float:
        if not _REQ_TIME.fullmatch(text):
            raise GatewayError(
                INVALID_PARAMETER,
                f"req_time {shown(text)} is not yyyy-MM-ddTHH:mm:ssZ",
            )
        try:
            sent_at = float(timegm(strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
        except ValueError as e:
            raise GatewayError(
                INVALID_PARAMETER, f"req_time {text!r} is not a date"
            ) from e
        off = sent_at - self._clock.seconds()
        if abs(off) > self._skew:
            raise GatewayError(
                INVALID_PARAMETER,
                f"req_time is {off:+.0f} s from the server's clock; at "
                f"most {self._skew:g} s is allowed",
            )
        return sent_at

    def _send_request(
        self, request: IRequest, params: dict[str, str], key: AccessKey
    ) -> SendRequest:
        instance_id = params.get("instance_id", "")
        # An empty instance id is the Sender's ARGS_IS_NULL to answer.
        if instance_id and not key.allows(instance_id):
            self._warn(request, params, ACCESS_DENIED, "other instance")
            raise GatewayError(
                ACCESS_DENIED,
                f"access_key may not write to {shown(instance_id)}",
            )
        instance = self._store.instance(instance_id) if instance_id else None
        zone = instance.time_zone if instance is not None else "UTC"
        return SendRequest(
            instance_id=instance_id,
            biz_type=params.get("biz_type", ""),
            payload=_payload(params.get("payload", "")),
            third_msg_id=params.get("third_msg_id", ""),
            link_token=params.get("link_token", ""),
            to_all=params["method"] == GLOBAL_METHOD,
            immediate=_boolean(params, "immediate_sync", default=True),
            os_type=params.get("os_type", ""),
            app_min_version=params.get("app_min_version", ""),
            app_max_version=params.get("app_max_version", ""),
            device_id=params.get("device_id", ""),
            start_ms=_date(params, "start_date", zone),
            expire_ms=_date(params, "expire_date", zone),
        )

    def _sent(
        self, result: SendResult, send: SendRequest, call: _Call
    ) -> _Answer:
        _log.debug(
            "gateway send by {access_key} to {instance_id}/{biz_type}: "
            "{code} op {op_id}",
            access_key=call.access_key,
            instance_id=send.instance_id,
            biz_type=send.biz_type,
            code=result.code.value,
            op_id=result.op_id,
        )
        return _business(result)

    def _unexpected(self, failure: Failure, call: _Call) -> _Answer:
        _log.failure(
            "gateway call {req_msg_id} failed",
            failure,
            req_msg_id=call.req_msg_id[:_SHOWN],
        )
        return _refused(SYSTEM_ERROR, "internal error")

    def _render(self, answer: _Answer, call: _Call) -> bytes:
        try:
            return signing.seal_answer(
                answer.response(call.req_msg_id), call.secret, call.algorithm
            )
        except Exception:
            _log.failure("rendering a gateway answer failed")
            return _LAST_RESORT

    def _warn(
        self,
        request: IRequest,
        params: dict[str, str],
        code: str,
        why: str,
    ) -> None:
        # Never the secret, never the sign: the key id and where from.
        _log.warn(
            "gateway refused access_key {access_key} from {peer}: "
            "{code} ({why})",
            access_key=params.get("access_key", "")[:_SHOWN],
            peer=str(request.getClientAddress()),
            code=code,
            why=why,
        )


def _sized_after(body: bytes, request: IRequest) -> bytes:
    return _sized(request, body)


def _sized(request: IRequest, body: bytes) -> bytes:
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def _payload(text: str) -> bytes:
    # The manual's Java sample encodes with line breaks every 76
    # characters (MIME style); those are the only extra characters
    # tolerated.  Everything else must be canonical standard base64.
    compact = text.replace("\r\n", "").replace("\n", "")
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as e:
        raise GatewayError(
            INVALID_PARAMETER, f"payload is not standard base64: {e}"
        ) from e
    if base64.b64encode(data).decode("ascii") != compact:
        raise GatewayError(
            INVALID_PARAMETER, "payload is not canonical standard base64"
        )
    return data


def _boolean(params: dict[str, str], name: str, default: bool) -> bool:
    value = params.get(name, "").lower()
    if not value:
        return default
    if value not in (_TRUE, _FALSE):
        raise GatewayError(INVALID_PARAMETER, f"{name} must be true or false")
    return value == _TRUE


def _date(params: dict[str, str], name: str, zone: str) -> int:
    text = params.get(name, "")
    if not text:
        return 0
    try:
        return parse_date(text, zone)
    except ValidationError as e:
        raise GatewayError(INVALID_PARAMETER, f"{name}: {e}") from e
