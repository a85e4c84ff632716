"""
The admin API's logins: logging in and out, the session and its CSRF
token, API tokens, and the admin logins themselves.

The password checks, the lockout, sessions and tokens are in
L{msync.console.sessions}; this module answers the routes over them.
"""

from __future__ import annotations

import math

from twisted.logger import Logger

from msync.console.api_bodies import ApiError, Fields, invalid, not_found
from msync.console.api_calls import (
    LOG_NAMESPACE,
    Call,
    Creations,
    cookie_session,
)
from msync.console.sessions import (
    BadLogin,
    Locked,
    Logins,
    Passwords,
    Sessions,
    Tokens,
    session_cookie,
)
from msync.model import check_link
from msync.store import Store

__all__ = ["MIN_PASSWORD", "LoginApi"]

_log = Logger(namespace=LOG_NAMESPACE)

#: The least length of an admin password.
MIN_PASSWORD = 8

# Names a caller typed are logged cut to this many characters.
_SHOWN = 64


class LoginApi:
    """
    The actions of the login, session, token and admin routes, over the
    store and the console's sessions, password checks and tokens.
    """

    def __init__(
        self,
        store: Store,
        sessions: Sessions,
        logins: Logins,
        passwords: Passwords,
        tokens: Tokens,
        *,
        secure_cookies: bool,
    ) -> None:
        """
        @param secure_cookies: Mark the session cookie C{Secure}.
        """
        self._store = store
        self._sessions = sessions
        self._logins = logins
        self._passwords = passwords
        self._tokens = tokens
        self._secure = secure_cookies
        self._creating = Creations("admin")

    # --- logins and sessions -----------------------------------------------

    async def login(self, call: Call) -> object:
        """Log in with a password: start a session, set its cookie."""
        fields = Fields(call.body, ("user", "password"))
        user = fields.required_text("user")
        password = fields.required_text("password")
        request = call.request
        peer = str(request.getClientAddress())
        try:
            await self._logins.check(user, password)
        except Locked as e:
            request.setHeader(
                b"retry-after", str(math.ceil(e.retry_after)).encode()
            )
            _log.warn(
                "console login of locked user {user} from {peer}",
                user=user[:_SHOWN],
                peer=peer,
            )
            raise ApiError(429, "locked", str(e)) from e
        except BadLogin:
            _log.warn(
                "console login refused for {user} from {peer}",
                user=user[:_SHOWN],
                peer=peer,
            )
            raise ApiError(
                401, "unauthenticated", "wrong user or password"
            ) from None

        # A fresh id at every login: an id planted before it is useless.
        old = cookie_session(self._sessions, request)
        if old is not None:
            self._sessions.end(old)
        session_id, session = self._sessions.start(user)
        request.responseHeaders.addRawHeader(
            b"set-cookie", session_cookie(session_id, secure=self._secure)
        )
        _log.info("console login by {user} from {peer}", user=user, peer=peer)
        return {"user": session.user, "csrf": session.csrf}

    async def logout(self, call: Call) -> object:
        """End the caller's session and clear its cookie."""
        if call.session is not None:
            self._sessions.end(call.session)
            call.request.responseHeaders.addRawHeader(
                b"set-cookie",
                session_cookie("", secure=self._secure, expire=True),
            )
        return {}

    async def session(self, call: Call) -> object:
        """Say who the session belongs to, and its CSRF token."""
        # Asking is not using: a page that polls this must not keep an
        # idle session alive.
        session = cookie_session(self._sessions, call.request)
        if session is None:
            raise ApiError(401, "unauthenticated", "no live session: log in")
        return {"user": session.user, "csrf": session.csrf}

    # --- API tokens --------------------------------------------------------

    async def create_token(self, call: Call) -> object:
        """Make an API token, shown this once."""
        token_id, token = await self._tokens.issue(call.user)
        _log.info(
            "API token {token_id} made by {user}",
            token_id=token_id,
            user=call.user,
        )
        return {"token": token, "id": token_id}

    async def revoke_token(self, call: Call, token_id: str) -> object:
        """Revoke an API token."""
        if not await self._tokens.revoke(token_id):
            raise not_found(f"no token {token_id!r}")
        _log.info(
            "API token {token_id} revoked by {user}",
            token_id=token_id,
            user=call.user,
        )
        return {"id": token_id, "revoked": True}

    # --- admin logins ------------------------------------------------------

    async def admins(self, call: Call) -> object:
        """List the admin logins."""
        return [{"user": name} for name in self._store.admins()]

    async def create_admin(self, call: Call) -> object:
        """Add an admin login."""
        fields = Fields(call.body, ("user", "password"))
        name = check_link("user", fields.required_text("user"))
        password = fields.required_text("password")
        if len(password) < MIN_PASSWORD:
            raise invalid(
                "password", f"must be at least {MIN_PASSWORD} characters"
            )
        hashed = await self._passwords.hash(password)
        await self._creating.once(
            name,
            lambda: self._store.admin_hash(name) is not None,
            lambda: self._store.put_admin(name, hashed),
        )
        _log.info("admin {admin} added by {user}", admin=name, user=call.user)
        return {"user": name}
