"""
Sending data to devices from the server side: validate, store (or push at
once, for non-persistent configs), and answer with a result code.

The HTTP gateway and the console only translate their input into a
L{SendRequest} and L{SendResult} back; every rule lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgpack
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from msync.delivery.engine import Engine
from msync.delivery.ops import Filters
from msync.delivery.volatile import NoIds
from msync.model import (
    DEFAULT_VALIDITY_MS,
    MAX_PAYLOAD,
    MAX_THIRD_MSG_ID,
    AppendResult,
    NewOp,
    OSType,
    Range,
    ResendMode,
    Scope,
    ScopeKind,
    SyncConfig,
    Target,
    ValidationError,
    check_link,
    compare_versions,
    parse_version,
)
from msync.wire.messages import op_body

_log = Logger()


class Code(Enum):
    """The result codes of sending, as the manual lists them."""

    OK = "OK"
    DUPLICATED_BIZ_ID = "DUPLICATED_BIZ_ID"
    NOT_ONLINE = "NOT_ONLINE"
    THIRDMSGID_IS_NULL = "THIRDMSGID_IS_NULL"
    BIZ_NOT_ONLINE = "BIZ_NOT_ONLINE"
    ARGS_IS_NULL = "ARGS_IS_NULL"
    NOT_SUPPORT_GLOBAL = "NOT_SUPPORT_GLOBAL"
    PAYLOAD_LONG = "PAYLOAD_LONG"
    THIRD_MSG_ID_LONG = "THIRD_MSG_ID_LONG"
    GLOBAL_OPLOG_LINKTOKEN_NOT_EMPTY = "GLOBAL_OPLOG_LINKTOKEN_NOT_EMPTY"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    INVALID_PARAMETER = "INVALID_PARAMETER"
    """Not a manual code: a value is malformed (a date, a version...).
    The gateway answers it as its own C{INVALID_PARAMETER}."""


SUCCESS = frozenset({Code.OK, Code.DUPLICATED_BIZ_ID, Code.NOT_ONLINE})


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One op to send, as a backend or an operator asks for it."""

    instance_id: str
    biz_type: str
    payload: bytes
    third_msg_id: str
    link_token: str = ""
    to_all: bool = False
    """True for the global method (C{syncglobal})."""
    immediate: bool = True
    os_type: str = ""
    app_min_version: str = ""
    app_max_version: str = ""
    device_id: str = ""
    start_ms: int = 0
    expire_ms: int = 0


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome: a code, the op id on success, and a reason."""

    code: Code
    op_id: int = 0
    reason: str = ""

    @property
    def success(self) -> bool:
        return self.code in SUCCESS


class _Refusal(Exception):
    def __init__(self, code: Code, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_date(text: str, time_zone: str) -> int:
    """
    Read C{yyyy-MM-dd HH:mm:ss} in C{time_zone} as ms since the epoch.

    @raise ValidationError: if the text or the zone is malformed.
    """
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValidationError(
            "time_zone", f"unknown zone {time_zone!r}"
        ) from e
    try:
        moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError) as e:
        raise ValidationError(
            "date", f"{text!r} is not yyyy-MM-dd HH:mm:ss"
        ) from e
    return int(moment.replace(tzinfo=zone).timestamp() * 1000)


class Sender:
    """Sends ops to devices through the store and the engine."""

    def __init__(
        self,
        engine: Engine,
        on_result: Callable[[SendResult], object] | None = None,
    ) -> None:
        self._engine = engine
        self._store = engine.store
        self._on_result = on_result

    def send(self, request: SendRequest) -> Deferred[SendResult]:
        """
        Validate and send one op.

        @return: a Deferred that fires with the result; it never fails.
        """
        d = self._send(request)
        if self._on_result is not None:
            d.addCallback(self._tell)
        return d

    def _tell(self, result: SendResult) -> SendResult:
        assert self._on_result is not None
        self._on_result(result)
        return result

    def _send(self, request: SendRequest) -> Deferred[SendResult]:
        try:
            config, scope, op = self._prepare(request)
        except _Refusal as e:
            return succeed(SendResult(e.code, reason=e.reason))
        except ValidationError as e:
            return succeed(SendResult(Code.INVALID_PARAMETER, reason=str(e)))
        except Exception:
            _log.failure("preparing a send failed")
            return succeed(SendResult(Code.SYSTEM_ERROR, reason="internal"))

        if not config.persistent:
            return succeed(self._push_now(config, scope, op))
        return (
            self._store.append(op)
            .addCallback(self._appended, config, scope, request)
            .addErrback(self._failed)
        )

    def _prepare(self, r: SendRequest) -> tuple[SyncConfig, Scope, NewOp]:
        if not r.instance_id or not r.biz_type:
            raise _Refusal(
                Code.ARGS_IS_NULL, "instance_id and biz_type are required"
            )
        if not r.third_msg_id:
            raise _Refusal(Code.THIRDMSGID_IS_NULL, "third_msg_id is required")
        if len(r.third_msg_id.encode("utf-8")) >= MAX_THIRD_MSG_ID:
            raise _Refusal(
                Code.THIRD_MSG_ID_LONG,
                f"third_msg_id must be under {MAX_THIRD_MSG_ID} bytes",
            )
        if not r.payload:
            raise _Refusal(Code.ARGS_IS_NULL, "payload is required")
        if len(r.payload) >= MAX_PAYLOAD:
            raise _Refusal(
                Code.PAYLOAD_LONG,
                f"payload is {len(r.payload)} bytes; it must be under "
                f"{MAX_PAYLOAD}",
            )
        instance = self._store.instance(r.instance_id)
        if instance is None:
            raise _Refusal(
                Code.INVALID_PARAMETER, f"no instance {r.instance_id!r}"
            )
        config = self._engine.configs(r.instance_id).get(r.biz_type)
        if config is None:
            raise _Refusal(
                Code.BIZ_NOT_ONLINE, f"no sync config {r.biz_type!r}"
            )
        if not config.online:
            raise _Refusal(
                Code.BIZ_NOT_ONLINE, f"sync config {r.biz_type} is offline"
            )
        scope = self._scope(config, r)
        filters = self._filters(config, r)
        now = self._engine.now_ms()
        start, expire = r.start_ms, r.expire_ms or now + DEFAULT_VALIDITY_MS
        if expire < now:
            raise _Refusal(Code.INVALID_PARAMETER, "expire_date has passed")
        if start and start > expire:
            raise _Refusal(
                Code.INVALID_PARAMETER, "start_date is after expire_date"
            )
        if config.resend_mode is ResendMode.THRESHOLD:
            keep = config.threshold
        else:
            keep = self._engine.tuning.resend_cap
        dedup = msgpack.packb(
            [r.instance_id, r.biz_type, r.link_token, r.third_msg_id]
        )
        op = NewOp(
            scope=scope,
            body=op_body(r.payload, r.third_msg_id, now),
            meta=filters.encode(),
            dedup=dedup,
            created_ms=now,
            start_ms=start,
            expire_ms=expire,
            keep=keep,
        )
        return config, scope, op

    def _scope(self, config: SyncConfig, r: SendRequest) -> Scope:
        if r.to_all:
            if r.link_token:
                raise _Refusal(
                    Code.GLOBAL_OPLOG_LINKTOKEN_NOT_EMPTY,
                    "link_token must be empty for a global send",
                )
            if config.range is not Range.GLOBAL:
                raise _Refusal(
                    Code.NOT_SUPPORT_GLOBAL,
                    f"sync config {config.biz_type} is not global",
                )
            return Scope(r.instance_id, r.biz_type, ScopeKind.GLOBAL)
        if config.range is Range.GLOBAL:
            raise _Refusal(
                Code.NOT_SUPPORT_GLOBAL,
                f"sync config {config.biz_type} is global: use syncglobal",
            )
        if not r.link_token:
            raise _Refusal(Code.ARGS_IS_NULL, "link_token is required")
        try:
            check_link("link_token", r.link_token)
        except ValidationError as e:
            raise _Refusal(Code.INVALID_PARAMETER, str(e)) from e
        kind = (
            ScopeKind.USER
            if config.target is Target.USER
            else ScopeKind.DEVICE
        )
        return Scope(r.instance_id, r.biz_type, kind, r.link_token)

    def _filters(self, config: SyncConfig, r: SendRequest) -> Filters:
        try:
            if r.os_type:
                OSType(r.os_type)
            low = parse_version(r.app_min_version) if r.app_min_version else ()
            high = (
                parse_version(r.app_max_version) if r.app_max_version else ()
            )
            if r.device_id:
                check_link("device_id", r.device_id)
        except ValueError as e:
            raise _Refusal(Code.INVALID_PARAMETER, str(e)) from e
        if low and high and compare_versions(low, high) > 0:
            raise _Refusal(
                Code.INVALID_PARAMETER,
                "app_min_version is above app_max_version",
            )
        if r.device_id and config.target is not Target.USER:
            raise _Refusal(
                Code.INVALID_PARAMETER,
                "device_id applies only to user-target configs",
            )
        return Filters(r.os_type, low, high, r.device_id, r.immediate)

    def _push_now(
        self, config: SyncConfig, scope: Scope, op: NewOp
    ) -> SendResult:
        try:
            op_id, reached = self._engine.push_volatile(
                scope, op.body, op.meta, op.created_ms
            )
        except NoIds:
            return SendResult(Code.SYSTEM_ERROR, reason="starting up")
        if reached:
            return SendResult(Code.OK, op_id)
        return SendResult(Code.NOT_ONLINE, op_id, "no target online")

    def _appended(
        self,
        result: AppendResult,
        config: SyncConfig,
        scope: Scope,
        r: SendRequest,
    ) -> SendResult:
        if result.duplicate:
            return SendResult(
                Code.DUPLICATED_BIZ_ID, result.op_id, "third_msg_id repeated"
            )
        if not r.immediate or self._online(config, scope):
            return SendResult(Code.OK, result.op_id)
        return SendResult(
            Code.NOT_ONLINE, result.op_id, "stored; no target online now"
        )

    def _online(self, config: SyncConfig, scope: Scope) -> bool:
        engine = self._engine
        if scope.kind is ScopeKind.DEVICE:
            return engine.session(scope.instance_id, scope.link) is not None
        if scope.kind is ScopeKind.USER:
            return any(
                not config.consistency or s.validated
                for s in engine.user_sessions(scope.instance_id, scope.link)
            )
        return engine.online > 0

    def _failed(self, failure: Failure) -> SendResult:
        _log.failure("storing an op failed", failure)
        return SendResult(Code.SYSTEM_ERROR, reason="the store failed")
