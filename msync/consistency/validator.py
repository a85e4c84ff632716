"""
Asking a tenant whether a device's (userId, sessionId) is genuine.

An instance may name its tenant's validation endpoint
(L{msync.model.Instance.validation_url}).  When a device binds a user,
msync calls it with the operation C{com.antcloud.session.validate}:

    POST <validation_url>
    Operation-Type: com.antcloud.session.validate
    Content-Type: application/json

    [{"instanceId": "...", "userId": "...", "sessionId": "..."}]

and reads an answer shaped as the manual shows (the outer C{response} is
optional):

    {"response": {"resultCode": "OK", "success": "true",
                  "result": {"sid": "<sessionId>", "valid": "true"}}}

Only that exact shape, with C{valid} true and C{sid} equal to the session
asked about, validates the pair.  Calls have a timeout and a bounded
number in flight; answers are cached for a while.  An unreachable, slow
or malformed endpoint makes the pair unvalidated (the device keeps its
backlog) and is logged; it never blocks other work.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import treq
from twisted.internet.defer import Deferred, DeferredSemaphore, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from msync.store import Store

_log = Logger()

OPERATION = "com.antcloud.session.validate"

#: The most answer bytes read from a tenant endpoint.
MAX_ANSWER = 64 * 1024


def _true(value: object) -> bool:
    return value is True or (
        isinstance(value, str) and value.lower() == "true"
    )


def read_answer(body: bytes, session_id: str) -> bool:
    """
    Whether a tenant's answer confirms C{session_id}.

    @raise ValueError: if the answer is not the expected shape.
    """
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"answer is not JSON: {e}") from e
    if isinstance(doc, dict) and "response" in doc:
        doc = doc["response"]
    if not isinstance(doc, dict):
        raise ValueError("answer is not an object")
    if doc.get("resultCode") != "OK" or not _true(doc.get("success")):
        raise ValueError(f"answer says {doc.get('resultCode')!r}")
    result = doc.get("result")
    if not isinstance(result, dict):
        raise ValueError("answer has no result object")
    return _true(result.get("valid")) and result.get("sid") == session_id


class SessionValidator:
    """
    Calls tenants' validation endpoints, with a timeout, a bound on calls
    in flight and a cache of answers.

    C{http} is a treq-like client (C{post(url, data=, headers=)}): treq's
    C{HTTPClient}, or C{StubTreq} in tests.
    """

    def __init__(
        self,
        http: Any,
        clock: IReactorTime,
        store: Store,
        *,
        timeout: float = 5.0,
        in_flight: int = 32,
        queue: int = 10_000,
        ttl: float = 300.0,
        cache_size: int = 100_000,
    ) -> None:
        self._http = http
        self._clock = clock
        self._store = store
        self._timeout = timeout
        self._gate = DeferredSemaphore(in_flight)
        self._queue = queue
        self._ttl = ttl
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str, str], tuple[float, bool]]
        self._cache = OrderedDict()
        self.calls = 0
        """How many calls reached a tenant endpoint."""

    def __call__(
        self, instance_id: str, user_id: str, session_id: str
    ) -> Deferred[bool]:
        """
        Say whether the pair is valid; fires L{False} on any failure.
        """
        instance = self._store.instance(instance_id)
        if instance is None or not instance.validation_url:
            return succeed(False)
        key = (instance_id, user_id, session_id)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self._clock.seconds():
            self._cache.move_to_end(key)
            return succeed(hit[1])
        if len(self._gate.waiting) >= self._queue:
            _log.warn(
                "validation queue full; user {user_id} of {instance_id} "
                "stays unvalidated",
                user_id=user_id,
                instance_id=instance_id,
            )
            return succeed(False)
        d: Deferred[bool] = self._gate.run(
            self._call, instance.validation_url, *key
        )
        return d.addErrback(self._failed, instance_id, user_id)

    def _call(
        self, url: str, instance_id: str, user_id: str, session_id: str
    ) -> Deferred[bool]:
        self.calls += 1
        body = json.dumps(
            [
                {
                    "instanceId": instance_id,
                    "userId": user_id,
                    "sessionId": session_id,
                }
            ]
        ).encode()
        d = self._http.post(
            url,
            data=body,
            headers={
                b"Operation-Type": [OPERATION.encode()],
                b"Content-Type": [b"application/json"],
            },
        )
        d.addCallback(self._read, session_id)
        d.addCallback(self._remember, (instance_id, user_id, session_id))
        d.addTimeout(self._timeout, self._clock)
        return d  # type: ignore[no-any-return]

    def _read(self, response: Any, session_id: str) -> Deferred[bool]:
        if response.code != 200:
            raise ValueError(f"endpoint answered HTTP {response.code}")
        length = response.length
        if isinstance(length, int) and length > MAX_ANSWER:
            raise ValueError(f"answer of {length} bytes is too large")
        body: Deferred[bytes] = treq.content(response)
        return body.addCallback(
            lambda data: read_answer(data[:MAX_ANSWER], session_id)
        )

    def _remember(self, valid: bool, key: tuple[str, str, str]) -> bool:
        self._cache[key] = (self._clock.seconds() + self._ttl, valid)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return valid

    def _failed(
        self, failure: Failure, instance_id: str, user_id: str
    ) -> bool:
        # The session id stays out of the log: it is a credential.
        _log.warn(
            "validating user {user_id} of {instance_id} failed: {why}",
            user_id=user_id,
            instance_id=instance_id,
            why=failure.getErrorMessage() or repr(failure.value),
        )
        return False
