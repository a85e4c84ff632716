"""
A lean asyncio device for benchmarks: TLS, the msync frame codec, acks,
and nothing else, so that the client is never the bottleneck.

Acks are coalesced: at most one ack frame every L{ACK_INTERVAL} seconds,
carrying the newest point of every stream, so a device never nears the
daemon's limit of frames a second however fast sync frames arrive.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
from collections.abc import Callable

import msgpack
from measure import Tally

from msync.wire.frames import encode
from msync.wire.messages import Hello, to_map

_LEN = struct.Struct(">I")

#: The least time between two ack frames: 1,000 a second at most, under
#: the 2,000 frames a second the daemon allows one device.
ACK_INTERVAL = 0.001


def tls_context(ca_path: str) -> ssl.SSLContext:
    """A client context trusting the development CA only."""
    ctx = ssl.create_default_context(cafile=ca_path)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class LeanDevice:
    """
    One connection that says hello, acks every sync frame, and counts.

    C{on_op(biz, scope, op_id, payload, now)} is called for each op when
    given; C{received} counts ops, C{last} holds the highest id per scope,
    and C{tally}, when given, is a count shared with other devices.
    """

    def __init__(
        self,
        hello: Hello,
        on_op: Callable[[str, str, int, bytes, float], None] | None = None,
        ack: bool = True,
        tally: Tally | None = None,
    ) -> None:
        self.hello = hello
        self.on_op = on_op
        self.ack = ack
        self.tally = tally
        self.received = 0
        self.last: dict[tuple[str, str, int], int] = {}
        self._unacked: dict[tuple[str, str, int], int] = {}
        self._last_ack = 0.0
        self._ack_timer: asyncio.TimerHandle | None = None
        self.welcomed: asyncio.Future[None] = (
            asyncio.get_running_loop().create_future()
        )
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    async def connect(self, host: str, port: int, ctx: ssl.SSLContext) -> None:
        """Open the connection, say hello and start reading."""
        self.reader, self.writer = await asyncio.open_connection(
            host, port, ssl=ctx, server_hostname="localhost"
        )
        self.writer.write(encode(to_map(self.hello)))
        self.task = asyncio.create_task(self._read())
        await self.welcomed

    async def _read(self) -> None:
        try:
            await self._read_frames()
        except Exception as e:
            self._fail(e)
        else:
            self._fail(ConnectionError("the daemon closed the connection"))

    def _fail(self, exc: Exception) -> None:
        # Whoever waits on this device learns why it stopped, at once,
        # instead of at the end of the run's time bound.
        if not self.welcomed.done():
            self.welcomed.set_exception(exc)
        if self.tally is not None and not self.tally.reached.done():
            self.tally.reached.set_exception(exc)

    async def _read_frames(self) -> None:
        assert self.reader is not None and self.writer is not None
        reader, writer = self.reader, self.writer
        unpack = msgpack.unpackb
        while True:
            try:
                head = await reader.readexactly(4)
                body = await reader.readexactly(_LEN.unpack(head)[0])
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            m = unpack(body, raw=False)
            t = m["t"]
            if t == "sync":
                now = time.perf_counter()
                count = 0
                for biz, scope, epoch, ops in m["groups"]:
                    count += len(ops)
                    if self.on_op is not None:
                        for op_id, op_body in ops:
                            self.on_op(biz, scope, op_id, op_body[0], now)
                    key = (biz, scope, epoch)
                    self.last[key] = self._unacked[key] = ops[-1][0]
                self.received += count
                if self.tally is not None:
                    self.tally.add(count)
                if self.ack:
                    self._ack_soon()
            elif t == "welcome":
                self.welcomed.set_result(None)
            elif t == "ping":
                writer.write(encode({"t": "pong", "n": m["n"]}))
            elif t == "error":
                raise RuntimeError(f"server error {m['code']}: {m['text']}")

    def _ack_soon(self) -> None:
        # Ack at once if the last ack is old enough, else once it is; what
        # arrives meanwhile rides along in the same frame.
        if self._ack_timer is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_ack + ACK_INTERVAL - loop.time()
        if wait <= 0:
            self._send_acks()
        else:
            self._ack_timer = loop.call_later(wait, self._send_acks)

    def _send_acks(self) -> None:
        self._ack_timer = None
        if not self._unacked or self.writer is None:
            return
        points = [[*key, op_id] for key, op_id in self._unacked.items()]
        self._unacked.clear()
        self._last_ack = asyncio.get_running_loop().time()
        if not self.writer.is_closing():
            self.writer.write(encode({"t": "ack", "points": points}))

    async def close(self) -> None:
        """Close the connection and stop reading."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass
        if self.task is not None:
            self.task.cancel()
