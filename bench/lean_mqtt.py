"""
A lean asyncio MQTT 3.1.1 client for benchmarks against Mosquitto.

It speaks only what the benchmarks need: CONNECT (client id, clean
session flag, keepalive) and CONNACK, SUBSCRIBE and SUBACK, PUBLISH at
QoS 0 and 1 with packet ids, PUBACK, PINGREQ and PINGRESP, DISCONNECT.
It is built so that it is not the bottleneck of a run:

  - L{PacketReader} splits bytes into packets with no I/O, checking each
    remaining length against a maximum before buffering the body;
  - L{MqttClient} is an C{asyncio.Protocol}, so it sees whole chunks as
    they are read, and answers every QoS 1 PUBLISH of a chunk with one
    write holding all their PUBACKs;
  - a received message is only counted, unless the caller asks to see
    it.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

from measure import Tally

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
SUBSCRIBE = 8
SUBACK = 9
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

#: The largest packet accepted; the benchmarks send a few hundred bytes.
MAX_PACKET = 1 << 20

#: A remaining length takes at most four bytes (MQTT 3.1.1, 2.2.3).
_MAX_LENGTH_BYTES = 4

_U16 = struct.Struct(">H")

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"

#: The fixed header of a PUBACK, which its packet id follows.
_PUBACK_HEAD = b"\x40\x02"


class ProtocolError(Exception):
    """The broker sent something this client cannot read."""


def encode_length(n: int) -> bytes:
    """Encode a remaining length as MQTT's variable-length integer."""
    if not 0 <= n < 128**_MAX_LENGTH_BYTES:
        raise ValueError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        if n:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def decode_length(data: bytes, pos: int) -> tuple[int, int] | None:
    """
    Decode a remaining length starting at C{data[pos]}.

    @return: The length and the position after it, or L{None} when
        C{data} ends before the length does.
    @raise ProtocolError: if the length runs over four bytes.
    """
    value = 0
    shift = 0
    for i in range(pos, min(len(data), pos + _MAX_LENGTH_BYTES)):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    if len(data) - pos >= _MAX_LENGTH_BYTES:
        raise ProtocolError("remaining length over four bytes")
    return None


def _text(s: str) -> bytes:
    raw = s.encode("utf-8")
    return _U16.pack(len(raw)) + raw


def packet(first: int, body: bytes) -> bytes:
    """One packet: its first byte, remaining length and body."""
    return bytes((first,)) + encode_length(len(body)) + body


def connect_packet(client_id: str, clean: bool, keepalive: int) -> bytes:
    """A CONNECT for MQTT 3.1.1 with no will, user name or password."""
    flags = 0x02 if clean else 0x00
    variable = _text("MQTT") + bytes((4, flags)) + _U16.pack(keepalive)
    return packet(CONNECT << 4, variable + _text(client_id))


def subscribe_packet(packet_id: int, topic: str, qos: int) -> bytes:
    """A SUBSCRIBE to one topic filter; its flags are fixed at 0b0010."""
    body = _U16.pack(packet_id) + _text(topic) + bytes((qos,))
    return packet(SUBSCRIBE << 4 | 0x02, body)


def publish_packet(
    topic: str, payload: bytes, qos: int = 0, packet_id: int = 0
) -> bytes:
    """A PUBLISH; a QoS 1 one carries C{packet_id}."""
    head = _text(topic)
    if qos:
        head += _U16.pack(packet_id)
    return packet(PUBLISH << 4 | qos << 1, head + payload)


def puback_packet(packet_id: int) -> bytes:
    """The PUBACK of one QoS 1 PUBLISH."""
    return _PUBACK_HEAD + _U16.pack(packet_id)


