"""
What the daemon crash test and its helper programs agree on: the tenant
and its configs, the devices and their users, how a message id names the
op's target, the journals' line format, and the control file through
which the test steers the helpers.

Message ids name their target, so that the test can tell from a
backend's journal alone which devices each op must reach:
C{m<seq>.<biz>.<link>}, where the link is a device id, a user id or
C{*} for a global op.  Each op's payload is its message id.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from msync.model import Range, SyncConfig, Target

INSTANCE = "CRASH_app"
KEY, SECRET = "AKCRASH", "crash-secret-0123456789"

#: A device-target config, a user-target multi-device config and a
#: global device-target config.
DEVICE_BIZ, USER_BIZ, GLOBAL_BIZ = "LOCK", "CHAT", "CFG"
CONFIGS = (
    SyncConfig(INSTANCE, DEVICE_BIZ, Target.DEVICE),
    SyncConfig(INSTANCE, USER_BIZ, Target.USER),
    SyncConfig(INSTANCE, GLOBAL_BIZ, Target.DEVICE, range=Range.GLOBAL),
)

#: A biz type with no config: the gateway refuses sends to it.
UNKNOWN_BIZ = "NOPE"

DEVICES = tuple(f"dev{i:02d}" for i in range(20))
USERS = tuple(f"user{i}" for i in range(10))

#: Every device binds its user with this session, once, at its start;
#: no config checks sessions, so the binding never changes.
SESSION = "crash-session"

#: Seconds between the helpers' looks at the control file.
CONTROL_INTERVAL = 0.02


def user_of(device: str) -> str:
    """Return the user C{device} is bound to (two devices a user)."""
    return USERS[DEVICES.index(device) % len(USERS)]


def message_id(seq: int, biz: str, link: str) -> str:
    """Return the message id of the C{seq}th call, naming its target."""
    return f"m{seq}.{biz}.{link or '*'}"


def target_of(msg_id: str) -> tuple[str, str]:
    """
    Return the biz type and link (empty for a global op) that
    L{message_id} wrote into C{msg_id}.
    """
    _, biz, link = msg_id.split(".")
    return biz, "" if link == "*" else link


def scope_of(biz: str, link: str) -> str:
    """Return the scope, as a device sees it, of an op of C{biz}."""
    if biz == GLOBAL_BIZ:
        return "g"
    if biz == USER_BIZ:
        return f"u:{link}"
    return f"d:{link}"


def recipients(biz: str, link: str) -> tuple[str, ...]:
    """Return the devices that must get an op of C{biz} sent to C{link}."""
    if biz == GLOBAL_BIZ:
        return DEVICES
    if biz == USER_BIZ:
        return tuple(d for d in DEVICES if user_of(d) == link)
    if biz == DEVICE_BIZ:
        return (link,)
    return ()


def append_line(fd: int, *fields: object) -> None:
    """
    Append one journal line to the C{O_APPEND} descriptor C{fd}.

    One C{write} a line puts it in the page cache whole, where a SIGKILL
    of the writer cannot take it back: no flush or sync is needed.
    """
    os.write(fd, (" ".join(str(f) for f in fields) + "\n").encode())


def open_journal(path: str) -> int:
    """Open C{path} for L{append_line}, creating it if need be."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


@dataclass(frozen=True, slots=True)
class Control:
    """What the test currently asks of its helper programs."""

    http: int = 0
    """The daemon's HTTP port (0: none yet)."""
    devices: int = 0
    """The daemon's device port (0: none yet)."""
    bursts: int = 0
    """How many bursts of sends the backend has been asked for so far."""
    stop: bool = False
    """Whether the backend should finish its calls and exit."""


def write_control(path: str, control: Control) -> None:
    """Replace the control file at C{path} in one atomic step."""
    fresh = path + ".new"
    with open(fresh, "w") as f:
        json.dump(asdict(control), f)
    os.replace(fresh, path)


def read_control(path: str) -> Control:
    """Read the control file, or return the empty one if there is none."""
    try:
        with open(path) as f:
            return Control(**json.load(f))
    except FileNotFoundError:
        return Control()
