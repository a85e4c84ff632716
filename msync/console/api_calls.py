"""
The one path every admin API call takes, from the request to its JSON
answer, and the little the routes' actions share.

L{Calls.serve} checks a request in one order, cheapest and
unauthenticated first:

  1. who is calling: a session cookie, or a Bearer token (401);
  2. a session's change (any method but GET) carries the session's
     CSRF token (403);
  3. a route that reads a body gets one that fits (413, before it is
     read), is C{application/json} (415), and is a JSON object (400).

It then runs the route's action with the admitted L{Call}.  The action
refuses by raising L{ApiError}, or a store or model error (L{NotFound},
L{AlreadyExists}, L{ValidationError}), or L{Busy} when password hashing
is full (503 with C{Retry-After}), all answered here.  Anything
else is a bug: logged as a failure and answered C{500 internal}, never
with a traceback.  L{Calls.no_route} answers an unknown path or method
the same way.

What the actions share besides: L{Call}, what each is given;
L{cookie_session}, the session a request's cookie names; L{Creations},
which keeps two calls from creating one name at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed

from msync.console.api_bodies import (
    ApiError,
    invalid,
    json_headers,
    not_found,
    read_json,
    render,
)
from msync.console.sessions import (
    SESSION_COOKIE,
    Busy,
    Session,
    Sessions,
    Tokens,
)
from msync.model import ValidationError
from msync.store import AlreadyExists, NotFound

__all__ = [
    "LOG_NAMESPACE",
    "Action",
    "Call",
    "Calls",
    "Creations",
    "cookie_session",
]

#: Every admin API module logs under this one namespace, so that an
#: operator's filter on the API's audit lines holds whichever module
#: wrote them.
LOG_NAMESPACE = "msync.console.api"

_log = Logger(namespace=LOG_NAMESPACE)

_SAFE_METHODS = (b"GET", b"HEAD")


@dataclass
class Call:
    """One admitted request: who made it, and its JSON body if read."""

    request: IRequest
    user: str = ""
    session: Session | None = None
    body: dict[str, Any] = field(default_factory=dict)


#: A route's action: called with the L{Call} and the route's path
#: parts as keywords; what it returns is answered as JSON.
Action = Callable[..., Awaitable[object]]


class Calls:
    """
    Serves admin API calls over the sessions and tokens that admit
    them; see the module docstring.
    """

    def __init__(self, sessions: Sessions, tokens: Tokens) -> None:
        self._sessions = sessions
        self._tokens = tokens

    def serve(
        self,
        request: IRequest,
        action: Action,
        path: dict[str, str],
        *,
        status: int = 200,
        body: bool = False,
        login: bool = True,
    ) -> Deferred[bytes]:
        """
        Admit a request, run its action, and answer in JSON.

        @param path: The route's path parts, passed on to the action.
        @param status: The status of a successful answer.
        @param body: Whether the action reads a JSON body.
        @param login: Whether the caller must be logged in.
        """
        return ensureDeferred(
            self._serve(request, action, path, status, body, login)
        )

    async def _serve(
        self,
        request: IRequest,
        action: Action,
        path: dict[str, str],
        status: int,
        wants_body: bool,
        login: bool,
    ) -> bytes:
        json_headers(request)
        try:
            call = self._admit(request) if login else Call(request)
            if wants_body:
                call.body = read_json(request)
            result = await action(call, **path)
            answer = render(result)
        except CancelledError:
            # The client went away; Klein drops the answer quietly.
            raise
        except ApiError as e:
            return _refuse(request, e)
        except ValidationError as e:
            return _refuse(request, invalid(e.field, e.reason))
        except NotFound as e:
            return _refuse(request, not_found(str(e)))
        except AlreadyExists as e:
            return _refuse(request, ApiError(409, "exists", str(e)))
        except Busy:
            # Too many password hashes wait already (see Passwords).
            request.setHeader(b"retry-after", b"1")
            return _refuse(
                request,
                ApiError(
                    503,
                    "busy",
                    "too many password checks at once; try again soon",
                ),
            )
        except Exception:
            _log.failure(
                "admin API {method} {path} failed",
                method=request.method.decode("ascii", "replace"),
                path=request.path.decode("ascii", "replace"),
            )
            return _refuse(
                request, ApiError(500, "internal", "internal error")
            )
        request.setResponseCode(status)
        return answer

    def no_route(self, request: IRequest, failure: Failure) -> bytes:
        """Answer an unknown path or method in JSON like every refusal."""
        json_headers(request)
        if failure.check(MethodNotAllowed):
            allowed = getattr(failure.value, "valid_methods", None) or []
            request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
            error = ApiError(405, "not_allowed", "method not allowed here")
        else:
            error = not_found("no such API route")
        return _refuse(request, error)

    def _admit(self, request: IRequest) -> Call:
        authorization: bytes | None = request.getHeader(b"authorization")
        if authorization is not None:
            # A token stands alone: no cookie, so no CSRF to fear.
            scheme, _, token = authorization.partition(b" ")
            admin = None
            if scheme.lower() == b"bearer" and len(token) < 256:
                admin = self._tokens.check(token.strip().decode("latin-1"))
            if admin is None:
                _log.warn(
                    "admin API refused a token from {peer}",
                    peer=str(request.getClientAddress()),
                )
                raise ApiError(
                    401, "unauthenticated", "unknown or revoked token"
                )
            return Call(request, admin)

        session = cookie_session(self._sessions, request)
        if session is None:
            raise ApiError(401, "unauthenticated", "no live session: log in")
        if request.method not in _SAFE_METHODS and not session.csrf_matches(
            request.getHeader(b"x-csrf-token")
        ):
            _log.warn(
                "admin API refused a change by {user} without its CSRF "
                "token, from {peer}",
                user=session.user,
                peer=str(request.getClientAddress()),
            )
            raise ApiError(403, "csrf", "missing or wrong X-CSRF-Token")
        self._sessions.touch(session)
        return Call(request, session.user, session)


def cookie_session(sessions: Sessions, request: IRequest) -> Session | None:
    """The live session a request's cookie names, if any."""
    cookie = request.getCookie(SESSION_COOKIE.encode("ascii"))
    if not cookie:
        return None
    return sessions.find(cookie.decode("ascii", "replace"))


def _refuse(request: IRequest, error: ApiError) -> bytes:
    request.setResponseCode(error.status)
    return render(error.body())


class Creations:
    """
    The names of one kind (instances, admins) being created right now:
    the store cannot refuse a second one of the same name by itself.
    """

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._names: set[str] = set()

    async def once(
        self,
        name: str,
        exists: Callable[[], bool],
        write: Callable[[], Deferred[None]],
    ) -> None:
        """Run C{write} unless the name exists or is being created."""
        if name in self._names or exists():
            raise ApiError(
                409, "exists", f"{self._kind} {name!r} exists already"
            )
        self._names.add(name)
        try:
            await write()
        finally:
            self._names.discard(name)
