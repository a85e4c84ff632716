"""
The Mosquitto side of the side-by-side benchmarks: the same scenarios as
C{device_bench.py}, against a private broker over TLS on loopback.

  - C{drain}: a persistent session (clean session off, fixed client id)
    subscribes at QoS 1 and disconnects; a publisher sends N messages of
    256 bytes at QoS 1 with a window in flight; the subscriber reconnects
    and takes them all, acking each chunk in one write.  Messages per
    second from reconnecting until the last one was received and acked.
  - C{latency}: one publisher and one online subscriber, one QoS 1
    message per interval; time from writing the PUBLISH to the
    subscriber reading it, as percentiles.
  - C{fanout}: N subscribers of one topic, M QoS 1 publishes; deliveries
    per second from the first publish to the last receipt.
  - C{idle}: N clients connect (CONNECT, CONNACK) and stay idle; the
    broker's resident memory per connection.
  - C{ingest}: several clients publish at QoS 1, each with a window in
    flight, to many topics; messages per second acknowledged.  Mosquitto
    holds them in memory only: nothing is stored durably.

Every scenario starts a fresh broker (see C{mosquitto.py}) and reports
the broker's and this process's CPU seconds.  Run C{python
bench/mqtt_bench.py drain|latency|fanout|idle|ingest}; C{--json} prints
one JSON object per run, as C{run_all.py} reads them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Coroutine
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lean_device import tls_context
from lean_mqtt import MqttClient, connect
from measure import (
    Tally,
    bounded,
    cpu_seconds,
    latency_figures,
    own_cpu,
    raise_fd_limit,
    rss_bytes,
)
from mosquitto import Broker, ensure_installed

from msync.devcerts import ensure_dev_certs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CERTS = os.path.join(ROOT, "certs")
HOST = "127.0.0.1"

#: Connections opened at once when many are needed, as device_bench does.
CONNECT_BATCH = 200


def _ctx() -> Any:
    return tls_context(os.path.join(CERTS, "ca.pem"))


async def _connect_many(
    broker: Broker, count: int, prefix: str, **kw: Any
) -> list[MqttClient]:
    ctx = _ctx()
    clients: list[MqttClient] = []
    for start in range(0, count, CONNECT_BATCH):
        batch = await asyncio.gather(
            *(
                connect(HOST, broker.port, ctx, f"{prefix}-{i}", **kw)
                for i in range(start, min(count, start + CONNECT_BATCH))
            )
        )
        clients += [client for client, _ in batch]
    return clients


async def drain_once(ops: int, size: int, window: int) -> dict[str, float]:
    """Queue C{ops} messages for an offline session; time its drain."""
    topic = "bench/drain"
    with Broker(CERTS) as broker:
        ctx = _ctx()
        sub, _ = await connect(HOST, broker.port, ctx, "drainer", clean=False)
        await sub.subscribe(topic, 1)
        await sub.disconnect()

        # Every PUBACK is in before the clock starts, so the broker has
        # queued all of them for the offline session.
        pub, _ = await connect(HOST, broker.port, ctx, "publisher")
        payload = b"x" * size
        await pub.publish_window(
            ((topic, payload) for _ in range(ops)), window
        )
        await pub.disconnect()

        tally = Tally(ops)
        cpu0, mine0 = cpu_seconds(broker.pid), own_cpu()
        start = time.perf_counter()
        sub, present = await connect(
            HOST, broker.port, ctx, "drainer", clean=False, tally=tally
        )
        if not present:
            raise RuntimeError("the broker kept no session for the drainer")
        await tally.reached
        elapsed = tally.reached_at - start
        cpu1, mine1 = cpu_seconds(broker.pid), own_cpu()
        await sub.disconnect()
    return {
        "ops/s": ops / elapsed,
        "server cpu s": cpu1 - cpu0,
        "client cpu s": mine1 - mine0,
        "seconds": elapsed,
    }


async def latency_once(count: int, interval: float) -> dict[str, float]:
    """Publish C{count} messages, one per C{interval}; time each one."""
    topic = "bench/latency"
    arrived: dict[bytes, float] = {}
    sent: dict[bytes, float] = {}

    def on_message(topic: bytes, payload: bytes, now: float) -> None:
        arrived[payload] = now

    with Broker(CERTS) as broker:
        ctx = _ctx()
        sub, _ = await connect(
            HOST, broker.port, ctx, "lat-sub", on_message=on_message
        )
        await sub.subscribe(topic, 1)
        pub, _ = await connect(HOST, broker.port, ctx, "lat-pub")

        cpu0, mine0 = cpu_seconds(broker.pid), own_cpu()
        start = time.perf_counter()
        for i in range(count):
            # Paced against the start, so one late wake-up does not shift
            # every later send.
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            payload = b"LAT-%08d" % i
            sent[payload] = time.perf_counter()
            pub.publish(topic, payload, 1)
        await pub.until_acked(count)
        while sub.received < count:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        cpu1, mine1 = cpu_seconds(broker.pid), own_cpu()
        await pub.disconnect()
        await sub.disconnect()
    ms = [(arrived[p] - sent[p]) * 1000 for p in sent]
    return latency_figures(ms, cpu1 - cpu0, mine1 - mine0, elapsed)


async def fanout_once(
    devices: int, ops: int, size: int, window: int
) -> dict[str, float]:
    """C{devices} subscribers of one topic each receive C{ops} messages."""
    topic = "bench/global"
    total = devices * ops
    with Broker(CERTS) as broker:
        tally = Tally(total)
        connect_start = time.perf_counter()
        subs = await _connect_many(broker, devices, "fan", tally=tally)
        await asyncio.gather(*(s.subscribe(topic, 1) for s in subs))
        connect_seconds = time.perf_counter() - connect_start
        pub, _ = await connect(HOST, broker.port, _ctx(), "fan-pub")

        payload = b"g" * size
        cpu0, mine0 = cpu_seconds(broker.pid), own_cpu()
        start = time.perf_counter()
        await pub.publish_window(
            ((topic, payload) for _ in range(ops)), window
        )
        await tally.reached
        elapsed = tally.reached_at - start
        cpu1, mine1 = cpu_seconds(broker.pid), own_cpu()
        pub.abort()
        for s in subs:
            s.abort()
    return {
        "deliveries/s": total / elapsed,
        "server cpu s": cpu1 - cpu0,
        "client cpu s": mine1 - mine0,
        "seconds": elapsed,
        "connect seconds": connect_seconds,
    }


async def idle_once(count: int, settle: float) -> dict[str, float]:
    """C{count} idle clients; the broker's memory per connection."""
    with Broker(CERTS) as broker:
        await asyncio.sleep(0.5)
        before = rss_bytes(broker.pid)
        cpu0, mine0 = cpu_seconds(broker.pid), own_cpu()
        start = time.perf_counter()
        # A keepalive the run never reaches: idle means silent.
        clients = await _connect_many(broker, count, "idle", keepalive=600)
        elapsed = time.perf_counter() - start
        cpu1, mine1 = cpu_seconds(broker.pid), own_cpu()
        await asyncio.sleep(settle)
        after = rss_bytes(broker.pid)
        for c in clients:
            c.abort()
    return {
        "KiB/conn": (after - before) / count / 1024,
        "rss before MiB": before / 2**20,
        "rss after MiB": after / 2**20,
        "server cpu s": cpu1 - cpu0,
        "client cpu s": mine1 - mine0,
        "seconds": elapsed,
    }


