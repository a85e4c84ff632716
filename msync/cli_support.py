"""
What the HTTP-calling commands (C{msync push}, C{msync admin}) share: a
readable reason for a failed call, and running a command on the reactor
with a web agent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.web._newclient import (
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)

#: What an HTTP call fails with when the server is not there to answer.
UNREACHABLE = (
    ConnectError,
    DNSLookupError,
    ResponseFailed,
    ResponseNeverReceived,
    RequestTransmissionFailed,
    TimeoutError,
    CancelledError,
)


def why(error: Exception) -> str:
    """A one-line reason for a failed HTTP call."""
    # The web client wraps the transport's reasons in lists of failures.
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(str(r.value) for r in reasons)
    if isinstance(error, TimeoutError | CancelledError):
        return "no answer in time"
    return str(error) or type(error).__name__


def run_with_agent(command: Callable[[Any, Any], Awaitable[int]]) -> int:
    """
    Run C{command(reactor, agent)} on the global reactor and exit the
    process with its status.
    """
    # The command line is where the global reactor gets chosen.
    from twisted.internet.task import react
    from twisted.web.client import Agent

    async def main(reactor: Any) -> None:
        status = await command(reactor, Agent(reactor))
        if status:
            raise SystemExit(status)

    react(main)
    return 0
