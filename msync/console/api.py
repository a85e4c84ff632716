"""
The admin API (C{docs/admin-api.md}): JSON in and out, for the web
console and C{msync admin}.

L{ConsoleApi} serves the routes below C{/api/}: mount its L{resource}
there (its own routes are relative to that point).  It holds the one
Klein app and its route table: each route's URL, method, success status,
and whether it reads a body or needs a login.  Every route is served by
L{Calls.serve<msync.console.api_calls.Calls.serve>}, the one request
path (who is calling, CSRF, body limits, refusals and failures answered
in JSON), which runs the route's action in the module for its concept:

  - L{msync.console.api_logins}: logins, sessions, tokens, admins;
  - L{msync.console.api_instances}: instances and access keys;
  - L{msync.console.api_configs}: sync configs;
  - L{msync.console.api_delivery}: sending by hand, user and device
    reports;
  - L{msync.console.api_settings}: server-wide settings.

Reading bodies and fields, and the refusal L{ApiError}, are in
L{msync.console.api_bodies}; the JSON shape of each resource is in
L{msync.console.api_shapes}.  L{MAX_BODY} and L{ApiError} are importable
from here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound as NoRoute

from msync.console.api_bodies import MAX_BODY, ApiError
from msync.console.api_calls import Calls
from msync.console.api_configs import ConfigApi
from msync.console.api_delivery import DeliveryApi
from msync.console.api_instances import InstanceApi, KeyApi
from msync.console.api_logins import LoginApi
from msync.console.api_settings import SettingsApi
from msync.console.sessions import Lockout, Logins, Passwords, Sessions, Tokens
from msync.delivery.engine import Engine
from msync.delivery.sender import Sender
from msync.store import Store

__all__ = ["MAX_BODY", "ApiError", "ConsoleApi"]

# What every route returns: its JSON answer, once the action is done.
_Answer = Deferred[bytes]


class ConsoleApi:
    """
    The admin API's routes, over the store, the delivery engine, the
    sender and a clock; see the module docstring.

    Each route below only names its action and how the request path
    should take it; the action's docstring says what it does.
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
        self._clock = clock
        self.sessions = Sessions(clock)
        """The live console sessions."""
        self.passwords = Passwords(run_blocking)
        """Password hashing and checks, off the reactor thread."""
        self.logins = Logins(store, Lockout(clock), self.passwords)
        """Password checks, with the lockout."""
        self.tokens = Tokens(store, clock)
        """API tokens."""

        self._calls = Calls(self.sessions, self.tokens)
        self._login_api = LoginApi(
            store,
            self.sessions,
            self.logins,
            self.passwords,
            self.tokens,
            secure_cookies=secure_cookies,
        )
        self._instance_api = InstanceApi(store, self._now_ms)
        self._key_api = KeyApi(store, self._now_ms)
        self._config_api = ConfigApi(store, engine, self._now_ms)
        self._delivery_api = DeliveryApi(store, engine, sender, self._now_ms)
        self._settings_api = SettingsApi(store)

    def resource(self) -> IResource:
        """The routes as a resource, to mount at C{/api/}."""
        resource: IResource = self.app.resource()
        return resource

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    # --- routes not found --------------------------------------------------

    @app.handle_errors(NoRoute, MethodNotAllowed)
    def no_route(self, request: IRequest, failure: Failure) -> bytes:
        """Answer an unknown path or method in JSON like every refusal."""
        return self._calls.no_route(request, failure)

    # --- logins, sessions, tokens ------------------------------------------

    @app.route("/login", methods=["POST"])
    def login(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(
            request, self._login_api.login, path, body=True, login=False
        )

    @app.route("/logout", methods=["POST"])
    def logout(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(request, self._login_api.logout, path)

    @app.route("/session", methods=["GET"])
    def session(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(
            request, self._login_api.session, path, login=False
        )

    @app.route("/tokens", methods=["POST"])
    def create_token(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(
            request, self._login_api.create_token, path, status=201
        )

    @app.route("/tokens/<token_id>", methods=["DELETE"])
    def revoke_token(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(request, self._login_api.revoke_token, path)

    # --- instances ---------------------------------------------------------

    @app.route("/instances", methods=["GET"])
    def instances(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(request, self._instance_api.instances, path)

    @app.route("/instances", methods=["POST"])
    def create_instance(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(
            request,
            self._instance_api.create_instance,
            path,
            status=201,
            body=True,
        )

    @app.route("/instances/<instance_id>", methods=["GET"])
    def instance(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(request, self._instance_api.instance, path)

    @app.route("/instances/<instance_id>", methods=["PATCH"])
    def change_instance(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(
            request, self._instance_api.change_instance, path, body=True
        )

    # --- access keys -------------------------------------------------------

    @app.route("/keys", methods=["GET"])
    def keys(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(request, self._key_api.keys, path)

    @app.route("/keys", methods=["POST"])
    def create_key(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(
            request, self._key_api.create_key, path, status=201, body=True
        )

    @app.route("/keys/<access_key>/revoke", methods=["POST"])
    def revoke_key(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(request, self._key_api.revoke_key, path)

    # --- sync configs ------------------------------------------------------

    @app.route("/instances/<instance_id>/configs", methods=["GET"])
    def configs(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(request, self._config_api.configs, path)

    @app.route("/instances/<instance_id>/configs", methods=["POST"])
    def create_config(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(
            request,
            self._config_api.create_config,
            path,
            status=201,
            body=True,
        )

    @app.route("/instances/<instance_id>/configs/<biz_type>", methods=["GET"])
    def config(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(request, self._config_api.config, path)

    @app.route(
        "/instances/<instance_id>/configs/<biz_type>", methods=["PATCH"]
    )
    def change_config(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(
            request, self._config_api.change_config, path, body=True
        )

    @app.route(
        "/instances/<instance_id>/configs/<biz_type>/offline", methods=["POST"]
    )
    def take_offline(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(request, self._config_api.take_offline, path)

    @app.route(
        "/instances/<instance_id>/configs/<biz_type>/online", methods=["POST"]
    )
    def bring_online(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(request, self._config_api.bring_online, path)

    # --- sending by hand ---------------------------------------------------

    @app.route("/instances/<instance_id>/send", methods=["POST"])
    def send(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(
            request, self._delivery_api.send, path, body=True
        )

    # --- users and devices -------------------------------------------------

    @app.route(
        "/instances/<instance_id>/devices/<path:device_id>", methods=["GET"]
    )
    def device(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(request, self._delivery_api.device, path)

    @app.route(
        "/instances/<instance_id>/users/<path:user_id>", methods=["GET"]
    )
    def user(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(request, self._delivery_api.user, path)

    # --- server-wide settings ----------------------------------------------

    @app.route("/settings", methods=["GET"])
    def settings(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(request, self._settings_api.settings, path)

    @app.route("/settings", methods=["PATCH"])
    def change_settings(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(
            request, self._settings_api.change_settings, path, body=True
        )

    # --- admin logins ------------------------------------------------------

    @app.route("/admins", methods=["GET"])
    def admins(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(request, self._login_api.admins, path)

    @app.route("/admins", methods=["POST"])
    def create_admin(self, request: IRequest, **path: str) -> _Answer:
        return self._calls.serve(
            request, self._login_api.create_admin, path, status=201, body=True
        )
