"""
Writing devices' progress back to the store: their positions in each
scope, with their push and arrival counters riding along.

Positions are written with the shared tick, every online device's in one
store write; a leaving device's as it goes; a device reading single-device
configs at once, since the user's other devices depend on the shared
point.  Each session has one write under way at most: what moves
meanwhile goes in the next.

L{ProgressWriter} is a part of one L{msync.delivery.engine.Engine}: it
shares the engine's table of online sessions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from msync.delivery.session import Session
from msync.model import Scope, SyncPoint

if TYPE_CHECKING:
    from msync.delivery.engine import Engine
    from msync.delivery.single import UserLogs

# The engine's events keep one namespace, whichever of its parts logs them.
_log = Logger(namespace="msync.delivery.engine")


class ProgressWriter:
    """Writes one engine's session positions and counters to the store."""

    def __init__(
        self,
        engine: Engine,
        sessions: dict[tuple[str, str], Session],
        users: UserLogs,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._users = users

    def soon(self, session: Session) -> None:
        """
        Write the session's positions now if a user's other devices
        depend on them (single-device configs), else with the next tick:
        a device presents its own positions when it connects, so a
        position lost in a crash costs a redelivery it drops, and a busy
        device does not cost a store write per ack.
        """
        if self._users.holds(session):
            self.flush(session)

    def flush(self, session: Session, final: bool = False) -> Deferred[None]:
        """
        Write the session's moved positions, one write at a time per
        session; what moves meanwhile goes in the next write.  Push and
        arrival counters ride along with positions, or go in the C{final}
        flush of a leaving device, which also waits for a write already
        under way.
        """
        if session.writing:
            if not final:
                return succeed(None)
            waiter: Deferred[None] = Deferred()
            session.waiters.append(waiter)
            return waiter
        store = self._engine.store
        points: list[tuple[Scope, str | None, SyncPoint]] = [
            (s.scope, session.device_id, SyncPoint(store.epoch, s.point))
            for s in session.dirty
        ]
        points += self._users.points(session)
        session.dirty.clear()
        pushes = arrivals = 0
        if points or final:
            pushes, arrivals = session.pushes, session.arrivals
            session.pushes = session.arrivals = 0
        if not points and not pushes and not arrivals:
            return succeed(None)

        session.writing = True
        writes: list[Deferred[Any]] = []
        if points:
            writes.append(store.advance_sync_points(points))
        if pushes or arrivals:
            writes.append(
                store.add_counts(
                    session.instance_id,
                    session.device_id,
                    session.user_id,
                    self._engine.now_ms(),
                    pushes,
                    arrivals,
                )
            )

        def written(_: object) -> Deferred[None]:
            session.writing = False
            waiters, session.waiters = session.waiters, []
            if not waiters and not (
                session.dirty and self._users.holds(session)
            ):
                return succeed(None)
            follow = self.flush(session, final=bool(waiters))
            for w in waiters:
                follow.addBoth(_release, w)
            return follow

        d = gatherResults(writes, consumeErrors=True)
        d.addErrback(lambda f: _log.failure("saving sync points failed", f))
        return d.addCallback(written)

    def flush_all(self) -> None:
        """
        Write every online device's moved positions and counters in one
        store write (devices being written already wait for the next).
        """
        batch = [
            s for s in self._sessions.values() if s.dirty and not s.writing
        ]
        if not batch:
            return
        store = self._engine.store
        epoch = store.epoch
        now_ms = self._engine.now_ms()
        points: list[tuple[Scope, str | None, SyncPoint]] = []
        counts = []
        for session in batch:
            points += [
                (s.scope, session.device_id, SyncPoint(epoch, s.point))
                for s in session.dirty
            ]
            points += self._users.points(session)
            session.dirty.clear()
            if session.pushes or session.arrivals:
                counts.append(
                    (
                        session.instance_id,
                        session.device_id,
                        session.user_id,
                        now_ms,
                        session.pushes,
                        session.arrivals,
                    )
                )
                session.pushes = session.arrivals = 0
            session.writing = True

        def written(_: object) -> None:
            for session in batch:
                session.writing = False
                waiters, session.waiters = session.waiters, []
                if waiters:
                    follow = self.flush(session, final=True)
                    for w in waiters:
                        follow.addBoth(_release, w)

        d = store.save_progress(points, counts)
        d.addErrback(lambda f: _log.failure("saving sync points failed", f))
        d.addCallback(written)


def _release(result: object, waiter: Deferred[None]) -> object:
    waiter.callback(None)
    return result
