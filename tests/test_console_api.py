"""
The admin API (docs/admin-api.md) in memory: L{ConsoleApi} mounted at
C{/api/} and called through C{StubTreq}, over the delivery world.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from klein import Klein
from treq.testing import StubTreq
from twisted.internet.defer import succeed
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from msync.console.api import MAX_BODY, ConsoleApi
from msync.delivery.sender import parse_date
from msync.model import (
    MAX_PAYLOAD,
    ConfigState,
    Instance,
    Scope,
    ScopeKind,
    Target,
)
from tests.delivery_world import INSTANCE, Sync, World

PASSWORD = "correct horse battery"


def cheap_hash(password: str) -> str:
    """
    A hash in L{hash_password}'s format with a tiny scrypt cost: checking
    real ones takes tens of milliseconds, and most tests log in.
    """
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=16, r=8, p=1)
    encoded = [base64.b64encode(b).decode() for b in (salt, digest)]
    return "$".join(["scrypt", "16", "8", "1", *encoded])


ADMIN_HASH = cheap_hash(PASSWORD)
_UNSET: Any = object()


@dataclass
class Reply:
    """One answer of the API."""

    status: int
    body: Any
    headers: Headers

    @property
    def error(self) -> tuple[int, str, str | None]:
        """The status, error code and field of a refusal."""
        return self.status, self.body["error"], self.body.get("field")

    def cookies(self) -> list[str]:
        raw = self.headers.getRawHeaders(b"set-cookie", [])
        return [c.decode() for c in raw]


class Console:
    """A L{ConsoleApi} over a L{World}, and a browser-like caller."""

    def __init__(self, tc: SynchronousTestCase, **kw: Any) -> None:
        self.tc = tc
        self.world = World(tc)
        # Password work runs at once, in the test's thread, unless a
        # test brings its own runner.
        kw.setdefault("run_blocking", lambda fn: succeed(fn()))
        self.api = ConsoleApi(
            self.world.store,
            self.world.engine,
            self.world.sender,
            self.world.clock,
            **kw,
        )
        self.root = Resource()
        self.root.putChild(b"api", self.api.resource())
        tc.successResultOf(self.world.store.put_admin("admin", ADMIN_HASH))
        self.session = ""
        self.csrf = ""
        self.token = ""

    def request(
        self,
        method: str,
        path: str,
        body: Any = _UNSET,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
        session: str | None = None,
        csrf: str | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """
        Call the API; by default as the logged-in session (with its CSRF
        token) or with the token, whichever is set.
        """
        session = self.session if session is None else session
        csrf = self.csrf if csrf is None else csrf
        token = self.token if token is None else token
        sent: dict[str, str] = {}
        if token:
            sent["Authorization"] = f"Bearer {token}"
        elif session:
            sent["Cookie"] = f"msync_session={session}"
            if csrf:
                sent["X-CSRF-Token"] = csrf
        if body is not _UNSET:
            raw = json.dumps(body).encode()
        if raw is not None:
            sent["Content-Type"] = content_type
        sent.update(headers or {})
        # A fresh client each time: no cookie jar carries anything over.
        http = StubTreq(self.root)
        response = self.tc.successResultOf(
            http.request(
                method,
                "http://console.test/api" + path,
                data=raw,
                headers={k: [v] for k, v in sent.items()},
            )
        )
        content = self.tc.successResultOf(http.content(response))
        return Reply(
            response.code,
            json.loads(content) if content else None,
            response.headers,
        )

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = _UNSET, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def patch(self, path: str, body: Any = _UNSET, **kw: Any) -> Reply:
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.request("DELETE", path, **kw)

    def stranger(self) -> Console:
        """Another caller of the same API, not logged in."""
        other = copy.copy(self)
        other.session = other.csrf = other.token = ""
        return other

    def login(self, user: str = "admin", password: str = PASSWORD) -> Reply:
        """Log in; on success, later calls carry the session."""
        r = self.post(
            "/login", {"user": user, "password": password}, session=""
        )
        if r.status == 200:
            cookie = next(c for c in r.cookies() if "msync_session=" in c)
            self.session = cookie.split(";")[0].split("=", 1)[1]
            self.csrf = r.body["csrf"]
        return r

    def make_config(self, biz: str = "UCHAT", **kw: Any) -> Reply:
        body = {"biz_type": biz, "target": "user", **kw}
        return self.post(f"/instances/{INSTANCE}/configs", body)


class ApiCase(SynchronousTestCase):
    """A console with the admin logged in."""

    def setUp(self) -> None:
        self.c = Console(self)
        self.world = self.c.world
        self.store = self.world.store
        self.clock = self.world.clock
        self.assertEqual(self.c.login().status, 200)

    def assertRefused(
        self,
        reply: Reply,
        status: int,
        error: str,
        field: str | None = None,
    ) -> None:
        self.assertEqual(reply.error, (status, error, field), reply.body)
        self.assertIsInstance(reply.body["message"], str)


class LoginTests(ApiCase):
    """Logging in and out, sessions and their expiry."""

    def test_login_answers_user_and_csrf(self) -> None:
        """A good login answers the user and a CSRF token, and sets an
        HttpOnly, SameSite=Strict session cookie for the whole site."""
        r = self.c.stranger().login()
        self.assertEqual(r.status, 200)
        self.assertEqual(set(r.body), {"user", "csrf"})
        self.assertEqual(r.body["user"], "admin")
        (cookie,) = r.cookies()
        attributes = cookie.split("; ")
        self.assertTrue(attributes[0].startswith("msync_session="))
        self.assertGreaterEqual(len(attributes[0]), len("msync_session=") + 43)
        self.assertEqual(
            set(attributes[1:]), {"HttpOnly", "SameSite=Strict", "Path=/"}
        )

    def test_secure_cookie(self) -> None:
        """With secure_cookies the session cookie is marked Secure."""
        (cookie,) = Console(self, secure_cookies=True).login().cookies()
        self.assertIn("; Secure", cookie)

    def test_wrong_password(self) -> None:
        """A wrong password is refused with 401 and no cookie."""
        r = self.c.stranger().login(password="not the password")
        self.assertRefused(r, 401, "unauthenticated")
        self.assertEqual(r.cookies(), [])

    def test_unknown_user(self) -> None:
        """An unknown user is refused exactly as a wrong password is."""
        wrong = self.c.stranger().login(password="not the password")
        unknown = self.c.stranger().login(user="nobody")
        self.assertEqual(unknown.body, wrong.body)
        self.assertEqual(unknown.status, 401)

    def test_login_fields(self) -> None:
        """A login without a password, or with a number for one, is
        refused as invalid, naming the field."""
        r = self.c.post("/login", {"user": "admin"}, session="")
        self.assertRefused(r, 400, "invalid", "password")
        r = self.c.post("/login", {"user": "admin", "password": 7})
        self.assertRefused(r, 400, "invalid", "password")

    def test_session_route(self) -> None:
        """GET /api/session names the user and the session's CSRF token."""
        r = self.c.get("/session")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, {"user": "admin", "csrf": self.c.csrf})

    def test_no_session(self) -> None:
        """Without a session or token every route but login is refused."""
        for method, path in [
            ("GET", "/session"),
            ("GET", "/instances"),
            ("GET", "/settings"),
            ("POST", "/tokens"),
            ("POST", "/logout"),
        ]:
            r = self.c.request(method, path, session="-")
            self.assertRefused(r, 401, "unauthenticated")

    def test_idle_expiry(self) -> None:
        """A session used within 30 minutes lives on; 30 minutes without
        use end it."""
        self.clock.advance(29 * 60)
        self.assertEqual(self.c.get("/instances").status, 200)
        self.clock.advance(29 * 60)
        self.assertEqual(self.c.get("/instances").status, 200)
        self.clock.advance(30 * 60)
        self.assertRefused(self.c.get("/instances"), 401, "unauthenticated")
        self.assertRefused(self.c.get("/session"), 401, "unauthenticated")

    def test_absolute_expiry(self) -> None:
        """A session ends 12 hours after login however much it is used."""
        for _ in range(12 * 3 - 1):
            self.clock.advance(20 * 60)
            self.assertEqual(self.c.get("/instances").status, 200)
        self.clock.advance(20 * 60)
        self.assertRefused(self.c.get("/instances"), 401, "unauthenticated")

    def test_asking_is_not_using(self) -> None:
        """Polling GET /api/session does not keep an idle session alive."""
        for _ in range(4):
            self.clock.advance(10 * 60)
            self.c.get("/session")
        self.assertRefused(self.c.get("/session"), 401, "unauthenticated")

    def test_failed_csrf_is_not_use(self) -> None:
        """A change refused for its CSRF token does not extend the
        session."""
        self.clock.advance(20 * 60)
        self.c.post("/tokens", csrf="wrong")
        self.clock.advance(10 * 60)
        self.assertRefused(self.c.get("/instances"), 401, "unauthenticated")

    def test_logout(self) -> None:
        """Logging out ends the session and tells the browser to forget
        the cookie."""
        r = self.c.post("/logout")
        self.assertEqual((r.status, r.body), (200, {}))
        (cookie,) = r.cookies()
        self.assertTrue(cookie.startswith("msync_session=;"))
        self.assertIn("Max-Age=0", cookie)
        self.assertRefused(self.c.get("/instances"), 401, "unauthenticated")

    def test_fresh_session_each_login(self) -> None:
        """Each login makes a new session id and ends the one it came
        with."""
        old = self.c.session
        r = self.c.post(
            "/login", {"user": "admin", "password": PASSWORD}, csrf=""
        )
        self.assertEqual(r.status, 200)
        new = r.cookies()[0].split(";")[0].split("=", 1)[1]
        self.assertNotEqual(new, old)
        self.assertEqual(self.c.get("/instances", session=new).status, 200)
        r = self.c.get("/instances", session=old)
        self.assertRefused(r, 401, "unauthenticated")

    def test_sessions_are_independent(self) -> None:
        """Two logins give two live sessions with different CSRF tokens."""
        other = self.c.stranger()
        other.login()
        self.assertNotEqual(other.csrf, self.c.csrf)
        self.assertEqual(self.c.get("/instances").status, 200)
        self.assertRefused(
            self.c.post("/tokens", csrf=other.csrf), 403, "csrf"
        )


