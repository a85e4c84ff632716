"""
The HTTP listener's front: a plain Twisted protocol that answers
C{POST /gateway.do} itself, with the lean reader of
L{msync.gateway.http}, and hands a connection to a full HTTP server
(twisted.web: the console, C{/api}, C{/metrics}, C{/healthz}) at the
first request for anything else.

Answers go out in the order their requests came (pipelining is safe);
while many are outstanding, or while the transport's buffer is full, the
connection is not read.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from msync.gateway.http import (
    Continue,
    Foreign,
    Refusal,
    Request,
    RequestReader,
    continue_response,
    refusal_response,
    response,
)
from msync.gateway.relay import OneProtocol
from msync.transports import send_some

__all__ = [
    "Answerer",
    "GatewayChannel",
    "GatewayFactory",
    "Handoff",
    "adopter",
    "to_site",
]

_log = Logger()

#: Answers one call: (query, body, content type, peer) to the body.
Answerer = Callable[[bytes, bytes, bytes | None, str], Deferred[bytes]]

#: Takes a connection over with the bytes already read of it, and
#: whether nothing was written to it yet; returns the protocol to forward
#: what follows to, or None if the connection has left this process.
Handoff = Callable[[ITransport, bytes, bool], Protocol | None]

#: Requests read ahead of their answers before reading pauses.
MAX_PIPELINED = 64

#: Seconds a keep-alive connection may wait idle for its client's next
#: request before it is closed.
IDLE_TIMEOUT = 300.0

_JSON_HEADERS = (
    (b"Content-Type", b"application/json;charset=utf-8"),
    (b"Cache-Control", b"no-store"),
)


_DONE = Failure(ConnectionDone())


class _Slot:
    """One answer's place in the connection's order."""

    __slots__ = ("close", "data")

    def __init__(self, data: bytes | None = None, close: bool = False):
        self.data = data
        self.close = close


@implementer(IPushProducer)
class GatewayChannel(Protocol):
    """
    One HTTP connection, read by the lean gateway reader.

    A keep-alive connection that sends nothing and waits for no answer
    for L{GatewayFactory.idle_timeout} seconds is closed by its factory's
    shared sweep (no timer per connection).
    """

    def __init__(
        self,
        answer: Answerer,
        handoff: Handoff,
        max_body: int,
        factory: GatewayFactory | None = None,
    ) -> None:
        self._factory = factory
        self.heard = factory.clock.seconds() if factory else 0.0
        """When the client last sent anything, or was last answered."""
        self._answer = answer
        self._handoff = handoff
        self._max_body = max_body
        self._reader = RequestReader(max_body)
        self._slots: deque[_Slot] = deque()
        self._foreign: bytes | None = None
        self._inner: Protocol | None = None
        self._closing = False
        self._paused: set[str] = set()
        self._written = False
        self._peer = ""
        self._socket: socket.socket | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self._peer = str(self.transport.getPeer())
        transport: Any = self.transport
        plain = ITCPTransport.providedBy(transport)
        if plain and not ISSLTransport.providedBy(transport):
            self._socket = transport.getHandle()
        transport.registerProducer(self, True)
        if self._factory is not None:
            self._factory.opened(self)

    @property
    def idle(self) -> bool:
        """Whether the connection waits for nothing but its client."""
        return self._inner is None and not self._slots

    def dataReceived(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.dataReceived(data)
            return
        if self._factory is not None:
            self.heard = self._factory.clock.seconds()
        if self._closing or self._foreign is not None:
            return
        for event in self._reader.feed(data):
            if isinstance(event, Request):
                self._call(event)
                if not event.keep_alive:
                    self._closing = True
                    break
            elif isinstance(event, Continue):
                self._slots.append(_Slot(continue_response()))
            elif isinstance(event, Refusal):
                _log.info(
                    "gateway request from {peer} refused: {status} {reason}",
                    peer=self._peer,
                    status=event.status,
                    reason=event.reason,
                )
                body = refusal_response(event, self._max_body)
                self._slots.append(_Slot(body, close=True))
                self._closing = True
            elif isinstance(event, Foreign):
                # Read nothing more until the connection is handed over.
                self._foreign = event.data
                self._pause("handoff")
        self._flush()
        if len(self._slots) >= MAX_PIPELINED:
            self._pause("pipelined")

    def _call(self, request: Request) -> None:
        slot = _Slot(close=not request.keep_alive)
        self._slots.append(slot)
        d = self._answer(
            request.query,
            request.body,
            request.headers.get(b"content-type"),
            self._peer,
        )
        d.addCallback(self._answered, slot)
        d.addErrback(self._failed, slot)

    def _answered(self, body: bytes, slot: _Slot) -> None:
        slot.data = response(200, body, _JSON_HEADERS, not slot.close)
        if self._factory is not None:
            self.heard = self._factory.clock.seconds()
        self._flush()

    def _failed(self, failure: Failure, slot: _Slot) -> None:
        # The answerers never fail; if one does, this connection ends.
        _log.failure("gateway answer failed", failure)
        slot.data, slot.close = b"", True
        self._flush()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        while self._slots and self._slots[0].data is not None:
            slot = self._slots.popleft()
            assert slot.data is not None
            self._send(slot.data)
            self._written = True
            if slot.close:
                self._slots.clear()
                transport.loseConnection()
                return
        if len(self._slots) < MAX_PIPELINED:
            self._resume("pipelined")
        if not self._slots and self._foreign is not None:
            self._hand_over(self._foreign)

    def _send(self, data: bytes) -> None:
        # A small answer usually fits the socket's buffer at once: sent
        # straight, it spares the reactor two epoll changes and a write
        # pass.  From the first byte that does not fit, everything goes
        # through the transport, whose buffer keeps the order.
        if self._socket is not None:
            sent = send_some(self._socket, data)
            if sent == len(data):
                return
            data = data[sent:]
            self._socket = None
        assert self.transport is not None
        self.transport.write(data)

    def _hand_over(self, data: bytes) -> None:
        transport: Any = self.transport
        assert transport is not None
        self._foreign = None
        # The new protocol registers itself as the transport's producer;
        # reading stays paused until it is there.
        transport.unregisterProducer()
        self._inner = self._handoff(transport, data, not self._written)
        if self._inner is None:
            self._closing = True
            return
        self._paused.clear()
        transport.resumeProducing()

    def connectionLost(self, reason: Failure = _DONE) -> None:
        if self._factory is not None:
            self._factory.closed(self)
        self._slots.clear()
        if self._inner is not None:
            self._inner.connectionLost(reason)

    # --- IPushProducer: the transport's buffer is full, or not ---------

    def pauseProducing(self) -> None:
        self._pause("writing")

    def resumeProducing(self) -> None:
        self._resume("writing")

    def stopProducing(self) -> None:
        self._slots.clear()

    def _pause(self, why: str) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        self._paused.add(why)

    def _resume(self, why: str) -> None:
        if why not in self._paused:
            return
        self._paused.discard(why)
        if not self._paused and self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]


class GatewayFactory(Factory):
    """
    Builds a L{GatewayChannel} for every connection, and closes those
    left idle for C{idle_timeout} seconds, in one sweep for all of them
    that runs while any is open.
    """

    noisy = False

    def __init__(
        self,
        answer: Answerer,
        handoff: Handoff,
        max_body: int,
        clock: IReactorTime,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.answer = answer
        self.handoff = handoff
        self.max_body = max_body
        self.clock = clock
        self.idle_timeout = idle_timeout
        self._open: set[GatewayChannel] = set()
        self._sweep = LoopingCall(self.sweep)
        self._sweep.clock = clock

    def buildProtocol(self, addr: IAddress | None) -> GatewayChannel:
        return GatewayChannel(self.answer, self.handoff, self.max_body, self)

    def opened(self, channel: GatewayChannel) -> None:
        self._open.add(channel)
        if not self._sweep.running:
            self._sweep.start(self.idle_timeout / 4, now=False)

    def closed(self, channel: GatewayChannel) -> None:
        self._open.discard(channel)
        if not self._open and self._sweep.running:
            self._sweep.stop()

    def sweep(self) -> None:
        """Close every connection idle for too long."""
        limit = self.clock.seconds() - self.idle_timeout
        for channel in list(self._open):
            if channel.idle and channel.heard < limit:
                self._open.discard(channel)
                if channel.transport is not None:
                    channel.transport.loseConnection()
        if not self._open and self._sweep.running:
            self._sweep.stop()


def to_site(site: Any) -> Handoff:
    """
    A L{Handoff} that gives the connection to C{site}'s protocol in this
    process: it is connected to the same transport and fed the bytes
    already read.
    """

    def handoff(
        transport: ITransport, data: bytes, fresh: bool
    ) -> Protocol | None:
        inner: Any = site.buildProtocol(transport.getPeer())
        inner.makeConnection(transport)
        inner.dataReceived(data)
        protocol: Protocol = inner
        return protocol

    return handoff


def adopter(
    reactor: Any, factory: GatewayFactory
) -> Callable[[int, bytes], None]:
    """
    A function that serves a connection another process accepted: its
    file descriptor (which stays the caller's to close) and the bytes
    already read of it, as if this process had accepted it.
    """

    def adopt(descriptor: int, data: bytes) -> None:
        probe = socket.socket(fileno=os.dup(descriptor))
        family = probe.family
        probe.close()
        channel = factory.buildProtocol(None)
        reactor.adoptStreamConnection(descriptor, family, OneProtocol(channel))
        channel.dataReceived(data)

    return adopt
