"""
C{msync admin}: the admin API (C{docs/admin-api.md}) from a shell.

    msync admin --url URL (--user U --password P | --token T) [--json]
        GROUP ACTION [options]

The groups are C{instance}, C{key}, C{config}, C{send}, C{lookup},
C{signature}, C{token} and C{admin}; C{--help} on each lists its
actions.  The password and the token may instead come from the
environment (C{MSYNC_ADMIN_PASSWORD}, C{MSYNC_ADMIN_TOKEN}), which keeps
them out of the process list.

Answers are printed for people (aligned tables, C{key: value} lines), or
as the API's JSON with C{--json}.  Exit status: 0 on success; 1 when the
API refused (the reason goes to standard error) or a send failed; 2 when
the API could not be reached or the command line is wrong.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

import treq
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import (
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

__all__ = [
    "AdminClient",
    "Refused",
    "UnexpectedAnswer",
    "add_arguments",
    "admin",
    "run",
]

_PROG = "msync admin"

#: The largest answer read, in bytes.
MAX_ANSWER = 8 * 2**20

DEFAULT_URL = "http://127.0.0.1:8080"

# What a call fails with when the daemon is not there to answer.
_UNREACHABLE = (
    ConnectError,
    DNSLookupError,
    ResponseFailed,
    ResponseNeverReceived,
    RequestTransmissionFailed,
    TimeoutError,
    CancelledError,
)

_DAY_S = 86_400


class Refused(Exception):
    """The API refused a call: its status, error code, message, field."""

    def __init__(
        self, status: int, error: str, message: str, field: str | None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" ({self.field})" if self.field else ""
        return f"{self.status} {self.error}{where}: {self.message}"


class UnexpectedAnswer(Exception):
    """An answer that is not the API's JSON: another server, or a bug."""


class _Usage(Exception):
    """The command line asks for something that cannot be done."""


