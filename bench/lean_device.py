"""
A lean asyncio device for benchmarks: TLS, the msync frame codec, acks
per frame, and nothing else, so that the client is never the bottleneck.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
from collections.abc import Callable

import msgpack

from msync.wire.frames import encode
from msync.wire.messages import Hello, to_map

_LEN = struct.Struct(">I")


def tls_context(ca_path: str) -> ssl.SSLContext:
    """A client context trusting the development CA only."""
    ctx = ssl.create_default_context(cafile=ca_path)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class LeanDevice:
    """
    One connection that says hello, acks every sync frame, and counts.

    C{on_op(biz, scope, op_id, payload, now)} is called for each op when
    given; C{received} counts ops, C{last} holds the highest id per scope.
    """

    def __init__(
        self,
        hello: Hello,
        on_op: Callable[[str, str, int, bytes, float], None] | None = None,
        ack: bool = True,
    ) -> None:
        self.hello = hello
        self.on_op = on_op
        self.ack = ack
        self.received = 0
        self.last: dict[tuple[str, str, int], int] = {}
        self.welcomed = asyncio.Event()
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
        await self.welcomed.wait()

    async def _read(self) -> None:
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
                acks = []
                for biz, scope, epoch, ops in m["groups"]:
                    for op_id, op_body in ops:
                        self.received += 1
                        if self.on_op is not None:
                            self.on_op(biz, scope, op_id, op_body[0], now)
                    key = (biz, scope, epoch)
                    self.last[key] = ops[-1][0]
                    acks.append([biz, scope, epoch, ops[-1][0]])
                if self.ack:
                    writer.write(encode({"t": "ack", "points": acks}))
            elif t == "welcome":
                self.welcomed.set()
            elif t == "ping":
                writer.write(encode({"t": "pong", "n": m["n"]}))
            elif t == "error":
                raise RuntimeError(f"server error {m['code']}: {m['text']}")

    async def close(self) -> None:
        """Close the connection and stop reading."""
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass
        if self.task is not None:
            self.task.cancel()
