"""
What the engine keeps per connection, and the interfaces around it.

A L{Session} is one online device; a L{Stream} is its position in one
scope.  A L{Link} is what the engine needs of a connection, an
L{Observer} what it tells metrics, a L{Validator} how it asks a tenant
about a user's session.  L{Tuning} holds the engine's limits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred, succeed

from msync.delivery.ops import Audience
from msync.model import Scope, ScopeKind, SyncConfig


@dataclass(frozen=True, slots=True)
class Tuning:
    """The engine's limits and timings."""

    heartbeat: int = 30
    """Seconds between a device's pings; silence for 3 closes it."""
    ack_timeout: float = 30.0
    """Seconds an op may wait for its ack before it is pushed again."""
    hello_timeout: float = 20.0
    """Seconds a new connection has to say hello."""
    max_attempts: int = 6
    """Pushes of one op to one device before it is dropped for it."""
    window_ops: int = 4096
    """Unacked ops in flight per connection."""
    window_bytes: int = 4 * 2**20
    """Unacked op bytes in flight per connection."""
    page: int = 1024
    """Ops read from the store at a time."""
    resend_cap: int = 100_000
    """The most ops any scope keeps, even in resend mode 'all'."""
    tick: float = 1.0
    """Seconds between checks for overdue acks, idle links, held ops."""
    frame_limit: int = 256 * 1024
    """Largest sync frame.  Smaller than a device may take (1 MiB), so
    that a window holds several frames: the device decodes and acks one
    while the next is on the wire."""


class Refused(Exception):
    """A device's request is refused; C{code} goes in the error frame."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class Link(Protocol):
    """What the engine needs of one device connection."""

    paused: bool
    """True while the transport asks us to stop writing."""

    def send(self, data: bytes) -> None:
        """Write bytes (whole frames) to the device."""

    def close(self, code: str, text: str) -> None:
        """Send an error frame, then close."""


class Observer(Protocol):
    """Hears what the engine does, for metrics; must be cheap."""

    def pushed(self, ops: int, again: int) -> None:
        """C{ops} ops were pushed, C{again} of them not for the first
        time."""

    def acked(self, ops: int, latency: float | None) -> None:
        """C{ops} ops were acked; C{latency} is how long the newest of
        them waited for its ack, in seconds."""

    def dropped(self, reason: str) -> None:
        """An op was dropped for a device."""


class Unobserved:
    """The observer that hears nothing (metrics off)."""

    def pushed(self, ops: int, again: int) -> None:
        pass

    def acked(self, ops: int, latency: float | None) -> None:
        pass

    def dropped(self, reason: str) -> None:
        pass


class Readable(Protocol):
    """Something reading a scope under a config: a stream, a user log."""

    @property
    def config(self) -> SyncConfig: ...

    @property
    def scope(self) -> Scope: ...


Validator = Callable[[str, str, str], Deferred[bool]]


def no_validation(
    instance_id: str, user_id: str, session: str
) -> Deferred[bool]:
    """The default validator: with no endpoint, nobody is validated."""
    return succeed(False)


def wire_scope(scope: Scope) -> str:
    """The scope's name on the wire: C{u:USER}, C{d:DEVICE} or C{g}."""
    if scope.kind is ScopeKind.GLOBAL:
        return "g"
    return f"{scope.kind.value}:{scope.link}"


def secret_hash(secret: str) -> bytes:
    """What the store keeps of a device secret."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


class Stream:
    """One device's position in one scope, and what it has in flight."""

    __slots__ = (
        "biz",
        "caught_up",
        "config",
        "held_until",
        "inflight",
        "key",
        "last_push",
        "name",
        "point",
        "prior",
        "scope",
        "sent",
        "session",
        "wants_sync",
    )

    def __init__(
        self, session: Session, config: SyncConfig, scope: Scope, point: int
    ) -> None:
        self.session = session
        self.config = config
        self.scope = scope
        self.key = scope.key
        self.biz = config.biz_type
        self.name = wire_scope(scope)
        self.point = point
        """Every op at or below this is acked or skipped."""
        self.sent = point
        """Every op at or below this was pushed, skipped or acked."""
        self.inflight: dict[int, tuple[int, int, float]] = {}
        """Pushed, unacked op ids (in id order) -> (attempts, size,
        pushed at)."""
        self.prior: dict[int, int] = {}
        """Pushes of an op before it was pushed again."""
        self.last_push = 0.0
        self.held_until = 0
        self.wants_sync = True
        self.caught_up = False
        """Whether the last read found nothing above C{sent}, and no op
        was announced since."""


class Session:
    """One online device: its connection, identity, streams and window."""

    __slots__ = (
        "arrivals",
        "audience",
        "closed",
        "connected",
        "device_id",
        "dirty",
        "inflight_bytes",
        "inflight_ops",
        "instance_id",
        "last_heard",
        "link",
        "pushes",
        "session_id",
        "streams",
        "user_id",
        "validated",
        "waiters",
        "writing",
    )

    def __init__(
        self,
        link: Link,
        instance_id: str,
        device_id: str,
        who: Audience,
        now: float,
    ) -> None:
        self.link = link
        self.instance_id = instance_id
        self.device_id = device_id
        self.audience = who
        self.connected = now
        self.last_heard = now
        self.user_id = ""
        self.session_id = ""
        self.validated: bool | None = None
        self.streams: dict[tuple[str, str], Stream] = {}
        self.inflight_ops = 0
        self.inflight_bytes = 0
        self.pushes = 0
        self.arrivals = 0
        self.dirty: set[Stream] = set()
        self.writing = False
        self.waiters: list[Deferred[None]] = []
        self.closed = False

    @property
    def has_room(self) -> bool:
        return not self.closed and not self.link.paused
