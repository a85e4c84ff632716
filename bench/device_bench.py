"""
Device-side figures of a real C{twistd msync} on loopback over TLS.

  - C{drain}: N ops of 256 bytes stored for an offline device (prepared
    offline in the data directory), which then connects; ops per second
    from connecting until the last op arrived and was acked.
  - C{idle}: N devices connect, say hello and stay idle; the daemon's
    resident memory per connection.

Both report the daemon's and the client's CPU seconds, to show which side
was the bottleneck.  Run C{python bench/device_bench.py drain|idle}.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lean_device import LeanDevice, tls_context

from msync.delivery.ops import Filters
from msync.model import (
    Instance,
    NewOp,
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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_bytes(pid: int) -> int:
    """A process's resident memory."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def seed(data_dir: str, ops: int, size: int, device: str) -> None:
    """Store an instance, a device-target config and C{ops} ops."""
    now = int(time.time() * 1000)
    scope = Scope(INSTANCE, "DRAIN", ScopeKind.DEVICE, device)
    meta = Filters().encode()
    payload = b"x" * size

    def fill(tx: Any) -> None:
        oplog.initialize(tx, new_epoch=secrets.randbits(62) + 1)
        catalog.put_instance(tx, Instance(INSTANCE))
        catalog.add_config(tx, SyncConfig(INSTANCE, "DRAIN", Target.DEVICE))
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


async def drain_once(ops: int, size: int) -> dict[str, float]:
    data_dir = tempfile.mkdtemp(prefix="msync-bench-")
    try:
        seed(data_dir, ops, size, "drainer")
        daemon = Daemon(data_dir).start(wait_for=("devices",))
        try:
            ctx = tls_context(os.path.join(CERTS, "ca.pem"))
            pid = daemon.proc.pid  # type: ignore[union-attr]
            cpu0, mine0 = cpu_seconds(pid), own_cpu()
            device = LeanDevice(hello("drainer"))
            start = time.perf_counter()
            await device.connect("127.0.0.1", daemon.ports["devices"], ctx)
            while device.received < ops:
                await asyncio.sleep(0.001)
            elapsed = time.perf_counter() - start
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


async def idle_once(count: int) -> dict[str, float]:
    data_dir = tempfile.mkdtemp(prefix="msync-bench-")
    try:
        seed(data_dir, 0, 0, "none")
        daemon = Daemon(data_dir).start(wait_for=("devices",))
        devices: list[LeanDevice] = []
        try:
            ctx = tls_context(os.path.join(CERTS, "ca.pem"))
            pid = daemon.proc.pid  # type: ignore[union-attr]
            await asyncio.sleep(0.5)
            before = rss_bytes(pid)
            for start in range(0, count, 200):
                batch = [
                    LeanDevice(hello(f"idle-{i}"))
                    for i in range(start, min(count, start + 200))
                ]
                await asyncio.gather(
                    *(
                        d.connect("127.0.0.1", daemon.ports["devices"], ctx)
                        for d in batch
                    )
                )
                devices += batch
            await asyncio.sleep(2.0)
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
    }


def report(name: str, runs: list[dict[str, float]]) -> None:
    sys.stdout.write(f"\n{name}: {len(runs)} runs\n")
    for key in runs[0]:
        values = [r[key] for r in runs]
        sys.stdout.write(
            f"  {key:>16}  median {statistics.median(values):12,.1f}"
            f"   min {min(values):12,.1f}   max {max(values):12,.1f}\n"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=["drain", "idle"])
    p.add_argument("--ops", type=int, default=100_000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--devices", type=int, default=2000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    runs = []
    for _ in range(args.runs):
        if args.scenario == "drain":
            runs.append(asyncio.run(drain_once(args.ops, args.size)))
        else:
            runs.append(asyncio.run(idle_once(args.devices)))
        sys.stdout.write(f"  run: {runs[-1]}\n")
        sys.stdout.flush()
    report(args.scenario, runs)


if __name__ == "__main__":
    main()
