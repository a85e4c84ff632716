"""
Who may use the admin API: console logins with their sessions and CSRF
tokens, the lockout that slows password guessing, and API tokens.

Nothing here speaks HTTP (L{msync.console.api} does) and nothing reads a
clock of its own: time comes from the injected C{IReactorTime}.

Secrets are never kept in the clear.  A session id is held as its
SHA-256 digest, so looking it up leaks nothing an attacker can use; an
API token is stored as its SHA-256 digest and compared with
C{hmac.compare_digest}; a CSRF token is compared the same way.  None of
them, nor any password, is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredSemaphore, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from msync.auth import decoy_hash, hash_password, verify_password
from msync.model import ValidationError, check_link
from msync.store import Store

__all__ = [
    "SESSION_COOKIE",
    "BadLogin",
    "Busy",
    "Locked",
    "Lockout",
    "Logins",
    "Passwords",
    "Session",
    "Sessions",
    "Tokens",
    "session_cookie",
]

_log = Logger()

T = TypeVar("T")

#: The cookie that carries a console session's id.
SESSION_COOKIE = "msync_session"

#: A session ends after this many seconds without use...
IDLE_SECONDS = 30 * 60.0

#: ...and this many seconds after its login, used or not.
LIFETIME_SECONDS = 12 * 3600.0

#: This many failed logins for one user within L{FAILURE_WINDOW}
#: seconds lock that user out for L{LOCKOUT_SECONDS}.
MAX_FAILURES = 5
FAILURE_WINDOW = 60.0
LOCKOUT_SECONDS = 60.0

# Random bytes in a session id, a CSRF token and a token's secret part.
_SECRET_BYTES = 32

# Token ids are 16 hex digits; the token is the id, a dot, the secret.
_TOKEN = re.compile(r"([0-9a-f]{16})\.([A-Za-z0-9_-]{43})\Z")
_TOKEN_ID = re.compile(r"[0-9a-f]{16}\Z")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def session_cookie(value: str, *, secure: bool, expire: bool = False) -> bytes:
    """
    Return a C{Set-Cookie} value for the session cookie.

    @param value: The session id (ignored when C{expire} is set).
    @param secure: Add C{Secure}, for a console served over HTTPS.
    @param expire: Tell the browser to forget the cookie instead.
    """
    parts = [f"{SESSION_COOKIE}={'' if expire else value}"]
    parts += ["HttpOnly", "SameSite=Strict", "Path=/"]
    if expire:
        parts.append("Max-Age=0")
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode("ascii")


@dataclass(eq=False)
class Session:
    """One console login: who, its CSRF token, and when it was used."""

    user: str
    csrf: str
    started: float
    last_used: float
    key: bytes
    """The digest of the session id; the id itself is not kept."""

    def csrf_matches(self, presented: bytes | None) -> bool:
        """Whether C{presented} is this session's CSRF token."""
        if presented is None:
            return False
        return hmac.compare_digest(presented, self.csrf.encode("ascii"))


