"""C{msync validator}: run the reference tenant validation endpoint."""

from __future__ import annotations

import argparse
import sys

from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web.server import Site

from msync.consistency.reference import ReferenceValidator, load_sessions


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the C{validator} subcommand's arguments."""
    p.add_argument(
        "--sessions",
        required=True,
        help='JSON list of {"instanceId", "userId", "sessionId"}',
    )
    p.add_argument(
        "--port",
        default="tcp:8090:interface=127.0.0.1",
        help="endpoint to listen on [tcp:8090:interface=127.0.0.1]",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; 2 if the sessions file is unusable."""
    try:
        sessions = load_sessions(args.sessions)
    except (OSError, ValueError) as e:
        sys.stderr.write(f"msync validator: {e}\n")
        return 2
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])

    def serve(reactor: object) -> Deferred[None]:
        app = ReferenceValidator(sessions)
        site = Site(app.resource())
        site.displayTracebacks = False
        endpoint = endpoints.serverFromString(reactor, args.port)
        d = endpoint.listen(site)
        d.addCallback(
            lambda port: sys.stderr.write(
                f"msync validator on {port.getHost().port} with "
                f"{len(sessions)} sessions\n"
            )
        )
        return Deferred()

    react(serve)
    return 0
