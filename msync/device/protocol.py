"""
One connection of a device to the server: framing, the hello, heartbeats
and the one place where a bad frame from the server is caught.

L{DeviceProtocol} knows nothing of callbacks or the local store: it turns
bytes into messages, checks that they come in an order the protocol
allows, and hands them to its L{Owner} (the L{msync.device.DeviceClient}).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol as TypingProtocol
from typing import cast

import msgpack
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from msync.wire.frames import (
    MAX_DEVICE_FRAME,
    MAX_SERVER_FRAME,
    FrameDecoder,
    ProtocolError,
)
from msync.wire.messages import (
    MAX_POINTS,
    VERSION,
    Ack,
    Bound,
    Error,
    Gap,
    Hello,
    Message,
    Ping,
    Point,
    Pong,
    Sync,
    Welcome,
    parse,
    to_frame,
)

__all__ = [
    "HELLO_TIMEOUT",
    "DeviceFactory",
    "DeviceProtocol",
    "Owner",
    "split_points",
]

_log = Logger()

#: How long a server has to answer the hello before the device gives up
#: on the connection (and reconnects).
HELLO_TIMEOUT = 30.0

#: Heartbeats a server may miss before the device drops the connection.
SILENT_HEARTBEATS = 3

#: What the owner hears of once the device is welcome; the protocol
#: answers pings itself and needs nothing from a pong but its arrival.
_FOR_OWNER = (Sync, Gap, Bound)

#: The longest error text the device sends: the server takes 1,024 bytes,
#: and a reason quoting the peer's bad input could be far longer.
_MAX_ERROR_TEXT = 200

#: Room in a frame for everything but its points, rounded well up.
_FRAME_OVERHEAD = 1024


class Owner(TypingProtocol):
    """What a L{DeviceProtocol} reports to."""

    def hello(self, protocol: DeviceProtocol) -> Hello:
        """Return the hello to open C{protocol}'s connection with."""

    def welcomed(self, protocol: DeviceProtocol, welcome: Welcome) -> None:
        """The server accepted the device on C{protocol}."""

    def message_received(
        self, protocol: DeviceProtocol, message: Message
    ) -> None:
        """
        The server sent C{message} (a sync, gap, bound or error) on a
        connection where the device is welcome (an error may come
        earlier).
        """

    def connection_lost(self, protocol: DeviceProtocol) -> None:
        """C{protocol}'s connection is gone."""


def split_points(
    points: Iterable[Point], budget: int, most: int = MAX_POINTS
) -> list[list[Point]]:
    """
    Cut C{points} into runs that each fit in C{budget} bytes of msgpack
    and hold at most C{most} points.
    """
    runs: list[list[Point]] = [[]]
    used = 0
    for point in points:
        size = len(msgpack.packb(point.to_wire(), use_bin_type=True))
        if runs[-1] and (used + size > budget or len(runs[-1]) >= most):
            runs.append([])
            used = 0
        runs[-1].append(point)
        used += size
    return [run for run in runs if run]


