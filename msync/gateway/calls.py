"""
One gateway call, transport-free: the checks a signed request goes
through, the replay memory and the L{Sender} behind them, and the signed
answer.

The work splits in two so that it can run in two processes (see
L{msync.gateway.worker}):

  - L{Checks} reads the form, authenticates the caller and validates
    every parameter; it needs only read access to the store (keys,
    instances, the signature switch) and is the CPU-heavy part;
  - L{Intake} does what must happen in one place: the replay memory, and
    handing the op to the L{Sender}, which stores it durably and pushes
    it to devices.

In one process, L{Gateway} chains them.  The order of the checks, and so
every answer, is the same either way: a request refused after its
C{req_msg_id} was found fresh still has its id remembered.
"""

from __future__ import annotations

import base64
import binascii
import re
from calendar import timegm
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from time import strptime
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from msync.delivery.sender import (
    Code,
    Sender,
    SendRequest,
    SendResult,
    parse_date,
)
from msync.gateway import signing
from msync.gateway.forms import (
    GatewayError,
    check_content_type,
    clip,
    decode_form,
    merge,
    shown,
)
from msync.model import AccessKey, ValidationError
from msync.store import Store

_log = Logger()

#: The method that sends to one user or device.
METHOD = "mpaas.msync.sync.syncdata"

#: The method that sends to every device.
GLOBAL_METHOD = "mpaas.msync.sync.syncglobal"

#: The one API version there is.
VERSION = "1.0"

#: The store setting that turns request signature checks off when False.
SIGNATURE_CHECK = "signature_check"

#: How far C{req_time} may be from the server's clock, by default.
SKEW_SECONDS = 900.0

# Gateway-level result codes (business codes are the Sender's).
OK = "OK"
MISSING_PARAMETER = "MISSING_PARAMETER"
INVALID_PARAMETER = "INVALID_PARAMETER"
INVALID_SIGNATURE = "INVALID_SIGNATURE"
ACCESS_DENIED = "ACCESS_DENIED"
METHOD_NOT_FOUND = "METHOD_NOT_FOUND"
SYSTEM_ERROR = "SYSTEM_ERROR"

_REQUIRED = ("method", "version", "access_key", "req_time", "req_msg_id")
_REQ_MSG_ID = re.compile(r"[0-9a-f]{32}")
_REQ_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z"
)
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


@dataclass(slots=True)
class Call:
    """What is known of one request while it is checked."""

    peer: str = ""
    req_msg_id: str = ""
    secret: str | None = None
    """Set once the caller is authenticated: answers are then signed."""
    algorithm: str = signing.DEFAULT_ALGORITHM
    access_key: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """A call's outcome, before it is rendered and signed."""

    result_code: str
    result_msg: str
    return_code: str
    return_reason: str
    success: bool = False
    op_id: int | None = None

    def response(self, req_msg_id: str) -> dict[str, Any]:
        """The C{response} member of the answer's body."""
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


def refused(code: str, message: str) -> Answer:
    """The answer to a call the gateway refuses with C{code}."""
    return Answer(code, message, code, message)


def business(result: SendResult) -> Answer:
    """The answer carrying the L{Sender}'s outcome."""
    code = result.code.value
    if result.code is Code.INVALID_PARAMETER:
        return refused(INVALID_PARAMETER, result.reason)
    op_id = result.op_id if result.success else None
    return Answer(OK, "SUCCESS", code, result.reason, result.success, op_id)


def render(answer: Answer, call: Call) -> bytes:
    """The body of the answer, signed once the caller is known."""
    try:
        return signing.seal_answer(
            answer.response(call.req_msg_id), call.secret, call.algorithm
        )
    except Exception:
        _log.failure("rendering a gateway answer failed")
        return _LAST_RESORT


@dataclass(frozen=True, slots=True)
class Checked:
    """
    An authenticated call whose C{req_msg_id} is well formed, ready for
    the L{Intake}: either an op to send or the refusal its parameters
    earned (answered only once its id is found fresh).
    """

    req_msg_id: str
    until: float
    """Until when the id must be remembered."""
    send: SendRequest | None
    refusal: Answer | None = None


def warn(call: Call, code: str, why: str) -> None:
    """Log a refusal an operator may want to see."""
    # Never the secret, never the sign: the key id and where from.
    _log.warn(
        "gateway refused access_key {access_key} from {peer}: {code} ({why})",
        access_key=call.access_key[:_SHOWN],
        peer=call.peer,
        code=code,
        why=why,
    )