class LockoutTests(ApiCase):
    """Five failed logins in a minute lock a user out for a minute."""

    def fail_logins(self, n: int, user: str = "admin") -> None:
        for _ in range(n):
            r = self.c.stranger().login(user=user, password="guess")
            self.assertRefused(r, 401, "unauthenticated")

    def test_locked_after_five(self) -> None:
        """After five failures even the right password is refused with
        429 and a Retry-After, until the minute has passed."""
        self.fail_logins(5)
        c = self.c.stranger()
        r = c.login()
        self.assertRefused(r, 429, "locked")
        self.assertEqual(r.headers.getRawHeaders(b"retry-after"), [b"60"])
        self.clock.advance(59)
        self.assertRefused(c.login(), 429, "locked")
        self.clock.advance(1)
        self.assertEqual(c.login().status, 200)

    def test_other_users_unaffected(self) -> None:
        """A lockout is per user."""
        self.successResultOf(self.store.put_admin("other", ADMIN_HASH))
        self.c.post("/logout")
        for _ in range(5):
            self.c.login(password="guess")
        self.assertEqual(self.c.login(user="other").status, 200)

    def test_failures_outside_the_window(self) -> None:
        """Failures more than a minute apart do not add up to a lock."""
        for _ in range(3):
            self.fail_logins(4)
            self.clock.advance(61)
        c = self.c.stranger()
        self.assertEqual(c.login().status, 200)

    def test_success_clears_failures(self) -> None:
        """A good login forgets the failures before it."""
        self.fail_logins(4)
        self.assertEqual(self.c.login().status, 200)
        self.fail_logins(4)
        self.assertEqual(self.c.login().status, 200)

    def test_unknown_users_lock_too(self) -> None:
        """Unknown names lock like known ones, so a lock reveals nothing."""
        self.fail_logins(5, user="ghost")
        r = self.c.stranger().login(user="ghost", password="guess")
        self.assertRefused(r, 429, "locked")