class Sessions:
    """The live console sessions of this process, in memory."""

    def __init__(
        self,
        clock: IReactorTime,
        *,
        idle: float = IDLE_SECONDS,
        lifetime: float = LIFETIME_SECONDS,
        limit: int = 10_000,
    ) -> None:
        """
        @param idle: Seconds without use that end a session.
        @param lifetime: Seconds after login that end a session.
        @param limit: The most sessions kept; the oldest go first.
        """
        self._clock = clock
        self._idle = idle
        self._lifetime = lifetime
        self._limit = limit
        self._by_key: dict[bytes, Session] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def start(self, user: str) -> tuple[str, Session]:
        """
        Start a session for C{user}.

        @return: The session id (to hand out once, in the cookie) and the
            session.
        """
        now = self._clock.seconds()
        self._forget_expired(now)
        while len(self._by_key) >= self._limit:
            # Dicts keep insertion order: the first is the oldest login.
            del self._by_key[next(iter(self._by_key))]
        session_id = secrets.token_urlsafe(_SECRET_BYTES)
        session = Session(
            user=user,
            csrf=secrets.token_urlsafe(_SECRET_BYTES),
            started=now,
            last_used=now,
            key=_digest(session_id),
        )
        self._by_key[session.key] = session
        return session_id, session

    def find(self, session_id: str) -> Session | None:
        """
        Return the live session C{session_id} names, or L{None}.

        Finding a session does not count as using it; see L{touch}.
        """
        session = self._by_key.get(_digest(session_id))
        if session is None:
            return None
        if not self._live(session, self._clock.seconds()):
            self.end(session)
            return None
        return session

    def touch(self, session: Session) -> None:
        """Note that C{session} was just used."""
        session.last_used = self._clock.seconds()

    def end(self, session: Session) -> None:
        """End C{session}; later requests carrying its id are refused."""
        self._by_key.pop(session.key, None)

    def _live(self, session: Session, now: float) -> bool:
        return (
            now - session.last_used < self._idle
            and now - session.started < self._lifetime
        )

    def _forget_expired(self, now: float) -> None:
        for session in list(self._by_key.values()):
            if not self._live(session, now):
                self.end(session)


class Lockout:
    """
    Counts failed logins per user name and locks a name out for a while
    after too many.

    Unknown names are counted like real ones, so a lockout says nothing
    about which names exist.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        failures: int = MAX_FAILURES,
        window: float = FAILURE_WINDOW,
        duration: float = LOCKOUT_SECONDS,
        limit: int = 10_000,
    ) -> None:
        """
        @param failures: Failures within C{window} seconds that lock.
        @param duration: Seconds a lock lasts.
        @param limit: The most names whose failures are remembered.
        """
        self._clock = clock
        self._failures = failures
        self._window = window
        self._duration = duration
        self._limit = limit
        self._failed: dict[str, list[float]] = {}
        self._locked: dict[str, float] = {}

    def locked_for(self, user: str) -> float:
        """Return the seconds left of C{user}'s lock, or 0."""
        until = self._locked.get(user)
        if until is None:
            return 0.0
        left = until - self._clock.seconds()
        if left <= 0:
            del self._locked[user]
            return 0.0
        return left

    def failed(self, user: str) -> bool:
        """
        Count one failed login of C{user}.

        @return: True if this failure locked C{user} out.
        """
        now = self._clock.seconds()
        recent = [
            t for t in self._failed.pop(user, []) if now - t < self._window
        ]
        recent.append(now)
        if len(recent) >= self._failures:
            self._locked[user] = now + self._duration
            return True
        self._make_room(now)
        self._failed[user] = recent
        return False

    def succeeded(self, user: str) -> None:
        """Forget C{user}'s failures after a good login."""
        self._failed.pop(user, None)

    def _make_room(self, now: float) -> None:
        if len(self._failed) < self._limit:
            return
        for name, times in list(self._failed.items()):
            if now - times[-1] >= self._window:
                del self._failed[name]
        for name in list(self._locked):
            self.locked_for(name)
        # XXX: a flood of names can still push out a real name's count,
        # giving it a few more guesses; the limit bounds the memory.
        while len(self._failed) >= self._limit:
            del self._failed[next(iter(self._failed))]


class BadLogin(Exception):
    """The user name or the password is wrong."""


