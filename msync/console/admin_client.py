"""
The HTTP client of C{msync admin}: L{AdminClient} calls the admin API
(C{docs/admin-api.md}) as one admin, logged in with a password or
carrying an API token.

A call answers the API's JSON.  A refusal is raised as L{Refused};
anything that is not the API's JSON (another server, a bug, an answer
over L{MAX_ANSWER} bytes) as L{UnexpectedAnswer}.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

__all__ = ["MAX_ANSWER", "AdminClient", "Refused", "UnexpectedAnswer"]

#: The largest answer read, in bytes.
MAX_ANSWER = 8 * 2**20


class Refused(Exception):
    """The API refused a call: its status, error code, message, field."""

    def __init__(
        self, status: int, error: str, message: str, field: str | None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" ({self.field})" if self.field else ""
        return f"{self.status} {self.error}{where}: {self.message}"


class UnexpectedAnswer(Exception):
    """An answer that is not the API's JSON: another server, or a bug."""


class AdminClient:
    """
    Calls the admin API as one admin: logged in with a password (a
    session cookie and its CSRF token), or with an API token.
    """

    def __init__(
        self,
        http: Any,
        url: str,
        *,
        clock: IReactorTime,
        timeout: float = 30.0,
    ) -> None:
        """
        @param http: An C{IAgent}, or something with treq's C{request}
            (treq's C{HTTPClient}, or C{StubTreq} in tests).
        @param url: Where the daemon's HTTP listener is, e.g.
            C{http://127.0.0.1:8080}; the API is under its C{/api/}.
        @param clock: Times each call out after C{timeout} seconds.
        @raise ValueError: if C{url} is not a plain http(s) URL.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url!r} is not an http(s) URL")
        if parts.query or parts.fragment:
            raise ValueError(f"{url!r} must have no query or fragment")
        base = url.rstrip("/")
        if base.endswith("/api"):
            base = base[: -len("/api")]
        self._base = base + "/api"
        self._http = HTTPClient(http) if IAgent.providedBy(http) else http
        self._clock = clock
        self._timeout = timeout
        self._headers: dict[bytes, list[bytes]] = {}

    def use_token(self, token: str) -> None:
        """Call with an API token from now on."""
        self._headers = {b"Authorization": [f"Bearer {token}".encode()]}

    async def login(self, user: str, password: str) -> None:
        """
        Log in; later calls carry the session.

        @raise Refused: if the login is refused.
        """
        response, body = await self._exchange(
            "POST", "/login", {"user": user, "password": password}
        )
        cookie = _session_cookie(response)
        if cookie is None or not isinstance(body, dict):
            raise UnexpectedAnswer("the login answer carries no session")
        self._headers = {
            b"Cookie": [cookie],
            b"X-CSRF-Token": [str(body.get("csrf", "")).encode()],
        }

    async def call(
        self, method: str, path: str, body: object | None = None
    ) -> Any:
        """
        Call one route; return its JSON answer.

        @param path: The route below C{/api}, its parts already quoted.
        @raise Refused: if the API refused.
        @raise UnexpectedAnswer: if the answer is not the API's JSON.
        """
        _, answer = await self._exchange(method, path, body)
        return answer

    async def _exchange(
        self, method: str, path: str, body: object | None
    ) -> tuple[IResponse, Any]:
        headers = dict(self._headers)
        data = None
        if body is not None:
            headers[b"Content-Type"] = [b"application/json"]
            data = json.dumps(body).encode("utf-8")
        d: Deferred[Any] = self._http.request(
            method, self._base + path, headers=Headers(headers), data=data
        )
        d.addTimeout(self._timeout, self._clock)
        response = await d
        raw = await _read(response)
        try:
            answer = json.loads(raw.decode("utf-8")) if raw else None
        except ValueError as e:
            raise UnexpectedAnswer(
                f"{response.code} answer is not JSON: {e}"
            ) from e
        if response.code >= 400:
            if not isinstance(answer, dict) or "error" not in answer:
                raise UnexpectedAnswer(
                    f"{response.code} answer: {raw[:200]!r}"
                )
            raise Refused(
                response.code,
                str(answer["error"]),
                str(answer.get("message", "")),
                answer.get("field"),
            )
        return response, answer


def _session_cookie(response: IResponse) -> bytes | None:
    headers: list[bytes] = response.headers.getRawHeaders(b"set-cookie", [])
    for header in headers:
        pair = header.split(b";")[0].strip()
        name, _, value = pair.partition(b"=")
        if name == b"msync_session" and value:
            return pair
    return None


def _read(response: IResponse) -> Deferred[bytes]:
    chunks: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > MAX_ANSWER:
            raise UnexpectedAnswer(f"the answer is over {MAX_ANSWER} bytes")
        chunks.append(data)

    d: Deferred[None] = treq.collect(response, collect)
    return d.addCallback(lambda _: b"".join(chunks))