async def ingest_once(
    messages: int, clients: int, size: int, window: int
) -> dict[str, float]:
    """C{clients} publishers send C{messages} in all, to many topics."""
    with Broker(CERTS) as broker:
        pubs = await _connect_many(broker, clients, "ingest")
        per = messages // clients
        payload = b"x" * size

        # Encoded before the clock starts: what is timed is sending.
        packets = [
            pub.prepare((f"users/user{k}-{i}", payload) for i in range(per))
            for k, pub in enumerate(pubs)
        ]
        cpu0, mine0 = cpu_seconds(broker.pid), own_cpu()
        start = time.perf_counter()
        await asyncio.gather(
            *(
                pub.send_window(ready, window)
                for pub, ready in zip(pubs, packets, strict=True)
            )
        )
        elapsed = time.perf_counter() - start
        cpu1, mine1 = cpu_seconds(broker.pid), own_cpu()
        for p in pubs:
            await p.disconnect()
    done = per * clients
    return {
        "ops/s": done / elapsed,
        "ops per server cpu s": done / max(cpu1 - cpu0, 1e-9),
        "server cpu s": cpu1 - cpu0,
        "client cpu s": mine1 - mine0,
        "seconds": elapsed,
    }


def scenario(
    args: argparse.Namespace,
) -> Coroutine[Any, Any, dict[str, float]]:
    """The coroutine of one run of the chosen scenario."""
    if args.scenario == "drain":
        return drain_once(args.ops, args.size, args.window)
    if args.scenario == "latency":
        return latency_once(args.count, args.interval_ms / 1000)
    if args.scenario == "fanout":
        return fanout_once(args.devices, args.ops, args.size, args.window)
    if args.scenario == "idle":
        return idle_once(args.devices, args.settle)
    return ingest_once(args.ops, args.clients, args.size, args.window)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "scenario", choices=["drain", "latency", "fanout", "idle", "ingest"]
    )
    p.add_argument("--ops", type=int, default=100_000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--window", type=int, default=1000)
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--interval-ms", type=float, default=1.0)
    p.add_argument("--devices", type=int, default=2000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    ensure_installed()
    ensure_dev_certs(CERTS)
    raise_fd_limit()
    for _ in range(args.runs):
        result = asyncio.run(
            bounded(args.scenario, scenario(args), args.timeout)
        )
        if args.json:
            sys.stdout.write(json.dumps(result) + "\n")
        else:
            sys.stdout.write(
                "  ".join(f"{k}: {v:,.2f}" for k, v in result.items()) + "\n"
            )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