class Locked(Exception):
    """The user is locked out; C{retry_after} seconds remain."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"locked out for {retry_after:.0f} more seconds")
        self.retry_after = retry_after


#: What an unknown name's password is checked against (L{decoy_hash}).
_DECOY = decoy_hash()


class Busy(Exception):
    """Too many password checks are waiting already: try again soon."""


class Passwords:
    """
    Hashes and checks passwords away from the reactor thread.

    Each scrypt costs tens of milliseconds of CPU; on the reactor thread
    it would hold up every device and backend for as long.  Here it runs
    through C{run} (a thread pool in the daemon), at most C{parallel} at
    a time, and at most C{backlog} more wait: beyond that a caller gets
    L{Busy} at once, so a flood of logins under many names costs a
    bounded amount of CPU and memory (scrypt takes 16 MiB each).
    """

    def __init__(
        self,
        run: Callable[[Callable[[], Any]], Deferred[Any]],
        parallel: int = 2,
        backlog: int = 32,
    ) -> None:
        """
        @param run: Runs a function elsewhere and fires with its result,
            e.g. C{twisted.internet.threads.deferToThread}.
        """
        self._run = run
        self._slots = DeferredSemaphore(parallel)
        self._backlog = backlog

    def _call(self, fn: Callable[[], T]) -> Deferred[T]:
        if len(self._slots.waiting) >= self._backlog:
            raise Busy()
        result: Deferred[T] = self._slots.run(lambda: self._run(fn))
        return result

    def verify(self, password: str, stored: str) -> Deferred[bool]:
        """
        Whether C{password} matches C{stored} (see L{verify_password}).

        @raise Busy: if too many checks wait already.
        """
        return self._call(partial(verify_password, password, stored))

    def hash(self, password: str) -> Deferred[str]:
        """
        A new hash of C{password} (see L{hash_password}).

        @raise Busy: if too many checks wait already.
        """
        return self._call(partial(hash_password, password))


class Logins:
    """Checks admin passwords against the store, under a L{Lockout}."""

    def __init__(
        self, store: Store, lockout: Lockout, passwords: Passwords
    ) -> None:
        self._store = store
        self.lockout = lockout
        self._passwords = passwords

    async def check(self, user: str, password: str) -> None:
        """
        Check C{user}'s C{password}.

        @raise Locked: if C{user} is locked out (the password is then
            not even checked).
        @raise BadLogin: if the name or the password is wrong.
        @raise Busy: if too many password checks wait already.
        """
        try:
            check_link("user", user)
        except ValidationError as e:
            # No such name can exist; it is not worth a lockout record.
            raise BadLogin(user) from e
        left = self.lockout.locked_for(user)
        if left > 0:
            raise Locked(left)

        stored = self._store.admin_hash(user)
        good = await self._passwords.verify(password, stored or _DECOY)
        if stored is None or not good:
            if self.lockout.failed(user):
                _log.warn(
                    "console user {user} locked out after failed logins",
                    user=user,
                )
            raise BadLogin(user)
        self.lockout.succeeded(user)


class Tokens:
    """
    API tokens: made for an admin, shown once, kept only as a digest.

    A token reads C{ID.SECRET}: the id names the stored digest (and is
    what revoking takes); the digest covers the whole token.
    """

    def __init__(self, store: Store, clock: IReactorTime) -> None:
        self._store = store
        self._clock = clock

    async def issue(self, admin: str) -> tuple[str, str]:
        """
        Make a token acting as C{admin}.

        @return: The token's id and the token itself; the token cannot be
            recovered later.
        """
        token_id = secrets.token_hex(8)
        while self._store.token(token_id) is not None:
            token_id = secrets.token_hex(8)
        token = f"{token_id}.{secrets.token_urlsafe(_SECRET_BYTES)}"
        created = int(self._clock.seconds() * 1000)
        await self._store.put_token(token_id, _digest(token), admin, created)
        return token_id, token

    def check(self, token: str) -> str | None:
        """Return the admin C{token} acts as, or L{None} if it is no
        live token."""
        match = _TOKEN.match(token)
        if match is None:
            return None
        found = self._store.token(match.group(1))
        if found is None:
            return None
        digest, admin = found
        if not hmac.compare_digest(digest, _digest(token)):
            return None
        return admin

    def revoke(self, token_id: str) -> Deferred[bool]:
        """Revoke a token; fire with whether it existed."""
        if not _TOKEN_ID.match(token_id):
            return succeed(False)
        return self._store.delete_token(token_id)
