"""
Device-side figures of a real C{twistd msync} on loopback over TLS.

  - C{drain}: N ops of 256 bytes stored for an offline device (prepared
    offline in the data directory), which then connects; ops per second
    from connecting until the last op arrived and was acked.
  - C{idle}: N devices connect, say hello and stay idle; the daemon's
    resident memory per connection.
  - C{latency}: one online device; ops sent through the signed gateway at
    a steady pace, to a persistent and to a non-persistent config; time
    from writing the backend's request to the op reaching the device,
    as percentiles.
  - C{ingest}: signed C{syncdata} calls on keep-alive connections from
    several clients, to many users; calls per second answered (each
    stored durably before its answer), with or without a connected
    target device.
  - C{fanout}: N devices online, M ops sent through the gateway with
    C{syncglobal} to a global config; deliveries per second from the
    first call to the last op received.

All report the daemon's and the client's CPU seconds, to show which side
was the bottleneck.  Run C{python bench/device_bench.py
drain|idle|latency|ingest|fanout}; C{--json} prints one JSON object per
run, as C{run_all.py} reads them.  C{mqtt_bench.py} runs the same
scenarios against Mosquitto.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from floor_latency import floor_once
from lean_device import LeanDevice, tls_context
from lean_http import GatewayConnection, paced_calls
from measure import (
    Tally,
    bounded,
    cpu_seconds,
    latency_figures,
    own_cpu,
    percentile,
    raise_fd_limit,
    rss_bytes,
)

from msync.delivery.ops import Filters
from msync.gateway.app import GLOBAL_METHOD
from msync.model import (
    AccessKey,
    Instance,
    NewOp,
    Range,
    Scope,
    ScopeKind,
    SyncConfig,
    Target,
)
from msync.store import (
    LMDBEngine,
    catalog,
    oplog,
)
from msync.testing import CERTS, Daemon
from msync.wire.messages import Hello, op_body

INSTANCE = "BENCH_app"
DAY_MS = 86_400_000
KEY, SECRET = "AKBENCH", "bench-secret-0123456789"

#: Extra C{twistd msync} flags for every daemon (C{--daemon-arg}).
DAEMON_ARGS: list[str] = []

#: Device connections opened at once when many are needed.
CONNECT_BATCH = 200


def server_cpu(pid: int) -> float:
    """CPU seconds of the daemon and of its gateway workers."""
    total = cpu_seconds(pid)
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            for child in f.read().split():
                try:
                    total += cpu_seconds(int(child))
                except FileNotFoundError:
                    pass
    return total


def seed(data_dir: str, ops: int, size: int, device: str) -> None:
    """Store an instance, its access key, the configs, and C{ops} ops for
    C{device} in the device-target config C{DRAIN}."""
    now = int(time.time() * 1000)
    scope = Scope(INSTANCE, "DRAIN", ScopeKind.DEVICE, device)
    meta = Filters().encode()
    payload = b"x" * size

    def fill(tx: Any) -> None:
        oplog.initialize(tx, new_epoch=secrets.randbits(62) + 1)
        catalog.put_instance(tx, Instance(INSTANCE))
        catalog.put_access_key(tx, AccessKey(KEY, SECRET, (INSTANCE,)))
        for config in (
            SyncConfig(INSTANCE, "DRAIN", Target.DEVICE),
            SyncConfig(INSTANCE, "LIVE", Target.DEVICE),
            SyncConfig(INSTANCE, "VOLATILE", Target.DEVICE, persistent=False),
            SyncConfig(INSTANCE, "CHAT", Target.USER),
            SyncConfig(INSTANCE, "GLOBAL", Target.DEVICE, range=Range.GLOBAL),
        ):
            catalog.add_config(tx, config)
        for i in range(ops):
            oplog.append(
                tx,
                NewOp(
                    scope=scope,
                    body=op_body(payload, f"m{i}", now),
                    meta=meta,
                    created_ms=now,
                    expire_ms=now + DAY_MS,
                ),
            )

    LMDBEngine.offline(data_dir, fill, map_size=2**32)


def hello(device: str) -> Hello:
    return Hello(
        instance=INSTANCE,
        device=device,
        secret=secrets.token_urlsafe(24),
        os="ANDROID",
        app_version="1.0.0",
    )


def _ctx() -> Any:
    return tls_context(os.path.join(CERTS, "ca.pem"))


async def _connect_many(
    daemon: Daemon, count: int, prefix: str, tally: Tally | None = None
) -> list[LeanDevice]:
    ctx = _ctx()
    devices: list[LeanDevice] = []
    for start in range(0, count, CONNECT_BATCH):
        batch = [
            LeanDevice(hello(f"{prefix}-{i}"), tally=tally)
            for i in range(start, min(count, start + CONNECT_BATCH))
        ]
        await asyncio.gather(
            *(
                d.connect("127.0.0.1", daemon.ports["devices"], ctx)
                for d in batch
            )
        )
        devices += batch
    return devices


async def drain_once(ops: int, size: int) -> dict[str, float]:
    """Store C{ops} ops for an offline device; time its drain."""
    data_dir = tempfile.mkdtemp(prefix="msync-bench-")
    try:
        seed(data_dir, ops, size, "drainer")
        daemon = Daemon(data_dir).start(wait_for=("devices",))
        try:
            pid = daemon.proc.pid  # type: ignore[union-attr]
            tally = Tally(ops)
            device = LeanDevice(hello("drainer"), tally=tally)
            cpu0, mine0 = cpu_seconds(pid), own_cpu()
            start = time.perf_counter()
            await device.connect("127.0.0.1", daemon.ports["devices"], _ctx())
            await tally.reached
            elapsed = tally.reached_at - start
            cpu1, mine1 = cpu_seconds(pid), own_cpu()
            await device.close()
        finally:
            daemon.terminate()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "ops/s": ops / elapsed,
        "server cpu s": cpu1 - cpu0,
        "client cpu s": mine1 - mine0,
        "seconds": elapsed,
    }


async def idle_once(count: int, settle: float = 2.0) -> dict[str, float]:
    """C{count} idle devices; the daemon's memory per connection."""
    data_dir = tempfile.mkdtemp(prefix="msync-bench-")
    try:
        seed(data_dir, 0, 0, "none")
        # Every device comes from 127.0.0.1: lift the per-address limit.
        daemon = Daemon(data_dir, "--per-address", str(count + 100))
        daemon.start(wait_for=("devices",))
        try:
            pid = daemon.proc.pid  # type: ignore[union-attr]
            await asyncio.sleep(0.5)
            before = rss_bytes(pid)
            cpu0, mine0 = cpu_seconds(pid), own_cpu()
            start = time.perf_counter()
            devices = await _connect_many(daemon, count, "idle")
            elapsed = time.perf_counter() - start
            cpu1, mine1 = cpu_seconds(pid), own_cpu()
            await asyncio.sleep(settle)
            after = rss_bytes(pid)
            for d in devices:
                await d.close()
        finally:
            daemon.terminate()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "KiB/conn": (after - before) / count / 1024,
        "rss before MiB": before / 2**20,
        "rss after MiB": after / 2**20,
        "server cpu s": cpu1 - cpu0,
        "client cpu s": mine1 - mine0,
        "seconds": elapsed,
    }


