"""
The shared tick: one pass over every connection each C{Tuning.tick}
seconds, instead of a timer per connection.

A pass closes connections that said no hello within C{hello_timeout} or
were silent for three heartbeats, writes every device's moved positions
in one store write, takes back the ops whose ack is overdue (older than
C{ack_timeout}) so that they are pushed again, and wakes the streams held
at an op whose start has come.

L{SharedTick} is a part of one L{msync.delivery.engine.Engine}: it shares
the engine's table of online sessions, and keeps the connections still
waiting for their hello.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.task import LoopingCall

from msync.delivery.session import Link, Session, Stream

if TYPE_CHECKING:
    from msync.delivery.engine import Engine
    from msync.delivery.progress import ProgressWriter
    from msync.delivery.single import UserLogs


class SharedTick:
    """The periodic checks of one engine's connections."""

    def __init__(
        self,
        engine: Engine,
        sessions: dict[tuple[str, str], Session],
        progress: ProgressWriter,
        users: UserLogs,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._progress = progress
        self._users = users
        self._waiting: dict[Any, float] = {}
        self._loop = LoopingCall(self.run)
        self._loop.clock = engine.clock

    def start(self) -> None:
        """Run a pass every C{Tuning.tick} seconds from now on."""
        self._loop.start(self._engine.tuning.tick, now=False)

    def stop(self) -> None:
        """Run no more passes."""
        if self._loop.running:
            self._loop.stop()

    def waiting(self, link: Link) -> None:
        """A connection opened; it has C{hello_timeout} to say hello."""
        self._waiting[link] = self._engine.clock.seconds()

    def forget(self, link: Link) -> None:
        """A connection said hello, or closed before it did."""
        self._waiting.pop(link, None)

    def run(self) -> None:
        """
        Run the periodic checks for every connection in one pass: silent
        links, overdue acks, held ops whose start has come.
        """
        engine = self._engine
        tuning = engine.tuning
        now = engine.clock.seconds()
        now_ms = int(now * 1000)
        idle = 3 * tuning.heartbeat
        for link, since in list(self._waiting.items()):
            if now - since > tuning.hello_timeout:
                del self._waiting[link]
                link.close("IDLE", "no hello in time")
        self._progress.flush_all()
        for session in list(self._sessions.values()):
            if now - session.last_heard > idle:
                session.link.close("IDLE", f"nothing heard for {idle} s")
                engine.disconnect(session)
                continue
            wake = False
            for stream in session.streams.values():
                if (
                    stream.inflight
                    and now - stream.last_push >= tuning.ack_timeout
                ):
                    self._retry(stream)
                    wake = True
                if stream.held_until and stream.held_until <= now_ms:
                    stream.held_until = 0
                    wake = True
            if self._users.tick(session, now):
                wake = True
            if wake:
                engine.pump(session, sync=True)

    def _retry(self, stream: Stream) -> None:
        """
        Take a stream's unacked ops back so the next fill pushes them
        again, in order; the fill drops those pushed too often.
        """
        session = stream.session
        for op_id, (attempts, size, _) in stream.inflight.items():
            session.inflight_ops -= 1
            session.inflight_bytes -= size
            stream.prior[op_id] = attempts
        stream.inflight.clear()
        stream.sent = stream.point
        stream.wants_sync = True
        stream.caught_up = False
