"""
The API's answers as C{msync admin} prints them for people: aligned
tables for lists, C{name: value} lines for one thing, times in UTC, and
C{-} for what is not set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "col",
    "config_text",
    "configs_text",
    "device_text",
    "instance_text",
    "instances_text",
    "key_text",
    "keys_text",
    "pairs_text",
    "send_text",
    "settings_text",
    "table_text",
    "user_text",
]

_DAY_S = 86_400


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


def col(title: str, name: str) -> _Column:
    return title, lambda row: row.get(name)


def table_text(
    rows: Iterable[Mapping[str, Any]], columns: list[_Column]
) -> str:
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


def pairs_text(pairs: list[tuple[str, object]]) -> str:
    width = max(len(name) for name, _ in pairs)
    return "".join(
        f"{(name + ':').ljust(width + 1)} {_shown(value)}\n"
        for name, value in pairs
    )


def instance_text(i: Mapping[str, Any]) -> str:
    return pairs_text(
        [
            ("instance", i.get("instance_id")),
            ("time zone", i.get("time_zone")),
            ("validation url", i.get("validation_url")),
            ("app key set", i.get("app_key_set")),
            ("created", _when(i.get("created"))),
        ]
    )


def instances_text(rows: list[Mapping[str, Any]]) -> str:
    return table_text(
        rows,
        [
            col("INSTANCE", "instance_id"),
            col("TIME ZONE", "time_zone"),
            col("VALIDATION URL", "validation_url"),
            col("APP KEY", "app_key_set"),
            ("CREATED", lambda r: _when(r.get("created"))),
        ],
    )


def key_text(k: Mapping[str, Any]) -> str:
    pairs: list[tuple[str, object]] = [("access key", k.get("access_key"))]
    if "secret" in k:
        pairs.append(("secret", k.get("secret")))
    pairs += [
        ("instances", k.get("instances")),
        ("created", _when(k.get("created"))),
        ("revoked", k.get("revoked")),
    ]
    return pairs_text(pairs)


def keys_text(rows: list[Mapping[str, Any]]) -> str:
    return table_text(
        rows,
        [
            col("ACCESS KEY", "access_key"),
            col("INSTANCES", "instances"),
            ("CREATED", lambda r: _when(r.get("created"))),
            col("REVOKED", "revoked"),
        ],
    )


def config_text(c: Mapping[str, Any]) -> str:
    return pairs_text(
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


def configs_text(rows: list[Mapping[str, Any]]) -> str:
    return table_text(
        rows,
        [
            col("BIZ TYPE", "biz_type"),
            col("STATE", "state"),
            col("RANGE", "range"),
            col("TARGET", "target"),
            col("MULTI", "multi_device"),
            col("PERSISTENT", "persistent"),
            col("RESEND", "resend_mode"),
            col("THRESHOLD", "threshold"),
            col("CONSISTENCY", "consistency"),
            col("DESCRIPTION", "description"),
        ],
    )


def send_text(r: Mapping[str, Any]) -> str:
    return pairs_text(
        [
            ("code", r.get("code")),
            ("success", r.get("success")),
            ("op id", r.get("op_id")),
            ("reason", r.get("reason")),
        ]
    )


def _days_text(days: list[Mapping[str, Any]]) -> str:
    return table_text(
        days,
        [
            ("DAY", lambda r: _day(r.get("day"))),
            col("PUSHES", "pushes"),
            col("ARRIVALS", "arrivals"),
        ],
    )


def _pushes_text(pushes: list[Mapping[str, Any]], device: bool) -> str:
    columns = [
        col("OP", "op_id"),
        col("BIZ TYPE", "biz_type"),
        col("SCOPE", "scope"),
        col("STATE", "state"),
        col("ATTEMPTS", "attempts"),
        ("CREATED", lambda r: _when(r.get("created"))),
        col("THIRD MSG ID", "third_msg_id"),
        col("REASON", "reason"),
    ]
    if device:
        columns.insert(1, col("DEVICE", "device_id"))
    return table_text(pushes, columns)


def device_text(d: Mapping[str, Any]) -> str:
    head = pairs_text(
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


def user_text(u: Mapping[str, Any]) -> str:
    head = pairs_text(
        [("user", u.get("user_id")), ("online", u.get("online"))]
    )
    devices = table_text(
        u.get("devices", []),
        [
            col("DEVICE", "device_id"),
            col("ONLINE", "online"),
            col("OS", "os_type"),
            col("APP VERSION", "app_version"),
            col("VALIDATED", "validated"),
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


def settings_text(s: Mapping[str, Any]) -> str:
    return pairs_text([("signature check", _on(s.get("signature_check")))])


def _on(value: object) -> str:
    return "on" if value else "off"