class TokenTests(ApiCase):
    """API tokens: made once, used as Bearer, revoked."""

    def make(self) -> dict[str, str]:
        r = self.c.post("/tokens")
        self.assertEqual(r.status, 201)
        self.assertEqual(set(r.body), {"token", "id"})
        body: dict[str, str] = r.body
        return body

    def test_token_works_without_csrf(self) -> None:
        """A token authenticates changes with no cookie and no CSRF."""
        token = self.make()["token"]
        r = self.c.post("/instances", {"instance_id": "WS_other"}, token=token)
        self.assertEqual(r.status, 201)

    def test_only_the_hash_is_kept(self) -> None:
        """The store keeps the token's SHA-256 digest, never the token."""
        made = self.make()
        digest, admin = self.store.token(made["id"]) or (b"", "")
        self.assertEqual(admin, "admin")
        self.assertEqual(
            digest, hashlib.sha256(made["token"].encode()).digest()
        )

    def test_revoke(self) -> None:
        """A revoked token is refused; revoking it again is 404."""
        made = self.make()
        r = self.c.delete(f"/tokens/{made['id']}")
        self.assertEqual(r.body, {"id": made["id"], "revoked": True})
        r = self.c.get("/instances", token=made["token"])
        self.assertRefused(r, 401, "unauthenticated")
        self.assertRefused(
            self.c.delete(f"/tokens/{made['id']}"), 404, "not_found"
        )

    def test_revoke_with_the_token_itself(self) -> None:
        """A token can revoke itself, and is refused from then on."""
        made = self.make()
        r = self.c.delete(f"/tokens/{made['id']}", token=made["token"])
        self.assertEqual(r.status, 200)
        r = self.c.get("/instances", token=made["token"])
        self.assertRefused(r, 401, "unauthenticated")

    def test_bad_tokens(self) -> None:
        """Wrong, malformed and altered tokens are refused."""
        made = self.make()
        altered = made["token"][:-1] + (
            "A" if made["token"][-1] != "A" else "B"
        )
        for header in [
            f"Bearer {altered}",
            "Bearer nonsense",
            "Bearer " + made["id"],
            f"Basic {made['token']}",
            "Bearer " + "x" * 5000,
        ]:
            r = self.c.get("/instances", headers={"Authorization": header})
            self.assertRefused(r, 401, "unauthenticated")

    def test_bad_token_beats_good_cookie(self) -> None:
        """A request with a bad token is refused even with a live
        session cookie."""
        r = self.c.get(
            "/instances", headers={"Authorization": "Bearer nonsense"}
        )
        self.assertRefused(r, 401, "unauthenticated")

    def test_tokens_need_a_login(self) -> None:
        """Making a token needs a login."""
        self.assertRefused(
            self.c.post("/tokens", session="-"), 401, "unauthenticated"
        )

    def test_token_shown_once(self) -> None:
        """No route shows a token again: each POST makes a new one."""
        first, second = self.make(), self.make()
        self.assertNotEqual(first["token"], second["token"])
        self.assertNotEqual(first["id"], second["id"])


class CsrfTests(ApiCase):
    """Every change through a session needs the session's CSRF token."""

    def setUp(self) -> None:
        super().setUp()
        self.c.make_config()
        self.key = self.c.post("/keys", {"instances": [INSTANCE]}).body
        self.token_id = self.c.post("/tokens").body["id"]

    def changes(self) -> list[tuple[str, str, Any]]:
        config = f"/instances/{INSTANCE}/configs/UCHAT"
        return [
            ("POST", "/logout", _UNSET),
            ("POST", "/tokens", _UNSET),
            ("DELETE", f"/tokens/{self.token_id}", _UNSET),
            ("POST", "/instances", {"instance_id": "WS_new"}),
            ("PATCH", f"/instances/{INSTANCE}", {"time_zone": "Asia/Tokyo"}),
            ("POST", "/keys", {"instances": [INSTANCE]}),
            ("POST", f"/keys/{self.key['access_key']}/revoke", _UNSET),
            (
                "POST",
                f"/instances/{INSTANCE}/configs",
                {"biz_type": "NEW", "target": "user"},
            ),
            ("PATCH", config, {"description": "changed"}),
            ("POST", config + "/offline", _UNSET),
            ("POST", config + "/online", _UNSET),
            (
                "POST",
                f"/instances/{INSTANCE}/send",
                {"biz_type": "UCHAT", "link_token": "u", "payload": "x"},
            ),
            ("PATCH", "/settings", {"signature_check": False}),
            ("POST", "/admins", {"user": "eve", "password": "12345678"}),
        ]

    def test_missing_csrf(self) -> None:
        """Each kind of change without X-CSRF-Token is refused with 403."""
        for method, path, body in self.changes():
            r = self.c.request(method, path, body, csrf="")
            self.assertEqual(r.error, (403, "csrf", None), (method, path))

    def test_wrong_csrf(self) -> None:
        """Each kind of change with another X-CSRF-Token is refused."""
        for method, path, body in self.changes():
            r = self.c.request(method, path, body, csrf="x" * 43)
            self.assertEqual(r.error, (403, "csrf", None), (method, path))

    def test_refused_changes_change_nothing(self) -> None:
        """Changes refused for CSRF leave everything as it was."""
        for method, path, body in self.changes():
            self.c.request(method, path, body, csrf="")
        self.assertIsNone(self.store.instance("WS_new"))
        instance = self.store.instance(INSTANCE)
        assert instance is not None
        self.assertEqual(instance.time_zone, "UTC")
        self.assertEqual(len(self.store.access_keys()), 1)
        config = self.store.config(INSTANCE, "UCHAT")
        assert config is not None
        self.assertEqual((config.description, config.online), ("", True))
        self.assertIsNone(self.store.config(INSTANCE, "NEW"))
        self.assertEqual(self.store.admins(), ["admin"])
        self.assertEqual(self.c.get("/settings").body["signature_check"], True)
        self.assertIsNotNone(self.store.token(self.token_id))
        self.assertEqual(self.c.get("/session").status, 200)

    def test_reads_need_no_csrf(self) -> None:
        """GET requests need no CSRF token."""
        self.assertEqual(self.c.get("/instances", csrf="").status, 200)


