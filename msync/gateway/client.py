"""
A client of C{/gateway.do}, as the newer SDKs call it: the system
parameters and C{sign} in the query string, the business parameters in
a form body, and the answer's signature checked before it is believed.

L{build_request} is the pure part (parameters in, URL and body out);
L{GatewayClient} sends what it builds over treq.
"""

from __future__ import annotations

import base64
import hmac
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

from msync.gateway import signing
from msync.gateway.app import GLOBAL_METHOD, METHOD, VERSION

__all__ = [
    "GatewayClient",
    "GatewayResult",
    "SignatureMismatch",
    "UnexpectedAnswer",
    "build_request",
    "business_params",
    "read_result",
]

_FORM = b"application/x-www-form-urlencoded"

#: The largest answer read; the gateway's answers are a few hundred bytes.
MAX_ANSWER = 1 << 20


class UnexpectedAnswer(Exception):
    """The gateway's answer is not one this client can believe."""


class SignatureMismatch(UnexpectedAnswer):
    """An C{OK} answer whose signature is missing or wrong."""


@dataclass(frozen=True, slots=True)
class GatewayResult:
    """
    One answer of the gateway: its own verdict (C{result_code}) and the
    business outcome (the C{return_*} fields, from C{bizResult}).
    """

    result_code: str
    result_msg: str
    req_msg_id: str
    success: bool
    """Whether the business call succeeded (OK, DUPLICATED_BIZ_ID or
    NOT_ONLINE)."""
    return_code: str
    return_reason: str
    op_log_id: str
    """The op's id as text, or empty when the call failed."""


def business_params(
    instance_id: str,
    biz_type: str,
    payload: bytes,
    third_msg_id: str,
    *,
    link_token: str = "",
    immediate: bool = True,
    os_type: str = "",
    app_min_version: str = "",
    app_max_version: str = "",
    device_id: str = "",
    start_date: str = "",
    expire_date: str = "",
) -> dict[str, str]:
    """
    Return the business parameters of one send, as the gateway reads
    them; optional ones left empty are not sent.
    """
    params = {
        "instance_id": instance_id,
        "biz_type": biz_type,
        "payload": base64.b64encode(payload).decode("ascii"),
        "third_msg_id": third_msg_id,
        "immediate_sync": "true" if immediate else "false",
    }
    optional = {
        "link_token": link_token,
        "os_type": os_type,
        "app_min_version": app_min_version,
        "app_max_version": app_max_version,
        "device_id": device_id,
        "start_date": start_date,
        "expire_date": expire_date,
    }
    params.update((name, value) for name, value in optional.items() if value)
    return params


def _form(params: Mapping[str, str]) -> str:
    return "&".join(
        f"{signing.percent_encode(k)}={signing.percent_encode(v)}"
        for k, v in params.items()
    )


