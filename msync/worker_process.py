"""
The entry point of a gateway worker process, C{python -m
msync.worker_process}: started and watched by the daemon
(L{msync.gateway.workers.Workers}); never run by hand.

It lives outside L{msync.gateway} because importing that package
imports Klein, and Klein imports Twisted's global reactor: the worker's
reactor (L{msync.lean_reactor}) has to be installed before that.
"""

from __future__ import annotations

import sys

from msync.collector import pace
from msync.lean_reactor import install


def main() -> None:
    """Install the worker's reactor and pace its collector (see
    L{msync.collector}), then run the worker."""
    reactor = install()
    pace()
    from msync.gateway.worker import run

    run(reactor, sys.argv[1:])


if __name__ == "__main__":
    main()
