"""
Writing on a Twisted socket transport without waiting for the reactor.

Twisted's C{write} only queues bytes: they leave on the reactor's next
pass, which costs an epoll change to watch for writability, the pass
itself, and another change once the queue is empty.  For a small write
on an idle connection (a push to an online device, a worker's batch of
calls) that is most of the work and a good part of the latency.  Here
the bytes go to the socket at once when nothing is queued ahead of them,
and whatever the socket does not take goes to the transport, whose queue
then keeps the order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import ISSLTransport


def send_some(sock: Any, data: bytes) -> int:
    """
    Send what a non-blocking socket takes of C{data} now; how many bytes
    that was.  An error counts as nothing sent: the transport that owns
    the socket meets it too, and closes the connection.
    """
    try:
        sent: int = sock.send(data)
    except OSError:
        # BlockingIOError included: the socket is full.
        return 0
    return sent


def send_now(transport: Any, data: bytes) -> None:
    """
    Send C{data} on C{transport}'s socket now if nothing is queued ahead
    of it (bytes, or descriptors on a UNIX transport); the rest, or all
    of it, through C{transport.write}.

    A transport whose socket or queues cannot be seen, which is closing
    or closed, or which is itself a TLS layer (its handle is the TLS
    connection, and its queues those of the socket below it), always
    gets the bytes itself.
    """
    # XXX: Twisted has no public "is the write buffer empty": these are
    # FileDescriptor's queues and the UNIX transport's.  Were they gone,
    # every write would simply go through the transport.
    if (
        ISSLTransport.providedBy(transport)
        or not getattr(transport, "connected", False)
        or getattr(transport, "disconnecting", True)
        or getattr(transport, "dataBuffer", True)
        or getattr(transport, "_tempDataBuffer", True)
        or getattr(transport, "_sendmsgQueue", None)
    ):
        transport.write(data)
        return
    try:
        # A TCP transport drops its socket as the connection is lost,
        # before its protocol hears of it (a TLS layer then still
        # flushes its last records).
        sock: Any = transport.getHandle()
    except AttributeError:
        sock = None
    if not hasattr(sock, "send"):
        transport.write(data)
        return
    sent = send_some(sock, data)
    if sent < len(data):
        transport.write(data[sent:] if sent else data)


def straight(transport: Any) -> Callable[[bytes], None]:
    """A write function for C{transport} that sends as L{send_now} does."""

    def write(data: bytes) -> None:
        send_now(transport, data)

    return write