class BodyTests(ApiCase):
    """Bodies: JSON objects, at most 64 KiB; routes that do not exist."""

    def test_not_json(self) -> None:
        """A body that is not application/json is refused with 415."""
        for content_type in [
            "text/plain",
            "application/x-www-form-urlencoded",
        ]:
            r = self.c.post(
                "/instances",
                raw=b'{"instance_id": "WS_x"}',
                content_type=content_type,
            )
            self.assertRefused(r, 415, "not_json")

    def test_json_with_charset(self) -> None:
        """application/json with a charset parameter is JSON."""
        r = self.c.post(
            "/instances",
            raw=b'{"instance_id": "WS_x"}',
            content_type="Application/JSON; charset=utf-8",
        )
        self.assertEqual(r.status, 201)

    def test_no_body(self) -> None:
        """A route that reads a body refuses a missing one as not JSON."""
        self.assertRefused(self.c.post("/instances"), 415, "not_json")

    def test_too_large(self) -> None:
        """A body over 64 KiB is refused with 413."""
        raw = b'{"instance_id": "' + b"x" * MAX_BODY + b'"}'
        self.assertRefused(
            self.c.post("/instances", raw=raw), 413, "too_large"
        )

    def test_at_the_limit(self) -> None:
        """A body of exactly 64 KiB is read (and judged on its fields)."""
        head, tail = b'{"description": "', b'"}'
        raw = head + b"x" * (MAX_BODY - len(head) - len(tail)) + tail
        self.assertEqual(len(raw), MAX_BODY)
        r = self.c.patch(f"/instances/{INSTANCE}/configs/X", raw=raw)
        self.assertRefused(r, 404, "not_found")
        self.c.make_config("X")
        r = self.c.patch(f"/instances/{INSTANCE}/configs/X", raw=raw)
        self.assertRefused(r, 400, "invalid", "description")

    def test_bad_json(self) -> None:
        """Malformed JSON, non-objects, NaN, non-UTF-8 and absurd nesting
        are refused with 400 bad_json."""
        for raw in [
            b"{",
            b"[1, 2]",
            b'"text"',
            b"null",
            b'{"threshold": NaN}',
            b'{"description": "\xff"}',
            b"[" * 30_000 + b"]" * 30_000,
            b"",
        ]:
            r = self.c.post(f"/instances/{INSTANCE}/configs", raw=raw)
            self.assertEqual(r.error, (400, "bad_json", None), raw[:20])

    def test_unknown_field(self) -> None:
        """A field the route does not know is refused, naming it."""
        r = self.c.post("/instances", {"instance_id": "WS_x", "colour": 1})
        self.assertRefused(r, 400, "invalid", "colour")

    def test_unknown_route(self) -> None:
        """An unknown path is a JSON 404."""
        r = self.c.get("/nothing/here")
        self.assertRefused(r, 404, "not_found")
        self.assertEqual(
            r.headers.getRawHeaders(b"content-type"), [b"application/json"]
        )

    def test_wrong_method(self) -> None:
        """A known path with a wrong method is a JSON 405 naming the
        allowed methods."""
        r = self.c.delete("/instances")
        self.assertRefused(r, 405, "not_allowed")
        (allow,) = r.headers.getRawHeaders(b"allow")
        self.assertIn(b"POST", allow)

    def test_internal_error(self) -> None:
        """An unexpected failure is logged and answered 500 internal,
        with no traceback."""

        def broken() -> list[Instance]:
            raise RuntimeError("secret internals")

        self.patch(self.store, "instances", broken)
        r = self.c.get("/instances")
        self.assertEqual(
            r.body, {"error": "internal", "message": "internal error"}
        )
        self.assertEqual(r.status, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_answers_are_not_cached(self) -> None:
        """Every answer says no-store and nosniff."""
        for r in [self.c.get("/instances"), self.c.get("/nothing")]:
            self.assertEqual(
                r.headers.getRawHeaders(b"cache-control"), [b"no-store"]
            )
            self.assertEqual(
                r.headers.getRawHeaders(b"x-content-type-options"),
                [b"nosniff"],
            )


class InstanceTests(ApiCase):
    """Instances: list, create, show, change."""

    def test_list(self) -> None:
        """The list holds the world's instance in the documented shape."""
        r = self.c.get("/instances")
        self.assertEqual(
            r.body,
            [
                {
                    "instance_id": INSTANCE,
                    "time_zone": "UTC",
                    "validation_url": "",
                    "app_key_set": False,
                    "created": 0,
                }
            ],
        )

    def test_create(self) -> None:
        """Creating answers 201 with the instance, stamped now."""
        r = self.c.post(
            "/instances",
            {
                "instance_id": "WS_shop",
                "time_zone": "Asia/Shanghai",
                "validation_url": "https://tenant.example/validate",
            },
        )
        self.assertEqual(r.status, 201)
        self.assertEqual(
            r.body,
            {
                "instance_id": "WS_shop",
                "time_zone": "Asia/Shanghai",
                "validation_url": "https://tenant.example/validate",
                "app_key_set": False,
                "created": int(self.clock.seconds() * 1000),
            },
        )
        self.assertEqual(self.c.get("/instances/WS_shop").body, r.body)

    def test_create_defaults(self) -> None:
        """An instance created with only its id is in UTC."""
        r = self.c.post("/instances", {"instance_id": "WS_plain"})
        self.assertEqual(r.body["time_zone"], "UTC")

    def test_exists(self) -> None:
        """Creating an instance that exists is refused with 409."""
        r = self.c.post("/instances", {"instance_id": INSTANCE})
        self.assertRefused(r, 409, "exists")

    def test_invalid(self) -> None:
        """Bad ids, zones and URLs are refused, naming the field."""
        for body, name in [
            ({}, "instance_id"),
            ({"instance_id": "has space"}, "instance_id"),
            ({"instance_id": 5}, "instance_id"),
            ({"instance_id": "WS_a", "time_zone": "Mars/Base"}, "time_zone"),
            ({"instance_id": "WS_a", "time_zone": "../etc"}, "time_zone"),
            (
                {"instance_id": "WS_a", "validation_url": "ftp://x/"},
                "validation_url",
            ),
            (
                {"instance_id": "WS_a", "validation_url": "not a url"},
                "validation_url",
            ),
        ]:
            r = self.c.post("/instances", body)
            self.assertEqual(r.error, (400, "invalid", name), body)
        self.assertIsNone(self.store.instance("WS_a"))

    def test_unknown(self) -> None:
        """An unknown instance is 404 to show, change or look into."""
        for method, path in [
            ("GET", "/instances/WS_none"),
            ("PATCH", "/instances/WS_none"),
            ("GET", "/instances/WS_none/configs"),
            ("GET", "/instances/WS_none/devices/d1"),
            ("GET", "/instances/WS_none/users/u1"),
            ("POST", "/instances/WS_none/send"),
            ("GET", "/instances/bad%20id"),
        ]:
            body = {} if method != "GET" else _UNSET
            r = self.c.request(method, path, body)
            self.assertEqual(r.error, (404, "not_found", None), path)

    def test_change(self) -> None:
        """A change sets the given fields and keeps the others; the app
        key is never shown, only whether one is set."""
        r = self.c.patch(
            f"/instances/{INSTANCE}",
            {"time_zone": "Europe/Paris", "app_key": "k3y"},
        )
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body["time_zone"], "Europe/Paris")
        self.assertIs(r.body["app_key_set"], True)
        self.assertNotIn("k3y", json.dumps(r.body))
        stored = self.store.instance(INSTANCE)
        assert stored is not None
        self.assertEqual(stored.app_key, "k3y")

        r = self.c.patch(
            f"/instances/{INSTANCE}",
            {"validation_url": "http://v.example/", "app_key": ""},
        )
        self.assertEqual(r.body["time_zone"], "Europe/Paris")
        self.assertEqual(r.body["validation_url"], "http://v.example/")
        self.assertIs(r.body["app_key_set"], False)

    def test_change_invalid(self) -> None:
        """A bad change is refused, naming the field, and stores nothing."""
        for body, name in [
            ({"time_zone": "Nowhere"}, "time_zone"),
            ({"app_key": 12}, "app_key"),
            ({"app_key": "a\nb"}, "app_key"),
            ({"instance_id": "WS_renamed"}, "instance_id"),
        ]:
            r = self.c.patch(f"/instances/{INSTANCE}", body)
            self.assertEqual(r.error, (400, "invalid", name), body)
        self.assertEqual(
            self.c.get(f"/instances/{INSTANCE}").body["time_zone"], "UTC"
        )