async def latency_once(count: int, interval: float) -> dict[str, float]:
    """Pace C{count} sends per config; measure send-to-device times."""
    data_dir = tempfile.mkdtemp(prefix="msync-bench-")
    out: dict[str, float] = {}
    try:
        seed(data_dir, 0, 0, "none")
        daemon = Daemon(data_dir, *DAEMON_ARGS).start(
            wait_for=("devices", "HTTP")
        )
        try:
            pid = daemon.proc.pid  # type: ignore[union-attr]
            arrived: dict[bytes, float] = {}

            def on_op(
                biz: str, scope: str, op_id: int, payload: bytes, now: float
            ) -> None:
                arrived[payload] = now

            device = LeanDevice(hello("lat-1"), on_op=on_op)
            await device.connect("127.0.0.1", daemon.ports["devices"], _ctx())
            conns = [
                GatewayConnection(daemon.http_url, KEY, SECRET)
                for _ in range(16)
            ]
            for c in conns:
                await c.open()
            for biz, name in (
                ("LIVE", "persistent"),
                ("VOLATILE", "non-persistent"),
            ):
                # Signed ahead (req_time stays well within the skew), so
                # the client's signing is not on the clock.
                payloads = [
                    b"%s-%08d" % (biz.encode(), i) for i in range(count)
                ]
                requests = [
                    (p, conns[0].request_bytes(INSTANCE, biz, "lat-1", p))
                    for p in payloads
                ]
                cpu0, mine0 = server_cpu(pid), own_cpu()
                start = time.perf_counter()
                sent, answered = await paced_calls(conns, requests, interval)
                deadline = time.monotonic() + 60
                while len(set(sent) & set(arrived)) < count:
                    if time.monotonic() > deadline:
                        raise RuntimeError("ops did not all arrive")
                    await asyncio.sleep(0.01)
                elapsed = time.perf_counter() - start
                cpu1, mine1 = server_cpu(pid), own_cpu()
                ms = [(arrived[p] - sent[p]) * 1000 for p in sent]
                figures = latency_figures(
                    ms, cpu1 - cpu0, mine1 - mine0, elapsed
                )
                out.update((f"{name} {k}", v) for k, v in figures.items())
                # The gateway's own share: from the call to its answer
                # (for a persistent config, the op is durable by then).
                gw = [(answered[p] - sent[p]) * 1000 for p in sent]
                out[f"{name} answer p50 ms"] = percentile(gw, 0.50)
                out[f"{name} answer p99 ms"] = percentile(gw, 0.99)
            for c in conns:
                await c.close()
            await device.close()
        finally:
            daemon.terminate()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    # The same pacing through a bare Twisted relay: the floor under any
    # server built on this design (see floor_latency.py).
    floor = await floor_once(count, interval)
    out.update((f"floor {k}", v) for k, v in floor.items())
    return out


