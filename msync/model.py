"""
Frozen value types shared by every part of msync.

Nothing here does I/O or reads a clock: times are integers of milliseconds
since the epoch (UTC), handed in by the caller.  Validation lives with the
values so that the store, the gateway and the console refuse the same
things with the same words.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import NamedTuple

#: Ops are kept for 30 days unless the backend asks for less.
DEFAULT_VALIDITY_MS = 30 * 24 * 3600 * 1000

#: Payloads must be fewer than this many bytes (REQUIREMENTS section 2).
MAX_PAYLOAD = 24 * 1024

#: ``third_msg_id`` must be fewer than this many UTF-8 bytes.
MAX_THIRD_MSG_ID = 100

#: The number of partitions scope keys are spread over.  Stable forever:
#: a clustered backend shards by it, so changing it reshuffles every scope.
PARTITIONS = 256

#: Bounds of a config's resend threshold.
MIN_THRESHOLD = 1
MAX_THRESHOLD = 100_000

_BIZ_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_VERSION = re.compile(r"\d{1,9}(\.\d{1,9}){0,7}\Z")
_MAX_LINK = 128
_CONTROL = re.compile("[\x00-\x1f\x7f]")


class ValidationError(ValueError):
    """
    A value handed in by a caller breaks a rule.

    C{field} names the offending input so that APIs can say which one.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class Range(Enum):
    """Who an op of a config goes to: one named target, or everyone."""

    SPECIFIED = "specified"
    GLOBAL = "global"


class Target(Enum):
    """Whether a config addresses users (by userId) or devices."""

    USER = "user"
    DEVICE = "device"


class ResendMode(Enum):
    """How much backlog a scope keeps: all of it, or the newest N."""

    ALL = "all"
    THRESHOLD = "threshold"


class ConfigState(Enum):
    """An offline config refuses new data and pauses pushing."""

    ONLINE = "online"
    OFFLINE = "offline"


class OSType(Enum):
    """The platforms an op can be filtered to."""

    IOS = "IOS"
    ANDROID = "ANDROID"


def check_biz_type(biz_type: str) -> str:
    """
    Return C{biz_type} if it is a well-formed config identifier.

    @raise ValidationError: if it is not.
    """
    if not isinstance(biz_type, str) or not _BIZ_TYPE.match(biz_type):
        raise ValidationError(
            "biz_type",
            "must be 1-64 letters, digits, '-' or '_', starting with a "
            "letter or digit",
        )
    return biz_type


def check_instance_id(instance_id: str) -> str:
    """
    Return C{instance_id} if it is a well-formed instance name.

    @raise ValidationError: if it is not.
    """
    if not isinstance(instance_id, str) or not _INSTANCE_ID.match(instance_id):
        raise ValidationError(
            "instance_id",
            "must be 1-128 letters, digits, '.', '-' or '_'",
        )
    return instance_id


def check_link(name: str, value: str) -> str:
    """
    Return C{value} if it can name a user or device.

    @raise ValidationError: if it is empty, too long or holds control
        characters (which would make scope keys ambiguous).
    """
    if not isinstance(value, str) or not value:
        raise ValidationError(name, "must not be empty")
    if len(value.encode("utf-8")) > _MAX_LINK:
        raise ValidationError(name, f"must be at most {_MAX_LINK} bytes")
    if _CONTROL.search(value):
        raise ValidationError(name, "must not hold control characters")
    return value


def parse_version(text: str) -> tuple[int, ...]:
    """
    Read a dotted app version (C{"10.1.68"}) as a tuple for comparison.

    @raise ValidationError: if it is not digits separated by dots.
    """
    if not isinstance(text, str) or not _VERSION.match(text):
        raise ValidationError(
            "version", f"{text!r} is not a dotted numeric version"
        )
    return tuple(int(part) for part in text.split("."))


