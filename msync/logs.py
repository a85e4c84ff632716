"""
Log output for twistd: C{--log-format json} writes one JSON object per
line (Twisted's event format), to the log file when one is given, else
to standard output.
"""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import ILogObserver, jsonFileLogObserver

_target: dict[str, str | None] = {"path": None}


def use_json(logfile: str | None) -> None:
    """Say where L{json_observer} should write (None or "-": stdout)."""
    _target["path"] = logfile


def json_observer() -> ILogObserver:
    """The twistd log observer factory for JSON lines."""
    path = _target["path"]
    out: IO[str]
    if path and path != "-":
        out = open(path, "a", encoding="utf-8")
    else:
        out = sys.stdout
    return jsonFileLogObserver(out, recordSeparator="")
