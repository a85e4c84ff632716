"""
Devices coming and going: the engine's admission of a hello, the binding
of a user to a device, and a device leaving.

A hello is checked (protocol version, instance, app key, ids) before
anything is written; a device id stays bound to the secret it first used,
and a second connection of a device replaces the first.  Binding a user
asks the tenant to validate the user's session; consistency configs wait
for its answer.  A device that leaves has its unacked ops' push counts
recorded and its positions written.

L{Admission} is a part of one L{msync.delivery.engine.Engine}: it shares
the engine's table of online sessions and has the engine plan and pump
the sessions it admits.
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from msync.delivery.ops import audience
from msync.delivery.session import Link, Refused, Session, secret_hash
from msync.model import (
    DeliveryEvent,
    DeliveryState,
    Device,
    OSType,
    ValidationError,
    check_link,
    parse_version,
)
from msync.store import DeviceClaimed
from msync.wire.messages import VERSION, Bound, Hello, Welcome, to_frame

if TYPE_CHECKING:
    from msync.delivery.engine import Engine
    from msync.delivery.planning import Planner
    from msync.delivery.progress import ProgressWriter
    from msync.delivery.single import UserLogs

# The engine's events keep one namespace, whichever of its parts logs them.
_log = Logger(namespace="msync.delivery.engine")


class Admission:
    """Admits devices, binds their users, and lets them go, for one
    engine."""

    def __init__(
        self,
        engine: Engine,
        sessions: dict[tuple[str, str], Session],
        planner: Planner,
        progress: ProgressWriter,
        users: UserLogs,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._planner = planner
        self._progress = progress
        self._users = users

    # --- hello ---------------------------------------------------------

    def hello(self, link: Link, hello: Hello) -> Deferred[Session]:
        """
        Admit a device: check who it is, bind its id to its secret on
        first use, replace an older connection of the same device, and
        push its backlog.

        @return: a Deferred firing with the session, or failing with
            L{Refused}.
        """
        self._engine.forget(link)
        try:
            device = self._check_hello(hello)
        except Refused as e:
            return _fail(e)
        return self._engine.store.save_device(device).addCallbacks(
            lambda saved: self._admit(link, hello, saved),
            self._claim_failed,
        )

    def _check_hello(self, hello: Hello) -> Device:
        store = self._engine.store
        if hello.version != VERSION:
            raise Refused(
                "VERSION",
                f"protocol version {VERSION} only, not {hello.version}",
            )
        instance = store.instance(hello.instance)
        if instance is None:
            raise Refused(
                "UNKNOWN_INSTANCE", f"no instance {hello.instance!r}"
            )
        if instance.app_key and not _same(instance.app_key, hello.app_key):
            raise Refused("AUTH", "wrong app key")
        try:
            check_link("device", hello.device)
            OSType(hello.os)
            parse_version(hello.app_version)
            if hello.user:
                check_link("user", hello.user)
        except ValueError as e:
            raise Refused("BAD_MESSAGE", str(e)) from e
        now = self._engine.now_ms()
        old = store.device(hello.instance, hello.device)
        secret = secret_hash(hello.secret)
        if old is not None and old.secret_hash and old.secret_hash != secret:
            raise Refused(
                "DEVICE_CLAIMED", "this device id belongs to another device"
            )
        user = hello.user if hello.user else (old.user_id if old else "")
        return Device(
            instance_id=hello.instance,
            device_id=hello.device,
            secret_hash=secret,
            user_id=user if hello.user else "",
            session_validated=False,
            os_type=hello.os,
            app_version=hello.app_version,
            first_seen_ms=now,
            last_seen_ms=now,
        )

    def _claim_failed(self, failure: Any) -> Any:
        failure.trap(DeviceClaimed)
        raise Refused(
            "DEVICE_CLAIMED", "this device id belongs to another device"
        )

    def _admit(self, link: Link, hello: Hello, device: Device) -> Session:
        engine = self._engine
        key = (hello.instance, hello.device)
        old = self._sessions.get(key)
        if old is not None:
            old.link.close("REPLACED", "the device connected again")
            self.disconnect(old)
        session = Session(
            link,
            hello.instance,
            hello.device,
            audience(hello.device, hello.os, hello.app_version),
            engine.clock.seconds(),
        )
        self._sessions[key] = session
        _log.info(
            "device {device_id} of {instance_id} connected",
            device_id=hello.device,
            instance_id=hello.instance,
        )
        link.send(
            to_frame(
                Welcome(
                    device=hello.device,
                    heartbeat=engine.tuning.heartbeat,
                    time=engine.now_ms(),
                )
            )
        )
        if hello.user and hello.session:
            self._bind(session, hello.user, hello.session)
        presented = {(p.biz, p.scope): p for p in hello.points}
        self._planner.plan(session, presented)
        engine.pump(session, sync=True)
        return session

    # --- users ---------------------------------------------------------

    def bind(self, session: Session, user_id: str, session_id: str) -> None:
        """Bind a user to the device and re-plan its streams."""
        try:
            check_link("user", user_id)
        except ValidationError as e:
            raise Refused("BAD_MESSAGE", str(e)) from e
        self._bind(session, user_id, session_id)
        self._planner.plan(session, {})
        self._engine.pump(session, sync=True)

    def _bind(self, session: Session, user_id: str, session_id: str) -> None:
        changed = (user_id, session_id) != (
            session.user_id,
            session.session_id,
        )
        session.user_id = user_id
        session.session_id = session_id
        if changed:
            session.validated = None
        self._record_device(session)
        session.link.send(to_frame(Bound(user_id, session.validated)))
        if session.validated is None:
            d = self._engine.validate(session.instance_id, user_id, session_id)
            d.addCallbacks(
                lambda ok: self.validated(session, user_id, session_id, ok),
                lambda f: _log.failure(
                    "session validation failed for {user_id}",
                    f,
                    user_id=user_id,
                ),
            )

    def validated(
        self, session: Session, user_id: str, session_id: str, ok: bool
    ) -> None:
        """The tenant answered whether the session's user is who it
        says; unless the device left or bound again meanwhile, record
        the answer and re-plan its streams."""
        if session.closed or (session.user_id, session.session_id) != (
            user_id,
            session_id,
        ):
            return
        session.validated = bool(ok)
        self._record_device(session)
        session.link.send(to_frame(Bound(user_id, session.validated)))
        self._planner.plan(session, {})
        self._engine.pump(session, sync=True)

    def unbind(self, session: Session) -> None:
        """Unbind the device's user and drop its user streams."""
        session.user_id = session.session_id = ""
        session.validated = None
        self._record_device(session)
        session.link.send(to_frame(Bound("", None)))
        self._planner.plan(session, {})

    def _record_device(self, session: Session) -> None:
        engine = self._engine
        device = engine.store.device(session.instance_id, session.device_id)
        if device is None:
            return
        d = engine.store.save_device(
            replace(
                device,
                user_id=session.user_id,
                session_validated=bool(session.validated),
                last_seen_ms=engine.now_ms(),
            )
        )
        d.addErrback(lambda f: _log.failure("recording a device failed", f))

    # --- leaving -------------------------------------------------------

    def disconnect(self, session: Session) -> Deferred[None]:
        """
        The device went away: forget its streams, remember how often its
        unacked ops were pushed, and write out its positions.
        """
        if session.closed:
            return succeed(None)
        session.closed = True
        key = (session.instance_id, session.device_id)
        if self._sessions.get(key) is session:
            del self._sessions[key]
        events = []
        now = self._engine.now_ms()
        for stream in session.streams.values():
            self._planner.unsubscribe(stream)
            for op_id, (attempts, *_) in stream.inflight.items():
                events.append(
                    DeliveryEvent(
                        stream.scope,
                        op_id,
                        session.device_id,
                        DeliveryState.PUSHED,
                        now,
                        session.user_id,
                        attempts=attempts,
                    )
                )
        self._users.leave(session)
        d = self._progress.flush(session, final=True)
        if events:
            store = self._engine.store
            d.addCallback(lambda _: store.record_deliveries(events))
        d.addErrback(
            lambda f: _log.failure("saving a device's state failed", f)
        )
        return d


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _fail(e: Exception) -> Deferred[Any]:
    return fail(e)
