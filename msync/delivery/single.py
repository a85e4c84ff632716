"""
Single-device configs: each op of a user goes to one of the user's
devices, once.

A new op goes to the user's most recently connected device that matches
its filters.  If that device leaves before acking, the op goes to the next
device of the user that is online or comes online; once any device acks
it, no other device ever gets it.  An op pushed C{max_attempts} times to
one device without an ack is dropped for good.

The user's position is the scope's shared sync point plus the ops done
above it (devices ack out of order across each other); both are stored, so
a restart never hands an acked op to another device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twisted.logger import Logger

from msync.delivery.frames import FrameBuilder
from msync.delivery.ops import Filters, matches
from msync.delivery.session import wire_scope
from msync.model import (
    DeliveryEvent,
    DeliveryState,
    Scope,
    SyncConfig,
    SyncPoint,
)
from msync.store.oplog import MAX_ABOVE
from msync.wire.messages import Gap, Point, to_frame

if TYPE_CHECKING:
    from msync.delivery.engine import Engine, Session

_log = Logger()


@dataclass
class _Sent:
    """An op handed to one device and not yet acked."""

    session: Session
    attempts: int
    size: int
    at: float


@dataclass
class UserLog:
    """One user's single-device scope, while any of its devices is on."""

    config: SyncConfig
    scope: Scope
    name: str
    point: int
    above: set[int]
    sessions: list[Session] = field(default_factory=list)
    device_points: dict[str, int] = field(default_factory=dict)
    sent: dict[int, _Sent] = field(default_factory=dict)
    prior: dict[tuple[int, str], int] = field(default_factory=dict)
    held_until: int = 0
    dirty: bool = False


