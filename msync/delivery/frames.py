"""
Sync frames assembled from many scopes' ops (merged push), cut to the
frame limit.
"""

from __future__ import annotations

from collections.abc import Callable

from msync.wire.messages import GROUP_OVERHEAD, OP_OVERHEAD, encode_sync

Group = tuple[str, str, int, list[tuple[int, bytes]]]


class FrameBuilder:
    """
    Collects C{(op_id, body)} runs per scope and hands out sync frames of
    at most C{limit} bytes to C{send}.
    """

    def __init__(self, send: Callable[[bytes], None], limit: int) -> None:
        self._send = send
        self._limit = limit
        self._groups: list[Group] = []
        self._size = 0
        self.frames = 0
        """How many frames this builder sent."""

    def add(
        self,
        biz: str,
        scope: str,
        epoch: int,
        ops: list[tuple[int, bytes]],
        body_bytes: int | None = None,
    ) -> None:
        """
        Queue C{ops} of one scope, in id order.

        @param body_bytes: The sum of the ops' body lengths, when the
            caller has it already.
        """
        head = GROUP_OVERHEAD + len(biz) + len(scope)
        if body_bytes is None:
            body_bytes = sum(len(op[1]) for op in ops)
        whole = head + OP_OVERHEAD * len(ops) + body_bytes
        if self._size + whole <= self._limit:
            # The common case: the run fits in the frame as it is.
            self._groups.append((biz, scope, epoch, ops))
            self._size += whole
            return
        current: list[tuple[int, bytes]] = []
        for op in ops:
            cost = OP_OVERHEAD + len(op[1])
            if current and self._size + head + cost > self._limit:
                self._groups.append((biz, scope, epoch, current))
                self.flush()
                current = []
            elif not current and self._size + head + cost > self._limit:
                self.flush()
            if not current:
                self._size += head
            current.append(op)
            self._size += cost
        if current:
            self._groups.append((biz, scope, epoch, current))

    def flush(self) -> None:
        """Send what is queued, if anything."""
        if self._groups:
            self._send(encode_sync(self._groups))
            self.frames += 1
        self._groups = []
        self._size = 0
