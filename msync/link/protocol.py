"""
The device connection: bytes in, frames out, everything else in the
engine.

L{DeviceProtocol} decodes frames with the sans-IO codec, hands messages to
the L{msync.delivery.engine.Engine}, and is the one place where a bad frame
or a failure becomes an C{error} frame and a close.  It is also the
transport's push producer, so a device that reads slowly makes the engine
stop writing to it instead of buffering.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from msync.delivery.engine import Engine, Refused, Session
from msync.wire.frames import MAX_DEVICE_FRAME, FrameDecoder, ProtocolError
from msync.wire.messages import (
    Ack,
    Bind,
    Error,
    Hello,
    Ping,
    Pong,
    Pull,
    Unbind,
    parse,
    to_frame,
)

_log = Logger()

#: Seconds a closing connection may take to finish its TLS shutdown.
CLOSE_GRACE = 2.0

#: Frames a second a device may send (bursts of twice that).  A device
#: acks every sync frame, and at one op a millisecond that is a thousand
#: acks a second: the limit stops floods, not busy devices.
FRAME_RATE = 2000.0


@implementer(IPushProducer)
class DeviceProtocol(Protocol):
    """One device connection."""

    def __init__(self, engine: Engine, frame_rate: float = FRAME_RATE) -> None:
        self._engine = engine
        self._rate = frame_rate
        self._tokens = 2 * frame_rate
        self._refilled = engine.clock.seconds()
        self.on_lost: Callable[[], object] | None = None
        self._abort: IDelayedCall | None = None
        self._decoder = FrameDecoder(MAX_DEVICE_FRAME)
        # Messages that arrived while a hello was being checked.  Made
        # only then: an empty deque costs most of a KiB, and ten thousand
        # idle devices would each keep one.
        self._waiting: deque[dict[str, Any]] | None = None
        self._busy = False
        self.session: Session | None = None
        self.paused = False
        self.closed = False

    def connectionMade(self) -> None:
        # Pushes are small and latency matters: no Nagle delay.  The TLS
        # wrapper passes this on to the TCP transport under it.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self._engine.waiting(self)

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as e:
            self.close(e.code, e.text)
            return
        if frames and not self._within_rate(len(frames)):
            self.close("RATE", "too many frames too fast")
            return
        # In order; once a hello is being checked, the rest wait for it.
        if self._waiting is not None:
            self._waiting.extend(frames)
            return
        for at, raw in enumerate(frames):
            if self.closed:
                return
            if self._busy:
                self._waiting = deque(frames[at:])
                return
            self._handle(raw)

    def _within_rate(self, frames: int) -> bool:
        # A token bucket: frame_rate a second, bursts of twice that.
        now = self._engine.clock.seconds()
        self._tokens = min(
            2 * self._rate, self._tokens + (now - self._refilled) * self._rate
        )
        self._refilled = now
        self._tokens -= frames
        return self._tokens >= 0

    def _drain(self) -> None:
        # Messages are handled one at a time and in order; a hello is
        # asynchronous, so whatever follows it waits for it.
        waiting = self._waiting
        while waiting and not self._busy and not self.closed:
            self._handle(waiting.popleft())
        if not self._busy:
            self._waiting = None

    def _handle(self, raw: dict[str, Any]) -> None:
        try:
            message = parse(raw)
            session = self.session
            if session is None:
                if not isinstance(message, Hello):
                    raise ProtocolError("UNEXPECTED", "say hello first")
                self._busy = True
                d = self._engine.hello(self, message)
                d.addCallbacks(self._admitted, self._refused)
                return
            self._engine.heard(session)
            match message:
                case Ack():
                    self._engine.ack(session, message)
                case Ping():
                    self.send(to_frame(Pong(message.n)))
                case Pong():
                    pass
                case Pull():
                    self._engine.pull(session)
                case Bind():
                    self._engine.bind(session, message.user, message.session)
                case Unbind():
                    self._engine.unbind(session)
                case Error():
                    _log.info(
                        "device {device_id} reported {code}: {text}",
                        device_id=session.device_id,
                        code=message.code,
                        text=message.text,
                    )
                    self._lose()
                case _:
                    raise ProtocolError(
                        "UNEXPECTED",
                        f"{raw['t']} is not sent by devices",
                    )
        except (ProtocolError, Refused) as e:
            self.close(e.code, e.text)
        except Exception:
            _log.failure("handling a device message failed")
            self.close("INTERNAL", "internal error")

    def _admitted(self, session: Session) -> None:
        self._busy = False
        if self.closed:
            # The device left while its hello was being checked.
            self._engine.disconnect(session)
            return
        self.session = session
        self._drain()

    def _refused(self, failure: Failure) -> None:
        self._busy = False
        e = failure.value
        if isinstance(e, Refused):
            _log.info(
                "refused a device: {code} {text}", code=e.code, text=e.text
            )
            self.close(e.code, e.text)
        else:
            _log.failure("admitting a device failed", failure)
            self.close("INTERNAL", "internal error")

    # --- what the engine calls --------------------------------------

    def send(self, data: bytes) -> None:
        """Write whole frames, unless the connection is closing."""
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def close(self, code: str, text: str) -> None:
        """Say why in an error frame, then close."""
        if self.closed:
            return
        # Error texts may quote what the device sent: keep them short.
        frame = to_frame(Error(code, text[:200]))
        self.transport.write(frame)  # type: ignore[union-attr]
        self._lose()

    def _lose(self) -> None:
        self.closed = True
        self._waiting = None
        self.transport.loseConnection()  # type: ignore[union-attr]
        # A TLS close waits for the peer's part of the shutdown; a silent
        # or hostile peer never sends it, so cut the link if it lingers.
        if self._abort is None:
            self._abort = self._engine.clock.callLater(CLOSE_GRACE, self._cut)

    def _cut(self) -> None:
        self._abort = None
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        if self._abort is not None:
            self._abort.cancel()
            self._abort = None
        if self.on_lost is not None:
            self.on_lost()
            self.on_lost = None
        if self.session is not None:
            self._engine.disconnect(self.session)
            self.session = None
        else:
            self._engine.forget(self)

    # --- push producer ---------------------------------------------

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.session is not None:
            self._engine.pump(self.session)

    def stopProducing(self) -> None:
        self._lose()


class DeviceFactory(Factory):
    """
    Builds a L{DeviceProtocol} per connection, all on one engine, and
    counts open connections per peer address for L{AddressGate}.
    """

    def __init__(self, engine: Engine, frame_rate: float = FRAME_RATE) -> None:
        self._engine = engine
        self._frame_rate = frame_rate
        self.open: dict[str, int] = {}

    def buildProtocol(self, addr: Any) -> DeviceProtocol:
        host = str(getattr(addr, "host", addr))
        self.open[host] = self.open.get(host, 0) + 1
        p = DeviceProtocol(self._engine, self._frame_rate)
        p.on_lost = lambda: self._closed(host)
        return p

    def _closed(self, host: str) -> None:
        left = self.open.get(host, 1) - 1
        if left > 0:
            self.open[host] = left
        else:
            self.open.pop(host, None)


class AddressGate(Factory):
    """
    Refuses new connections from an address that already has
    C{per_address} open, before any TLS work is done: the socket is
    closed at once.
    """

    def __init__(
        self, wrapped: Any, devices: DeviceFactory, per_address: int
    ) -> None:
        self._wrapped = wrapped
        self._devices = devices
        self._per_address = per_address
        self.refused = 0
        self._warned: dict[str, float] = {}

    def doStart(self) -> None:
        self._wrapped.doStart()

    def doStop(self) -> None:
        self._wrapped.doStop()

    def buildProtocol(self, addr: Any) -> Any:
        host = str(getattr(addr, "host", addr))
        if self._devices.open.get(host, 0) >= self._per_address:
            self.refused += 1
            self._warn(host)
            return None
        return self._wrapped.buildProtocol(addr)

    def _warn(self, host: str) -> None:
        # One line a minute per address, however hard it floods.
        now = self._devices._engine.clock.seconds()
        if now - self._warned.get(host, -60.0) >= 60:
            self._warned[host] = now
            _log.warn(
                "refusing connections from {host}: {limit} already open",
                host=host,
                limit=self._per_address,
            )