class DeviceProtocol(Protocol):
    """
    The device's side of one connection.

    @param clock: Times the hello, the heartbeats and the silence limit.
    @param owner: Gets the hello from, and the messages to.
    """

    def __init__(self, clock: IReactorTime, owner: Owner) -> None:
        self._clock = clock
        self._owner = owner
        self._decoder = FrameDecoder(MAX_SERVER_FRAME)
        self._welcome: Welcome | None = None
        self._device = ""
        self._closing = False
        self._silence: IDelayedCall | None = None
        self._beat: IDelayedCall | None = None
        self._pings = 0
        self._later_points: list[Point] = []

    @property
    def welcome(self) -> Welcome | None:
        """The server's welcome, once it came."""
        return self._welcome

    def send(self, message: Message) -> None:
        """Write C{message} unless the connection is closing."""
        if not self._closing:
            self._transport().write(to_frame(message))

    def send_points(self, points: Iterable[Point]) -> None:
        """Acknowledge C{points}, in as many ack frames as they need."""
        for run in split_points(points, MAX_DEVICE_FRAME - _FRAME_OVERHEAD):
            self.send(Ack(tuple(run)))

    def close(self) -> None:
        """
        Close the connection once what was written is sent; nothing more
        is read or written on it.
        """
        if not self._closing:
            self._closing = True
            self._transport().loseConnection()

    def drop(self) -> None:
        """Close the connection at once: the peer is gone or lost."""
        self._closing = True
        self._transport().abortConnection()

    def _transport(self) -> ITCPTransport:
        # TCP and TLS transports both abort; ITransport does not say so.
        assert self.transport is not None, "not connected"
        return cast(ITCPTransport, self.transport)

    # --- connection events ----------------------------------------------

    def connectionMade(self) -> None:
        """Say hello, and give the server a while to answer it."""
        hello = self._owner.hello(self)

        # A hello must fit in one device frame, and the server's own points
        # are as good as ours for any it does not hear of now: those that
        # do not fit follow as acks once the device is welcome.
        bare = replace(hello, points=())
        budget = MAX_DEVICE_FRAME - _FRAME_OVERHEAD - len(to_frame(bare))
        runs = split_points(hello.points, budget)
        self._later_points = [p for run in runs[1:] for p in run]
        self._device = hello.device
        self.send(replace(bare, points=tuple(runs[0]) if runs else ()))
        self._silence = self._clock.callLater(HELLO_TIMEOUT, self._silent)

    def dataReceived(self, data: bytes) -> None:
        """Read the frames in C{data}; any fault closes the connection."""
        if self._closing:
            return
        if self._silence is not None and self._silence.active():
            self._silence.reset(self._silence_limit())
        try:
            for raw in self._decoder.feed(data):
                self._message_received(parse(raw))
                if self._closing:
                    return
        except ProtocolError as e:
            _log.warn(
                "Protocol error from the server: {code}: {text}",
                code=e.code,
                text=e.text,
            )
            self.send(Error(e.code, e.text[:_MAX_ERROR_TEXT]))
            self.close()
        except Exception:
            # Our own fault (or the local store's): the frame is not
            # acknowledged, so dropping the connection loses nothing.
            _log.failure("Failed on a frame from the server")
            self.send(Error("INTERNAL", "the device failed"))
            self.close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Stop the timers and tell the owner."""
        self._closing = True
        for call in (self._silence, self._beat):
            if call is not None and call.active():
                call.cancel()
        self._silence = self._beat = None
        self._owner.connection_lost(self)

    # --- messages ---------------------------------------------------------

    def _message_received(self, message: Message) -> None:
        if isinstance(message, Welcome):
            if self._welcome is not None:
                raise ProtocolError("UNEXPECTED", "a second welcome")
            self._welcomed(message)
        elif isinstance(message, Error):
            self._owner.message_received(self, message)
            self.close()
        elif self._welcome is None:
            raise ProtocolError(
                "UNEXPECTED", f"{type(message).__name__} before welcome"
            )
        elif isinstance(message, Ping):
            self.send(Pong(message.n))
        elif isinstance(message, Pong):
            pass
        elif isinstance(message, _FOR_OWNER):
            self._owner.message_received(self, message)
        else:
            raise ProtocolError(
                "UNEXPECTED",
                f"a server does not send {type(message).__name__}",
            )

    def _welcomed(self, welcome: Welcome) -> None:
        if welcome.version != VERSION:
            raise ProtocolError(
                "VERSION", f"the device speaks version {VERSION} only"
            )
        if welcome.device != self._device:
            raise ProtocolError("BAD_MESSAGE", "welcome names another device")
        self._welcome = welcome

        if self._silence is not None and self._silence.active():
            self._silence.reset(self._silence_limit())
        self._beat = self._clock.callLater(welcome.heartbeat, self._ping)
        self._owner.welcomed(self, welcome)
        if self._later_points:
            self.send_points(self._later_points)
            self._later_points = []

    # --- timers -----------------------------------------------------------

    def _silence_limit(self) -> float:
        if self._welcome is None:
            return HELLO_TIMEOUT
        return float(SILENT_HEARTBEATS * self._welcome.heartbeat)

    def _ping(self) -> None:
        assert self._welcome is not None
        self._pings += 1
        self.send(Ping(self._pings))
        self._beat = self._clock.callLater(self._welcome.heartbeat, self._ping)

    def _silent(self) -> None:
        self._silence = None
        _log.warn(
            "Nothing heard from the server for {seconds} seconds; "
            "dropping the connection",
            seconds=self._silence_limit(),
        )
        self.drop()


class DeviceFactory(Factory):
    """Makes a L{DeviceProtocol} for each connection of one owner."""

    # The client logs its own connects and drops; the factory's start and
    # stop on every reconnect would only be noise.
    noisy = False

    def __init__(self, clock: IReactorTime, owner: Owner) -> None:
        self._clock = clock
        self._owner = owner

    def buildProtocol(self, addr: object) -> DeviceProtocol:
        """Return a protocol for a new connection."""
        return DeviceProtocol(self._clock, self._owner)