class UserLogs:
    """Every online user's single-device scopes, for one engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._logs: dict[bytes, UserLog] = {}
        self._of: dict[Session, dict[tuple[str, str], UserLog]] = {}

    # --- membership ------------------------------------------------------

    def plan(
        self,
        session: Session,
        wanted: list[tuple[SyncConfig, Scope]],
        presented: dict[tuple[str, str], Point],
    ) -> None:
        """Make the session a member of exactly the user logs it reads."""
        mine = self._of.setdefault(session, {})
        keep = {(c.biz_type, wire_scope(s)): (c, s) for c, s in wanted}
        for name, log in list(mine.items()):
            if name not in keep or keep[name][1] != log.scope:
                self._part(session, log)
                del mine[name]
            else:
                log.config = keep[name][0]
        epoch = self._engine.store.epoch
        for name, (config, scope) in keep.items():
            if name in mine:
                continue
            found = self._logs.get(scope.key)
            if found is None:
                shared = self._engine.store.sync_point(scope, None)
                point, above = 0, set()
                if shared is not None and shared.epoch == epoch:
                    point, above = shared.op_id, set(shared.above)
                found = UserLog(config, scope, name[1], point, above)
                self._logs[scope.key] = found
            log = found
            own = self._engine.store.sync_point(scope, session.device_id)
            mark = own.op_id if own and own.epoch == epoch else 0
            p = presented.get(name)
            if p is not None and p.epoch == epoch:
                mark = max(mark, p.op_id)
            log.device_points[session.device_id] = mark
            log.sessions.append(session)
            log.sessions.sort(key=lambda s: s.connected, reverse=True)
            mine[name] = log

    def leave(self, session: Session) -> None:
        """The session went away: its unacked ops go to other devices."""
        for log in self._of.pop(session, {}).values():
            self._part(session, log)

    def _part(self, session: Session, log: UserLog) -> None:
        if session in log.sessions:
            log.sessions.remove(session)
        for op_id, sent in list(log.sent.items()):
            if sent.session is session:
                del log.sent[op_id]
                session.inflight_ops -= 1
                session.inflight_bytes -= sent.size
                log.prior[(op_id, session.device_id)] = sent.attempts
        if not log.sessions:
            self._save(log)
            del self._logs[log.scope.key]
        else:
            self._fill_log(log)

    # --- pushing -------------------------------------------------------

    def changed(self, scope: Scope, op_id: int | None = None) -> int:
        """New ops in C{scope}; return 1 if C{op_id} went to a device."""
        log = self._logs.get(scope.key)
        if log is None:
            return 0
        self._fill_log(log)
        return 1 if op_id is not None and op_id in log.sent else 0

    def fill(self, session: Session) -> None:
        """Push what the session's user logs have for anyone."""
        for log in self._of.get(session, {}).values():
            self._fill_log(log)

    def _fill_log(self, log: UserLog) -> None:
        engine = self._engine
        now = engine.clock.seconds()
        now_ms = int(now * 1000)
        if not log.config.online or log.held_until > now_ms:
            return
        ops = engine.read(_Reader(log), log.point, engine.tuning.page)
        builders: dict[Session, FrameBuilder] = {}
        for op in ops:
            if op.op_id in log.above or op.op_id in log.sent:
                continue
            if op.start_ms > now_ms:
                log.held_until = op.start_ms
                break
            filters = Filters.decode(op.meta)
            target = self._target(log, op.op_id, filters)
            if target is None:
                continue
            attempts = log.prior.pop((op.op_id, target.device_id), 0) + 1
            if attempts > engine.tuning.max_attempts:
                self._drop(log, op.op_id, target, attempts - 1)
                continue
            log.sent[op.op_id] = _Sent(target, attempts, len(op.body), now)
            target.inflight_ops += 1
            target.inflight_bytes += len(op.body)
            target.pushes += 1
            engine.observer.pushed(1, 1 if attempts > 1 else 0)
            builder = builders.get(target)
            if builder is None:
                builder = FrameBuilder(
                    target.link.send, engine.tuning.frame_limit
                )
                builders[target] = builder
            builder.add(
                log.config.biz_type,
                log.name,
                engine.store.epoch,
                [(op.op_id, op.body)],
            )
        for builder in builders.values():
            builder.flush()
        self._compact(log, [op.op_id for op in ops])

    def _target(
        self, log: UserLog, op_id: int, filters: Filters
    ) -> Session | None:
        for session in log.sessions:
            if (
                session.has_room
                and self._engine.room(session) > 0
                and op_id > log.device_points.get(session.device_id, 0)
                and matches(filters, session.audience)
            ):
                return session
        return None

    def _drop(
        self, log: UserLog, op_id: int, session: Session, attempts: int
    ) -> None:
        engine = self._engine
        _log.info(
            "dropped op {op_id} of {scope} after {attempts} pushes to "
            "device {device_id}",
            op_id=op_id,
            scope=str(log.scope),
            attempts=attempts,
            device_id=session.device_id,
        )
        log.above.add(op_id)
        log.dirty = True
        engine.observer.dropped("retries")
        engine.store.record_deliveries(
            [
                DeliveryEvent(
                    log.scope,
                    op_id,
                    session.device_id,
                    DeliveryState.DROPPED,
                    engine.now_ms(),
                    session.user_id,
                    reason="retries",
                )
            ]
        ).addErrback(lambda f: _log.failure("recording a drop failed", f))
        session.link.send(
            to_frame(
                Gap(
                    log.config.biz_type,
                    log.name,
                    engine.store.epoch,
                    op_id,
                    "retries",
                )
            )
        )

    def _compact(self, log: UserLog, ids: list[int]) -> None:
        # Move the shared point over the done ops at the front of the log.
        for op_id in ids:
            if op_id not in log.above:
                break
            log.above.discard(op_id)
            log.point = op_id
            log.dirty = True
        if len(log.above) > MAX_ABOVE:
            # XXX: an op no device of the user can ever take (say an IOS
            # op for an Android-only user) holds the point back until it
            # expires; past this bound its successors' marks are dropped.
            for op_id in sorted(log.above)[: len(log.above) - MAX_ABOVE]:
                log.above.discard(op_id)

    # --- acks and timers ---------------------------------------------

    def ack(self, session: Session, p: Point) -> None:
        """The session acked its ops of a user log up to C{p.op_id}."""
        log = self._of.get(session, {}).get((p.biz, p.scope))
        if log is None:
            return
        done = sorted(
            op_id
            for op_id, sent in log.sent.items()
            if sent.session is session and op_id <= p.op_id
        )
        for op_id in done:
            sent = log.sent.pop(op_id)
            session.inflight_ops -= 1
            session.inflight_bytes -= sent.size
            log.above.add(op_id)
        session.arrivals += len(done)
        if done:
            self._engine.observer.acked(len(done), None)
        mark = log.device_points.get(session.device_id, 0)
        if done and done[-1] > mark:
            log.device_points[session.device_id] = done[-1]
        if done:
            log.dirty = True
            ops = self._engine.read(
                _Reader(log), log.point, len(log.above) + 1
            )
            self._compact(log, [op.op_id for op in ops])
            self._fill_log(log)

    def tick(self, session: Session, now: float) -> bool:
        """Push again, or drop, the session's overdue ops; say if any."""
        timeout = self._engine.tuning.ack_timeout
        overdue = False
        for log in self._of.get(session, {}).values():
            for op_id, sent in list(log.sent.items()):
                if sent.session is session and now - sent.at >= timeout:
                    del log.sent[op_id]
                    session.inflight_ops -= 1
                    session.inflight_bytes -= sent.size
                    log.prior[(op_id, session.device_id)] = sent.attempts
                    overdue = True
            if overdue:
                self._fill_log(log)
        return overdue

    def holds(self, session: Session) -> bool:
        """Whether the session reads any single-device log."""
        return bool(self._of.get(session))

    def points(
        self, session: Session
    ) -> list[tuple[Scope, str | None, SyncPoint]]:
        """The positions to store for the session's user logs."""
        epoch = self._engine.store.epoch
        out: list[tuple[Scope, str | None, SyncPoint]] = []
        for log in self._of.get(session, {}).values():
            mark = log.device_points.get(session.device_id, 0)
            out.append((log.scope, session.device_id, SyncPoint(epoch, mark)))
            if log.dirty:
                log.dirty = False
                out.append((log.scope, None, _shared(log, epoch)))
        return out

    def _save(self, log: UserLog) -> None:
        if not log.dirty:
            return
        log.dirty = False
        d = self._engine.store.advance_sync_points(
            [(log.scope, None, _shared(log, self._engine.store.epoch))]
        )
        d.addErrback(lambda f: _log.failure("saving a user point failed", f))


def _shared(log: UserLog, epoch: int) -> SyncPoint:
    return SyncPoint(epoch, log.point, tuple(sorted(log.above)))


@dataclass
class _Reader:
    """Lets L{Engine.read} read a user log as it reads a stream."""

    log: UserLog

    @property
    def config(self) -> SyncConfig:
        return self.log.config

    @property
    def scope(self) -> Scope:
        return self.log.scope
