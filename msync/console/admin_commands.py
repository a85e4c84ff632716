"""
The subcommands of C{msync admin}: L{add_arguments} declares each one
and its options, and each runs as calls to the admin API through an
L{AdminClient}, giving back the JSON it got and that JSON as text for
people.

A command line that asks for something that cannot be done is refused
with L{Usage}.
"""

from __future__ import annotations

import argparse
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from msync.console.admin_client import AdminClient
from msync.console.admin_text import (
    col,
    config_text,
    configs_text,
    device_text,
    instance_text,
    instances_text,
    key_text,
    keys_text,
    pairs_text,
    send_text,
    settings_text,
    table_text,
    user_text,
)

__all__ = ["DEFAULT_URL", "Usage", "add_arguments"]

DEFAULT_URL = "http://127.0.0.1:8080"


class Usage(Exception):
    """The command line asks for something that cannot be done."""


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
    return _Outcome(rows, instances_text(rows))


async def _instance_add(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    body = {"instance_id": a.instance_id}
    if a.time_zone is not None:
        body["time_zone"] = a.time_zone
    if a.validation_url is not None:
        body["validation_url"] = a.validation_url
    i = await c.call("POST", "/instances", body)
    return _Outcome(i, instance_text(i))


async def _instance_show(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    i = await c.call("GET", f"/instances/{_part(a.instance_id)}")
    return _Outcome(i, instance_text(i))


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
        raise Usage("say what to change")
    i = await c.call("PATCH", f"/instances/{_part(a.instance_id)}", body)
    return _Outcome(i, instance_text(i))


async def _key_list(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    rows = await c.call("GET", "/keys")
    return _Outcome(rows, keys_text(rows))


async def _key_add(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    k = await c.call("POST", "/keys", {"instances": a.instances})
    return _Outcome(k, key_text(k), note="the secret is shown only this once")


async def _key_revoke(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    k = await c.call("POST", f"/keys/{_part(a.access_key)}/revoke")
    return _Outcome(k, key_text(k))


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
    return _Outcome(rows, configs_text(rows))


async def _config_add(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    body = {"biz_type": a.biz, "target": a.target, **_config_body(a)}
    path = f"/instances/{_part(a.instance)}/configs"
    config = await c.call("POST", path, body)
    return _Outcome(config, config_text(config))


async def _config_show(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    config = await c.call("GET", _config_path(a))
    return _Outcome(config, config_text(config))


async def _config_set(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    body = _config_body(a)
    if not body:
        raise Usage("say what to change")
    config = await c.call("PATCH", _config_path(a), body)
    return _Outcome(config, config_text(config))


async def _config_offline(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    config = await c.call("POST", _config_path(a, "/offline"))
    return _Outcome(config, config_text(config))


async def _config_online(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    config = await c.call("POST", _config_path(a, "/online"))
    return _Outcome(config, config_text(config))


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
    return _Outcome(r, send_text(r), ok=bool(r.get("success")))


async def _lookup(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    where = f"/instances/{_part(a.instance)}"
    if a.lookup_device is not None:
        d = await c.call("GET", f"{where}/devices/{_part(a.lookup_device)}")
        return _Outcome(d, device_text(d))
    u = await c.call("GET", f"{where}/users/{_part(a.lookup_user)}")
    return _Outcome(u, user_text(u))


async def _signature(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    if a.action == "show":
        s = await c.call("GET", "/settings")
    else:
        body = {"signature_check": a.action == "on"}
        s = await c.call("PATCH", "/settings", body)
    return _Outcome(s, settings_text(s))


async def _token_add(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    t = await c.call("POST", "/tokens")
    text = pairs_text([("token", t.get("token")), ("id", t.get("id"))])
    return _Outcome(t, text, note="the token is shown only this once")


async def _token_revoke(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    t = await c.call("DELETE", f"/tokens/{_part(a.token_id)}")
    return _Outcome(t, pairs_text([("revoked token", t.get("id"))]))


async def _admin_list(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    rows = await c.call("GET", "/admins")
    return _Outcome(rows, table_text(rows, [col("ADMIN", "user")]))


async def _admin_add(c: AdminClient, a: argparse.Namespace) -> _Outcome:
    body = {"user": a.new_user, "password": a.new_password}
    r = await c.call("POST", "/admins", body)
    return _Outcome(r, pairs_text([("admin added", r.get("user"))]))


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