def _gateway_url(endpoint_url: str) -> tuple[str, str, str]:
    parts = urlsplit(endpoint_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{endpoint_url!r} is not an http(s) URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{endpoint_url!r} must have no query or fragment")
    path = parts.path if parts.path not in ("", "/") else "/gateway.do"
    return parts.scheme, parts.netloc, path


def build_request(
    endpoint_url: str,
    access_key: str,
    secret: str,
    method: str,
    business: Mapping[str, str],
    *,
    now: float,
    req_msg_id: str,
    sign_type: str = signing.DEFAULT_ALGORITHM,
) -> tuple[str, bytes]:
    """
    Build one signed call.

    @param endpoint_url: The gateway, e.g. C{https://host/gateway.do}; a
        URL without a path means C{/gateway.do} on that host.
    @param method: L{METHOD} or L{GLOBAL_METHOD}.
    @param business: The business parameters (see L{business_params}).
    @param now: The time of the call, in seconds since the epoch.
    @param req_msg_id: The call's id: 32 lower-case hex, fresh each call.
    @return: The URL, carrying the system parameters and C{sign}, and the
        form body, carrying the business parameters.
    @raise ValueError: if the URL is not a plain http(s) URL, or a
        business parameter has a system parameter's name.
    @raise signing.UnknownAlgorithm: if C{sign_type} is not known.
    """
    scheme, netloc, path = _gateway_url(endpoint_url)
    system = {
        "method": method,
        "version": VERSION,
        "sign_type": sign_type,
        "req_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "req_msg_id": req_msg_id,
        "access_key": access_key,
    }
    clash = system.keys() & business.keys()
    if clash or signing.SIGN in business:
        raise ValueError(f"business parameters may not be named {clash}")
    system[signing.SIGN] = signing.sign(
        {**system, **business}, secret, sign_type
    )
    url = urlunsplit((scheme, netloc, path, _form(system), ""))
    return url, _form(business).encode("ascii")


def _result(response: Mapping[str, Any]) -> GatewayResult:
    biz = response.get("bizResult")
    if not isinstance(biz, Mapping):
        biz = {}

    def text(source: Mapping[str, Any], name: str) -> str:
        value = source.get(name)
        return "" if value is None else str(value)

    return GatewayResult(
        result_code=text(response, "result_code"),
        result_msg=text(response, "result_msg"),
        req_msg_id=text(response, "req_msg_id"),
        success=str(biz.get("success")).lower() == "true",
        return_code=text(biz, "returnCode"),
        return_reason=text(biz, "returnReason"),
        op_log_id=text(biz, "opLogId"),
    )


def read_result(
    body: bytes,
    secret: str,
    req_msg_id: str,
    sign_type: str = signing.DEFAULT_ALGORITHM,
) -> GatewayResult:
    """
    Read an answer to the call C{req_msg_id}, checking its signature as
    the SDKs do: when C{result_code} is C{OK} or absent.

    @raise SignatureMismatch: if such an answer is unsigned or its
        signature is wrong.
    @raise UnexpectedAnswer: if the body is not an answer, or a signed
        answer is for another call.
    """
    try:
        response, text, signature = signing.read_answer(body)
    except signing.UnreadableAnswer as e:
        raise UnexpectedAnswer(str(e)) from e
    code = response.get("result_code")
    if code is None or str(code).upper() == "OK":
        expected = signing.sign_response(text, secret, sign_type)
        if signature is None or not hmac.compare_digest(
            expected.encode("ascii"), signature.encode("utf-8")
        ):
            raise SignatureMismatch(
                "the answer's signature does not match: it was not signed "
                "with this secret, or it was changed on the way"
            )
        if response.get("req_msg_id") != req_msg_id:
            raise UnexpectedAnswer(
                f"the answer is for call {response.get('req_msg_id')!r}, "
                f"not {req_msg_id!r}"
            )
    return _result(response)


class GatewayClient:
    """Calls one gateway with one access key."""

    def __init__(
        self,
        http: Any,
        endpoint_url: str,
        access_key: str,
        secret: str,
        *,
        clock: IReactorTime,
        sign_type: str = signing.DEFAULT_ALGORITHM,
        timeout: float = 30.0,
    ) -> None:
        """
        @param http: An L{IAgent}, or something with treq's C{post}
            (treq's C{HTTPClient}, or C{StubTreq} in tests).
        @param clock: Dates each call, and times it out.
        @param timeout: Seconds to wait for a whole answer.
        @raise ValueError: if C{endpoint_url} is not a plain http(s) URL.
        """
        _gateway_url(endpoint_url)
        if sign_type not in signing.ALGORITHMS:
            raise signing.UnknownAlgorithm(f"unknown sign_type {sign_type!r}")
        self._http = HTTPClient(http) if IAgent.providedBy(http) else http
        self._url = endpoint_url
        self._access_key = access_key
        self._secret = secret
        self._clock = clock
        self._sign_type = sign_type
        self._timeout = timeout

    def sync_data(
        self,
        instance_id: str,
        biz_type: str,
        link_token: str,
        payload: bytes,
        third_msg_id: str,
        **filters: Any,
    ) -> Deferred[GatewayResult]:
        """
        Send one op to a user or device (C{syncdata}).

        @param filters: Keyword arguments of L{business_params}:
            C{immediate}, C{os_type}, C{app_min_version},
            C{app_max_version}, C{device_id}, C{start_date},
            C{expire_date}.
        """
        business = business_params(
            instance_id,
            biz_type,
            payload,
            third_msg_id,
            link_token=link_token,
            **filters,
        )
        return self.call(METHOD, business)

    def sync_global(
        self,
        instance_id: str,
        biz_type: str,
        payload: bytes,
        third_msg_id: str,
        **filters: Any,
    ) -> Deferred[GatewayResult]:
        """Send one op to every device (C{syncglobal}); see L{sync_data}."""
        business = business_params(
            instance_id, biz_type, payload, third_msg_id, **filters
        )
        return self.call(GLOBAL_METHOD, business)

    def call(
        self, method: str, business: Mapping[str, str]
    ) -> Deferred[GatewayResult]:
        """
        Call C{method} with C{business} parameters, under a fresh id.

        @return: A Deferred firing with the answer, or failing with
            L{UnexpectedAnswer} or the connection's error.
        """
        req_msg_id = uuid.uuid4().hex
        url, body = build_request(
            self._url,
            self._access_key,
            self._secret,
            method,
            business,
            now=self._clock.seconds(),
            req_msg_id=req_msg_id,
            sign_type=self._sign_type,
        )
        d: Deferred[Any] = self._http.post(
            url, data=body, headers=Headers({b"Content-Type": [_FORM]})
        )
        d.addCallback(self._read)
        d.addCallback(read_result, self._secret, req_msg_id, self._sign_type)
        d.addTimeout(self._timeout, self._clock)
        return d

    def _read(self, response: IResponse) -> Deferred[bytes]:
        chunks: list[bytes] = []
        size = 0

        def collect(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if size > MAX_ANSWER:
                raise UnexpectedAnswer(f"the answer is over {MAX_ANSWER} B")
            chunks.append(data)

        d: Deferred[None] = treq.collect(response, collect)
        return d.addCallback(lambda _: b"".join(chunks))
