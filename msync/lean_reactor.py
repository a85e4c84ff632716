"""
An epoll reactor that hands each ready descriptor straight to its
reader or writer, for processes whose log lines do not name the
connection they came from (the gateway workers).

Twisted's own epoll reactor wraps every event in the legacy log context
(C{log.callWithLogger}): it asks the selectable for its log prefix,
copies a context dict and pushes and pops it, several microseconds an
event.  In a gateway worker that is about a fourteenth of the CPU a call
costs, and nothing reads the context: the worker's log observer leaves
the C{system} field out.  Everything else, reading, writing, and
disconnecting a selectable whose handler raised, is the stock reactor's.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor


class LeanEPollReactor(EPollReactor):
    """L{EPollReactor} without the per-event log context."""

    def doPoll(self, timeout: float | None) -> None:
        """Wait for events and run each ready descriptor's handler."""
        try:
            events = self._poller.poll(
                -1 if timeout is None else timeout, len(self._selectables)
            )
        except InterruptedError:
            # A signal arrived; the reactor's loop runs its handlers.
            return
        selectables = self._selectables
        handle = self._doReadOrWrite
        for fd, event in events:
            # A handler earlier in this batch may have removed it.
            selectable = selectables.get(fd)
            if selectable is not None:
                handle(selectable, fd, event)

    doIteration = doPoll


def install() -> Any:
    """Install a L{LeanEPollReactor} as the global reactor."""
    reactor = LeanEPollReactor()
    installReactor(reactor)
    return reactor