class KeyTests(ApiCase):
    """Access keys: made with a secret shown once, listed, revoked."""

    def test_create(self) -> None:
        """A new key answers 201 with its secret, once."""
        self.c.post("/instances", {"instance_id": "WS_two"})
        r = self.c.post("/keys", {"instances": [INSTANCE, "WS_two", INSTANCE]})
        self.assertEqual(r.status, 201)
        key = r.body
        self.assertEqual(
            set(key),
            {"access_key", "secret", "instances", "created", "revoked"},
        )
        self.assertEqual(key["instances"], [INSTANCE, "WS_two"])
        self.assertIs(key["revoked"], False)
        stored = self.store.access_key(key["access_key"])
        assert stored is not None
        self.assertEqual(stored.secret, key["secret"])
        self.assertTrue(stored.allows("WS_two"))

        (listed,) = self.c.get("/keys").body
        self.assertEqual(
            listed, {k: v for k, v in key.items() if k != "secret"}
        )
        self.assertNotIn(key["secret"], json.dumps(self.c.get("/keys").body))

    def test_create_invalid(self) -> None:
        """Keys need a list of existing instances."""
        for body in [
            {},
            {"instances": []},
            {"instances": INSTANCE},
            {"instances": [7]},
            {"instances": ["WS_nowhere"]},
        ]:
            r = self.c.post("/keys", body)
            self.assertEqual(r.error, (400, "invalid", "instances"), body)
        self.assertEqual(self.store.access_keys(), [])

    def test_revoke(self) -> None:
        """Revoking answers the key, revoked, with no secret; the key no
        longer allows anything; revoking again changes nothing."""
        key = self.c.post("/keys", {"instances": [INSTANCE]}).body
        r = self.c.post(f"/keys/{key['access_key']}/revoke")
        self.assertEqual(r.status, 200)
        self.assertIs(r.body["revoked"], True)
        self.assertNotIn("secret", r.body)
        stored = self.store.access_key(key["access_key"])
        assert stored is not None
        self.assertFalse(stored.allows(INSTANCE))
        again = self.c.post(f"/keys/{key['access_key']}/revoke")
        self.assertEqual(again.body, r.body)

    def test_revoke_unknown(self) -> None:
        """Revoking an unknown key is 404."""
        r = self.c.post("/keys/AKNOTHING/revoke")
        self.assertRefused(r, 404, "not_found")
        r = self.c.post("/keys/" + "A" * 300 + "/revoke")
        self.assertRefused(r, 404, "not_found")


