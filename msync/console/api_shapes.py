"""
The JSON shape of each resource the admin API answers with: instances,
access keys, sync configs, and the lookup reports on devices and users.

An instance's app key is never shown, only whether one is set; an access
key's secret is shown only when the caller asks for it (once, when the
key is made).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from msync.delivery.lookup import DeviceReport, PushEntry, UserReport
from msync.model import AccessKey, Instance, SyncConfig

__all__ = [
    "config_json",
    "device_json",
    "instance_json",
    "key_json",
    "user_json",
]


def instance_json(i: Instance) -> dict[str, Any]:
    return {
        "instance_id": i.instance_id,
        "time_zone": i.time_zone,
        "validation_url": i.validation_url,
        "app_key_set": bool(i.app_key),
        "created": i.created_ms,
    }


def key_json(k: AccessKey, *, with_secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"access_key": k.access_key}
    if with_secret:
        out["secret"] = k.secret
    out.update(
        instances=list(k.instances), created=k.created_ms, revoked=k.revoked
    )
    return out


def config_json(c: SyncConfig) -> dict[str, Any]:
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


def device_json(d: DeviceReport, *, detail: bool = True) -> dict[str, Any]:
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


def user_json(u: UserReport) -> dict[str, Any]:
    return {
        "user_id": u.user_id,
        "online": u.online,
        "devices": [device_json(d, detail=False) for d in u.devices],
        "days": _days_json(u.days),
        "pushes": [_push_json(p) for p in u.pushes],
    }