class Checks:
    """
    Every check of a call that needs no memory of other calls, over a
    store read for keys, instances and the signature switch.
    """

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        skew_seconds: float = SKEW_SECONDS,
    ) -> None:
        self._store = store
        self._clock = clock
        self.skew = skew_seconds

    def check(
        self,
        query: bytes,
        body: bytes,
        content_type: bytes | None,
        call: Call,
    ) -> Checked:
        """
        Read and check one call: query string and body as forms, the
        caller and the signature, then the parameters.

        C{call} is filled in as the caller becomes known, so that a
        refusal is signed exactly when it should be.

        @raise GatewayError: for a refusal answered before the replay
            memory is consulted.
        """
        if body:
            check_content_type(content_type)
        params = merge(
            [
                ("query string", decode_form(query, "query string")),
                ("body", decode_form(body, "body")),
            ]
        )
        call.req_msg_id = params.get("req_msg_id", "")
        call.access_key = params.get("access_key", "")
        key = self._authenticate(params, call)
        until = self._req_time(params["req_time"]) + self.skew
        if not _REQ_MSG_ID.fullmatch(params["req_msg_id"]):
            raise GatewayError(
                INVALID_PARAMETER, "req_msg_id must be 32 lower-case hex"
            )

        # From here a refusal still remembers the id, as a fresh call's.
        try:
            send = self._send_request(params, key, call)
        except GatewayError as e:
            return Checked(
                call.req_msg_id, until, None, refused(e.code, e.message)
            )
        return Checked(call.req_msg_id, until, send)

    def _authenticate(self, params: dict[str, str], call: Call) -> AccessKey:
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
            warn(call, ACCESS_DENIED, "unknown key")
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
            warn(call, INVALID_SIGNATURE, "bad sign")
            raise GatewayError(INVALID_SIGNATURE, "the sign does not match")
        call.secret, call.algorithm = key.secret, algorithm
        call.access_key = key.access_key

        method, version = params["method"], params["version"]
        if method not in (METHOD, GLOBAL_METHOD) or version != VERSION:
            raise GatewayError(
                METHOD_NOT_FOUND,
                f"no method {shown(method)} version {shown(version)}",
            )
        return key

    def _req_time(self, text: str) -> float:
        if not _REQ_TIME.fullmatch(text):
            raise GatewayError(
                INVALID_PARAMETER,
                f"req_time {shown(text)} is not yyyy-MM-ddTHH:mm:ssZ",
            )
        try:
            sent_at = _utc_seconds(text)
        except ValueError as e:
            raise GatewayError(
                INVALID_PARAMETER, f"req_time {text!r} is not a date"
            ) from e
        off = sent_at - self._clock.seconds()
        if abs(off) > self.skew:
            raise GatewayError(
                INVALID_PARAMETER,
                f"req_time is {off:+.0f} s from the server's clock; at "
                f"most {self.skew:g} s is allowed",
            )
        return sent_at

    def _send_request(
        self, params: dict[str, str], key: AccessKey, call: Call
    ) -> SendRequest:
        instance_id = params.get("instance_id", "")
        # An empty instance id is the Sender's ARGS_IS_NULL to answer.
        if instance_id and not key.allows(instance_id):
            warn(call, ACCESS_DENIED, "other instance")
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


class Intake:
    """
    Where checked calls meet the replay memory and the L{Sender}: one per
    daemon, in the process that owns the store.
    """

    def __init__(
        self,
        sender: Sender,
        clock: IReactorTime,
        replay_memory: int = 250_000,
    ) -> None:
        self._sender = sender
        self._clock = clock
        self._seen = SeenRequests(replay_memory)

    def take(self, checked: Checked, call: Call) -> Deferred[Answer]:
        """
        Refuse a replayed id, answer an earned refusal, or send the op.

        @return: a Deferred that fires with the answer once the op, if
            any, is durable; it never fails.
        """
        if not self._seen.add(
            checked.req_msg_id, checked.until, self._clock.seconds()
        ):
            warn(call, INVALID_PARAMETER, "replayed")
            return succeed(refused(INVALID_PARAMETER, "replayed req_msg_id"))
        if checked.send is None:
            assert checked.refusal is not None
            return succeed(checked.refusal)

        # No log line per call: at thousands a second the line costs more
        # than the call's checks; /metrics counts outcomes instead.
        sent: Deferred[SendResult] = maybeDeferred(
            self._sender.send, checked.send
        )
        answered = sent.addCallback(business)
        return answered.addErrback(unexpected, call)


def unexpected(failure: Failure, call: Call) -> Answer:
    """Log a failure of ours and answer it as a system error."""
    _log.failure(
        "gateway call {req_msg_id} failed",
        failure,
        req_msg_id=call.req_msg_id[:_SHOWN],
    )
    return refused(SYSTEM_ERROR, "internal error")


class Gateway:
    """
    A whole call in one process: L{Checks}, then the L{Intake} (or any
    function taking a L{Checked} call to its answer), then the signed
    body.
    """

    def __init__(
        self,
        checks: Checks,
        take: Callable[[Checked, Call], Deferred[Answer]],
    ) -> None:
        self.checks = checks
        self._take = take

    def answer(
        self,
        query: bytes,
        body: bytes,
        content_type: bytes | None,
        peer: str,
    ) -> Deferred[bytes]:
        """
        The answer body to one call; the Deferred never fails.

        @param query: The request target's query string, undecoded.
        @param content_type: The C{Content-Type} header, if any.
        @param peer: Where the call came from, for log lines.
        """
        call = Call(peer=peer)
        try:
            checked = self.checks.check(query, body, content_type, call)
        except GatewayError as e:
            return succeed(render(refused(e.code, e.message), call))
        except Exception:
            return succeed(render(unexpected(Failure(), call), call))
        d = self._take(checked, call)
        return d.addCallback(render, call)


@lru_cache(maxsize=512)
def _utc_seconds(text: str) -> float:
    # Calls in the same second share a req_time: parse each text once.
    return float(timegm(strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


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
