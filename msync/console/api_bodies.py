"""
The admin API's bodies: reading a request's JSON body and its fields,
strictly, and writing answers as JSON, refusals (L{ApiError}) among
them.

L{read_json} refuses a body over L{MAX_BODY} before reading it (413),
one that is not C{application/json} (415), and one that is not a JSON
object (400).  L{Fields} then reads each field with its type and bounds,
and refuses any field the route does not take.  Every refusal is an
L{ApiError}, answered in one place by L{msync.console.api_calls.Calls}.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from twisted.web.iweb import IRequest

from msync.delivery.sender import parse_date
from msync.model import ValidationError

__all__ = [
    "MAX_BODY",
    "ApiError",
    "Fields",
    "app_key",
    "date",
    "invalid",
    "json_headers",
    "not_found",
    "payload",
    "read_json",
    "render",
    "time_zone",
    "validation_url",
]

#: The largest request body read, in bytes.
MAX_BODY = 64 * 1024

_JSON = b"application/json"

# Bounds on free text an operator types, so that no value is absurd.
_MAX_TEXT = 2048

E = TypeVar("E", bound=Enum)


class ApiError(Exception):
    """
    A refusal: answered with C{status} and the body
    C{{"error": code, "message": message}}, plus C{"field"} if set.
    """

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict[str, str]:
        """The refusal as the API answers it."""
        out = {"error": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


def invalid(name: str, message: str) -> ApiError:
    return ApiError(400, "invalid", message, name)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


# --- reading bodies ---------------------------------------------------


def read_json(request: IRequest) -> dict[str, Any]:
    declared = request.getHeader(b"content-length")
    if (
        declared is not None
        and declared.isdigit()
        and int(declared) > MAX_BODY
    ):
        raise ApiError(413, "too_large", f"the body is over {MAX_BODY} bytes")
    media = (request.getHeader(b"content-type") or b"").split(b";")[0]
    if media.strip().lower() != _JSON:
        raise ApiError(415, "not_json", "the body must be application/json")

    # The Site has bounded the body as it arrived; read no more than one
    # byte past the limit all the same.
    content = request.content
    data = b""
    if content is not None:
        content.seek(0)
        data = content.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise ApiError(413, "too_large", f"the body is over {MAX_BODY} bytes")

    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ApiError(400, "bad_json", f"the body is not JSON: {e}") from e
    if not isinstance(value, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return value


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


class Fields:
    """
    Typed reads of a JSON object's fields; a field sent as C{null}
    counts as not sent.
    """

    def __init__(self, body: dict[str, Any], allowed: Iterable[str]) -> None:
        unknown = sorted(set(body) - set(allowed))
        if unknown:
            raise invalid(unknown[0], f"{unknown[0]!r} is not a field here")
        self._body = body

    def raw(self, name: str) -> object:
        """The value of C{name} as sent, or L{None}."""
        return self._body.get(name)

    def given(self, name: str) -> bool:
        """Whether C{name} was sent (and not as C{null})."""
        return self._body.get(name) is not None

    def text(
        self, name: str, default: str = "", *, limit: int = _MAX_TEXT
    ) -> str:
        value = self._body.get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise invalid(name, f"{name} must be text")
        if len(value) > limit:
            raise invalid(name, f"{name} is over {limit} characters")
        return value

    def required_text(self, name: str) -> str:
        if not self.given(name):
            raise invalid(name, f"{name} is required")
        return self.text(name)

    def flag(self, name: str, default: bool) -> bool:
        value = self._body.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise invalid(name, f"{name} must be true or false")
        return value

    def integer(self, name: str, default: int) -> int:
        value = self._body.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(name, f"{name} must be an integer")
        return value

    def choice(self, name: str, kind: type[E], default: E) -> E:
        value = self._body.get(name)
        if value is None:
            return default
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in kind)
            raise invalid(name, f"{name} must be one of {allowed}") from None


def time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid("time_zone", f"unknown time zone {value!r}") from None
    return value


def validation_url(value: str) -> str:
    if not value:
        return value
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or any(c.isspace() or ord(c) < 0x20 for c in value)
    ):
        raise invalid("validation_url", "must be an http(s) URL, or empty")
    return value


def app_key(value: str) -> str:
    if len(value) > 256 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise invalid(
            "app_key", "must be at most 256 characters, no control ones"
        )
    return value


def date(fields: Fields, name: str, time_zone: str) -> int:
    text = fields.text(name)
    if not text:
        return 0
    try:
        return parse_date(text, time_zone)
    except ValidationError as e:
        raise invalid(name, f"{name}: {e.reason}") from e


def payload(fields: Fields) -> bytes:
    if fields.given("payload") and fields.given("payload_base64"):
        raise invalid(
            "payload_base64", "send payload or payload_base64, not both"
        )
    if fields.given("payload_base64"):
        text = fields.text("payload_base64", limit=MAX_BODY)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise invalid(
                "payload_base64", "payload_base64 is not standard base64"
            ) from None
    # The Sender refuses an empty or oversized payload with its own code.
    return fields.text("payload", limit=MAX_BODY).encode("utf-8")


# --- writing answers --------------------------------------------------


def render(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8"
    )


def json_headers(request: IRequest) -> None:
    request.setHeader(b"content-type", _JSON)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
