"""
The gateway's signatures, as the published SDKs compute them (see
C{GATEWAY-SIGNING.md}): a request is signed over a canonical string of
its parameters, an answer over the exact text of its C{response} member.

Everything here is a pure function of its arguments: no I/O, no clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "SIGN",
    "UnknownAlgorithm",
    "UnreadableAnswer",
    "canonical",
    "percent_encode",
    "read_answer",
    "response_text",
    "seal_answer",
    "sign",
    "sign_response",
    "verify",
]

#: The parameter that carries a request's signature, and the member that
#: carries an answer's; it is never itself signed.
SIGN = "sign"

#: The C{sign_type} values accepted, and the digest each names.
ALGORITHMS: Mapping[str, Callable[[], Any]] = {
    "HmacSHA1": hashlib.sha1,
    "HmacSHA256": hashlib.sha256,
}

DEFAULT_ALGORITHM = "HmacSHA1"

# RFC 3986 leaves only the unreserved characters as they are.
_UNRESERVED = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"
)
_ENCODED = tuple(
    chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in range(256)
)

# SDKs find the response text between the first of these and the first
# '"sign"' in the body, so the answer's text must not contain the latter.
_QUOTED_SIGN = '"sign"'
_SAFE_SIGN = '"\\u0073ign"'


class UnknownAlgorithm(ValueError):
    """A C{sign_type} that is neither C{HmacSHA1} nor C{HmacSHA256}."""


class UnreadableAnswer(ValueError):
    """A gateway answer is not C{{"response":R,"sign":"S"}} JSON."""


_UNSAFE = re.compile(r"[^A-Za-z0-9._~-]+")


def _escape(match: re.Match[str]) -> str:
    return "".join([_ENCODED[b] for b in match.group().encode("utf-8")])


_UNSAFE_ASCII = re.compile(r"[^A-Za-z0-9._~-]")


def percent_encode(text: str) -> str:
    """
    Percent-encode the UTF-8 bytes of C{text} as RFC 3986 does: the
    unreserved characters stay, every other byte becomes C{%XX} in
    upper-case hex (so a space is C{%20}, never C{+}).
    """
    # Everything here runs in C but a step per distinct character to
    # escape: ASCII text (nearly every parameter; a base64 payload has
    # only C{+}, C{/} and C{=} to escape) is rewritten one such
    # character at a time, C{%} first so that no escape is escaped
    # again; other text by a scan that hands Python each run to escape.
    if not text.isascii():
        return _UNSAFE.sub(_escape, text)
    found = _UNSAFE_ASCII.findall(text)
    if not found:
        return text
    unsafe = set(found)
    if "%" in unsafe:
        unsafe.discard("%")
        text = text.replace("%", "%25")
    for c in unsafe:
        text = text.replace(c, _ENCODED[ord(c)])
    return text


def canonical(params: Mapping[str, str]) -> str:
    """
    Return the string a request's signature covers: every parameter but
    C{sign}, sorted by name in code-point order, each written as
    C{E(name)=E(value)} and joined with C{&}.
    """
    return "&".join(
        f"{_encoded_name(name)}={percent_encode(params[name])}"
        for name in sorted(params)
        if name != SIGN
    )


@lru_cache(maxsize=256)
def _encoded_name(name: str) -> str:
    # The same few parameter names come with every request.
    return percent_encode(name)


def _mac(text: str, secret: str, algorithm: str) -> bytes:
    digest = ALGORITHMS.get(algorithm)
    if digest is None:
        raise UnknownAlgorithm(f"unknown sign_type {algorithm!r}")
    return hmac.new(
        secret.encode("utf-8"), text.encode("utf-8"), digest
    ).digest()


def sign(
    params: Mapping[str, str],
    secret: str,
    algorithm: str = DEFAULT_ALGORITHM,
) -> str:
    """
    Return the base64 signature of a request's parameters.

    @param params: Every parameter received or to be sent; C{sign}, if
        present, is left out.
    @param algorithm: The request's C{sign_type}.
    @raise UnknownAlgorithm: if C{algorithm} is not one of L{ALGORITHMS}.
    """
    mac = _mac(canonical(params), secret, algorithm)
    return base64.b64encode(mac).decode("ascii")


def verify(
    params: Mapping[str, str],
    secret: str,
    signature: str,
    algorithm: str = DEFAULT_ALGORITHM,
) -> bool:
    """
    Whether C{signature} is the signature of C{params}, compared in
    constant time.

    @raise UnknownAlgorithm: if C{algorithm} is not one of L{ALGORITHMS}.
    """
    expected = sign(params, secret, algorithm).encode("ascii")
    # A signature that is not even ASCII cannot match; compare_digest
    # takes only ASCII text, so compare bytes instead.
    return hmac.compare_digest(expected, signature.encode("utf-8"))


def sign_response(
    response_text: str, secret: str, algorithm: str = DEFAULT_ALGORITHM
) -> str:
    """
    Return the base64 signature of an answer's C{response} text, exactly
    as it stands in the body.

    @raise UnknownAlgorithm: if C{algorithm} is not one of L{ALGORITHMS}.
    """
    mac = _mac(response_text, secret, algorithm)
    return base64.b64encode(mac).decode("ascii")


def response_text(response: Mapping[str, Any]) -> str:
    """
    Serialise an answer's C{response} once, compactly, so that it can be
    signed and embedded as the same text.

    The text never holds the six characters C{"sign"}: where a key or a
    value would produce them, the C{s} is written as a JSON escape,
    which reads back as the same characters.
    """
    text = json.dumps(response, separators=(",", ":"), ensure_ascii=False)
    # In JSON a '"' followed by 'sign"' either opens a string (a key or a
    # value) or is an escaped quote inside one, so the 's' is always in a
    # string, where an escape reads back as the same letter.
    return text.replace(_QUOTED_SIGN, _SAFE_SIGN)


def seal_answer(
    response: Mapping[str, Any],
    secret: str | None,
    algorithm: str = DEFAULT_ALGORITHM,
) -> bytes:
    """
    Return the body of an answer: C{{"response":R,"sign":"S"}} in UTF-8,
    or C{{"response":R}} when there is no secret to sign with.

    @raise UnknownAlgorithm: if C{algorithm} is not one of L{ALGORITHMS}.
    """
    text = response_text(response)
    if secret is None:
        return ('{"response":' + text + "}").encode("utf-8")
    signature = sign_response(text, secret, algorithm)
    body = '{"response":' + text + ',"sign":"' + signature + '"}'
    return body.encode("utf-8")


def read_answer(body: bytes) -> tuple[dict[str, Any], str, str | None]:
    """
    Read an answer's body as the SDKs do.

    @return: The C{response} object, its text as it stands in the body
        (what the signature covers), and the signature, or L{None} if the
        answer is unsigned.
    @raise UnreadableAnswer: if the body is not such an answer.
    """
    try:
        text = body.decode("utf-8")
        whole = json.loads(text)
    except ValueError as e:
        raise UnreadableAnswer(f"the answer is not JSON: {e}") from e
    if not isinstance(whole, dict) or not isinstance(
        whole.get("response"), dict
    ):
        raise UnreadableAnswer("the answer has no response object")
    signature = whole.get(SIGN)
    if signature is not None and not isinstance(signature, str):
        raise UnreadableAnswer("the answer's sign is not a string")

    # The signed text runs from just after '"response":' to just before
    # the ',' that precedes the first '"sign"' (or the closing brace).
    try:
        start = text.index(":", text.index('"response"')) + 1
        end = text.find(_QUOTED_SIGN, start)
        if end < 0:
            end = text.rindex("}")
        else:
            end = text.rindex(",", start, end)
    except ValueError as e:
        raise UnreadableAnswer("the response is not where SDKs look") from e
    return whole["response"], text[start:end].strip(), signature