async def ingest_once(
    calls: int, clients: int, with_device: bool
) -> dict[str, float]:
    """C{clients} keep-alive connections send C{calls} signed calls."""
    data_dir = tempfile.mkdtemp(prefix="msync-bench-")
    try:
        seed(data_dir, 0, 0, "none")
        daemon = Daemon(data_dir, *DAEMON_ARGS).start(
            wait_for=("devices", "HTTP")
        )
        try:
            pid = daemon.proc.pid  # type: ignore[union-attr]
            device = None
            if with_device:
                device = LeanDevice(hello("target"))
                await device.connect(
                    "127.0.0.1", daemon.ports["devices"], _ctx()
                )
            conns = [
                GatewayConnection(daemon.http_url, KEY, SECRET)
                for _ in range(clients)
            ]
            for c in conns:
                await c.open()
            per = calls // clients

            # Every call is signed before the clock starts: the client's
            # CPU then goes to sending and reading, not to the server's
            # side of the work (each call still has its own req_msg_id,
            # third_msg_id and a req_time well within the skew).
            def prepare(c: GatewayConnection, k: int) -> list[bytes]:
                if with_device:
                    return [
                        c.request_bytes(INSTANCE, "LIVE", "target", payload)
                        for _ in range(per)
                    ]
                return [
                    c.request_bytes(INSTANCE, "CHAT", f"user{k}-{i}", payload)
                    for i in range(per)
                ]

            payload = b"x" * 256
            prepared = [prepare(c, k) for k, c in enumerate(conns)]

            async def run(c: GatewayConnection, calls: list[bytes]) -> None:
                for raw in calls:
                    answer = await c.call(raw)
                    if answer["result_code"] != "OK":
                        raise RuntimeError(f"call failed: {answer}")

            cpu0, mine0 = server_cpu(pid), own_cpu()
            main0 = cpu_seconds(pid)
            start = time.perf_counter()
            await asyncio.gather(
                *(
                    run(c, calls)
                    for c, calls in zip(conns, prepared, strict=True)
                )
            )
            elapsed = time.perf_counter() - start
            cpu1, mine1 = server_cpu(pid), own_cpu()
            main1 = cpu_seconds(pid)
            for c in conns:
                await c.close()
            if device is not None:
                await device.close()
        finally:
            daemon.terminate()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    done = per * clients
    return {
        "calls/s": done / elapsed,
        "calls per server cpu s": done / max(cpu1 - cpu0, 1e-9),
        "server cpu s": cpu1 - cpu0,
        "daemon cpu s": main1 - main0,
        "client cpu s": mine1 - mine0,
        "seconds": elapsed,
    }


