"""
The newest ops of a busy scope, held in memory.

A global op reaches every online device of an instance: thousands of
devices read the same few ops at almost the same moment, each at its own
position.  A L{Tail} reads those ops from the store once and answers every
device at or above its base from memory, so a fan-out costs one store read
per announcement instead of one per device.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable

from msync.model import StoredOp

#: The most ops a tail keeps; older ones are read from the store again.
TAIL_OPS = 8192

Reader = Callable[[int, int], list[StoredOp]]
"""C{read(after, limit)}: up to C{limit} unexpired stored ops above
C{after}, in id order."""


class Tail:
    """
    Every stored op of one scope with an id in C{(base, top]}, as it was
    when read, in id order.
    """

    __slots__ = ("_ids", "_ops", "base", "current", "expires", "top")

    def __init__(self, base: int) -> None:
        self.base = base
        self.top = base
        self.current = False
        """Whether nothing was announced since the last read reached the
        end of the scope."""
        self.expires = 0
        """The earliest expiry of a held op (0: none expires)."""
        self._ids: list[int] = []
        self._ops: list[StoredOp] = []

    def __len__(self) -> int:
        return len(self._ids)

    def announced(self) -> None:
        """A new op was stored in the scope."""
        self.current = False

    def read(
        self, after: int, limit: int, now_ms: int, fetch: Reader, page: int
    ) -> list[StoredOp] | None:
        """
        Return up to C{limit} ops above C{after}, reading what is missing
        with C{fetch} in pages of C{page}; L{None} if C{after} is below
        the base (the caller reads the store).
        """
        if after < self.base:
            return None
        if self.expires and self.expires < now_ms:
            self._drop_expired(now_ms)
        while (
            not self.current
            and len(self._ids) - bisect_right(self._ids, after) < limit
        ):
            more = fetch(self.top, page)
            self._extend(more)
            if len(more) < page:
                self.current = True
        if len(self._ids) > TAIL_OPS:
            self._trim()
            if after < self.base:
                return None
        start = bisect_right(self._ids, after)
        return self._ops[start : start + limit]

    def _extend(self, ops: list[StoredOp]) -> None:
        for op in ops:
            self._ids.append(op.op_id)
            self._ops.append(op)
            if op.expire_ms and (
                not self.expires or op.expire_ms < self.expires
            ):
                self.expires = op.expire_ms
        if ops:
            self.top = ops[-1].op_id

    def _trim(self) -> None:
        cut = len(self._ids) - TAIL_OPS // 2
        self.base = self._ids[cut - 1]
        del self._ids[:cut]
        del self._ops[:cut]

    def _drop_expired(self, now_ms: int) -> None:
        kept = [
            op
            for op in self._ops
            if not op.expire_ms or op.expire_ms >= now_ms
        ]
        self._ops = kept
        self._ids = [op.op_id for op in kept]
        self.expires = min(
            (op.expire_ms for op in kept if op.expire_ms), default=0
        )
