"""
Stream planning: which scopes an online device reads, and from where.

A device reads its own device scope for device-target configs, its bound
user's scope for user-target configs (once validated, when the config
asks for user consistency), and the global scope of global configs (for
user targets, only with a bound user).  A new stream starts at the larger
of the stored position and the one the device presents; the device is
told with a C{gap} when it missed something (another epoch, ops trimmed
or expired).  Single-device user scopes are handed to
L{msync.delivery.single.UserLogs} instead.

L{Planner} is a part of one L{msync.delivery.engine.Engine}: it keeps the
engine's index of the streams reading each scope, which the engine's push
path reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from msync.delivery.session import Session, Stream, wire_scope
from msync.model import Range, Scope, ScopeKind, SyncConfig, Target
from msync.wire.messages import Gap, Point, to_frame

if TYPE_CHECKING:
    from msync.delivery.engine import Engine
    from msync.delivery.single import UserLogs
    from msync.delivery.tail import Tail
    from msync.delivery.volatile import VolatileLogs


class Planner:
    """Opens and closes the streams of one engine's sessions."""

    def __init__(
        self,
        engine: Engine,
        by_scope: dict[bytes, set[Stream]],
        tails: dict[bytes, Tail],
        volatile: VolatileLogs,
        users: UserLogs,
    ) -> None:
        self._engine = engine
        self._by_scope = by_scope
        self._tails = tails
        self._volatile = volatile
        self._users = users

    def _targets(
        self, session: Session
    ) -> Iterable[tuple[SyncConfig, Scope, bool]]:
        """
        Yield every config the device reads, with the scope it reads and
        whether the scope is single-device (shared by the user's devices).
        """
        for config in self._engine.configs(session.instance_id).values():
            user_ok = bool(session.user_id) and (
                not config.consistency or session.validated is True
            )
            if config.range is Range.GLOBAL:
                if config.target is Target.DEVICE or user_ok:
                    yield (
                        config,
                        Scope(
                            session.instance_id,
                            config.biz_type,
                            ScopeKind.GLOBAL,
                        ),
                        False,
                    )
            elif config.target is Target.DEVICE:
                yield (
                    config,
                    Scope(
                        session.instance_id,
                        config.biz_type,
                        ScopeKind.DEVICE,
                        session.device_id,
                    ),
                    False,
                )
            elif user_ok:
                scope = Scope(
                    session.instance_id,
                    config.biz_type,
                    ScopeKind.USER,
                    session.user_id,
                )
                yield config, scope, not config.multi_device

    def plan(
        self, session: Session, presented: dict[tuple[str, str], Point]
    ) -> None:
        """
        Make the session's streams match what it should read now: keep
        those still right, drop the rest, start the new ones at the right
        position (with a gap notice when the device missed something).
        """
        wanted: dict[tuple[str, str], tuple[SyncConfig, Scope]] = {}
        singles: list[tuple[SyncConfig, Scope]] = []
        for config, scope, single in self._targets(session):
            if single:
                singles.append((config, scope))
            else:
                wanted[(config.biz_type, wire_scope(scope))] = (config, scope)
        for name, stream in list(session.streams.items()):
            target = wanted.get(name)
            if (
                target is None
                or target[1] != stream.scope
                or (target[0].persistent != stream.config.persistent)
            ):
                self._drop_stream(session, stream)
            else:
                stream.config = target[0]
        for name, (config, scope) in wanted.items():
            if name not in session.streams:
                self._start_stream(session, config, scope, presented.get(name))
        self._users.plan(session, singles, presented)

    def _drop_stream(self, session: Session, stream: Stream) -> None:
        self.unsubscribe(stream)
        for _, size, _ in stream.inflight.values():
            session.inflight_ops -= 1
            session.inflight_bytes -= size
        stream.inflight.clear()
        session.streams.pop((stream.biz, stream.name), None)
        session.dirty.discard(stream)

    def unsubscribe(self, stream: Stream) -> None:
        """Take a closing stream out of its scope's readers."""
        subs = self._by_scope.get(stream.key)
        if subs is not None:
            subs.discard(stream)
            if not subs:
                del self._by_scope[stream.key]
                self._tails.pop(stream.key, None)

    def _start_stream(
        self,
        session: Session,
        config: SyncConfig,
        scope: Scope,
        presented: Point | None,
    ) -> None:
        store = self._engine.store
        epoch = store.epoch
        stored = store.sync_point(scope, session.device_id)
        known = stored.op_id if stored and stored.epoch == epoch else 0
        had_point = stored is not None and stored.epoch == epoch
        name = wire_scope(scope)
        if presented is not None:
            if presented.epoch == epoch:
                known = max(known, presented.op_id)
                had_point = True
            else:
                session.link.send(
                    to_frame(Gap(config.biz_type, name, epoch, known, "reset"))
                )

        if config.persistent:
            info = store.scope_info(scope)
            start = known
            if had_point and start < max(
                info.trimmed_through, info.expired_through
            ):
                reason = (
                    "threshold" if start < info.trimmed_through else "expired"
                )
                start = max(info.trimmed_through, info.expired_through)
                session.link.send(
                    to_frame(Gap(config.biz_type, name, epoch, start, reason))
                )
        else:
            # Non-persistent ops go only to devices online when sent.
            start = max(known, self._volatile.last_id(scope))

        stream = Stream(session, config, scope, start)
        if start != (stored.op_id if stored else -1):
            session.dirty.add(stream)
        session.streams[(config.biz_type, name)] = stream
        self._by_scope.setdefault(scope.key, set()).add(stream)
        self._load_prior(stream)

    def _load_prior(self, stream: Stream) -> None:
        # An op pushed to this device before it last went away keeps its
        # count, so a poison op is still dropped after max_attempts.
        if not stream.config.persistent:
            return
        ops = self._engine.read(stream, stream.point, 16)
        for op in ops:
            record = self._engine.store.delivery_record(
                stream.scope, op.op_id, stream.session.device_id
            )
            if record is not None and record.attempts:
                stream.prior[op.op_id] = record.attempts
