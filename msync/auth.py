"""
Secrets and password hashes, compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_N, _R, _P = 2**14, 8, 1


def new_secret(nbytes: int = 24) -> str:
    """Return a fresh random secret, URL-safe text."""
    return secrets.token_urlsafe(nbytes)


def new_access_key() -> str:
    """Return a fresh access key id: C{AK} and 20 upper-case hex digits."""
    return "AK" + secrets.token_hex(10).upper()


def hash_password(password: str) -> str:
    """Return a salted scrypt hash of C{password}, with its parameters."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P
    )
    return _stored(salt, digest)


def decoy_hash() -> str:
    """
    A hash in L{hash_password}'s format, at its cost, that no password
    matches: a random salt and a random digest, made without running
    scrypt.  Checking a password against it takes as long as against a
    real hash, so unknown names cost as much time as known ones.
    """
    return _stored(secrets.token_bytes(16), secrets.token_bytes(64))


def _stored(salt: bytes, digest: bytes) -> str:
    # The stored form: the scheme, its cost parameters, salt and digest.
    encoded = [base64.b64encode(b).decode() for b in (salt, digest)]
    return "$".join(["scrypt", str(_N), str(_R), str(_P), *encoded])


def verify_password(password: str, stored: str) -> bool:
    """Whether C{password} matches a hash made by L{hash_password}."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)
