"""
The message an app receives: one op of one biz type, as the device SDK
hands it to the callback registered for that biz type.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SyncMessage:
    """
    One op pushed to this device.

    @ivar biz_type: The biz type (sync config) the op belongs to.
    @ivar scope: The log it came from: C{u:USER}, C{d:DEVICE} or C{g}.
    @ivar epoch: The identity of that log on the server.
    @ivar op_id: The op's id, increasing (sparsely) within its scope.
    @ivar payload: The data the business backend sent.
    @ivar third_msg_id: The backend's own id for the op.
    @ivar created_ms: When the server stored it, ms since the Unix epoch.
    """

    biz_type: str
    scope: str
    epoch: int
    op_id: int
    payload: bytes
    third_msg_id: str
    created_ms: int

    @property
    def text(self) -> str | None:
        """The payload as text, or C{None} if it is not UTF-8."""
        try:
            return self.payload.decode("utf-8")
        except UnicodeDecodeError:
            return None

    @property
    def key(self) -> tuple[str, str, int, int]:
        """What tells this op apart from every other on the device."""
        return (self.biz_type, self.scope, self.epoch, self.op_id)
