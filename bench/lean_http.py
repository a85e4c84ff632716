"""
A lean keep-alive HTTP/1.1 client for benchmarks: signed C{syncdata}
calls over one asyncio connection, one request at a time.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from msync.gateway.app import METHOD
from msync.gateway.client import build_request, business_params


class GatewayConnection:
    """One keep-alive connection making signed gateway calls."""

    def __init__(self, base_url: str, access_key: str, secret: str) -> None:
        self.base_url = base_url
        self.access_key = access_key
        self.secret = secret
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port
        )

    def request_bytes(
        self,
        instance: str,
        biz: str,
        link: str,
        payload: bytes,
        method: str = METHOD,
        **kw: Any,
    ) -> bytes:
        """
        One signed request, as the bytes sent on the wire.

        @param link: The user or device; empty for a C{syncglobal} call,
            which names nobody.
        @param method: C{syncdata} (L{METHOD}) or C{syncglobal}.
        """
        business = business_params(
            instance, biz, payload, uuid.uuid4().hex, link_token=link, **kw
        )
        url, body = build_request(
            self.base_url + "/gateway.do",
            self.access_key,
            self.secret,
            method,
            business,
            now=time.time(),
            req_msg_id=uuid.uuid4().hex,
        )
        target = url[url.index("/gateway.do") :]
        return (
            f"POST {target} HTTP/1.1\r\n"
            f"Host: {self.host}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def call(self, raw: bytes) -> dict[str, Any]:
        """Send one prepared request and read its JSON answer."""
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        status = await self.reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"gateway answered {status!r}")
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        answer: dict[str, Any] = json.loads(body)["response"]
        return answer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except ConnectionError:
                pass


async def paced_calls(
    conns: list[GatewayConnection],
    requests: list[tuple[bytes, bytes]],
    interval: float,
) -> tuple[dict[bytes, float], dict[bytes, float]]:
    """
    Send C{requests} (each a payload and its prepared call) one every
    C{interval} seconds, on whichever of C{conns} is free.

    @return: When each payload's call was sent and when it was answered
        (C{time.perf_counter}).
    @raise RuntimeError: if a call is not answered C{OK}.
    """
    sent: dict[bytes, float] = {}
    answered: dict[bytes, float] = {}
    free: asyncio.Queue[GatewayConnection] = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)

    async def one(payload: bytes, raw: bytes) -> None:
        conn = await free.get()
        sent[payload] = time.perf_counter()
        answer = await conn.call(raw)
        answered[payload] = time.perf_counter()
        free.put_nowait(conn)
        if answer["bizResult"]["returnCode"] != "OK":
            raise RuntimeError(f"send failed: {answer}")

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    try:
        for i, (payload, raw) in enumerate(requests):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(payload, raw)))
        await asyncio.gather(*tasks)
    finally:
        # A run cut short by its bound leaves calls in flight: end them
        # here, not as noise after the real error.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return sent, answered
