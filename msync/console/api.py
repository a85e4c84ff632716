"""
The admin API (C{docs/admin-api.md}): JSON in and out, for the web
console and C{msync admin}.

L{ConsoleApi} serves the routes below C{/api/}: mount its L{resource}
there (its own routes are relative to that point).  Every route runs
through L{_endpoint}, which hands it to the one request path in
L{msync.console.api_calls}: who is calling, CSRF, bodies, and every
refusal or failure answered in JSON.

Reading bodies and fields, and the refusal L{ApiError}, are in
L{msync.console.api_bodies}; the JSON shape of each resource is in
L{msync.console.api_shapes}.  L{MAX_BODY} and L{ApiError} are importable
from here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from functools import partial, wraps
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound as NoRoute

from msync.auth import new_access_key, new_secret
from msync.console.api_bodies import (
    MAX_BODY,
    ApiError,
    Fields,
    app_key,
    date,
    invalid,
    not_found,
    payload,
    time_zone,
    validation_url,
)
from msync.console.api_calls import Action, Call, Calls, cookie_session
from msync.console.api_shapes import (
    config_json,
    device_json,
    instance_json,
    key_json,
    user_json,
)
from msync.console.sessions import (
    BadLogin,
    Busy,
    Locked,
    Lockout,
    Logins,
    Passwords,
    Session,
    Sessions,
    Tokens,
    session_cookie,
)
from msync.delivery.engine import Engine
from msync.delivery.lookup import device_report, user_report
from msync.delivery.sender import Sender, SendRequest
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
from msync.store import Store

__all__ = ["MAX_BODY", "ApiError", "ConsoleApi"]

_log = Logger()

#: The least length of an admin password.
MIN_PASSWORD = 8

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


# --- every route's way to the request path ---------------------------

_Route = Callable[..., Deferred[bytes]]


def _endpoint(
    *, status: int = 200, body: bool = False, login: bool = True
) -> Callable[[Action], _Route]:
    """
    Make an C{async} action into a route served by L{Calls.serve}.

    The action is called with the L{ConsoleApi}, the L{Call} and the
    route's path parts; what it returns is answered as JSON.

    @param status: The status of a successful answer.
    @param body: Whether the action reads a JSON body.
    @param login: Whether the caller must be logged in.
    """

    def decorate(action: Action) -> _Route:
        @wraps(action)
        def route(
            api: ConsoleApi, request: IRequest, **path: str
        ) -> Deferred[bytes]:
            return api._calls.serve(
                request,
                partial(action, api),
                path,
                status=status,
                body=body,
                login=login,
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
        run_blocking: Callable[[Callable[[], Any]], Deferred[Any]] = (
            deferToThread
        ),
    ) -> None:
        """
        @param secure_cookies: Mark the session cookie C{Secure}: set it
            when the console is served over HTTPS.
        @param run_blocking: Runs a function off the reactor thread and
            fires with its result: password hashing goes through it.
        """
        self._store = store
        self._engine = engine
        self._sender = sender
        self._clock = clock
        self._secure = secure_cookies
        self.sessions = Sessions(clock)
        """The live console sessions."""
        self.passwords = Passwords(run_blocking)
        """Password hashing and checks, off the reactor thread."""
        self.logins = Logins(store, Lockout(clock), self.passwords)
        """Password checks, with the lockout."""
        self.tokens = Tokens(store, clock)
        """API tokens."""
        self._calls = Calls(self.sessions, self.tokens)
        # Names being created right now: the store cannot refuse a
        # second instance or admin of the same name by itself.
        self._creating: set[tuple[str, str]] = set()

    def resource(self) -> IResource:
        """The routes as a resource, to mount at C{/api/}."""
        resource: IResource = self.app.resource()
        return resource

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def _session(self, request: IRequest) -> Session | None:
        return cookie_session(self.sessions, request)

    def _instance(self, instance_id: str) -> Instance:
        try:
            check_instance_id(instance_id)
        except ValidationError:
            raise not_found(f"no instance {instance_id!r}") from None
        instance = self._store.instance(instance_id)
        if instance is None:
            raise not_found(f"no instance {instance_id!r}")
        return instance

    def _config(self, instance_id: str, biz_type: str) -> SyncConfig:
        self._instance(instance_id)
        try:
            check_biz_type(biz_type)
        except ValidationError:
            raise not_found(f"no sync config {biz_type!r}") from None
        config = self._store.config(instance_id, biz_type)
        if config is None:
            raise not_found(f"{instance_id} has no sync config {biz_type}")
        return config

    async def _config_saved(
        self, call: Call, config: SyncConfig, what: str
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
        return config_json(config)

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
        return self._calls.no_route(request, failure)

    # --- logins, sessions, tokens ---------------------------------------

    @app.route("/login", methods=["POST"])
    @_endpoint(body=True, login=False)
    async def login(self, call: Call) -> object:
        """Log in with a password: start a session, set its cookie."""
        fields = Fields(call.body, ("user", "password"))
        user = fields.required_text("user")
        password = fields.required_text("password")
        request = call.request
        peer = str(request.getClientAddress())
        try:
            await self.logins.check(user, password)
        except Busy:
            raise _busy(request) from None
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
    async def logout(self, call: Call) -> object:
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
    async def session(self, call: Call) -> object:
        """Say who the session belongs to, and its CSRF token."""
        # Asking is not using: a page that polls this must not keep an
        # idle session alive.
        session = self._session(call.request)
        if session is None:
            raise ApiError(401, "unauthenticated", "no live session: log in")
        return {"user": session.user, "csrf": session.csrf}

    @app.route("/tokens", methods=["POST"])
    @_endpoint(status=201)
    async def create_token(self, call: Call) -> object:
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
    async def revoke_token(self, call: Call, token_id: str) -> object:
        """Revoke an API token."""
        if not await self.tokens.revoke(token_id):
            raise not_found(f"no token {token_id!r}")
        _log.info(
            "API token {token_id} revoked by {user}",
            token_id=token_id,
            user=call.user,
        )
        return {"id": token_id, "revoked": True}

    # --- instances ------------------------------------------------------

    @app.route("/instances", methods=["GET"])
    @_endpoint()
    async def instances(self, call: Call) -> object:
        """List every instance."""
        return [instance_json(i) for i in self._store.instances()]

    @app.route("/instances", methods=["POST"])
    @_endpoint(status=201, body=True)
    async def create_instance(self, call: Call) -> object:
        """Create an instance."""
        fields = Fields(
            call.body, ("instance_id", "time_zone", "validation_url")
        )
        instance = Instance(
            instance_id=check_instance_id(fields.required_text("instance_id")),
            time_zone=time_zone(fields.text("time_zone", "UTC")),
            validation_url=validation_url(fields.text("validation_url")),
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
        return instance_json(instance)

    @app.route("/instances/<instance_id>", methods=["GET"])
    @_endpoint()
    async def instance(self, call: Call, instance_id: str) -> object:
        """Show one instance."""
        return instance_json(self._instance(instance_id))

    @app.route("/instances/<instance_id>", methods=["PATCH"])
    @_endpoint(body=True)
    async def change_instance(self, call: Call, instance_id: str) -> object:
        """Change an instance's time zone, validation URL or app key."""
        current = self._instance(instance_id)
        fields = Fields(call.body, ("time_zone", "validation_url", "app_key"))
        instance = replace(
            current,
            time_zone=time_zone(fields.text("time_zone", current.time_zone)),
            validation_url=validation_url(
                fields.text("validation_url", current.validation_url)
            ),
            app_key=app_key(fields.text("app_key", current.app_key)),
        )
        await self._store.put_instance(instance)
        # Which fields, never the app key's value.
        _log.info(
            "instance {instance_id} changed by {user}: {fields}",
            instance_id=instance_id,
            user=call.user,
            fields=sorted(k for k in call.body if fields.given(k)),
        )
        return instance_json(instance)

    # --- access keys ----------------------------------------------------

    @app.route("/keys", methods=["GET"])
    @_endpoint()
    async def keys(self, call: Call) -> object:
        """List every access key, without secrets."""
        return [key_json(k) for k in self._store.access_keys()]

    @app.route("/keys", methods=["POST"])
    @_endpoint(status=201, body=True)
    async def create_key(self, call: Call) -> object:
        """Make an access key; its secret is shown this once."""
        names = Fields(call.body, ("instances",)).raw("instances")
        if not isinstance(names, list) or not names:
            raise invalid("instances", "instances must be a list of names")
        if len(names) > _MAX_INSTANCES_PER_KEY:
            raise invalid(
                "instances",
                f"at most {_MAX_INSTANCES_PER_KEY} instances per key",
            )
        instances: list[str] = []
        for name in names:
            if not isinstance(name, str):
                raise invalid("instances", "instances must be text")
            try:
                self._instance(name)
            except ApiError:
                raise invalid("instances", f"no instance {name!r}") from None
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
        return key_json(key, with_secret=True)

    @app.route("/keys/<access_key>/revoke", methods=["POST"])
    @_endpoint()
    async def revoke_key(self, call: Call, access_key: str) -> object:
        """Revoke an access key: the gateway refuses it from now on."""
        key = None
        if len(access_key) <= 128:
            key = self._store.access_key(access_key)
        if key is None:
            raise not_found(f"no access key {access_key!r}")
        if not key.revoked:
            key = replace(key, revoked=True)
            await self._store.put_access_key(key)
            _log.info(
                "access key {access_key} revoked by {user}",
                access_key=access_key,
                user=call.user,
            )
        return key_json(key)

    # --- sync configs ---------------------------------------------------

    @app.route("/instances/<instance_id>/configs", methods=["GET"])
    @_endpoint()
    async def configs(self, call: Call, instance_id: str) -> object:
        """List an instance's sync configs."""
        self._instance(instance_id)
        return [config_json(c) for c in self._store.configs(instance_id)]

    @app.route("/instances/<instance_id>/configs", methods=["POST"])
    @_endpoint(status=201, body=True)
    async def create_config(self, call: Call, instance_id: str) -> object:
        """Create a sync config; it starts online."""
        self._instance(instance_id)
        fields = Fields(call.body, _CONFIG_FIELDS)
        if not fields.given("target"):
            raise invalid("target", "target is required")
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
        return config_json(config)

    @app.route("/instances/<instance_id>/configs/<biz_type>", methods=["GET"])
    @_endpoint()
    async def config(
        self, call: Call, instance_id: str, biz_type: str
    ) -> object:
        """Show one sync config."""
        return config_json(self._config(instance_id, biz_type))

    @app.route(
        "/instances/<instance_id>/configs/<biz_type>", methods=["PATCH"]
    )
    @_endpoint(body=True)
    async def change_config(
        self, call: Call, instance_id: str, biz_type: str
    ) -> object:
        """Change a sync config; its biz type and target stay."""
        current = self._config(instance_id, biz_type)
        fields = Fields(call.body, _CONFIG_FIELDS)
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
        self, call: Call, instance_id: str, biz_type: str
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
        self, call: Call, instance_id: str, biz_type: str
    ) -> object:
        """Bring a sync config back online."""
        return await self._set_state(
            call, instance_id, biz_type, ConfigState.ONLINE
        )

    async def _set_state(
        self,
        call: Call,
        instance_id: str,
        biz_type: str,
        state: ConfigState,
    ) -> object:
        current = self._config(instance_id, biz_type)
        if current.state is state:
            return config_json(current)
        config = current.modified(state=state, updated_ms=self._now_ms())
        return await self._config_saved(call, config, f"put {state.value}")

    # --- sending by hand ------------------------------------------------

    @app.route("/instances/<instance_id>/send", methods=["POST"])
    @_endpoint(body=True)
    async def send(self, call: Call, instance_id: str) -> object:
        """Send one op, as a backend would; answer the sender's result."""
        instance = self._instance(instance_id)
        fields = Fields(call.body, _SEND_FIELDS)
        text = {name: fields.text(name) for name in _SEND_TEXT_FIELDS}
        request = SendRequest(
            instance_id=instance_id,
            biz_type=text["biz_type"],
            payload=payload(fields),
            third_msg_id=text["third_msg_id"],
            link_token=text["link_token"],
            to_all=fields.flag("global", False),
            immediate=fields.flag("immediate", True),
            os_type=text["os_type"],
            app_min_version=text["app_min_version"],
            app_max_version=text["app_max_version"],
            device_id=text["device_id"],
            start_ms=date(fields, "start_date", instance.time_zone),
            expire_ms=date(fields, "expire_date", instance.time_zone),
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
        self, call: Call, instance_id: str, device_id: str
    ) -> object:
        """Show a device: state, counters, recent pushes."""
        self._instance(instance_id)
        report = None
        if _nameable(device_id):
            report = device_report(
                self._engine, instance_id, device_id, self._now_ms()
            )
        if report is None:
            raise not_found(f"device {device_id!r} was never seen")
        return device_json(report)

    @app.route(
        "/instances/<instance_id>/users/<path:user_id>", methods=["GET"]
    )
    @_endpoint()
    async def user(self, call: Call, instance_id: str, user_id: str) -> object:
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
            raise not_found(f"user {user_id!r} was never seen")
        return user_json(report)

    # --- service management ---------------------------------------------

    @app.route("/settings", methods=["GET"])
    @_endpoint()
    async def settings(self, call: Call) -> object:
        """Show the server-wide settings."""
        return self._settings()

    @app.route("/settings", methods=["PATCH"])
    @_endpoint(body=True)
    async def change_settings(self, call: Call) -> object:
        """Change server-wide settings: the signature switch."""
        fields = Fields(call.body, ("signature_check",))
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
    async def admins(self, call: Call) -> object:
        """List the admin logins."""
        return [{"user": name} for name in self._store.admins()]

    @app.route("/admins", methods=["POST"])
    @_endpoint(status=201, body=True)
    async def create_admin(self, call: Call) -> object:
        """Add an admin login."""
        fields = Fields(call.body, ("user", "password"))
        name = check_link("user", fields.required_text("user"))
        password = fields.required_text("password")
        if len(password) < MIN_PASSWORD:
            raise invalid(
                "password", f"must be at least {MIN_PASSWORD} characters"
            )
        try:
            hashed = await self.passwords.hash(password)
        except Busy:
            raise _busy(call.request) from None
        await self._create_once(
            "admin",
            name,
            lambda: self._store.admin_hash(name) is not None,
            lambda: self._store.put_admin(name, hashed),
        )
        _log.info("admin {admin} added by {user}", admin=name, user=call.user)
        return {"user": name}


def _busy(request: IRequest) -> ApiError:
    # Too many password hashes wait already (see Passwords).
    request.setHeader(b"retry-after", b"1")
    return ApiError(
        503, "busy", "too many password checks at once; try again soon"
    )


def _nameable(name: str) -> bool:
    # A name no user or device can have is not looked up at all.
    try:
        check_link("id", name)
    except ValidationError:
        return False
    return True