async def fanout_once(
    devices: int, ops: int, size: int, clients: int
) -> dict[str, float]:
    """C{devices} online devices each receive C{ops} global ops."""
    data_dir = tempfile.mkdtemp(prefix="msync-bench-")
    total = devices * ops
    try:
        seed(data_dir, 0, 0, "none")
        daemon = Daemon(data_dir, "--per-address", str(devices + 100))
        daemon.start(wait_for=("devices", "HTTP"))
        try:
            pid = daemon.proc.pid  # type: ignore[union-attr]
            tally = Tally(total)
            connect_start = time.perf_counter()
            online = await _connect_many(daemon, devices, "fan", tally)
            connect_seconds = time.perf_counter() - connect_start
            conns = [
                GatewayConnection(daemon.http_url, KEY, SECRET)
                for _ in range(clients)
            ]
            for c in conns:
                await c.open()
            payload = b"g" * size

            async def run(c: GatewayConnection, calls: int) -> None:
                for _ in range(calls):
                    raw = c.request_bytes(
                        INSTANCE, "GLOBAL", "", payload, method=GLOBAL_METHOD
                    )
                    answer = await c.call(raw)
                    if answer["bizResult"]["returnCode"] != "OK":
                        raise RuntimeError(f"global send failed: {answer}")

            # The ops are shared out so that every one is sent.
            shares = [
                ops // clients + (k < ops % clients) for k in range(clients)
            ]
            cpu0, mine0 = cpu_seconds(pid), own_cpu()
            start = time.perf_counter()
            await asyncio.gather(
                *(run(c, n) for c, n in zip(conns, shares, strict=True))
            )
            await tally.reached
            elapsed = tally.reached_at - start
            cpu1, mine1 = cpu_seconds(pid), own_cpu()
            for c in conns:
                await c.close()
            for d in online:
                await d.close()
        finally:
            daemon.terminate()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "deliveries/s": total / elapsed,
        "server cpu s": cpu1 - cpu0,
        "client cpu s": mine1 - mine0,
        "seconds": elapsed,
        "connect seconds": connect_seconds,
    }


def report(name: str, runs: list[dict[str, float]]) -> None:
    sys.stdout.write(f"\n{name}: {len(runs)} runs\n")
    for key in runs[0]:
        values = [r[key] for r in runs]
        sys.stdout.write(
            f"  {key:>16}  median {statistics.median(values):12,.1f}"
            f"   min {min(values):12,.1f}   max {max(values):12,.1f}\n"
        )


def scenario(
    args: argparse.Namespace,
) -> Coroutine[Any, Any, dict[str, float]]:
    """The coroutine of one run of the chosen scenario."""
    if args.scenario == "drain":
        return drain_once(args.ops, args.size)
    if args.scenario == "idle":
        return idle_once(args.devices, args.settle)
    if args.scenario == "latency":
        return latency_once(args.count, args.interval_ms / 1000)
    if args.scenario == "fanout":
        return fanout_once(args.devices, args.ops, args.size, args.clients)
    return ingest_once(args.calls, args.clients, args.with_device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "scenario", choices=["drain", "idle", "latency", "ingest", "fanout"]
    )
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--interval-ms", type=float, default=1.0)
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--with-device", action="store_true")
    p.add_argument("--ops", type=int, default=100_000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--devices", type=int, default=2000)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--daemon-arg",
        action="append",
        default=[],
        help="a flag for twistd msync (repeat; e.g. --daemon-arg="
        "--gateway-workers --daemon-arg=0)",
    )
    args = p.parse_args()
    DAEMON_ARGS.extend(args.daemon_arg)

    raise_fd_limit()
    runs = []
    for _ in range(args.runs):
        runs.append(
            asyncio.run(bounded(args.scenario, scenario(args), args.timeout))
        )
        if args.json:
            sys.stdout.write(json.dumps(runs[-1]) + "\n")
        else:
            sys.stdout.write(f"  run: {runs[-1]}\n")
        sys.stdout.flush()
    if not args.json:
        report(args.scenario, runs)


if __name__ == "__main__":
    main()
