"""
The device SDK: what an app links to receive msync pushes.

  - L{DeviceClient}: connect, bind a user, register a callback per biz
    type, report what the app consumed;
  - L{SyncMessage}: one op as a callback receives it.

Its state (device id and secret, sync points, messages not yet reported)
lives in a local LMDB store, so a restart of the app loses nothing.
"""

from msync.device.client import DeviceClient, ServerRefused
from msync.device.message import SyncMessage

__all__ = ["DeviceClient", "ServerRefused", "SyncMessage"]