def compare_versions(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """
    Compare two versions numerically, missing parts counting as zero.

    @return: negative, zero or positive as C{a} is below, equal to or
        above C{b}.
    """
    width = max(len(a), len(b))
    pa = a + (0,) * (width - len(a))
    pb = b + (0,) * (width - len(b))
    return (pa > pb) - (pa < pb)


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """
    One business scenario (biz type) of one instance.

    C{biz_type} and C{target} never change once created; L{modified}
    refuses to.
    """

    instance_id: str
    biz_type: str
    target: Target
    range: Range = Range.SPECIFIED
    description: str = ""
    multi_device: bool = True
    persistent: bool = True
    resend_mode: ResendMode = ResendMode.ALL
    threshold: int = 100
    consistency: bool = False
    state: ConfigState = ConfigState.ONLINE
    created_ms: int = 0
    updated_ms: int = 0

    def validated(self) -> SyncConfig:
        """
        Return this config if it keeps every rule.

        @raise ValidationError: naming the first rule it breaks.
        """
        check_instance_id(self.instance_id)
        check_biz_type(self.biz_type)
        if (
            not isinstance(self.description, str)
            or len(self.description) > 1000
        ):
            raise ValidationError(
                "description", "must be text of at most 1000 characters"
            )
        if (
            isinstance(self.threshold, bool)
            or not isinstance(self.threshold, int)
            or not MIN_THRESHOLD <= self.threshold <= MAX_THRESHOLD
        ):
            raise ValidationError(
                "threshold",
                f"must be an integer from {MIN_THRESHOLD} to {MAX_THRESHOLD}",
            )
        if self.target is Target.DEVICE and self.consistency:
            raise ValidationError(
                "consistency", "applies only to user-target configs"
            )
        if self.target is Target.DEVICE and not self.multi_device:
            raise ValidationError(
                "multi_device",
                "single-device delivery applies only to user-target configs",
            )
        if self.range is Range.GLOBAL and not self.multi_device:
            raise ValidationError(
                "multi_device", "global configs always reach every device"
            )
        return self

    def modified(self, **changes: object) -> SyncConfig:
        """
        Return a copy with C{changes} applied and validated.

        @raise ValidationError: if a change touches C{biz_type},
            C{target} or C{instance_id}, or breaks a rule.
        """
        for frozen in ("instance_id", "biz_type", "target"):
            if frozen in changes and changes[frozen] != getattr(self, frozen):
                raise ValidationError(frozen, "cannot be changed")
        return replace(self, **changes).validated()  # type: ignore[arg-type]

    @property
    def online(self) -> bool:
        """Whether the config takes new data and pushes."""
        return self.state is ConfigState.ONLINE

    @property
    def scope_kind(self) -> ScopeKind:
        """The kind of scope the config's ops are logged in."""
        if self.range is Range.GLOBAL:
            return ScopeKind.GLOBAL
        if self.target is Target.USER:
            return ScopeKind.USER
        return ScopeKind.DEVICE


class ScopeKind(Enum):
    """What a scope's link names: a user, a device, or nobody (global)."""

    USER = "u"
    DEVICE = "d"
    GLOBAL = "g"


@dataclass(frozen=True, slots=True)
class Scope:
    """
    One oplog log: an instance, a biz type, and a user, a device or the
    global log of that biz type.

    Ids are strictly increasing within a scope; the scope's L{key} is the
    unit a clustered backend shards and orders by.
    """

    instance_id: str
    biz_type: str
    kind: ScopeKind
    link: str = ""
    _key: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_instance_id(self.instance_id)
        check_biz_type(self.biz_type)
        if self.kind is ScopeKind.GLOBAL:
            if self.link:
                raise ValidationError("link_token", "must be empty here")
        else:
            check_link("link_token", self.link)
        body = "\x00".join(
            (self.instance_id, self.biz_type, self.kind.value, self.link)
        ).encode("utf-8")
        partition = zlib.crc32(body) % PARTITIONS
        object.__setattr__(self, "_key", bytes((partition,)) + body + b"\x00")

    @property
    def key(self) -> bytes:
        """
        The scope's stable byte key: a partition byte, then the NUL-joined
        names, then a NUL, so that no scope key is a prefix of another.
        """
        return self._key

    @property
    def partition(self) -> int:
        """The scope's stable partition number."""
        return self._key[0]

    @classmethod
    def from_key(cls, key: bytes) -> Scope:
        """
        Rebuild a scope from its L{key}.

        @raise ValidationError: if C{key} is not a scope key.
        """
        try:
            parts = key[1:-1].decode("utf-8").split("\x00")
            instance_id, biz_type, kind, link = parts
            scope = cls(instance_id, biz_type, ScopeKind(kind), link)
        except (UnicodeDecodeError, ValueError) as e:
            raise ValidationError("scope", "not a scope key") from e
        if scope.key != key:
            raise ValidationError("scope", "not a scope key")
        return scope

    def __str__(self) -> str:
        if self.kind is ScopeKind.GLOBAL:
            return f"{self.instance_id}/{self.biz_type}/*"
        return (
            f"{self.instance_id}/{self.biz_type}/{self.kind.value}:{self.link}"
        )


@dataclass(frozen=True, slots=True)
class Instance:
    """One app of one tenant, named C{workspaceId_appId}."""

    instance_id: str
    time_zone: str = "UTC"
    validation_url: str = ""
    created_ms: int = 0
    app_key: str = ""
    """When set, devices must present it in their hello."""


@dataclass(frozen=True, slots=True)
class AccessKey:
    """
    A backend's credential: a key id and its secret, allowed to write to
    the listed instances.
    """

    access_key: str
    secret: str
    instances: tuple[str, ...]
    created_ms: int = 0
    revoked: bool = False

    def allows(self, instance_id: str) -> bool:
        """Whether this key may write to C{instance_id}."""
        return not self.revoked and instance_id in self.instances


@dataclass(frozen=True, slots=True)
class Device:
    """
    What the server knows of one device of one instance.

    C{secret_hash} binds the device id to the first client that used it
    (trust on first use).  The session id itself is never stored, only
    whether the tenant confirmed it.
    """

    instance_id: str
    device_id: str
    secret_hash: bytes = b""
    user_id: str = ""
    session_validated: bool = False
    os_type: str = ""
    app_version: str = ""
    first_seen_ms: int = 0
    last_seen_ms: int = 0


@dataclass(frozen=True, slots=True)
class NewOp:
    """
    An op as a caller hands it to the store, before it has an id.

    C{meta} and C{body} are opaque to the store: the delivery layer puts
    its filters in C{meta} and the op's wire encoding in C{body}.
    C{dedup} is the idempotency key, or empty when the op has none.
    """

    scope: Scope
    body: bytes
    meta: bytes = b""
    dedup: bytes = b""
    created_ms: int = 0
    start_ms: int = 0
    expire_ms: int = 0
    keep: int = 0
    """Keep at most this many ops in the scope after appending (0: all)."""


class StoredOp(NamedTuple):
    """
    An op as the store keeps it, with its id.  A named tuple: delivery
    makes one for every op it reads, and a tuple is the cheapest to make.
    """

    op_id: int
    body: bytes
    meta: bytes
    dedup: bytes
    created_ms: int
    start_ms: int
    expire_ms: int


@dataclass(frozen=True, slots=True)
class AppendResult:
    """
    The outcome of an append: the op's id, and whether an earlier op with
    the same idempotency key made this one a duplicate.
    """

    op_id: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class ScopeInfo:
    """
    What the store knows about one scope's log.

    C{epoch} names the log: it changes only when the log is lost and
    started again, so a sync point from another epoch means nothing here.
    C{trimmed_through} is the highest id ever removed to keep the backlog
    bound (threshold or cap), C{expired_through} the highest removed
    because its validity ended; a device whose sync point is below either
    missed something.
    """

    epoch: int
    last_id: int
    trimmed_through: int
    count: int
    expired_through: int = 0


@dataclass(frozen=True, slots=True)
class SyncPoint:
    """
    The largest op id acknowledged in a scope, in a log's epoch.

    C{above} lists ops past C{op_id} that are already done too; only the
    shared point of a single-device config has any (its user's devices
    ack ops out of order).
    """

    epoch: int
    op_id: int
    above: tuple[int, ...] = ()


class DeliveryState(Enum):
    """What became of one op for one device."""

    STORED = "stored"
    PUSHED = "pushed"
    ACKED = "acked"
    DROPPED = "dropped"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class DeliveryEvent:
    """
    Something that happened to one op for one device, as the delivery
    engine reports it for the record (console, counters).
    """

    scope: Scope
    op_id: int
    device_id: str
    state: DeliveryState
    at_ms: int
    user_id: str = ""
    reason: str = ""
    attempts: int = 0
    """For C{PUSHED}: the total pushes so far, when the caller knows it;
    0 means this event is one more push."""


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """The latest known state of one op for one device."""

    scope: Scope
    op_id: int
    device_id: str
    user_id: str
    state: DeliveryState
    attempts: int
    reason: str
    updated_ms: int
