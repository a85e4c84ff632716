"""
Reading the gateway's input: the body within its limit, and query string
and body decoded strictly as UTF-8 HTML forms, merged with no name twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import IO
from urllib.parse import unquote_to_bytes

from twisted.web.iweb import IRequest

INVALID_PARAMETER = "INVALID_PARAMETER"

_FORM = "application/x-www-form-urlencoded"
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")

#: Names echoed in messages are cut to this many characters.
_SHOWN = 64


class GatewayError(Exception):
    """
    The caller sent something the gateway refuses: answered with C{code}
    as C{result_code} and C{message} as C{result_msg}.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BodyTooLarge(Exception):
    """A request body is over the gateway's limit."""


def clip(text: str, most: int) -> str:
    return text if len(text) <= most else text[:most] + "..."


def shown(text: str) -> str:
    if len(text) <= _SHOWN:
        return repr(text)
    return repr(text[:_SHOWN]) + "..."


def read_body(request: IRequest, limit: int) -> bytes:
    """
    Read a request's body, never more than C{limit} + 1 bytes of it.

    @raise BodyTooLarge: if its declared length, or what is read of it,
        is over C{limit}.
    """
    declared = request.getHeader(b"content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge(f"the body is over {limit} bytes")
        except ValueError:
            # The HTTP layer has already read the body by some other
            # framing; the bounded read below still holds.
            pass
    # The Site's BoundedRequest has refused bodies over the limit as they
    # arrived; this bounded read is the second line.
    content: IO[bytes] | None = request.content
    if content is None:
        return b""
    content.seek(0)
    data = content.read(limit + 1)
    if len(data) > limit:
        raise BodyTooLarge(f"the body is over {limit} bytes")
    return data


def _decode_component(raw: bytes, where: str) -> str:
    if b"%" not in raw and b"+" not in raw:
        # Nothing to unescape: the common case, kept cheap.
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GatewayError(
                INVALID_PARAMETER, f"the {where} is not UTF-8"
            ) from e
    return _unescape(raw, where)


def decode_form(data: bytes, where: str) -> list[tuple[str, str]]:
    """
    Decode C{application/x-www-form-urlencoded} data as HTML forms are,
    but strictly: a C{%} not followed by two hex digits, or bytes that
    are not UTF-8 once decoded, are refused.

    @param where: Names the data in error messages (C{"query string"}).
    @return: The (name, value) pairs, in order.
    @raise GatewayError: C{INVALID_PARAMETER} if the data is malformed.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Some piece is not UTF-8: the careful path names the first
        # problem in order, as it always has.
        return _decode_pieces(data, where)

    # Valid UTF-8 split at ASCII '&' and '=' stays valid UTF-8 piece by
    # piece, so only escaped components need decoding one by one.
    pairs = []
    for piece in text.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        if "%" in name or "+" in name:
            name = _unescape(name.encode("utf-8"), where)
        if not name:
            raise GatewayError(
                INVALID_PARAMETER, f"a parameter in the {where} has no name"
            )
        if "%" in value or "+" in value:
            value = _unescape(value.encode("utf-8"), where)
        pairs.append((name, value))
    return pairs


def _unescape(raw: bytes, where: str) -> str:
    if _BAD_ESCAPE.search(raw):
        raise GatewayError(
            INVALID_PARAMETER, f"bad percent-encoding in the {where}"
        )
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError as e:
        raise GatewayError(
            INVALID_PARAMETER, f"the {where} is not UTF-8 once decoded"
        ) from e


def _decode_pieces(data: bytes, where: str) -> list[tuple[str, str]]:
    pairs = []
    for piece in data.split(b"&"):
        if not piece:
            continue
        name, _, value = piece.partition(b"=")
        decoded = _decode_component(name, where)
        if not decoded:
            raise GatewayError(
                INVALID_PARAMETER, f"a parameter in the {where} has no name"
            )
        pairs.append((decoded, _decode_component(value, where)))
    return pairs


def merge(
    sources: Iterable[tuple[str, list[tuple[str, str]]]],
) -> dict[str, str]:
    params: dict[str, str] = {}
    origin: dict[str, str] = {}
    for where, pairs in sources:
        for name, value in pairs:
            if name in params:
                if origin[name] == where:
                    problem = f"is repeated in the {where}"
                else:
                    problem = "is in both the query string and the body"
                raise GatewayError(
                    INVALID_PARAMETER, f"parameter {shown(name)} {problem}"
                )
            params[name] = value
            origin[name] = where
    return params


def check_form_type(request: IRequest) -> None:
    """Refuse a request whose body is not a UTF-8 form."""
    check_content_type(request.getHeader(b"content-type"))


def check_content_type(header: bytes | None) -> None:
    """
    Refuse a C{Content-Type} other than a UTF-8 form (none at all is
    taken as one).

    @raise GatewayError: C{INVALID_PARAMETER} naming what was sent.
    """
    if header is None:
        return
    media, *options = header.decode("latin-1").split(";")
    if media.strip().lower() != _FORM:
        raise GatewayError(
            INVALID_PARAMETER, f"the body must be {_FORM}, not {media!r}"
        )
    for option in options:
        name, _, value = option.strip().partition("=")
        value = value.strip().strip('"').lower()
        if name.lower() == "charset" and value not in ("utf-8", "utf8"):
            raise GatewayError(
                INVALID_PARAMETER, f"the body must be UTF-8, not {value!r}"
            )
