"""
The admin API (C{docs/admin-api.md}): JSON in and out, for the web
console and C{msync admin}.

L{ConsoleApi} serves the routes below C{/api/}: mount its L{resource}
there (its own routes are relative to that point).  Every route runs
through L{_endpoint}, which checks a request in one order, cheapest and
unauthenticated first:

  1. who is calling: a session cookie, or a Bearer token (401);
  2. a session's change (any method but GET) carries the session's
     CSRF token (403);
  3. a route that reads a body gets one that fits (413, before it is
     read), is C{application/json} (415), and is a JSON object (400).

The route then refuses by raising L{ApiError}, or a store or model error
(L{NotFound}, L{AlreadyExists}, L{ValidationError}), all answered in the
same place.  Anything else is a bug: logged as a failure and answered
C{500 internal}, never with a traceback.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound as NoRoute

from msync.auth import hash_password, new_access_key, new_secret
from msync.console.sessions import (
    SESSION_COOKIE,
    BadLogin,
    Locked,
    Lockout,
    Logins,
    Session,
    Sessions,
    Tokens,
    session_cookie,
)
from msync.delivery.engine import Engine
from msync.delivery.lookup import (
    DeviceReport,
    PushEntry,
    UserReport,
    device_report,
    user_report,
)
from msync.delivery.sender import Sender, SendRequest, parse_date
from msync.gateway.app import SIGNATURE_CHECK
from msync.model import (
    AccessKey,
    ConfigState,
    Instance,
    Range,
    ResendMode,
    SyncConfig,
    Target,
    ValidationError,
    check_biz_type,
    check_instance_id,
    check_link,
)
from msync.store import AlreadyExists, NotFound, Store

__all__ = ["MAX_BODY", "ApiError", "ConsoleApi"]

_log = Logger()

#: The largest request body read, in bytes.
MAX_BODY = 64 * 1024

#: The least length of an admin password.
MIN_PASSWORD = 8

_JSON = b"application/json"
_SAFE_METHODS = (b"GET", b"HEAD")

# Bounds on free text an operator types, so that no value is absurd.
_MAX_TEXT = 2048

# Names a caller typed are logged cut to this many characters.
_SHOWN = 64
_MAX_INSTANCES_PER_KEY = 1000

_CONFIG_FIELDS = (
    "biz_type",
    "description",
    "range",
    "target",
    "multi_device",
    "persistent",
    "resend_mode",
    "threshold",
    "consistency",
)
_SEND_TEXT_FIELDS = (
    "biz_type",
    "link_token",
    "third_msg_id",
    "os_type",
    "app_min_version",
    "app_max_version",
    "device_id",
)
_SEND_FIELDS = (
    *_SEND_TEXT_FIELDS,
    "global",
    "payload",
    "payload_base64",
    "immediate",
    "start_date",
    "expire_date",
)

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


def _invalid(name: str, message: str) -> ApiError:
    return ApiError(400, "invalid", message, name)


def _not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


@dataclass
class _Call:
    """One admitted request: who made it, and its JSON body if read."""

    request: IRequest
    user: str = ""
    session: Session | None = None
    body: dict[str, Any] = field(default_factory=dict)


# --- reading bodies ---------------------------------------------------


def _read_json(request: IRequest) -> dict[str, Any]:
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


class _Fields:
    """
    Typed reads of a JSON object's fields; a field sent as C{null}
    counts as not sent.
    """

    def __init__(self, body: dict[str, Any], allowed: Iterable[str]) -> None:
        unknown = sorted(set(body) - set(allowed))
        if unknown:
            raise _invalid(unknown[0], f"{unknown[0]!r} is not a field here")
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
            raise _invalid(name, f"{name} must be text")
        if len(value) > limit:
            raise _invalid(name, f"{name} is over {limit} characters")
        return value

    def required_text(self, name: str) -> str:
        if not self.given(name):
            raise _invalid(name, f"{name} is required")
        return self.text(name)

    def flag(self, name: str, default: bool) -> bool:
        value = self._body.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise _invalid(name, f"{name} must be true or false")
        return value

    def integer(self, name: str, default: int) -> int:
        value = self._body.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(name, f"{name} must be an integer")
        return value

    def choice(self, name: str, kind: type[E], default: E) -> E:
        value = self._body.get(name)
        if value is None:
            return default
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in kind)
            raise _invalid(name, f"{name} must be one of {allowed}") from None


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise _invalid("time_zone", f"unknown time zone {value!r}") from None
    return value


def _validation_url(value: str) -> str:
    if not value:
        return value
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or any(c.isspace() or ord(c) < 0x20 for c in value)
    ):
        raise _invalid("validation_url", "must be an http(s) URL, or empty")
    return value


def _app_key(value: str) -> str:
    if len(value) > 256 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise _invalid(
            "app_key", "must be at most 256 characters, no control ones"
        )
    return value


def _date(fields: _Fields, name: str, time_zone: str) -> int:
    text = fields.text(name)
    if not text:
        return 0
    try:
        return parse_date(text, time_zone)
    except ValidationError as e:
        raise _invalid(name, f"{name}: {e.reason}") from e


def _payload(fields: _Fields) -> bytes:
    if fields.given("payload") and fields.given("payload_base64"):
        raise _invalid(
            "payload_base64", "send payload or payload_base64, not both"
        )
    if fields.given("payload_base64"):
        text = fields.text("payload_base64", limit=MAX_BODY)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(
                "payload_base64", "payload_base64 is not standard base64"
            ) from None
    # The Sender refuses an empty or oversized payload with its own code.
    return fields.text("payload", limit=MAX_BODY).encode("utf-8")


# --- answers ----------------------------------------------------------


def _instance_json(i: Instance) -> dict[str, Any]:
    return {
        "instance_id": i.instance_id,
        "time_zone": i.time_zone,
        "validation_url": i.validation_url,
        "app_key_set": bool(i.app_key),
        "created": i.created_ms,
    }


def _key_json(k: AccessKey, *, with_secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"access_key": k.access_key}
    if with_secret:
        out["secret"] = k.secret
    out.update(
        instances=list(k.instances), created=k.created_ms, revoked=k.revoked
    )
    return out


def _config_json(c: SyncConfig) -> dict[str, Any]:
    return {
        "biz_type": c.biz_type,
        "description": c.description,
        "range": c.range.value,
        "target": c.target.value,
        "multi_device": c.multi_device,
        "persistent": c.persistent,
        "resend_mode": c.resend_mode.value,
        "threshold": c.threshold,
        "consistency": c.consistency,
        "state": c.state.value,
        "created": c.created_ms,
        "updated": c.updated_ms,
    }


def _push_json(p: PushEntry) -> dict[str, Any]:
    return {
        "biz_type": p.biz_type,
        "scope": p.scope,
        "op_id": p.op_id,
        "third_msg_id": p.third_msg_id,
        "created": p.created,
        "state": p.state,
        "attempts": p.attempts,
        "reason": p.reason,
        "device_id": p.device_id,
    }


def _days_json(days: Iterable[tuple[int, int, int]]) -> list[dict[str, int]]:
    return [
        {"day": day, "pushes": pushes, "arrivals": arrivals}
        for day, pushes, arrivals in days
    ]


def _device_json(d: DeviceReport, *, detail: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "device_id": d.device_id,
        "user_id": d.user_id,
        "online": d.online,
        "os_type": d.os_type,
        "app_version": d.app_version,
        "validated": d.validated,
        "first_seen": d.first_seen,
        "last_seen": d.last_seen,
    }
    if detail:
        out["days"] = _days_json(d.days)
        out["pushes"] = [_push_json(p) for p in d.pushes]
    return out


def _user_json(u: UserReport) -> dict[str, Any]:
    return {
        "user_id": u.user_id,
        "online": u.online,
        "devices": [_device_json(d, detail=False) for d in u.devices],
        "days": _days_json(u.days),
        "pushes": [_push_json(p) for p in u.pushes],
    }


def _render(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8"
    )


def _json_headers(request: IRequest) -> None:
    request.setHeader(b"content-type", _JSON)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")


# --- the one path every route takes ------------------------------------

_Action = Callable[..., Awaitable[object]]
_Route = Callable[..., Deferred[bytes]]


def _endpoint(
    *, status: int = 200, body: bool = False, login: bool = True
) -> Callable[[_Action], _Route]:
    """
    Make an C{async} action into a route: see the module docstring.

    The action is called with the L{ConsoleApi}, the L{_Call} and the
    route's path parts; what it returns is answered as JSON.

    @param status: The status of a successful answer.
    @param body: Whether the action reads a JSON body.
    @param login: Whether the caller must be logged in.
    """

    def decorate(action: _Action) -> _Route:
        @wraps(action)
        def route(
            api: ConsoleApi, request: IRequest, **path: str
        ) -> Deferred[bytes]:
            return ensureDeferred(
                api._serve(request, action, status, body, login, path)
            )

        return route

    return decorate


class ConsoleApi:
    """
    The admin API's routes, over the store, the delivery engine, the
    sender and a clock; see the module docstring.
    """

    app = Klein()

    def __init__(
        self,
        store: Store,
        engine: Engine,
        sender: Sender,
        clock: IReactorTime,
        *,
        secure_cookies: bool = False,
    ) -> None:
        """
        @param secure_cookies: Mark the session cookie C{Secure}: set it
            when the console is served over HTTPS.
        """
        self._store = store
        self._engine = engine
        self._sender = sender
        self._clock = clock
        self._secure = secure_cookies
        self.sessions = Sessions(clock)
        """The live console sessions."""
        self.logins = Logins(store, Lockout(clock))
        """Password checks, with the lockout."""
        self.tokens = Tokens(store, clock)
        """API tokens."""
        # Names being created right now: the store cannot refuse a
        # second instance or admin of the same name by itself.
        self._creating: set[tuple[str, str]] = set()

    def resource(self) -> IResource:
        """The routes as a resource, to mount at C{/api/}."""
        resource: IResource = self.app.resource()
        return resource

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def _serve(
        self,
        request: IRequest,
        action: _Action,
        status: int,
        wants_body: bool,
        login: bool,
        path: dict[str, str],
    ) -> bytes:
        _json_headers(request)
        try:
            call = self._admit(request) if login else _Call(request)
            if wants_body:
                call.body = _read_json(request)
            result = await action(self, call, **path)
            answer = _render(result)
        except CancelledError:
            # The client went away; Klein drops the answer quietly.
            raise
        except ApiError as e:
            return self._refuse(request, e)
        except ValidationError as e:
            return self._refuse(request, _invalid(e.field, e.reason))
        except NotFound as e:
            return self._refuse(request, _not_found(str(e)))
        except AlreadyExists as e:
            return self._refuse(request, ApiError(409, "exists", str(e)))
        except Exception:
            _log.failure(
                "admin API {method} {path} failed",
                method=request.method.decode("ascii", "replace"),
                path=request.path.decode("ascii", "replace"),
            )
            return self._refuse(
                request, ApiError(500, "internal", "internal error")
            )
        request.setResponseCode(status)
        return answer

    def _refuse(self, request: IRequest, error: ApiError) -> bytes:
        request.setResponseCode(error.status)
        return _render(error.body())

    def _admit(self, request: IRequest) -> _Call:
        authorization: bytes | None = request.getHeader(b"authorization")
        if authorization is not None:
            # A token stands alone: no cookie, so no CSRF to fear.
            scheme, _, token = authorization.partition(b" ")
            admin = None
            if scheme.lower() == b"bearer" and len(token) < 256:
                admin = self.tokens.check(token.strip().decode("latin-1"))
            if admin is None:
                _log.warn(
                    "admin API refused a token from {peer}",
                    peer=str(request.getClientAddress()),
                )
                raise ApiError(
                    401, "unauthenticated", "unknown or revoked token"
                )
            return _Call(request, admin)

        session = self._session(request)
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
        self.sessions.touch(session)
        return _Call(request, session.user, session)

    def _session(self, request: IRequest) -> Session | None:
        cookie = request.getCookie(SESSION_COOKIE.encode("ascii"))
        if not cookie:
            return None
        return self.sessions.find(cookie.decode("ascii", "replace"))

    def _instance(self, instance_id: str) -> Instance:
        try:
            check_instance_id(instance_id)
        except ValidationError:
            raise _not_found(f"no instance {instance_id!r}") from None
        instance = self._store.instance(instance_id)
        if instance is None:
            raise _not_found(f"no instance {instance_id!r}")
        return instance

    def _config(self, instance_id: str, biz_type: str) -> SyncConfig:
        self._instance(instance_id)
        try:
            check_biz_type(biz_type)
        except ValidationError:
            raise _not_found(f"no sync config {biz_type!r}") from None
        config = self._store.config(instance_id, biz_type)
        if config is None:
            raise _not_found(f"{instance_id} has no sync config {biz_type}")
        return config

    async def _config_saved(
        self, call: _Call, config: SyncConfig, what: str
    ) -> dict[str, Any]:
        await self._store.update_config(config)
        # Online devices read configs through the engine's cache.
        self._engine.config_changed(config.instance_id)
        _log.info(
            "sync config {instance_id}/{biz_type} {what} by {user}",
            instance_id=config.instance_id,
            biz_type=config.biz_type,
            what=what,
            user=call.user,
        )
        return _config_json(config)

    async def _create_once(
        self,
        kind: str,
        name: str,
        exists: Callable[[], bool],
        write: Callable[[], Deferred[None]],
    ) -> None:
        key = (kind, name)
        if key in self._creating or exists():
            raise ApiError(409, "exists", f"{kind} {name!r} exists already")
        self._creating.add(key)
        try:
            await write()
        finally:
            self._creating.discard(key)

    # --- routes not found ---------------------------------------------

    @app.handle_errors(NoRoute, MethodNotAllowed)
    def no_route(self, request: IRequest, failure: Failure) -> bytes:
        """Answer an unknown path or method in JSON like every refusal."""
        _json_headers(request)
        if failure.check(MethodNotAllowed):
            allowed = getattr(failure.value, "valid_methods", None) or []
            request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
            error = ApiError(405, "not_allowed", "method not allowed here")
        else:
            error = _not_found("no such API route")
        return self._refuse(request, error)

    # --- logins, sessions, tokens ---------------------------------------

    @app.route("/login", methods=["POST"])
    @_endpoint(body=True, login=False)
    async def login(self, call: _Call) -> object:
        """Log in with a password: start a session, set its cookie."""
        fields = _Fields(call.body, ("user", "password"))
        user = fields.required_text("user")
        password = fields.required_text("password")
        request = call.request
        peer = str(request.getClientAddress())
        try:
            self.logins.check(user, password)
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
        old = self._session(request)
        if old is not None:
            self.sessions.end(old)
        session_id, session = self.sessions.start(user)
        request.responseHeaders.addRawHeader(
            b"set-cookie", session_cookie(session_id, secure=self._secure)
        )
        _log.info("console login by {user} from {peer}", user=user, peer=peer)
        return {"user": session.user, "csrf": session.csrf}

    @app.route("/logout", methods=["POST"])
    @_endpoint()
    async def logout(self, call: _Call) -> object:
        """End the caller's session and clear its cookie."""
        if call.session is not None:
            self.sessions.end(call.session)
            call.request.responseHeaders.addRawHeader(
                b"set-cookie",
                session_cookie("", secure=self._secure, expire=True),
            )
        return {}

    @app.route("/session", methods=["GET"])
    @_endpoint(login=False)
    async def session(self, call: _Call) -> object:
        """Say who the session belongs to, and its CSRF token."""
        # Asking is not using: a page that polls this must not keep an
        # idle session alive.
        session = self._session(call.request)
        if session is None:
            raise ApiError(401, "unauthenticated", "no live session: log in")
        return {"user": session.user, "csrf": session.csrf}

    @app.route("/tokens", methods=["POST"])
    @_endpoint(status=201)
    async def create_token(self, call: _Call) -> object:
        """Make an API token, shown this once."""
        token_id, token = await self.tokens.issue(call.user)
        _log.info(
            "API token {token_id} made by {user}",
            token_id=token_id,
            user=call.user,
        )
        return {"token": token, "id": token_id}

    @app.route("/tokens/<token_id>", methods=["DELETE"])
    @_endpoint()
    async def revoke_token(self, call: _Call, token_id: str) -> object:
        """Revoke an API token."""
        if not await self.tokens.revoke(token_id):
            raise _not_found(f"no token {token_id!r}")
        _log.info(
            "API token {token_id} revoked by {user}",
            token_id=token_id,
            user=call.user,
        )
        return {"id": token_id, "revoked": True}

    # --- instances ------------------------------------------------------

    @app.route("/instances", methods=["GET"])
    @_endpoint()
    async def instances(self, call: _Call) -> object:
        """List every instance."""
        return [_instance_json(i) for i in self._store.instances()]

    @app.route("/instances", methods=["POST"])
    @_endpoint(status=201, body=True)
    async def create_instance(self, call: _Call) -> object:
        """Create an instance."""
        fields = _Fields(
            call.body, ("instance_id", "time_zone", "validation_url")
        )
        instance = Instance(
            instance_id=check_instance_id(fields.required_text("instance_id")),
            time_zone=_time_zone(fields.text("time_zone", "UTC")),
            validation_url=_validation_url(fields.text("validation_url")),
            created_ms=self._now_ms(),
        )
        name = instance.instance_id
        await self._create_once(
            "instance",
            name,
            lambda: self._store.instance(name) is not None,
            lambda: self._store.put_instance(instance),
        )
        _log.info(
            "instance {instance_id} created by {user}",
            instance_id=name,
            user=call.user,
        )
        return _instance_json(instance)

    @app.route("/instances/<instance_id>", methods=["GET"])
    @_endpoint()
    async def instance(self, call: _Call, instance_id: str) -> object:
        """Show one instance."""
        return _instance_json(self._instance(instance_id))

    @app.route("/instances/<instance_id>", methods=["PATCH"])
    @_endpoint(body=True)
    async def change_instance(self, call: _Call, instance_id: str) -> object:
        """Change an instance's time zone, validation URL or app key."""
        current = self._instance(instance_id)
        fields = _Fields(call.body, ("time_zone", "validation_url", "app_key"))
        instance = replace(
            current,
            time_zone=_time_zone(fields.text("time_zone", current.time_zone)),
            validation_url=_validation_url(
                fields.text("validation_url", current.validation_url)
            ),
            app_key=_app_key(fields.text("app_key", current.app_key)),
        )
        await self._store.put_instance(instance)
        # Which fields, never the app key's value.
        _log.info(
            "instance {instance_id} changed by {user}: {fields}",
            instance_id=instance_id,
            user=call.user,
            fields=sorted(k for k in call.body if fields.given(k)),
        )
        return _instance_json(instance)

    # --- access keys ----------------------------------------------------

    @app.route("/keys", methods=["GET"])
    @_endpoint()
    async def keys(self, call: _Call) -> object:
        """List every access key, without secrets."""
        return [_key_json(k) for k in self._store.access_keys()]

    @app.route("/keys", methods=["POST"])
    @_endpoint(status=201, body=True)
    async def create_key(self, call: _Call) -> object:
        """Make an access key; its secret is shown this once."""
        names = _Fields(call.body, ("instances",)).raw("instances")
        if not isinstance(names, list) or not names:
            raise _invalid("instances", "instances must be a list of names")
        if len(names) > _MAX_INSTANCES_PER_KEY:
            raise _invalid(
                "instances",
                f"at most {_MAX_INSTANCES_PER_KEY} instances per key",
            )
        instances: list[str] = []
        for name in names:
            if not isinstance(name, str):
                raise _invalid("instances", "instances must be text")
            try:
                self._instance(name)
            except ApiError:
                raise _invalid("instances", f"no instance {name!r}") from None
            if name not in instances:
                instances.append(name)

        access_key = new_access_key()
        while self._store.access_key(access_key) is not None:
            access_key = new_access_key()
        key = AccessKey(
            access_key=access_key,
            secret=new_secret(),
            instances=tuple(instances),
            created_ms=self._now_ms(),
        )
        await self._store.put_access_key(key)
        _log.info(
            "access key {access_key} made by {user} for {instances}",
            access_key=access_key,
            user=call.user,
            instances=instances,
        )
        return _key_json(key, with_secret=True)

    @app.route("/keys/<access_key>/revoke", methods=["POST"])
    @_endpoint()
    async def revoke_key(self, call: _Call, access_key: str) -> object:
        """Revoke an access key: the gateway refuses it from now on."""
        key = None
        if len(access_key) <= 128:
            key = self._store.access_key(access_key)
        if key is None:
            raise _not_found(f"no access key {access_key!r}")
        if not key.revoked:
            key = replace(key, revoked=True)
            await self._store.put_access_key(key)
            _log.info(
                "access key {access_key} revoked by {user}",
                access_key=access_key,
                user=call.user,
            )
        return _key_json(key)

    # --- sync configs ---------------------------------------------------

    @app.route("/instances/<instance_id>/configs", methods=["GET"])
    @_endpoint()
    async def configs(self, call: _Call, instance_id: str) -> object:
        """List an instance's sync configs."""
        self._instance(instance_id)
        return [_config_json(c) for c in self._store.configs(instance_id)]

    @app.route("/instances/<instance_id>/configs", methods=["POST"])
    @_endpoint(status=201, body=True)
    async def create_config(self, call: _Call, instance_id: str) -> object:
        """Create a sync config; it starts online."""
        self._instance(instance_id)
        fields = _Fields(call.body, _CONFIG_FIELDS)
        if not fields.given("target"):
            raise _invalid("target", "target is required")
        now = self._now_ms()
        config = SyncConfig(
            instance_id=instance_id,
            biz_type=check_biz_type(fields.required_text("biz_type")),
            target=fields.choice("target", Target, Target.USER),
            range=fields.choice("range", Range, Range.SPECIFIED),
            description=fields.text("description"),
            multi_device=fields.flag("multi_device", True),
            persistent=fields.flag("persistent", True),
            resend_mode=fields.choice(
                "resend_mode", ResendMode, ResendMode.ALL
            ),
            threshold=fields.integer("threshold", 100),
            consistency=fields.flag("consistency", False),
            created_ms=now,
            updated_ms=now,
        ).validated()
        await self._store.add_config(config)
        self._engine.config_changed(instance_id)
        _log.info(
            "sync config {instance_id}/{biz_type} created by {user}",
            instance_id=instance_id,
            biz_type=config.biz_type,
            user=call.user,
        )
        return _config_json(config)

    @app.route("/instances/<instance_id>/configs/<biz_type>", methods=["GET"])
    @_endpoint()
    async def config(
        self, call: _Call, instance_id: str, biz_type: str
    ) -> object:
        """Show one sync config."""
        return _config_json(self._config(instance_id, biz_type))

    @app.route(
        "/instances/<instance_id>/configs/<biz_type>", methods=["PATCH"]
    )
    @_endpoint(body=True)
    async def change_config(
        self, call: _Call, instance_id: str, biz_type: str
    ) -> object:
        """Change a sync config; its biz type and target stay."""
        current = self._config(instance_id, biz_type)
        fields = _Fields(call.body, _CONFIG_FIELDS)
        changes: dict[str, object] = {}
        if fields.given("biz_type"):
            changes["biz_type"] = fields.text("biz_type")
        if fields.given("target"):
            changes["target"] = fields.choice("target", Target, current.target)
        if fields.given("description"):
            changes["description"] = fields.text("description")
        if fields.given("range"):
            changes["range"] = fields.choice("range", Range, current.range)
        for name in ("multi_device", "persistent", "consistency"):
            if fields.given(name):
                changes[name] = fields.flag(name, False)
        if fields.given("resend_mode"):
            changes["resend_mode"] = fields.choice(
                "resend_mode", ResendMode, current.resend_mode
            )
        if fields.given("threshold"):
            changes["threshold"] = fields.integer("threshold", 0)
        changes["updated_ms"] = self._now_ms()
        config = current.modified(**changes)
        return await self._config_saved(call, config, "changed")

    @app.route(
        "/instances/<instance_id>/configs/<biz_type>/offline",
        methods=["POST"],
    )
    @_endpoint()
    async def take_offline(
        self, call: _Call, instance_id: str, biz_type: str
    ) -> object:
        """Take a sync config offline: it refuses data, pushing pauses."""
        return await self._set_state(
            call, instance_id, biz_type, ConfigState.OFFLINE
        )

    @app.route(
        "/instances/<instance_id>/configs/<biz_type>/online",
        methods=["POST"],
    )
    @_endpoint()
    async def bring_online(
        self, call: _Call, instance_id: str, biz_type: str
    ) -> object:
        """Bring a sync config back online."""
        return await self._set_state(
            call, instance_id, biz_type, ConfigState.ONLINE
        )

    async def _set_state(
        self,
        call: _Call,
        instance_id: str,
        biz_type: str,
        state: ConfigState,
    ) -> object:
        current = self._config(instance_id, biz_type)
        if current.state is state:
            return _config_json(current)
        config = current.modified(state=state, updated_ms=self._now_ms())
        return await self._config_saved(call, config, f"put {state.value}")

    # --- sending by hand ------------------------------------------------

    @app.route("/instances/<instance_id>/send", methods=["POST"])
    @_endpoint(body=True)
    async def send(self, call: _Call, instance_id: str) -> object:
        """Send one op, as a backend would; answer the sender's result."""
        instance = self._instance(instance_id)
        fields = _Fields(call.body, _SEND_FIELDS)
        text = {name: fields.text(name) for name in _SEND_TEXT_FIELDS}
        request = SendRequest(
            instance_id=instance_id,
            biz_type=text["biz_type"],
            payload=_payload(fields),
            third_msg_id=text["third_msg_id"],
            link_token=text["link_token"],
            to_all=fields.flag("global", False),
            immediate=fields.flag("immediate", True),
            os_type=text["os_type"],
            app_min_version=text["app_min_version"],
            app_max_version=text["app_max_version"],
            device_id=text["device_id"],
            start_ms=_date(fields, "start_date", instance.time_zone),
            expire_ms=_date(fields, "expire_date", instance.time_zone),
        )
        result = await self._sender.send(request)
        _log.info(
            "console send by {user} to {instance_id}/{biz_type}: {code} "
            "op {op_id}",
            user=call.user,
            instance_id=instance_id,
            biz_type=request.biz_type,
            code=result.code.value,
            op_id=result.op_id,
        )
        return {
            "code": result.code.value,
            "success": result.success,
            "op_id": result.op_id if result.success else None,
            "reason": result.reason,
        }

    # --- users and devices ----------------------------------------------

    @app.route(
        "/instances/<instance_id>/devices/<path:device_id>", methods=["GET"]
    )
    @_endpoint()
    async def device(
        self, call: _Call, instance_id: str, device_id: str
    ) -> object:
        """Show a device: state, counters, recent pushes."""
        self._instance(instance_id)
        report = None
        if _nameable(device_id):
            report = device_report(
                self._engine, instance_id, device_id, self._now_ms()
            )
        if report is None:
            raise _not_found(f"device {device_id!r} was never seen")
        return _device_json(report)

    @app.route(
        "/instances/<instance_id>/users/<path:user_id>", methods=["GET"]
    )
    @_endpoint()
    async def user(
        self, call: _Call, instance_id: str, user_id: str
    ) -> object:
        """Show a user: devices, counters, recent pushes."""
        self._instance(instance_id)
        report = None
        if _nameable(user_id):
            report = user_report(
                self._engine, instance_id, user_id, self._now_ms()
            )
        if report is None or not (
            report.devices or report.days or report.pushes or report.online
        ):
            raise _not_found(f"user {user_id!r} was never seen")
        return _user_json(report)

    # --- service management ---------------------------------------------

    @app.route("/settings", methods=["GET"])
    @_endpoint()
    async def settings(self, call: _Call) -> object:
        """Show the server-wide settings."""
        return self._settings()

    @app.route("/settings", methods=["PATCH"])
    @_endpoint(body=True)
    async def change_settings(self, call: _Call) -> object:
        """Change server-wide settings: the signature switch."""
        fields = _Fields(call.body, ("signature_check",))
        if fields.given("signature_check"):
            check = fields.flag("signature_check", True)
            await self._store.put_setting(SIGNATURE_CHECK, check)
            _log.warn(
                "gateway signature check turned {state} by {user}",
                state="on" if check else "off",
                user=call.user,
            )
        return self._settings()

    def _settings(self) -> dict[str, Any]:
        check = self._store.setting(SIGNATURE_CHECK, True) is not False
        return {"signature_check": check}

    @app.route("/admins", methods=["GET"])
    @_endpoint()
    async def admins(self, call: _Call) -> object:
        """List the admin logins."""
        return [{"user": name} for name in self._store.admins()]

    @app.route("/admins", methods=["POST"])
    @_endpoint(status=201, body=True)
    async def create_admin(self, call: _Call) -> object:
        """Add an admin login."""
        fields = _Fields(call.body, ("user", "password"))
        name = check_link("user", fields.required_text("user"))
        password = fields.required_text("password")
        if len(password) < MIN_PASSWORD:
            raise _invalid(
                "password", f"must be at least {MIN_PASSWORD} characters"
            )
        await self._create_once(
            "admin",
            name,
            lambda: self._store.admin_hash(name) is not None,
            lambda: self._store.put_admin(name, hash_password(password)),
        )
        _log.info("admin {admin} added by {user}", admin=name, user=call.user)
        return {"user": name}


def _nameable(name: str) -> bool:
    # A name no user or device can have is not looked up at all.
    try:
        check_link("id", name)
    except ValidationError:
        return False
    return True
