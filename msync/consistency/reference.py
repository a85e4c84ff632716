"""
The tenant side of user consistency, for demos and tests: a small Klein
app that validates (instanceId, userId, sessionId) against a list.

Run it with C{msync validator --sessions FILE [--port STRPORT]}; FILE is
JSON, a list of C{{"instanceId", "userId", "sessionId"}} objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from msync.consistency.validator import OPERATION

#: The largest request body the reference validator reads.
MAX_REQUEST = 16 * 1024


def load_sessions(path: str) -> set[tuple[str, str, str]]:
    """
    Read a sessions file.

    @raise ValueError: if it is not a list of the expected objects.
    """
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a JSON list")
    out = set()
    for item in raw:
        try:
            out.add(
                (
                    str(item["instanceId"]),
                    str(item["userId"]),
                    str(item["sessionId"]),
                )
            )
        except (TypeError, KeyError) as e:
            raise ValueError(f"{path}: bad entry {item!r}") from e
    return out


class ReferenceValidator:
    """Answers C{com.antcloud.session.validate} from a set of sessions."""

    app = Klein()

    def __init__(self, sessions: Iterable[tuple[str, str, str]]) -> None:
        self.sessions = set(sessions)
        self.asked = 0

    @app.route("/", branch=True, methods=["POST"])
    def validate(self, request: IRequest) -> bytes:
        """Validate the one pair in the request body."""
        self.asked += 1
        request.setHeader(b"content-type", b"application/json")
        operation = request.getHeader(b"operation-type")
        if operation != OPERATION.encode():
            return _answer("OPERATION_ERROR", False, "", False)
        body = request.content.read(MAX_REQUEST + 1)
        try:
            if len(body) > MAX_REQUEST:
                raise ValueError("request too large")
            [params] = json.loads(body)
            key = (
                str(params["instanceId"]),
                str(params["userId"]),
                str(params["sessionId"]),
            )
        except (ValueError, TypeError, KeyError):
            return _answer("ARGS_ERROR", False, "", False)
        return _answer("OK", True, key[2], key in self.sessions)

    def resource(self) -> IResource:
        """The app as a resource to serve."""
        resource: IResource = self.app.resource()
        return resource


def _answer(code: str, success: bool, sid: str, valid: bool) -> bytes:
    doc: dict[str, Any] = {
        "response": {
            "resultCode": code,
            "resultMsg": "Operation is done" if success else code,
            "success": "true" if success else "false",
            "result": {"sid": sid, "valid": "true" if valid else "false"},
        }
    }
    return json.dumps(doc).encode()
