"""
The delivery engine: which connected device gets which op, when, and what
is recorded about it.

One engine serves every connection of the daemon.  It knows the online
devices (L{Session}), and for each device the scopes it reads (L{Stream}
for per-device positions, L{msync.delivery.single.UserLog} for
single-device configs).  It is driven by events: a device said hello,
acked, pulled, went away; the store announced an op; the shared tick found
something overdue.  It reaches devices only through L{Link}, and time only
through the injected clock, so it runs unchanged on C{task.Clock} in tests.

This module holds the push, ack and read paths.  The engine's other parts
are objects it owns, each in its own module: L{Admission} (hello, users,
leaving), L{Planner} (which streams a device reads, and from where),
L{ProgressWriter} (positions and counters written to the store) and
L{SharedTick} (the periodic checks).

Rules (REQUIREMENTS section 3):

  - within a scope, ops go out in id order; a device's position only moves
    forward, over ops it acked or that were skipped for it (filters);
  - unacked ops are pushed again after C{ack_timeout} and on reconnect; an
    op pushed C{max_attempts} times without an ack is dropped for that
    device, which is told with a C{gap};
  - ops stored with C{immediate_sync=false} do not cause a push; they go
    with the next push of their scope, at connect, or on pull;
  - an offline config pauses pushing; an op whose start is in the future
    holds its scope back until then, so order is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from msync.delivery.admission import Admission
from msync.delivery.frames import FrameBuilder
from msync.delivery.ops import Filters, matches
from msync.delivery.planning import Planner
from msync.delivery.progress import ProgressWriter
from msync.delivery.session import (
    Link,
    Observer,
    Readable,
    Refused,
    Session,
    Stream,
    Tuning,
    Unobserved,
    Validator,
    no_validation,
    secret_hash,
    wire_scope,
)
from msync.delivery.single import UserLogs
from msync.delivery.tail import Tail
from msync.delivery.tick import SharedTick
from msync.delivery.volatile import VolatileLogs
from msync.model import (
    DeliveryEvent,
    DeliveryState,
    Scope,
    ScopeKind,
    StoredOp,
    SyncConfig,
)
from msync.store import Store
from msync.wire.messages import Ack, Gap, Hello, to_frame

__all__ = [
    "Engine",
    "Link",
    "Observer",
    "Refused",
    "Session",
    "Stream",
    "Tuning",
    "Validator",
    "secret_hash",
    "wire_scope",
]

_log = Logger()


class Engine:
    """The delivery engine; see the module docstring."""

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        tuning: Tuning | None = None,
        validate: Validator = no_validation,
        observer: Observer | None = None,
    ) -> None:
        self.store = store
        self.observer: Observer = observer or Unobserved()
        self.clock = clock
        self.tuning = tuning or Tuning()
        self.validate = validate
        """Asks the tenant about a bound user's session; looked up at
        each bind, so it may be replaced on a running engine."""
        self._sessions: dict[tuple[str, str], Session] = {}
        self._by_scope: dict[bytes, set[Stream]] = {}
        self._configs: dict[str, dict[str, SyncConfig]] = {}
        self._volatile = VolatileLogs(store, clock)
        self._unsubscribe: Callable[[], None] | None = None
        self._shared_reads: (
            dict[tuple[bytes, int, int], list[StoredOp]] | None
        ) = None
        self._tails: dict[bytes, Tail] = {}
        self._announced: dict[bytes, Scope] = {}
        self._announcing: IDelayedCall | None = None
        self._users = UserLogs(self)
        self._planner = Planner(
            self, self._by_scope, self._tails, self._volatile, self._users
        )
        self._progress = ProgressWriter(self, self._sessions, self._users)
        self._admission = Admission(
            self, self._sessions, self._planner, self._progress, self._users
        )
        self._tick = SharedTick(
            self, self._sessions, self._progress, self._users
        )

    # --- lifecycle -----------------------------------------------------

    def start(self) -> None:
        """Listen for new ops and start the shared tick."""
        self._unsubscribe = self.store.subscribe(self._stored)
        self._tick.start()
        self._volatile.start()

    def stop(self) -> Deferred[None]:
        """Close every connection and write out what is pending."""
        self._tick.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._announcing is not None:
            self._announcing.cancel()
            self._announcing = None
        done = []
        for session in list(self._sessions.values()):
            session.link.close("SHUTDOWN", "the server is stopping")
            done.append(self.disconnect(session))
        return gatherResults(done).addCallback(_nothing)

    @property
    def online(self) -> int:
        """How many devices are connected."""
        return len(self._sessions)

    def session(self, instance_id: str, device_id: str) -> Session | None:
        """Return a device's session if it is online."""
        return self._sessions.get((instance_id, device_id))

    def user_sessions(self, instance_id: str, user_id: str) -> list[Session]:
        """Return the online sessions bound to a user, newest first."""
        found = [
            s
            for s in self._sessions.values()
            if s.instance_id == instance_id and s.user_id == user_id
        ]
        return sorted(found, key=lambda s: s.connected, reverse=True)

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # --- configs -------------------------------------------------------

    def configs(self, instance_id: str) -> dict[str, SyncConfig]:
        """An instance's configs, cached until L{config_changed}."""
        found = self._configs.get(instance_id)
        if found is None:
            found = {c.biz_type: c for c in self.store.configs(instance_id)}
            self._configs[instance_id] = found
        return found

    def config_changed(self, instance_id: str) -> None:
        """
        Re-read an instance's configs and re-plan its online devices'
        streams (a config came online, went offline or changed).
        """
        self._configs.pop(instance_id, None)
        for session in list(self._sessions.values()):
            if session.instance_id == instance_id:
                self._planner.plan(session, {})
                self.pump(session, sync=True)

    # --- connections ---------------------------------------------------

    def waiting(self, link: Link) -> None:
        """A connection opened; it has C{hello_timeout} to say hello."""
        self._tick.waiting(link)

    def forget(self, link: Link) -> None:
        """A connection closed before its hello was admitted."""
        self._tick.forget(link)

    def hello(self, link: Link, hello: Hello) -> Deferred[Session]:
        """Admit a device; fail with L{Refused} (L{Admission.hello})."""
        return self._admission.hello(link, hello)

    def heard(self, session: Session) -> None:
        """The device sent something: it is alive."""
        session.last_heard = self.clock.seconds()

    def bind(self, session: Session, user_id: str, session_id: str) -> None:
        """Bind a user to the device and re-plan its streams."""
        self._admission.bind(session, user_id, session_id)

    def unbind(self, session: Session) -> None:
        """Unbind the device's user and drop its user streams."""
        self._admission.unbind(session)

    def disconnect(self, session: Session) -> Deferred[None]:
        """The device went away (L{Admission.disconnect})."""
        return self._admission.disconnect(session)

    def tick(self) -> None:
        """Check every connection's timers now (L{SharedTick.run})."""
        self._tick.run()

    # --- reading -------------------------------------------------------

    def read(self, stream: Readable, after: int, limit: int) -> list[StoredOp]:
        """Read a scope's ops above C{after}, from the store or memory."""
        scope = stream.scope
        if scope.kind is ScopeKind.GLOBAL and stream.config.persistent:
            return self._read_global(scope, after, limit)
        shared = self._shared_reads
        key = (scope.key, after, limit)
        if shared is not None:
            found = shared.get(key)
            if found is not None:
                return found
        if stream.config.persistent:
            ops = self.store.read_after(
                stream.scope, after, limit, self.now_ms()
            )
        else:
            ops = self._volatile.read_after(stream.scope, after, limit)
        if shared is not None:
            shared[key] = ops
        return ops

    def _read_global(
        self, scope: Scope, after: int, limit: int
    ) -> list[StoredOp]:
        # Every device of the instance reads a global scope near its
        # head: its tail answers them from memory.
        now_ms = self.now_ms()

        def fetch(above: int, n: int) -> list[StoredOp]:
            return self.store.read_after(scope, above, n, now_ms)

        tail = self._tails.get(scope.key)
        if tail is None:
            if scope.key not in self._by_scope:
                return fetch(after, limit)
            tail = self._tails[scope.key] = Tail(after)
        found = tail.read(after, limit, now_ms, fetch, self.tuning.page)
        return fetch(after, limit) if found is None else found

    # --- pushing -------------------------------------------------------

    def _stored(self, scope: Scope, op_id: int) -> None:
        """The store announced a new op: push it to whoever reads it."""
        if scope.kind is not ScopeKind.GLOBAL:
            self.scope_changed(scope)
            return
        # A global op goes to every device: ops stored together go out
        # together, in one pass over the devices once this turn is done.
        tail = self._tails.get(scope.key)
        if tail is not None:
            tail.announced()
        self._announced[scope.key] = scope
        if self._announcing is None:
            self._announcing = self.clock.callLater(0, self._announce)

    def _announce(self) -> None:
        self._announcing = None
        scopes, self._announced = self._announced, {}
        for scope in scopes.values():
            self.scope_changed(scope)

    def scope_changed(self, scope: Scope) -> None:
        """New ops may be in C{scope}: pump every device reading it."""
        streams = self._by_scope.get(scope.key)
        if streams:
            for stream in streams:
                stream.caught_up = False
            # Devices caught up in one scope read the same page: read it
            # once for all of them (a global op reaches thousands).
            self._shared_reads = {}
            try:
                for session in {s.session for s in streams}:
                    self.pump(session)
            finally:
                self._shared_reads = None
        self._users.changed(scope)

    def push_volatile(
        self, scope: Scope, body: bytes, meta: bytes, created_ms: int
    ) -> tuple[int, int]:
        """
        Push a non-persistent op to the devices online now.

        @return: its op id and how many devices it was pushed to.
        """
        op_id = self._volatile.append(scope, body, meta, created_ms)
        streams = self._by_scope.get(scope.key, set())
        for stream in streams:
            stream.caught_up = False
        for session in {s.session for s in streams}:
            self.pump(session)
        reached = sum(1 for s in streams if op_id in s.inflight)
        reached += self._users.changed(scope, op_id)
        return op_id, reached

    def pull(self, session: Session) -> None:
        """The device asked for everything it has not received."""
        for stream in session.streams.values():
            stream.wants_sync = True
        self.pump(session, sync=True)

    def pump(self, session: Session, sync: bool = False) -> None:
        """Push what the session's window allows, in few frames."""
        if not session.has_room:
            return
        builder = FrameBuilder(session.link.send, self.tuning.frame_limit)
        now = self.clock.seconds()
        progress = True
        while progress and session.has_room:
            progress = False
            for stream in list(session.streams.values()):
                if sync:
                    stream.wants_sync = True
                if self._fill(stream, builder, now):
                    progress = True
        self._users.fill(session)
        builder.flush()
        if session.dirty:
            self._progress.soon(session)

    def room(self, session: Session) -> int:
        """How many more ops the session's window takes now."""
        if session.inflight_bytes >= self.tuning.window_bytes:
            return 0
        return max(0, self.tuning.window_ops - session.inflight_ops)

    def _fill(self, stream: Stream, builder: FrameBuilder, now: float) -> bool:
        """Push one page of a stream's ops; say whether anything moved."""
        if stream.caught_up:
            # Nothing above what was sent: a sync asked now is answered.
            stream.wants_sync = False
            return False
        session = stream.session
        now_ms = int(now * 1000)
        room = min(self.room(session), self.tuning.page)
        if (
            room <= 0
            or not stream.config.online
            or stream.held_until > now_ms
            or not session.has_room
        ):
            return False
        # Read what the window takes (a global scope's readers share its
        # tail in memory).
        limit = room
        ops = self.read(stream, stream.sent, limit)
        if not ops:
            stream.wants_sync = False
            stream.caught_up = True
            return False
        # A short read took everything above what was sent: if every op
        # of it goes out (or is skipped) now, the stream is caught up,
        # and the next pump (say on this op's ack) need not read again.
        whole = len(ops) < limit
        if not stream.wants_sync:
            # Live pushes wait for an immediate op; deferred ones ride along.
            last = -1
            for i, op in enumerate(ops):
                if Filters.decode(op.meta).immediate:
                    last = i
            if last < 0:
                return False
            if last + 1 < len(ops):
                whole = False
            ops = ops[: last + 1]

        # The hot loop of every push: one op after another, with as few
        # steps as will do (filters are checked once per distinct meta).
        batch: list[tuple[int, bytes]] = []
        add = batch.append
        inflight = stream.inflight
        prior = stream.prior
        who = session.audience
        max_attempts = self.tuning.max_attempts
        moved = False
        again = 0
        size = 0
        sent = stream.sent
        meta: bytes | None = None
        wanted = True
        for op_id, body, op_meta, _, _, start_ms, _ in ops:
            if start_ms > now_ms:
                stream.held_until = start_ms
                whole = False
                break
            moved = True
            sent = op_id
            if op_meta != meta:
                meta = op_meta
                wanted = matches(Filters.decode(meta), who)
            if not wanted:
                continue
            attempts = prior.pop(sent, 0) + 1 if prior else 1
            if attempts > max_attempts:
                self._dropped(stream, sent, attempts - 1)
                continue
            if attempts > 1:
                again += 1
            n = len(body)
            inflight[sent] = (attempts, n, now)
            size += n
            add((sent, body))
        stream.sent = sent
        if batch:
            session.inflight_ops += len(batch)
            session.inflight_bytes += size
            builder.add(stream.biz, stream.name, self.store.epoch, batch, size)
            session.pushes += len(batch)
            self.observer.pushed(len(batch), again)
            stream.last_push = now
        if whole:
            stream.caught_up = True
        self._resolve(stream)
        # A short read means the scope has nothing more for now.
        return moved and len(ops) == limit

    def _resolve(self, stream: Stream) -> None:
        # Everything below the first unacked op is done (acked or skipped).
        if stream.inflight:
            done = next(iter(stream.inflight)) - 1
        else:
            done = stream.sent
        if done > stream.point:
            stream.point = done
            stream.session.dirty.add(stream)

    def _dropped(self, stream: Stream, op_id: int, attempts: int) -> None:
        session = stream.session
        self.observer.dropped("retries")
        _log.info(
            "dropped op {op_id} of {scope} for device {device_id} after "
            "{attempts} pushes",
            op_id=op_id,
            scope=str(stream.scope),
            device_id=session.device_id,
            attempts=attempts,
        )
        event = DeliveryEvent(
            stream.scope,
            op_id,
            session.device_id,
            DeliveryState.DROPPED,
            self.now_ms(),
            session.user_id,
            reason="retries",
        )
        d = self.store.record_deliveries([event])
        d.addErrback(lambda f: _log.failure("recording a drop failed", f))
        session.link.send(
            to_frame(
                Gap(
                    stream.biz, stream.name, self.store.epoch, op_id, "retries"
                )
            )
        )

    # --- acks ----------------------------------------------------------

    def ack(self, session: Session, ack: Ack) -> None:
        """Take the device's cumulative acks and push what they make room
        for."""
        epoch = self.store.epoch
        for p in ack.points:
            if p.epoch != epoch:
                continue
            stream = session.streams.get((p.biz, p.scope))
            if stream is None:
                self._users.ack(session, p)
                continue
            upto = min(p.op_id, stream.sent)
            inflight = stream.inflight
            freed = size = 0
            pushed_at = 0.0
            for op_id, entry in inflight.items():  # in id order
                if op_id > upto:
                    break
                freed += 1
                size += entry[1]
                pushed_at = entry[2]
            if freed:
                if freed == len(inflight):
                    inflight.clear()
                else:
                    for op_id in list(islice(inflight, freed)):
                        del inflight[op_id]
                session.inflight_ops -= freed
                session.inflight_bytes -= size
                session.arrivals += freed
                self.observer.acked(freed, self.clock.seconds() - pushed_at)
            if upto > stream.point:
                stream.point = upto
                session.dirty.add(stream)
            self._resolve(stream)
        self.pump(session)
        self._progress.soon(session)


def _nothing(_: object) -> None:
    return None