class AdminClient:
    """
    Calls the admin API as one admin: logged in with a password (a
    session cookie and its CSRF token), or with an API token.
    """

    def __init__(
        self,
        http: Any,
        url: str,
        *,
        clock: IReactorTime,
        timeout: float = 30.0,
    ) -> None:
        """
        @param http: An C{IAgent}, or something with treq's C{request}
            (treq's C{HTTPClient}, or C{StubTreq} in tests).
        @param url: Where the daemon's HTTP listener is, e.g.
            C{http://127.0.0.1:8080}; the API is under its C{/api/}.
        @param clock: Times each call out after C{timeout} seconds.
        @raise ValueError: if C{url} is not a plain http(s) URL.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url!r} is not an http(s) URL")
        if parts.query or parts.fragment:
            raise ValueError(f"{url!r} must have no query or fragment")
        base = url.rstrip("/")
        if base.endswith("/api"):
            base = base[: -len("/api")]
        self._base = base + "/api"
        self._http = HTTPClient(http) if IAgent.providedBy(http) else http
        self._clock = clock
        self._timeout = timeout
        self._headers: dict[bytes, list[bytes]] = {}

    def use_token(self, token: str) -> None:
        """Call with an API token from now on."""
        self._headers = {b"Authorization": [f"Bearer {token}".encode()]}

    async def login(self, user: str, password: str) -> None:
        """
        Log in; later calls carry the session.

        @raise Refused: if the login is refused.
        """
        response, body = await self._exchange(
            "POST", "/login", {"user": user, "password": password}
        )
        cookie = _session_cookie(response)
        if cookie is None or not isinstance(body, dict):
            raise UnexpectedAnswer("the login answer carries no session")
        self._headers = {
            b"Cookie": [cookie],
            b"X-CSRF-Token": [str(body.get("csrf", "")).encode()],
        }

    async def call(
        self, method: str, path: str, body: object | None = None
    ) -> Any:
        """
        Call one route; return its JSON answer.

        @param path: The route below C{/api}, its parts already quoted.
        @raise Refused: if the API refused.
        @raise UnexpectedAnswer: if the answer is not the API's JSON.
        """
        _, answer = await self._exchange(method, path, body)
        return answer

    async def _exchange(
        self, method: str, path: str, body: object | None
    ) -> tuple[IResponse, Any]:
        headers = dict(self._headers)
        data = None
        if body is not None:
            headers[b"Content-Type"] = [b"application/json"]
            data = json.dumps(body).encode("utf-8")
        d: Deferred[Any] = self._http.request(
            method, self._base + path, headers=Headers(headers), data=data
        )
        d.addTimeout(self._timeout, self._clock)
        response = await d
        raw = await _read(response)
        try:
            answer = json.loads(raw.decode("utf-8")) if raw else None
        except ValueError as e:
            raise UnexpectedAnswer(
                f"{response.code} answer is not JSON: {e}"
            ) from e
        if response.code >= 400:
            if not isinstance(answer, dict) or "error" not in answer:
                raise UnexpectedAnswer(
                    f"{response.code} answer: {raw[:200]!r}"
                )
            raise Refused(
                response.code,
                str(answer["error"]),
                str(answer.get("message", "")),
                answer.get("field"),
            )
        return response, answer


def _session_cookie(response: IResponse) -> bytes | None:
    headers: list[bytes] = response.headers.getRawHeaders(b"set-cookie", [])
    for header in headers:
        pair = header.split(b";")[0].strip()
        name, _, value = pair.partition(b"=")
        if name == b"msync_session" and value:
            return pair
    return None


def _read(response: IResponse) -> Deferred[bytes]:
    chunks: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > MAX_ANSWER:
            raise UnexpectedAnswer(f"the answer is over {MAX_ANSWER} bytes")
        chunks.append(data)

    d: Deferred[None] = treq.collect(response, collect)
    return d.addCallback(lambda _: b"".join(chunks))


# --- printing -----------------------------------------------------------


def _when(ms: object) -> str:
    if not isinstance(ms, int) or isinstance(ms, bool) or ms <= 0:
        return "-"
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _day(day: object) -> str:
    if not isinstance(day, int):
        return str(day)
    return datetime.fromtimestamp(day * _DAY_S, UTC).strftime("%Y-%m-%d")


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or value == "":
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


_Column = tuple[str, Callable[[Mapping[str, Any]], object]]


def _col(title: str, name: str) -> _Column:
    return title, lambda row: row.get(name)


def _table(rows: Iterable[Mapping[str, Any]], columns: list[_Column]) -> str:
    cells = [[_shown(get(row)) for _, get in columns] for row in rows]
    if not cells:
        return "(none)\n"
    titles = [title for title, _ in columns]
    widths = [
        max(len(titles[i]), *(len(r[i]) for r in cells))
        for i in range(len(columns))
    ]
    lines = [titles, *cells]
    return "".join(
        "  ".join(
            c.ljust(w) for c, w in zip(line, widths, strict=True)
        ).rstrip()
        + "\n"
        for line in lines
    )


def _pairs(pairs: list[tuple[str, object]]) -> str:
    width = max(len(name) for name, _ in pairs)
    return "".join(
        f"{(name + ':').ljust(width + 1)} {_shown(value)}\n"
        for name, value in pairs
    )


def _instance_text(i: Mapping[str, Any]) -> str:
    return _pairs(
        [
            ("instance", i.get("instance_id")),
            ("time zone", i.get("time_zone")),
            ("validation url", i.get("validation_url")),
            ("app key set", i.get("app_key_set")),
            ("created", _when(i.get("created"))),
        ]
    )


def _instances_text(rows: list[Mapping[str, Any]]) -> str:
    return _table(
        rows,
        [
            _col("INSTANCE", "instance_id"),
            _col("TIME ZONE", "time_zone"),
            _col("VALIDATION URL", "validation_url"),
            _col("APP KEY", "app_key_set"),
            ("CREATED", lambda r: _when(r.get("created"))),
        ],
    )


def _key_text(k: Mapping[str, Any]) -> str:
    pairs: list[tuple[str, object]] = [("access key", k.get("access_key"))]
    if "secret" in k:
        pairs.append(("secret", k.get("secret")))
    pairs += [
        ("instances", k.get("instances")),
        ("created", _when(k.get("created"))),
        ("revoked", k.get("revoked")),
    ]
    return _pairs(pairs)


def _keys_text(rows: list[Mapping[str, Any]]) -> str:
    return _table(
        rows,
        [
            _col("ACCESS KEY", "access_key"),
            _col("INSTANCES", "instances"),
            ("CREATED", lambda r: _when(r.get("created"))),
            _col("REVOKED", "revoked"),
        ],
    )


def _config_text(c: Mapping[str, Any]) -> str:
    return _pairs(
        [
            ("biz type", c.get("biz_type")),
            ("description", c.get("description")),
            ("state", c.get("state")),
            ("range", c.get("range")),
            ("target", c.get("target")),
            ("multi device", c.get("multi_device")),
            ("persistent", c.get("persistent")),
            ("resend mode", c.get("resend_mode")),
            ("threshold", c.get("threshold")),
            ("consistency", c.get("consistency")),
            ("created", _when(c.get("created"))),
            ("updated", _when(c.get("updated"))),
        ]
    )


def _configs_text(rows: list[Mapping[str, Any]]) -> str:
    return _table(
        rows,
        [
            _col("BIZ TYPE", "biz_type"),
            _col("STATE", "state"),
            _col("RANGE", "range"),
            _col("TARGET", "target"),
            _col("MULTI", "multi_device"),
            _col("PERSISTENT", "persistent"),
            _col("RESEND", "resend_mode"),
            _col("THRESHOLD", "threshold"),
            _col("CONSISTENCY", "consistency"),
            _col("DESCRIPTION", "description"),
        ],
    )


def _send_text(r: Mapping[str, Any]) -> str:
    return _pairs(
        [
            ("code", r.get("code")),
            ("success", r.get("success")),
            ("op id", r.get("op_id")),
            ("reason", r.get("reason")),
        ]
    )


def _days_text(days: list[Mapping[str, Any]]) -> str:
    return _table(
        days,
        [
            ("DAY", lambda r: _day(r.get("day"))),
            _col("PUSHES", "pushes"),
            _col("ARRIVALS", "arrivals"),
        ],
    )


def _pushes_text(pushes: list[Mapping[str, Any]], device: bool) -> str:
    columns = [
        _col("OP", "op_id"),
        _col("BIZ TYPE", "biz_type"),
        _col("SCOPE", "scope"),
        _col("STATE", "state"),
        _col("ATTEMPTS", "attempts"),
        ("CREATED", lambda r: _when(r.get("created"))),
        _col("THIRD MSG ID", "third_msg_id"),
        _col("REASON", "reason"),
    ]
    if device:
        columns.insert(1, _col("DEVICE", "device_id"))
    return _table(pushes, columns)


def _device_text(d: Mapping[str, Any]) -> str:
    head = _pairs(
        [
            ("device", d.get("device_id")),
            ("user", d.get("user_id")),
            ("online", d.get("online")),
            ("os", d.get("os_type")),
            ("app version", d.get("app_version")),
            ("validated", d.get("validated")),
            ("first seen", _when(d.get("first_seen"))),
            ("last seen", _when(d.get("last_seen"))),
        ]
    )
    return (
        head
        + "\npushes and arrivals, last 30 days:\n"
        + _days_text(d.get("days", []))
        + "\nrecent pushes:\n"
        + _pushes_text(d.get("pushes", []), device=False)
    )


def _user_text(u: Mapping[str, Any]) -> str:
    head = _pairs([("user", u.get("user_id")), ("online", u.get("online"))])
    devices = _table(
        u.get("devices", []),
        [
            _col("DEVICE", "device_id"),
            _col("ONLINE", "online"),
            _col("OS", "os_type"),
            _col("APP VERSION", "app_version"),
            _col("VALIDATED", "validated"),
            ("LAST SEEN", lambda r: _when(r.get("last_seen"))),
        ],
    )
    return (
        head
        + "\ndevices:\n"
        + devices
        + "\npushes and arrivals, last 30 days:\n"
        + _days_text(u.get("days", []))
        + "\nrecent pushes:\n"
        + _pushes_text(u.get("pushes", []), device=True)
    )


def _settings_text(s: Mapping[str, Any]) -> str:
    return _pairs([("signature check", _on(s.get("signature_check")))])


def _on(value: object) -> str:
    return "on" if value else "off"


# --- commands -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a command got: the API's JSON, the text for people, and
    whether it counts as a success."""

    data: Any
    text: str
    ok: bool = True
    note: str = ""
    """Said on standard error when printing for people."""