class ConfigTests(ApiCase):
    """Sync configs: create, list, show, change, offline and online."""

    def test_create(self) -> None:
        """A new config answers 201 in the documented shape, online."""
        r = self.c.make_config(
            "UCHAT",
            description="chat",
            range="specified",
            multi_device=False,
            persistent=True,
            resend_mode="threshold",
            threshold=50,
            consistency=True,
        )
        self.assertEqual(r.status, 201)
        now = int(self.clock.seconds() * 1000)
        self.assertEqual(
            r.body,
            {
                "biz_type": "UCHAT",
                "description": "chat",
                "range": "specified",
                "target": "user",
                "multi_device": False,
                "persistent": True,
                "resend_mode": "threshold",
                "threshold": 50,
                "consistency": True,
                "state": "online",
                "created": now,
                "updated": now,
            },
        )
        self.assertIn("UCHAT", self.world.engine.configs(INSTANCE))

    def test_defaults(self) -> None:
        """Unsaid fields take the console form's defaults."""
        r = self.c.post(
            f"/instances/{INSTANCE}/configs",
            {"biz_type": "DEV", "target": "device"},
        )
        body = r.body
        self.assertEqual(
            (
                body["range"],
                body["multi_device"],
                body["persistent"],
                body["resend_mode"],
                body["threshold"],
                body["consistency"],
                body["description"],
            ),
            ("specified", True, True, "all", 100, False, ""),
        )

    def test_exists(self) -> None:
        """A second config with the same biz type is refused with 409."""
        self.c.make_config()
        self.assertRefused(self.c.make_config(), 409, "exists")

    def test_invalid(self) -> None:
        """Rule-breaking configs are refused, naming the field."""
        cases: list[tuple[dict[str, Any], str]] = [
            ({"biz_type": "bad biz"}, "biz_type"),
            ({"biz_type": ""}, "biz_type"),
            ({"threshold": 0}, "threshold"),
            ({"threshold": 100_001}, "threshold"),
            ({"threshold": True}, "threshold"),
            ({"threshold": 1.5}, "threshold"),
            ({"target": "group"}, "target"),
            ({"target": None}, "target"),
            ({"range": "some"}, "range"),
            ({"resend_mode": "never"}, "resend_mode"),
            ({"persistent": "yes"}, "persistent"),
            ({"description": 3}, "description"),
            ({"target": "device", "consistency": True}, "consistency"),
            ({"range": "global", "multi_device": False}, "multi_device"),
            ({"state": "offline"}, "state"),
        ]
        for kw, name in cases:
            body = {"biz_type": "OK1", "target": "user", **kw}
            r = self.c.post(f"/instances/{INSTANCE}/configs", body)
            self.assertEqual(r.error, (400, "invalid", name), kw)
        self.assertEqual(self.store.configs(INSTANCE), [])

    def test_list_and_show(self) -> None:
        """The list and a single config show what was created."""
        a = self.c.make_config("A").body
        b = self.c.make_config("B", target="device").body
        self.assertEqual(
            self.c.get(f"/instances/{INSTANCE}/configs").body, [a, b]
        )
        self.assertEqual(
            self.c.get(f"/instances/{INSTANCE}/configs/B").body, b
        )

    def test_unknown(self) -> None:
        """An unknown config is 404 to show, change or switch."""
        path = f"/instances/{INSTANCE}/configs/NONE"
        self.assertRefused(self.c.get(path), 404, "not_found")
        self.assertRefused(self.c.patch(path, {}), 404, "not_found")
        self.assertRefused(self.c.post(path + "/offline"), 404, "not_found")
        self.assertRefused(
            self.c.get(f"/instances/{INSTANCE}/configs/bad%20biz"),
            404,
            "not_found",
        )

    def test_change(self) -> None:
        """A change applies the given fields, keeps the rest and is
        seen by the engine."""
        self.c.make_config()
        self.clock.advance(5)
        r = self.c.patch(
            f"/instances/{INSTANCE}/configs/UCHAT",
            {
                "description": "new",
                "resend_mode": "threshold",
                "threshold": 7,
                "persistent": False,
                "biz_type": "UCHAT",
                "target": "user",
            },
        )
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body["description"], "new")
        self.assertEqual(r.body["threshold"], 7)
        self.assertIs(r.body["persistent"], False)
        self.assertIs(r.body["multi_device"], True)
        self.assertEqual(r.body["updated"] - r.body["created"], 5000)
        self.assertEqual(
            self.world.engine.configs(INSTANCE)["UCHAT"].threshold, 7
        )

    def test_frozen_fields(self) -> None:
        """The biz type and target cannot change."""
        self.c.make_config()
        path = f"/instances/{INSTANCE}/configs/UCHAT"
        r = self.c.patch(path, {"target": "device"})
        self.assertRefused(r, 400, "invalid", "target")
        r = self.c.patch(path, {"biz_type": "OTHER"})
        self.assertRefused(r, 400, "invalid", "biz_type")
        config = self.store.config(INSTANCE, "UCHAT")
        assert config is not None
        self.assertIs(config.target, Target.USER)

    def test_change_invalid(self) -> None:
        """A change that breaks a rule is refused and stores nothing."""
        self.c.make_config("DEV", target="device")
        path = f"/instances/{INSTANCE}/configs/DEV"
        for body, name in [
            ({"threshold": -1}, "threshold"),
            ({"consistency": True}, "consistency"),
            ({"multi_device": False}, "multi_device"),
            ({"state": "offline"}, "state"),
        ]:
            r = self.c.patch(path, body)
            self.assertEqual(r.error, (400, "invalid", name), body)
        config = self.store.config(INSTANCE, "DEV")
        assert config is not None
        self.assertEqual((config.threshold, config.consistency), (100, False))

    def test_offline_and_online(self) -> None:
        """Offline refuses sends at once; online takes them again."""
        self.c.make_config()
        path = f"/instances/{INSTANCE}/configs/UCHAT"
        r = self.c.post(path + "/offline")
        self.assertEqual(r.body["state"], "offline")
        config = self.store.config(INSTANCE, "UCHAT")
        assert config is not None
        self.assertIs(config.state, ConfigState.OFFLINE)
        self.assertEqual(
            self.world.send("UCHAT", "x", "u1").code.value, "BIZ_NOT_ONLINE"
        )
        self.assertEqual(self.c.post(path + "/offline").body, r.body)

        r = self.c.post(path + "/online")
        self.assertEqual(r.body["state"], "online")
        self.assertTrue(self.world.send("UCHAT", "x", "u1").success)

    def test_new_config_reaches_online_devices(self) -> None:
        """A config created through the API is planned for devices that
        are already online."""
        device = self.world.device("d1").connect(user="u1", session="s-u1")
        self.c.make_config()
        self.world.send("UCHAT", "hello", "u1")
        self.assertEqual(device.link.payloads("UCHAT"), [b"hello"])


