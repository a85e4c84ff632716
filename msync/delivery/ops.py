"""
What the delivery layer keeps with each op (its filters), and which
devices an op is for.

The store holds these as opaque bytes (an op's C{meta}); this module is the
only one that reads or writes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from msync.model import compare_versions, parse_version
from msync.store import CorruptRecord


@dataclass(frozen=True, slots=True)
class Filters:
    """
    An op's delivery filters and push flag.

    Versions are kept parsed; an empty tuple means no bound.
    """

    os_type: str = ""
    app_min: tuple[int, ...] = ()
    app_max: tuple[int, ...] = ()
    device_id: str = ""
    immediate: bool = True

    def encode(self) -> bytes:
        """Return the filters as the store's opaque C{meta} bytes."""
        packed: bytes = msgpack.packb(
            [
                self.os_type,
                list(self.app_min),
                list(self.app_max),
                self.device_id,
                self.immediate,
            ]
        )
        return packed

    @classmethod
    def decode(cls, meta: bytes) -> Filters:
        """
        Read filters back from C{meta}.

        @raise CorruptRecord: if C{meta} was not written by L{encode}.
        """
        if not meta:
            return _NONE
        found = _decoded.get(meta)
        if found is not None:
            return found
        try:
            os_type, lo, hi, device_id, immediate = msgpack.unpackb(meta)
            found = cls(os_type, tuple(lo), tuple(hi), device_id, immediate)
        except Exception as e:
            raise CorruptRecord("ops", meta[:32], "bad op filters") from e
        if len(_decoded) >= _DECODED_MAX:
            _decoded.clear()
        _decoded[meta] = found
        return found


_NONE = Filters()

#: Ops of a config mostly share their filters: each distinct C{meta} is
#: decoded once (a bounded cache, emptied when full).
_decoded: dict[bytes, Filters] = {}
_DECODED_MAX = 4096


@dataclass(frozen=True, slots=True)
class Audience:
    """What a filter can be checked against: one connected device."""

    device_id: str
    os_type: str
    app_version: tuple[int, ...]


def matches(f: Filters, who: Audience) -> bool:
    """Whether an op with filters C{f} is for device C{who}."""
    if f.os_type and f.os_type != who.os_type:
        return False
    if f.device_id and f.device_id != who.device_id:
        return False
    if f.app_min and compare_versions(who.app_version, f.app_min) < 0:
        return False
    if f.app_max and compare_versions(who.app_version, f.app_max) > 0:
        return False
    return True


def audience(device_id: str, os_type: str, app_version: str) -> Audience:
    """Build an L{Audience}; an unreadable app version matches no bound."""
    try:
        version = parse_version(app_version)
    except ValueError:
        version = ()
    return Audience(device_id, os_type, version)
