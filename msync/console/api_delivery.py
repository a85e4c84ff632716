"""
The admin API's view into delivery: sending one op by hand, as a
backend would, and the reports on a user or a device (state, counters,
recent pushes).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from msync.console.api_bodies import Fields, date, not_found, payload
from msync.console.api_calls import LOG_NAMESPACE, Call
from msync.console.api_instances import find_instance
from msync.console.api_shapes import device_json, user_json
from msync.delivery.engine import Engine
from msync.delivery.lookup import device_report, user_report
from msync.delivery.sender import Sender, SendRequest
from msync.model import ValidationError, check_link
from msync.store import Store

__all__ = ["DeliveryApi"]

_log = Logger(namespace=LOG_NAMESPACE)

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


class DeliveryApi:
    """
    The actions of the send, user and device routes, over the store,
    the delivery engine and the sender.
    """

    def __init__(
        self,
        store: Store,
        engine: Engine,
        sender: Sender,
        now_ms: Callable[[], int],
    ) -> None:
        """
        @param now_ms: The time now, in milliseconds since the epoch.
        """
        self._store = store
        self._engine = engine
        self._sender = sender
        self._now_ms = now_ms

    async def send(self, call: Call, instance_id: str) -> object:
        """Send one op, as a backend would; answer the sender's result."""
        instance = find_instance(self._store, instance_id)
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

    async def device(
        self, call: Call, instance_id: str, device_id: str
    ) -> object:
        """Show a device: state, counters, recent pushes."""
        find_instance(self._store, instance_id)
        report = None
        if _nameable(device_id):
            report = device_report(
                self._engine, instance_id, device_id, self._now_ms()
            )
        if report is None:
            raise not_found(f"device {device_id!r} was never seen")
        return device_json(report)

    async def user(self, call: Call, instance_id: str, user_id: str) -> object:
        """Show a user: devices, counters, recent pushes."""
        find_instance(self._store, instance_id)
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


def _nameable(name: str) -> bool:
    # A name no user or device can have is not looked up at all.
    try:
        check_link("id", name)
    except ValidationError:
        return False
    return True