class SendTests(ApiCase):
    """Sending by hand."""

    def setUp(self) -> None:
        super().setUp()
        self.c.make_config()
        self.device = self.world.device("d1").connect(
            user="u1", session="s-u1"
        )

    def send(self, **body: Any) -> Reply:
        body.setdefault("biz_type", "UCHAT")
        body.setdefault("third_msg_id", "m1")
        return self.c.post(f"/instances/{INSTANCE}/send", body)

    def test_text(self) -> None:
        """A text payload goes out as UTF-8 to the online device."""
        r = self.send(link_token="u1", payload="héllo")
        self.assertEqual(r.status, 200)
        self.assertEqual(
            r.body,
            {
                "code": "OK",
                "success": True,
                "op_id": r.body["op_id"],
                "reason": "",
            },
        )
        self.assertIsInstance(r.body["op_id"], int)
        self.assertEqual(self.device.link.payloads(), ["héllo".encode()])

    def test_base64(self) -> None:
        """A base64 payload goes out as its bytes."""
        data = bytes(range(256))
        r = self.send(
            link_token="u1", payload_base64=base64.b64encode(data).decode()
        )
        self.assertTrue(r.body["success"])
        self.assertEqual(self.device.link.payloads(), [data])

    def test_bad_payloads(self) -> None:
        """Bad base64, or both payload kinds, are refused, naming the
        field."""
        r = self.send(link_token="u1", payload_base64="not base64!")
        self.assertRefused(r, 400, "invalid", "payload_base64")
        r = self.send(link_token="u1", payload="a", payload_base64="YQ==")
        self.assertRefused(r, 400, "invalid", "payload_base64")
        r = self.send(link_token="u1", payload=["a"])
        self.assertRefused(r, 400, "invalid", "payload")
        self.assertEqual(self.device.link.payloads(), [])

    def test_large_payloads(self) -> None:
        """Payloads up to the sender's limit go out; longer ones get the
        sender's PAYLOAD_LONG."""
        big = "x" * (MAX_PAYLOAD - 1)
        r = self.send(link_token="u1", payload=big)
        self.assertEqual(r.body["code"], "OK")
        r = self.send(
            link_token="u1",
            third_msg_id="m2",
            payload_base64=base64.b64encode(big.encode() + b"yy").decode(),
        )
        self.assertEqual(
            (r.body["code"], r.body["success"]), ("PAYLOAD_LONG", False)
        )
        self.assertEqual(self.device.link.payloads(), [big.encode()])

    def test_business_refusals(self) -> None:
        """The sender's refusals are 200 with success false and no op."""
        refusals: list[tuple[dict[str, Any], str]] = [
            ({"biz_type": "NONE", "link_token": "u1"}, "BIZ_NOT_ONLINE"),
            ({"global": True}, "NOT_SUPPORT_GLOBAL"),
            ({"link_token": "u1", "payload": ""}, "ARGS_IS_NULL"),
            ({"link_token": "u1", "third_msg_id": ""}, "THIRDMSGID_IS_NULL"),
            ({"link_token": "u1", "os_type": "BEOS"}, "INVALID_PARAMETER"),
        ]
        for body, code in refusals:
            body.setdefault("payload", "x")
            r = self.send(**body)
            self.assertEqual(r.status, 200, body)
            self.assertEqual(
                (r.body["code"], r.body["success"], r.body["op_id"]),
                (code, False, None),
                body,
            )

    def test_not_online(self) -> None:
        """Storing for a user who is offline succeeds as NOT_ONLINE."""
        r = self.send(link_token="u2", payload="later")
        self.assertEqual(
            (r.body["code"], r.body["success"]), ("NOT_ONLINE", True)
        )
        self.assertIsInstance(r.body["op_id"], int)

    def test_duplicate(self) -> None:
        """A repeated third_msg_id answers the first op's id."""
        first = self.send(link_token="u1", payload="a").body
        again = self.send(link_token="u1", payload="a").body
        self.assertEqual(again["code"], "DUPLICATED_BIZ_ID")
        self.assertEqual(again["op_id"], first["op_id"])

    def test_dates_in_instance_time(self) -> None:
        """Dates are read in the instance's time zone."""
        self.c.patch(f"/instances/{INSTANCE}", {"time_zone": "Asia/Shanghai"})
        r = self.send(
            link_token="u2",
            payload="x",
            start_date="2026-03-01 08:00:00",
            expire_date="2026-03-02 08:00:00",
        )
        self.assertTrue(r.body["success"], r.body)
        op = self.store.get_op(
            Scope(INSTANCE, "UCHAT", ScopeKind.USER, "u2"), r.body["op_id"]
        )
        assert op is not None
        self.assertEqual(
            op.start_ms, parse_date("2026-03-01 08:00:00", "Asia/Shanghai")
        )
        self.assertNotEqual(
            op.start_ms, parse_date("2026-03-01 08:00:00", "UTC")
        )

    def test_bad_dates(self) -> None:
        """Malformed dates are refused, naming the field."""
        for name in ("start_date", "expire_date"):
            for text in ("2026-13-01 00:00:00", "tomorrow", "2026-03-01"):
                r = self.send(link_token="u1", payload="x", **{name: text})
                self.assertEqual(r.error, (400, "invalid", name), text)

    def test_bad_types(self) -> None:
        """Fields of the wrong type are refused, naming them."""
        for name, value in [
            ("global", "yes"),
            ("immediate", 1),
            ("link_token", 5),
            ("device_id", {}),
        ]:
            r = self.send(payload="x", **{name: value})
            self.assertEqual(r.error, (400, "invalid", name), name)


class LookupTests(ApiCase):
    """Users and devices: state, counters and recent pushes."""

    def setUp(self) -> None:
        super().setUp()
        self.c.make_config()
        self.device = self.world.device("d1").connect(
            user="u1", session="s-u1"
        )

    def send(self, payload: str, third: str) -> int:
        r = self.c.post(
            f"/instances/{INSTANCE}/send",
            {
                "biz_type": "UCHAT",
                "link_token": "u1",
                "payload": payload,
                "third_msg_id": third,
            },
        )
        self.assertTrue(r.body["success"], r.body)
        op_id: int = r.body["op_id"]
        return op_id

    def test_device(self) -> None:
        """An acked op shows acked and an unacked one pushed, newest
        first, with the device's state and today's counters."""
        first = self.send("one", "m1")
        self.device.ack_all()
        second = self.send("two", "m2")
        self.assertEqual(len(self.device.link.of(Sync)), 2)

        r = self.c.get(f"/instances/{INSTANCE}/devices/d1")
        self.assertEqual(r.status, 200)
        d = r.body
        self.assertEqual(
            {k: d[k] for k in ("device_id", "user_id", "online", "os_type")},
            {
                "device_id": "d1",
                "user_id": "u1",
                "online": True,
                "os_type": "ANDROID",
            },
        )
        self.assertEqual(d["app_version"], "1.0.0")
        self.assertIs(d["validated"], False)
        self.assertGreater(d["first_seen"], 0)
        self.assertGreaterEqual(d["last_seen"], d["first_seen"])
        today = int(self.clock.seconds()) // 86_400
        # Live counts of an online device are included before they are
        # written: both pushes, one arrival.
        self.assertEqual(
            d["days"], [{"day": today, "pushes": 2, "arrivals": 1}]
        )
        self.assertEqual(
            [(p["op_id"], p["state"]) for p in d["pushes"]],
            [(second, "pushed"), (first, "acked")],
        )
        push = d["pushes"][0]
        self.assertEqual(
            push,
            {
                "biz_type": "UCHAT",
                "scope": "u:u1",
                "op_id": second,
                "third_msg_id": "m2",
                "created": int(self.clock.seconds() * 1000),
                "state": "pushed",
                "attempts": 1,
                "reason": "",
                "device_id": "d1",
            },
        )

    def test_attempts_count_up(self) -> None:
        """An op pushed again after its ack timed out shows two attempts."""
        op = self.send("one", "m1")
        self.clock.advance(31)
        self.clock.advance(1)
        (push,) = self.c.get(f"/instances/{INSTANCE}/devices/d1").body[
            "pushes"
        ]
        self.assertEqual((push["op_id"], push["state"]), (op, "pushed"))
        self.assertEqual(push["attempts"], 2)

    def test_offline_device(self) -> None:
        """A device that left shows offline, its unacked op still pushed."""
        op = self.send("one", "m1")
        self.device.disconnect()
        d = self.c.get(f"/instances/{INSTANCE}/devices/d1").body
        self.assertIs(d["online"], False)
        self.assertEqual(
            [(p["op_id"], p["state"]) for p in d["pushes"]], [(op, "pushed")]
        )

    def test_user(self) -> None:
        """A user shows its devices without detail, and every device's
        pushes."""
        other = self.world.device("d2", os="IOS").connect(
            user="u1", session="s-u1"
        )
        op = self.send("one", "m1")
        other.ack_all()
        r = self.c.get(f"/instances/{INSTANCE}/users/u1")
        self.assertEqual(r.status, 200)
        u = r.body
        self.assertEqual(
            set(u), {"user_id", "online", "devices", "days", "pushes"}
        )
        self.assertEqual((u["user_id"], u["online"]), ("u1", True))
        self.assertEqual(
            sorted(d["device_id"] for d in u["devices"]), ["d1", "d2"]
        )
        for d in u["devices"]:
            self.assertNotIn("days", d)
            self.assertNotIn("pushes", d)
            self.assertEqual(d["user_id"], "u1")
        states = {
            (p["device_id"], p["op_id"]): p["state"] for p in u["pushes"]
        }
        self.assertEqual(states, {("d1", op): "pushed", ("d2", op): "acked"})
        self.assertEqual(len(u["days"]), 1)

    def test_never_seen(self) -> None:
        """A device or user never seen is 404."""
        for path in ["devices/nobody", "users/nobody", "devices/" + "x" * 300]:
            r = self.c.get(f"/instances/{INSTANCE}/{path}")
            self.assertEqual(r.error, (404, "not_found", None), path)

    def test_names_with_slashes(self) -> None:
        """Ids holding a slash are looked up when percent-encoded."""
        self.world.device("dev/1").connect(user="team/a", session="s-team/a")
        d = self.c.get(f"/instances/{INSTANCE}/devices/dev%2F1").body
        self.assertEqual((d["device_id"], d["user_id"]), ("dev/1", "team/a"))
        u = self.c.get(f"/instances/{INSTANCE}/users/team%2Fa").body
        self.assertEqual(u["user_id"], "team/a")