class PacketReader:
    """
    Split a byte stream into packets, with no I/O.

    L{feed} returns each complete packet as its first byte and its body;
    a partial packet waits for more bytes.
    """

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self.max_packet = max_packet
        self._rest = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """
        Take C{data} and return the packets it completes.

        @raise ProtocolError: if a packet is longer than the maximum; that
            is found from its header, before its body is buffered.
        """
        if self._rest:
            data = self._rest + data
        packets = []
        pos = 0
        end = len(data)
        while end - pos >= 2:
            # Most packets here are under 128 bytes long or a little over,
            # so the one-byte length is read inline, the rest by the
            # general decoder.
            byte = data[pos + 1]
            if byte < 0x80:
                length, start = byte, pos + 2
            else:
                decoded = decode_length(data, pos + 1)
                if decoded is None:
                    break
                length, start = decoded
                if length > self.max_packet:
                    raise ProtocolError(
                        f"packet of {length} bytes is too long"
                    )
            stop = start + length
            if stop > end:
                break
            packets.append((data[pos], data[start:stop]))
            pos = stop
        self._rest = data[pos:]
        return packets


class MqttClient(asyncio.Protocol):
    """
    One MQTT connection.

    C{on_message(topic, payload, now)} is called for each PUBLISH when
    given; C{received} counts them, and C{tally}, when given, is a count
    shared with other connections.  C{acked} counts PUBACKs for what this
    client published.
    """

    def __init__(
        self,
        on_message: Callable[[bytes, bytes, float], None] | None = None,
        tally: Tally | None = None,
    ) -> None:
        self.on_message = on_message
        self.tally = tally
        self.received = 0
        self.sent = 0
        self.acked = 0
        self.transport: asyncio.Transport | None = None
        self._reader = PacketReader()
        self._next_id = 0
        self._loop = asyncio.get_running_loop()
        self._connack: asyncio.Future[bool] = self._loop.create_future()
        self._subacks: dict[int, asyncio.Future[int]] = {}
        self._pongs: list[asyncio.Future[None]] = []
        self._waiter: tuple[int, asyncio.Future[None]] | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # Transport hooks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            packets = self._reader.feed(data)
        except ProtocolError as e:
            self._fail(e)
            return
        now = time.perf_counter() if self.on_message is not None else 0.0
        acks = []
        published = 0
        for first, body in packets:
            kind = first >> 4
            if kind == PUBLISH:
                # Only the packet id is needed to answer; the payload is
                # sliced out only for a caller who looks at it.
                topic_end = 2 + (body[0] << 8 | body[1])
                payload_start = topic_end
                if first & 0x06:
                    acks.append(body[topic_end : topic_end + 2])
                    payload_start += 2
                published += 1
                if self.on_message is not None:
                    self.on_message(
                        body[2:topic_end], body[payload_start:], now
                    )
            elif kind == PUBACK:
                self.acked += 1
            elif kind == CONNACK:
                self._connacked(body)
            elif kind == SUBACK:
                granted = self._subacks.pop(_U16.unpack_from(body)[0], None)
                if granted is not None and not granted.done():
                    granted.set_result(body[2])
            elif kind == PINGRESP:
                if self._pongs:
                    self._pongs.pop(0).set_result(None)
            else:
                self._fail(ProtocolError(f"unexpected packet type {kind}"))
                return

        # One write answers the whole chunk.
        if acks and self.transport is not None:
            self.transport.write(_PUBACK_HEAD + _PUBACK_HEAD.join(acks))
        if published:
            self.received += published
            if self.tally is not None:
                self.tally.add(published)
        if self._waiter is not None and self.acked >= self._waiter[0]:
            waiter = self._waiter[1]
            self._waiter = None
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        self._fail(exc or ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail(self, exc: Exception) -> None:
        # Whoever waits on this connection learns that it is gone.
        futures: list[asyncio.Future[Any]] = [
            self._connack,
            *self._subacks.values(),
            *self._pongs,
        ]
        if self._waiter is not None:
            futures.append(self._waiter[1])
        for future in futures:
            if not future.done():
                future.set_exception(exc)
        if isinstance(exc, ProtocolError) and self.transport is not None:
            self.transport.abort()

    def _connacked(self, body: bytes) -> None:
        if len(body) != 2 or body[1] != 0:
            self._fail(ProtocolError(f"connection refused: {body!r}"))
        elif not self._connack.done():
            self._connack.set_result(bool(body[0] & 0x01))

    # Calls.

    def _packet_id(self) -> int:
        # Ids cycle through 1 to 65535; a window far below that keeps an
        # id from being reused while its first use is unacknowledged.
        self._next_id = self._next_id % 0xFFFF + 1
        return self._next_id

    async def handshake(
        self, client_id: str, clean: bool = True, keepalive: int = 0
    ) -> bool:
        """
        Send CONNECT and wait for CONNACK.

        @return: Whether the broker kept a session for this client id.
        """
        assert self.transport is not None
        self.transport.write(connect_packet(client_id, clean, keepalive))
        present = await self._connack
        if keepalive:
            self._schedule_ping(keepalive * 0.75)
        return present

    def _schedule_ping(self, every: float) -> None:
        def ping() -> None:
            if self.transport is not None and not self.closed.done():
                self.transport.write(PINGREQ_PACKET)
                self._keepalive = self._loop.call_later(every, ping)

        self._keepalive = self._loop.call_later(every, ping)

    async def subscribe(self, topic: str, qos: int = 1) -> int:
        """Subscribe to C{topic}; return the QoS granted."""
        assert self.transport is not None
        packet_id = self._packet_id()
        future: asyncio.Future[int] = self._loop.create_future()
        self._subacks[packet_id] = future
        self.transport.write(subscribe_packet(packet_id, topic, qos))
        granted = await future
        if granted == 0x80:
            raise ProtocolError(f"subscription to {topic!r} refused")
        return granted

    async def ping(self) -> None:
        """Send PINGREQ and wait for PINGRESP."""
        assert self.transport is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self._pongs.append(future)
        self.transport.write(PINGREQ_PACKET)
        await future

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Write one PUBLISH without waiting; C{acked} counts PUBACKs."""
        assert self.transport is not None
        packet_id = self._packet_id() if qos else 0
        self.transport.write(publish_packet(topic, payload, qos, packet_id))
        self.sent += 1

    async def until_acked(self, count: int) -> None:
        """
        Wait until C{count} of this client's publishes are acked; one
        task at a time may wait.
        """
        if self.acked >= count:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiter = (count, future)
        await future

    def prepare(self, messages: Iterable[tuple[str, bytes]]) -> list[bytes]:
        """
        Encode C{messages} as QoS 1 PUBLISHes, ahead of sending them with
        L{send_window}, so that encoding is not part of what is timed.
        """
        return [
            publish_packet(topic, payload, 1, self._packet_id())
            for topic, payload in messages
        ]

    async def send_window(self, packets: list[bytes], window: int) -> None:
        """
        Send QoS 1 PUBLISHes made by L{prepare}, in order, keeping at most
        C{window} of them unacknowledged, and return once every one is
        acknowledged.
        """
        assert self.transport is not None
        # Refilling when half the window is free, not at every PUBACK,
        # keeps the waits few, and each refill is one write.
        low = max(1, window // 2)
        first = self.sent
        done = 0
        while done < len(packets):
            room = window - (self.sent - self.acked)
            self.transport.write(b"".join(packets[done : done + room]))
            self.sent += min(room, len(packets) - done)
            done = self.sent - first
            await self.until_acked(self.sent - low)
        await self.until_acked(self.sent)

    async def publish_window(
        self, messages: Iterable[tuple[str, bytes]], window: int
    ) -> None:
        """Publish C{messages} at QoS 1 with L{send_window}."""
        await self.send_window(self.prepare(messages), window)

    async def disconnect(self) -> None:
        """Send DISCONNECT, close, and wait for the connection to end."""
        if self.transport is not None and not self.closed.done():
            self.transport.write(DISCONNECT_PACKET)
            self.transport.close()
        await self.closed

    def abort(self) -> None:
        """Drop the connection at once, without a DISCONNECT."""
        if self.transport is not None:
            self.transport.abort()


async def connect(
    host: str,
    port: int,
    ctx: ssl.SSLContext | None,
    client_id: str,
    *,
    clean: bool = True,
    keepalive: int = 0,
    on_message: Callable[[bytes, bytes, float], None] | None = None,
    tally: Tally | None = None,
) -> tuple[MqttClient, bool]:
    """
    Open a connection (over TLS when C{ctx} is given) and complete the
    MQTT handshake.

    @return: The client, and whether the broker kept its session.
    """
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: MqttClient(on_message, tally),
        host,
        port,
        ssl=ctx,
        server_hostname="localhost" if ctx is not None else None,
    )
    present = await client.handshake(client_id, clean, keepalive)
    return client, present
