"""
The CPU one gateway call costs each half of the gateway, without sockets.

N signed C{syncdata} calls (256-byte payloads, each to its own user, as
C{device_bench ingest} sends them) are prepared in a fresh LMDB store;
then, in this process:

  - the worker's half: L{Checks} reads and checks each request, and
    L{render} signs an answer;
  - the daemon's half: each checked call crosses the link codec and goes
    through the L{Intake} to a durable append, 64 in flight, on the real
    store and its writer thread.

Printed: CPU microseconds per call of each (process CPU, so the daemon's
half includes the writer thread and the kernel's share of its commits).

Run C{python bench/gateway_calls.py [--calls N] [--runs R]}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import msgpack
from device_bench import INSTANCE, KEY, SECRET, seed
from lean_http import GatewayConnection
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults

from msync.delivery.engine import Engine
from msync.delivery.sender import Sender
from msync.gateway.calls import Answer, Call, Checks, Intake, render
from msync.gateway.relay import CALLS, pack_call, unpack_call
from msync.store import LMDBEngine, Store
from msync.store.lmdb_engine import LMDBReader

CONTENT_TYPE = b"application/x-www-form-urlencoded;charset=utf-8"
IN_FLIGHT = 64


def requests(calls: int) -> list[tuple[bytes, bytes]]:
    """Each call's query string and body, signed now."""
    client = GatewayConnection("http://127.0.0.1:1", KEY, SECRET)
    out = []
    for i in range(calls):
        raw = client.request_bytes(INSTANCE, "CHAT", f"user-{i}", b"x" * 256)
        head, _, body = raw.partition(b"\r\n\r\n")
        target = head.split(b" ")[1]
        out.append((target.partition(b"?")[2], body))
    return out


def worker_half(
    data_dir: str, parts: list[tuple[bytes, bytes]]
) -> tuple[float, bytes]:
    """CPU µs a call of checks and answer signing; the link message."""
    reader = LMDBReader(data_dir)
    try:
        checks = Checks(Store(reader), reactor)
        items = []
        answer = Answer("OK", "SUCCESS", "OK", "", True, 1)
        start = time.process_time()
        for n, (query, body) in enumerate(parts):
            call = Call(peer="bench")
            checked = checks.check(query, body, CONTENT_TYPE, call)
            items.append(pack_call(n, checked, call))
            render(answer, call)
        cpu = time.process_time() - start
    finally:
        reader.close()
    return 1e6 * cpu / len(parts), msgpack.packb([CALLS, items])


async def daemon_half(data_dir: str, message: bytes) -> float:
    """CPU µs a call from the link message to a durable answer."""
    store = Store(LMDBEngine(data_dir, reactor, map_size=2**32))
    store.open()
    try:
        intake = Intake(Sender(Engine(store, reactor)), reactor)
        items = msgpack.unpackb(message, raw=False)[1]
        answers: list[Answer] = []
        start = time.process_time()
        for at in range(0, len(items), IN_FLIGHT):
            waiting = []
            for item in items[at : at + IN_FLIGHT]:
                _, checked, call = unpack_call(item)
                d = intake.take(checked, call)
                waiting.append(d.addCallback(answers.append))
            await gatherResults(waiting)
        cpu = time.process_time() - start
        bad = [a for a in answers if a.result_code != "OK"]
        if bad:
            raise RuntimeError(f"a call failed: {bad[0]}")
    finally:
        await store.close()
    return 1e6 * cpu / len(items)


def run_once(calls: int) -> dict[str, float]:
    """Both halves on a fresh store."""
    data_dir = tempfile.mkdtemp(prefix="msync-calls-")
    try:
        seed(data_dir, 0, 0, "none")
        worker, message = worker_half(data_dir, requests(calls))
        result: dict[str, Any] = {"worker": worker}

        def start() -> None:
            done = Deferred.fromCoroutine(daemon_half(data_dir, message))
            done.addBoth(lambda outcome: result.update(daemon=outcome))
            done.addBoth(lambda _: reactor.stop())

        reactor.callWhenRunning(start)
        reactor.run()
        if not isinstance(result.get("daemon"), float):
            raise RuntimeError(f"the daemon's half failed: {result}")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if args.runs != 1:
        # One reactor per process: each run is a fresh process.
        results = []
        for _ in range(args.runs):
            out = subprocess.run(
                [sys.executable, __file__, "--calls", str(args.calls)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            print(out, end="")
            results.append(dict(_figures(out)))
        for name in ("worker", "daemon"):
            values = [r[name] for r in results]
            print(
                f"median {name} half: {statistics.median(values):.1f} µs a "
                f"call (min {min(values):.1f}, max {max(values):.1f})"
            )
        return
    figures = run_once(args.calls)
    print(
        f"worker half {figures['worker']:.1f} µs a call; "
        f"daemon half {figures['daemon']:.1f} µs a call"
    )


def _figures(line: str) -> list[tuple[str, float]]:
    words = line.split()
    out: list[tuple[str, float]] = []
    for i, word in enumerate(words):
        if word == "half":
            out.append((words[i - 1], float(words[i + 1])))
    return out


if __name__ == "__main__":
    main()