class SettingsTests(ApiCase):
    """The signature switch."""

    def test_default_on(self) -> None:
        """The signature check starts on."""
        self.assertEqual(
            self.c.get("/settings").body, {"signature_check": True}
        )

    def test_switch(self) -> None:
        """PATCH stores the switch, which the gateway reads."""
        r = self.c.patch("/settings", {"signature_check": False})
        self.assertEqual((r.status, r.body), (200, {"signature_check": False}))
        self.assertIs(self.store.setting("signature_check", True), False)
        self.assertEqual(
            self.c.get("/settings").body, {"signature_check": False}
        )
        r = self.c.patch("/settings", {"signature_check": True})
        self.assertEqual(r.body, {"signature_check": True})

    def test_invalid(self) -> None:
        """A switch that is not a boolean is refused; nothing changes."""
        r = self.c.patch("/settings", {"signature_check": "off"})
        self.assertRefused(r, 400, "invalid", "signature_check")
        r = self.c.patch("/settings", {"other": True})
        self.assertRefused(r, 400, "invalid", "other")
        self.assertEqual(
            self.c.patch("/settings", {}).body, {"signature_check": True}
        )


class AdminTests(ApiCase):
    """Admin logins."""

    def test_list(self) -> None:
        """The list names every admin."""
        self.assertEqual(self.c.get("/admins").body, [{"user": "admin"}])

    def test_create(self) -> None:
        """A new admin answers 201 and can log in."""
        r = self.c.post("/admins", {"user": "ops", "password": "ops-password"})
        self.assertEqual((r.status, r.body), (201, {"user": "ops"}))
        self.assertEqual(
            self.c.get("/admins").body, [{"user": "admin"}, {"user": "ops"}]
        )
        other = self.c.stranger()
        self.assertEqual(other.login("ops", "ops-password").status, 200)

    def test_invalid(self) -> None:
        """Short passwords and bad names are refused, naming the field."""
        for body, name in [
            ({"user": "ops", "password": "short"}, "password"),
            ({"user": "ops"}, "password"),
            ({"user": "", "password": "long enough"}, "user"),
            ({"user": "a\tb", "password": "long enough"}, "user"),
        ]:
            r = self.c.post("/admins", body)
            self.assertEqual(r.error, (400, "invalid", name), body)
        self.assertEqual(self.store.admins(), ["admin"])

    def test_exists(self) -> None:
        """An admin that exists is refused with 409, its password kept."""
        r = self.c.post(
            "/admins", {"user": "admin", "password": "new password"}
        )
        self.assertRefused(r, 409, "exists")
        self.assertEqual(self.store.admin_hash("admin"), ADMIN_HASH)


class SecretsTests(SynchronousTestCase):
    """Nothing secret reaches the log."""

    def test_no_secrets_logged(self) -> None:
        """Passwords, session ids, CSRF tokens, API tokens and key secrets
        appear in no log event, while the events that matter are logged."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        c = Console(self)
        c.login(password="wrong password")
        c.login()
        token = c.post("/tokens").body["token"]
        secret = c.post("/keys", {"instances": [INSTANCE]}).body["secret"]
        c.post("/admins", {"user": "ops", "password": "ops-password"})
        c.get("/instances", token=token)
        c.get("/instances", token=token + "x")
        c.patch(f"/instances/{INSTANCE}", {"app_key": "the-app-key"})

        text = repr(events)
        for secret_text in [
            PASSWORD,
            "wrong password",
            "ops-password",
            c.session,
            c.csrf,
            token,
            token.split(".")[1],
            secret,
            "the-app-key",
        ]:
            self.assertNotIn(secret_text, text)
        formats = [e.get("log_format", "") for e in events]
        self.assertTrue(any("login refused" in f for f in formats))
        self.assertTrue(any("console login by" in f for f in formats))
        self.assertTrue(any("refused a token" in f for f in formats))


class MountTests(SynchronousTestCase):
    """The API mounted as a daemon's Klein root would mount it."""

    def test_klein_branch(self) -> None:
        """Mounted as a Klein branch route at /api/, the routes answer
        at /api/... and unknown ones still answer JSON."""
        c = Console(self)
        root = Klein()

        @root.route("/api/", branch=True)
        def api(request: IRequest) -> IResource:
            return c.api.resource()

        c.root = root.resource()
        self.assertEqual(c.login().status, 200)
        self.assertEqual(c.get("/settings").body, {"signature_check": True})
        self.assertEqual(c.get("/nothing").error, (404, "not_found", None))
