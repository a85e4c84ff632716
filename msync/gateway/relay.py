"""
The link between a gateway worker process and the daemon: checked calls
one way, their answers the other, in msgpack batches over a local UNIX
socket (see L{msync.gateway.workers}).

Every message is one msgpack array whose first item is its kind:

  - C{[CALLS, [call, ...]]}, worker to daemon: each call is
    C{[id, req_msg_id, until, access_key, peer, send, refusal]}, where
    C{send} is the L{SendRequest}'s fields in order (or nil) and
    C{refusal} an L{Answer}'s fields (or nil);
  - C{[ANSWERS, [[id, answer], ...]]}, daemon to worker, C{answer} being
    an L{Answer}'s fields;
  - C{[HANDOFF, data]}, worker to daemon, with a connected socket's file
    descriptor attached: a connection whose first request is not the
    gateway's, and the bytes already read of it;
  - C{[TAKEN]}, daemon to worker: the oldest handed descriptor is
    adopted, so the worker may close its copy;
  - C{[READY, pid]}, worker to daemon: the worker accepts connections;
  - C{[CATALOG]}, daemon to worker: an instance, an access key or a
    setting changed (and the change is durable), so what the worker
    remembers of them is stale.

Both sides batch what one reactor turn produced into one message, cut
every L{BATCH_CALLS} items, and write each message straight to the
socket when nothing is queued before it: a worker that reads a burst of
requests hands the first calls over while it still checks the rest, so
the two processes work at the same time instead of taking turns.  A
message that cannot be read is a bug on one side: the link is dropped,
and the daemon starts the worker again.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import msgpack
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IFileDescriptorReceiver,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from msync.delivery.sender import SendRequest
from msync.gateway.calls import Answer, Call, Checked
from msync.transports import straight

__all__ = [
    "DaemonLink",
    "LinkError",
    "MessageReader",
    "OneProtocol",
    "WorkerLink",
]

_log = Logger()

CALLS, ANSWERS, HANDOFF, TAKEN, READY, CATALOG = range(6)

#: The largest message either side reads: a batch is cut at
#: L{BATCH_BYTES}, plus one call of at most a 128 KiB body.
MAX_MESSAGE = 4 * 2**20

#: A batch is sent once its calls reach this many bytes...
BATCH_BYTES = 2**20

#: ...or this many items.  Small enough that the other side starts on a
#: burst while this side finishes it; large enough that a burst is a few
#: messages, not one a call (measured with C{bench/device_bench.py
#: ingest}: 16 items drained 64 connections' calls fastest, ahead of
#: 8 and 32).
BATCH_CALLS = 16

_SEND_NAMES = tuple(f.name for f in fields(SendRequest))
_ANSWER_NAMES = tuple(f.name for f in fields(Answer))
_SEND_FIELDS = len(_SEND_NAMES)
_ANSWER_FIELDS = len(_ANSWER_NAMES)
_CLOSED = Failure(Exception("connection closed"))


def _values(value: object, names: tuple[str, ...]) -> list[Any]:
    # dataclasses.astuple deep-copies every field: too slow per call.
    return [getattr(value, name) for name in names]


class LinkError(Exception):
    """The other side sent what this side cannot read."""


class MessageReader:
    """Splits a byte stream into messages, bounded, sans-IO."""

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self._unpacker = msgpack.Unpacker(
            max_buffer_size=limit, raw=False, strict_map_key=True
        )

    def feed(self, data: bytes) -> list[list[Any]]:
        """
        Take bytes; return the whole messages they complete.

        @raise LinkError: if a message is malformed or too large.
        """
        try:
            self._unpacker.feed(data)
            messages = list(self._unpacker)
        except (ValueError, msgpack.UnpackException) as e:
            raise LinkError(f"unreadable message: {e}") from e
        for message in messages:
            if not (
                isinstance(message, list)
                and message
                and isinstance(message[0], int)
            ):
                raise LinkError(f"not a message: {message!r:.80}")
        return messages


def pack_call(call_id: int, checked: Checked, call: Call) -> list[Any]:
    """One checked call as a C{CALLS} item."""
    send = None if checked.send is None else _values(checked.send, _SEND_NAMES)
    refusal = (
        None
        if checked.refusal is None
        else _values(checked.refusal, _ANSWER_NAMES)
    )
    return [
        call_id,
        checked.req_msg_id,
        checked.until,
        call.access_key,
        call.peer,
        send,
        refusal,
    ]


def unpack_call(item: Any) -> tuple[int, Checked, Call]:
    """
    Read one C{CALLS} item.

    @raise LinkError: if it is malformed.
    """
    try:
        call_id, req_msg_id, until, access_key, peer, send, refusal = item
        checked = Checked(
            str(req_msg_id),
            float(until),
            None if send is None else _send_request(send),
            None if refusal is None else _answer(refusal),
        )
        call = Call(
            peer=str(peer),
            req_msg_id=checked.req_msg_id,
            access_key=access_key,
        )
        return int(call_id), checked, call
    except (TypeError, ValueError) as e:
        raise LinkError(f"malformed call: {e}") from e


def _send_request(values: Any) -> SendRequest:
    if not isinstance(values, list) or len(values) != _SEND_FIELDS:
        raise ValueError("send request fields")
    return SendRequest(*values)


def _answer(values: Any) -> Answer:
    if not isinstance(values, list) or len(values) != _ANSWER_FIELDS:
        raise ValueError("answer fields")
    return Answer(*values)


def unpack_answer(item: Any) -> tuple[int, Answer]:
    """
    Read one C{ANSWERS} item.

    @raise LinkError: if it is malformed.
    """
    try:
        call_id, values = item
        return int(call_id), _answer(values)
    except (TypeError, ValueError) as e:
        raise LinkError(f"malformed answer: {e}") from e


class _Batch:
    """Items produced in one reactor turn, sent as one message."""

    def __init__(
        self, kind: int, clock: IReactorTime, write: Callable[[bytes], None]
    ) -> None:
        self._kind = kind
        self._clock = clock
        self._write = write
        self._items: list[Any] = []
        self._size = 0
        self._scheduled = False

    def add(self, item: list[Any], size: int = 0) -> None:
        self._items.append(item)
        self._size += size
        if self._size >= BATCH_BYTES or len(self._items) >= BATCH_CALLS:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._clock.callLater(0, self._due)

    def _due(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        if self._items:
            items, self._items, self._size = self._items, [], 0
            self._write(msgpack.packb([self._kind, items]))


@implementer(IFileDescriptorReceiver)
class DaemonLink(Protocol):
    """
    The daemon's end of one worker's link: each call goes to C{take} (the
    L{msync.gateway.calls.Intake}), each handed connection to C{adopt}.
    """

    def __init__(
        self,
        take: Callable[[Checked, Call], Deferred[Answer]],
        adopt: Callable[[int, bytes], None],
        clock: IReactorTime,
        on_ready: Callable[[DaemonLink, int], None],
        on_lost: Callable[[DaemonLink], None],
    ) -> None:
        self._take = take
        self._adopt = adopt
        self._clock = clock
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._reader = MessageReader()
        self._fds: deque[int] = deque()
        self._answers: _Batch | None = None
        self._write: Callable[[bytes], None] | None = None
        self._gone = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self._write = straight(self.transport)
        self._answers = _Batch(ANSWERS, self._clock, self._write)

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self._fds.append(descriptor)

    def dataReceived(self, data: bytes) -> None:
        try:
            for message in self._reader.feed(data):
                self._handle(message)
        except LinkError as e:
            _log.error("gateway worker link dropped: {why}", why=str(e))
            assert self.transport is not None
            self.transport.loseConnection()

    def _handle(self, message: list[Any]) -> None:
        kind = message[0]
        if kind == CALLS and len(message) == 2:
            for item in message[1]:
                call_id, checked, call = unpack_call(item)
                d = self._take(checked, call)
                d.addCallback(self._answered, call_id)
        elif kind == HANDOFF and len(message) == 2 and self._fds:
            fd = self._fds.popleft()
            try:
                self._adopt(fd, bytes(message[1]))
            except Exception:
                # The client may have gone already: that connection is
                # lost, not the link.
                _log.failure("adopting a handed connection failed")
            finally:
                os.close(fd)
                assert self.transport is not None
                self.transport.write(msgpack.packb([TAKEN]))
        elif kind == READY and len(message) == 2:
            self._on_ready(self, int(message[1]))
        else:
            raise LinkError(f"unexpected message kind {kind!r}")

    def catalog_changed(self) -> None:
        """Tell the worker that the catalog changed."""
        if self._write is not None and not self._gone:
            self._write(msgpack.packb([CATALOG]))

    def _answered(self, answer: Answer, call_id: int) -> None:
        if self._answers is not None and not self._gone:
            self._answers.add([call_id, _values(answer, _ANSWER_NAMES)])

    def connectionLost(self, reason: Failure = _CLOSED) -> None:
        self._gone = True
        while self._fds:
            os.close(self._fds.popleft())
        self._on_lost(self)


class WorkerLink(Protocol):
    """
    A worker's end of its link: sends checked calls to the daemon and
    fires each one's Deferred with the daemon's answer; hands foreign
    connections over.
    """

    def __init__(
        self,
        clock: IReactorTime,
        on_lost: Callable[[], None],
        on_catalog: Callable[[], None] = lambda: None,
    ) -> None:
        """
        @param on_catalog: Called when the daemon says the catalog
            changed (see L{msync.store.Store.forget}).
        """
        self._clock = clock
        self._on_lost = on_lost
        self._on_catalog = on_catalog
        self._reader = MessageReader()
        self._next_id = 0
        self._waiting: dict[int, Deferred[Answer]] = {}
        self._handed: deque[int] = deque()
        self._calls: _Batch | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self._calls = _Batch(CALLS, self._clock, straight(self.transport))
        self.transport.write(msgpack.packb([READY, os.getpid()]))

    def take(self, checked: Checked, call: Call) -> Deferred[Answer]:
        """Send a checked call; the Deferred fires with its answer."""
        assert self._calls is not None
        self._next_id += 1
        d: Deferred[Answer] = Deferred()
        self._waiting[self._next_id] = d
        size = 0 if checked.send is None else len(checked.send.payload)
        self._calls.add(pack_call(self._next_id, checked, call), size)
        return d

    def handoff(
        self, transport: ITransport, data: bytes, fresh: bool
    ) -> Protocol | None:
        """
        Give a connection whose request is not the gateway's to the
        daemon (a L{msync.gateway.lean.Handoff}).

        A connection that already carried gateway answers is closed
        instead: answers still in this process's buffer could otherwise
        reach the client after the daemon's.
        """
        connection: Any = transport
        if fresh and self.transport is not None and connection.fileno() >= 0:
            descriptor = os.dup(connection.fileno())
            self._handed.append(descriptor)
            link: Any = self.transport
            link.sendFileDescriptor(descriptor)
            link.write(msgpack.packb([HANDOFF, data]))
            # XXX: Twisted has no public way to close a socket without
            # shutting it down, and a shutdown would end the daemon's copy.
            connection._shouldShutdown = False
        connection.loseConnection()
        return None

    def dataReceived(self, data: bytes) -> None:
        try:
            messages = self._reader.feed(data)
            for message in messages:
                self._handle(message)
        except LinkError as e:
            _log.error("daemon link unreadable: {why}", why=str(e))
            assert self.transport is not None
            self.transport.loseConnection()

    def _handle(self, message: list[Any]) -> None:
        kind = message[0]
        if kind == ANSWERS and len(message) == 2:
            for item in message[1]:
                call_id, answer = unpack_answer(item)
                d = self._waiting.pop(call_id, None)
                if d is not None:
                    d.callback(answer)
        elif kind == TAKEN and self._handed:
            os.close(self._handed.popleft())
        elif kind == CATALOG:
            self._on_catalog()
        else:
            raise LinkError(f"unexpected message kind {kind!r}")

    def connectionLost(self, reason: Failure = _CLOSED) -> None:
        waiting, self._waiting = self._waiting, {}
        for d in waiting.values():
            d.errback(Failure(LinkError("the daemon link closed")))
        while self._handed:
            os.close(self._handed.popleft())
        self._on_lost()


class OneProtocol(Factory):
    """A factory for one adopted connection whose protocol exists."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self._protocol