_Command = Callable[[AdminClient, argparse.Namespace], Awaitable[_Outcome]]


def _part(name: str) -> str:
    return quote(name, safe="")


async def _instance_list(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    rows = await c.call("GET", "/instances")
    return _Outcome(rows, _instances_text(rows))


async def _instance_add(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    body = {"instance_id": a.instance_id}
    if a.time_zone is not None:
        body["time_zone"] = a.time_zone
    if a.validation_url is not None:
        body["validation_url"] = a.validation_url
    i = await c.call("POST", "/instances", body)
    return _Outcome(i, _instance_text(i))


async def _instance_show(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    i = await c.call("GET", f"/instances/{_part(a.instance_id)}")
    return _Outcome(i, _instance_text(i))


async def _instance_set(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    body = {
        name: value
        for name, value in (
            ("time_zone", a.time_zone),
            ("validation_url", a.validation_url),
            ("app_key", "" if a.clear_app_key else a.app_key),
        )
        if value is not None
    }
    if not body:
        raise _Usage("say what to change")
    i = await c.call("PATCH", f"/instances/{_part(a.instance_id)}", body)
    return _Outcome(i, _instance_text(i))


async def _key_list(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    rows = await c.call("GET", "/keys")
    return _Outcome(rows, _keys_text(rows))


async def _key_add(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    k = await c.call("POST", "/keys", {"instances": a.instances})
    return _Outcome(k, _key_text(k), note="the secret is shown only this once")


async def _key_revoke(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    k = await c.call("POST", f"/keys/{_part(a.access_key)}/revoke")
    return _Outcome(k, _key_text(k))


def _config_path(a: argparse.Namespace, suffix: str = "") -> str:
    return f"/instances/{_part(a.instance)}/configs/{_part(a.biz)}{suffix}"


def _config_body(a: argparse.Namespace) -> dict[str, Any]:
    chosen = {
        "description": a.description,
        "range": a.range,
        "multi_device": a.multi_device,
        "persistent": a.persistent,
        "resend_mode": a.resend,
        "threshold": a.threshold,
        "consistency": a.consistency,
    }
    return {name: value for name, value in chosen.items() if value is not None}


async def _config_list(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    rows = await c.call("GET", f"/instances/{_part(a.instance)}/configs")
    return _Outcome(rows, _configs_text(rows))


async def _config_add(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    body = {"biz_type": a.biz, "target": a.target, **_config_body(a)}
    path = f"/instances/{_part(a.instance)}/configs"
    config = await c.call("POST", path, body)
    return _Outcome(config, _config_text(config))


async def _config_show(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    config = await c.call("GET", _config_path(a))
    return _Outcome(config, _config_text(config))


async def _config_set(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    body = _config_body(a)
    if not body:
        raise _Usage("say what to change")
    config = await c.call("PATCH", _config_path(a), body)
    return _Outcome(config, _config_text(config))


async def _config_offline(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    config = await c.call("POST", _config_path(a, "/offline"))
    return _Outcome(config, _config_text(config))


async def _config_online(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    config = await c.call("POST", _config_path(a, "/online"))
    return _Outcome(config, _config_text(config))


async def _send(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    body: dict[str, Any] = {
        "biz_type": a.biz,
        "third_msg_id": a.third_msg_id,
        "immediate": a.immediate,
    }
    if a.to_all:
        body["global"] = True
    else:
        body["link_token"] = a.link_token
    if a.payload_file is not None:
        with open(a.payload_file, "rb") as f:
            body["payload_base64"] = base64.b64encode(f.read()).decode()
    elif a.payload_base64 is not None:
        body["payload_base64"] = a.payload_base64
    else:
        body["payload"] = a.payload
    optional = {
        "os_type": a.os,
        "app_min_version": a.app_min_version,
        "app_max_version": a.app_max_version,
        "device_id": a.device_id,
        "start_date": a.start_date,
        "expire_date": a.expire_date,
    }
    body.update((k, v) for k, v in optional.items() if v is not None)
    r = await c.call("POST", f"/instances/{_part(a.instance)}/send", body)
    return _Outcome(r, _send_text(r), ok=bool(r.get("success")))


async def _lookup(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    where = f"/instances/{_part(a.instance)}"
    if a.lookup_device is not None:
        d = await c.call("GET", f"{where}/devices/{_part(a.lookup_device)}")
        return _Outcome(d, _device_text(d))
    u = await c.call("GET", f"{where}/users/{_part(a.lookup_user)}")
    return _Outcome(u, _user_text(u))


async def _signature(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    if a.action == "show":
        s = await c.call("GET", "/settings")
    else:
        body = {"signature_check": a.action == "on"}
        s = await c.call("PATCH", "/settings", body)
    return _Outcome(s, _settings_text(s))


async def _token_add(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    t = await c.call("POST", "/tokens")
    text = _pairs([("token", t.get("token")), ("id", t.get("id"))])
    return _Outcome(t, text, note="the token is shown only this once")


async def _token_revoke(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    t = await c.call("DELETE", f"/tokens/{_part(a.token_id)}")
    return _Outcome(t, _pairs([("revoked token", t.get("id"))]))


async def _admin_list(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    rows = await c.call("GET", "/admins")
    return _Outcome(rows, _table(rows, [_col("ADMIN", "user")]))


async def _admin_add(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    body = {"user": a.new_user, "password": a.new_password}
    r = await c.call("POST", "/admins", body)
    return _Outcome(r, _pairs([("admin added", r.get("user"))]))


# --- the command line ---------------------------------------------------


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return number


def _either(
    parser: argparse.ArgumentParser,
    dest: str,
    yes: str,
    no: str,
    what: str,
) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        yes, dest=dest, action="store_const", const=True, help=what
    )
    group.add_argument(
        no, dest=dest, action="store_const", const=False, help="the opposite"
    )


def _config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--description", help="what the config is for")
    p.add_argument(
        "--range",
        choices=["specified", "global"],
        help="one user or device per op, or every one",
    )
    _either(
        p,
        "multi_device",
        "--multi-device",
        "--single-device",
        "every device of a user gets each op (user target only)",
    )
    _either(
        p,
        "persistent",
        "--persistent",
        "--no-persistent",
        "keep ops for devices that are offline",
    )
    p.add_argument(
        "--resend",
        choices=["all", "threshold"],
        help="resend the whole backlog, or only the newest --threshold",
    )
    p.add_argument("--threshold", type=int, help="ops kept in threshold mode")
    _either(
        p,
        "consistency",
        "--consistency",
        "--no-consistency",
        "push only to sessions the tenant validated (user target only)",
    )


def _leaf(
    sub: Any, name: str, command: _Command, help_text: str
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    p.set_defaults(command=command)
    return p


def _group(sub: Any, name: str, help_text: str) -> Any:
    p = sub.add_parser(name, help=help_text)
    return p.add_subparsers(dest="action", required=True, metavar="ACTION")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare C{msync admin}'s options and subcommands on C{parser}."""
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help="the daemon's HTTP listener (default: %(default)s)",
    )
    parser.add_argument("--user", help="log in as this admin")
    parser.add_argument(
        "--password", help="the admin's password [$MSYNC_ADMIN_PASSWORD]"
    )
    parser.add_argument(
        "--token", help="an API token instead [$MSYNC_ADMIN_TOKEN]"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the API's JSON"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        help="seconds to wait for each answer (default: %(default)s)",
    )
    groups = parser.add_subparsers(
        dest="group", required=True, metavar="GROUP"
    )

    instance = _group(groups, "instance", "apps (workspaceId_appId)")
    _leaf(instance, "list", _instance_list, "list instances")
    p = _leaf(instance, "add", _instance_add, "create an instance")
    p.add_argument("instance_id", metavar="INSTANCE")
    p.add_argument("--time-zone", help="for send dates (default: UTC)")
    p.add_argument("--validation-url", help="the user-consistency endpoint")
    p = _leaf(instance, "show", _instance_show, "show an instance")
    p.add_argument("instance_id", metavar="INSTANCE")
    p = _leaf(instance, "set", _instance_set, "change an instance")
    p.add_argument("instance_id", metavar="INSTANCE")
    p.add_argument("--time-zone")
    p.add_argument("--validation-url", help="empty to remove it")
    app_key = p.add_mutually_exclusive_group()
    app_key.add_argument("--app-key", help="devices must present it")
    app_key.add_argument(
        "--clear-app-key", action="store_true", help="remove the app key"
    )

    key = _group(groups, "key", "backend access keys")
    _leaf(key, "list", _key_list, "list access keys")
    p = _leaf(key, "add", _key_add, "make an access key (secret shown once)")
    p.add_argument(
        "--instance",
        dest="instances",
        action="append",
        required=True,
        help="an instance the key may write to (repeatable)",
    )
    p = _leaf(key, "revoke", _key_revoke, "revoke an access key")
    p.add_argument("access_key", metavar="KEY")

    config = _group(groups, "config", "sync configs (biz types)")
    p = _leaf(config, "list", _config_list, "list an instance's configs")
    p.add_argument("--instance", required=True)
    p = _leaf(config, "add", _config_add, "create a config (it is online)")
    p.add_argument("--instance", required=True)
    p.add_argument("--biz", required=True, help="the biz type")
    p.add_argument("--target", required=True, choices=["user", "device"])
    _config_options(p)
    p = _leaf(config, "set", _config_set, "change a config")
    p.add_argument("--instance", required=True)
    p.add_argument("--biz", required=True)
    _config_options(p)
    for name, command, text in (
        ("show", _config_show, "show a config"),
        ("offline", _config_offline, "take a config offline"),
        ("online", _config_online, "bring a config online"),
    ):
        p = _leaf(config, name, command, text)
        p.add_argument("--instance", required=True)
        p.add_argument("--biz", required=True)

    p = groups.add_parser("send", help="send one op by hand")
    p.set_defaults(command=_send)
    p.add_argument("--instance", required=True)
    p.add_argument("--biz", required=True, help="the biz type")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--link-token", help="the user or device")
    target.add_argument(
        "--global", dest="to_all", action="store_true", help="every device"
    )
    payload = p.add_mutually_exclusive_group(required=True)
    payload.add_argument("--payload", help="the payload, as UTF-8 text")
    payload.add_argument("--payload-base64", help="the payload's bytes")
    payload.add_argument("--payload-file", help="read the payload's bytes")
    p.add_argument("--third-msg-id", required=True, help="the op's id")
    p.add_argument("--os", choices=["IOS", "ANDROID"])
    p.add_argument("--app-min-version")
    p.add_argument("--app-max-version")
    p.add_argument("--device-id", help="only this device of the user")
    p.add_argument("--start-date", help='"yyyy-MM-dd HH:mm:ss", app time')
    p.add_argument("--expire-date", help='"yyyy-MM-dd HH:mm:ss", app time')
    p.add_argument(
        "--no-immediate",
        dest="immediate",
        action="store_false",
        help="store only; devices get it at their next sync",
    )

    p = groups.add_parser("lookup", help="a user's or a device's pushes")
    p.set_defaults(command=_lookup)
    p.add_argument("--instance", required=True)
    # Not "user": that is the login's, and argparse would let this one's
    # default overwrite it.
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", dest="lookup_user", help="a user's pushes")
    who.add_argument(
        "--device", dest="lookup_device", help="a device's pushes"
    )

    p = groups.add_parser("signature", help="the gateway's signature check")
    p.set_defaults(command=_signature)
    p.add_argument("action", choices=["show", "on", "off"])

    token = _group(groups, "token", "API tokens")
    _leaf(token, "add", _token_add, "make an API token (shown once)")
    p = _leaf(token, "revoke", _token_revoke, "revoke an API token")
    p.add_argument("token_id", metavar="ID")

    admins = _group(groups, "admin", "console logins")
    _leaf(admins, "list", _admin_list, "list admins")
    p = _leaf(admins, "add", _admin_add, "add an admin")
    p.add_argument("--new-user", required=True)
    p.add_argument("--new-password", required=True)


async def _connect(
    args: argparse.Namespace,
    http: Any,
    clock: IReactorTime,
    environ: Mapping[str, str],
) -> AdminClient:
    token = args.token or environ.get("MSYNC_ADMIN_TOKEN")
    password = args.password or environ.get("MSYNC_ADMIN_PASSWORD")
    if args.user and token:
        raise _Usage("give --user and --password, or --token, not both")
    if not args.user and not token:
        raise _Usage("give --user and --password, or --token")
    if args.user and not password:
        raise _Usage("--user needs --password")
    try:
        client = AdminClient(http, args.url, clock=clock, timeout=args.timeout)
    except ValueError as e:
        raise _Usage(str(e)) from e
    if token:
        client.use_token(token)
    else:
        await client.login(args.user, password or "")
    return client


async def admin(
    args: argparse.Namespace,
    http: Any,
    clock: IReactorTime,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """
    Run the command C{args} describe; print the answer; return the exit
    status.

    @param http: An C{IAgent}, or treq's C{HTTPClient} (or C{StubTreq}).
    @param clock: Times calls out.
    @param environ: Where the password or token may come from instead
        (default: the process environment).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    environ = os.environ if environ is None else environ
    try:
        client = await _connect(args, http, clock, environ)
        outcome = await args.command(client, args)
    except _Usage as e:
        err.write(f"{_PROG}: {e}\n")
        return 2
    except OSError as e:
        err.write(f"{_PROG}: {e}\n")
        return 2
    except _UNREACHABLE as e:
        err.write(f"{_PROG}: cannot reach {args.url}: {_why(e)}\n")
        return 2
    except Refused as e:
        err.write(f"{_PROG}: refused: {e}\n")
        return 1
    except UnexpectedAnswer as e:
        err.write(f"{_PROG}: {e}\n")
        return 1

    if args.json:
        out.write(json.dumps(outcome.data, indent=2, ensure_ascii=False))
        out.write("\n")
    else:
        out.write(outcome.text)
        if outcome.note:
            err.write(f"{_PROG}: {outcome.note}\n")
    out.flush()
    return 0 if outcome.ok else 1


def _why(error: Exception) -> str:
    # The web client wraps the transport's reasons in lists of failures.
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(str(r.value) for r in reasons)
    if isinstance(error, TimeoutError | CancelledError):
        return "no answer in time"
    return str(error) or type(error).__name__


def run(args: argparse.Namespace) -> int:
    """Run C{msync admin} with the parsed C{args}; exits the process."""
    # The command line is where the global reactor gets chosen.
    from twisted.internet.task import react
    from twisted.web.client import Agent

    async def main(reactor: Any) -> None:
        status = await admin(args, Agent(reactor), reactor)
        if status:
            raise SystemExit(status)

    react(main)
    return 0
