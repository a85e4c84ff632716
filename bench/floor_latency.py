#!/usr/bin/env python3
"""
The latency floor of a Twisted relay: S2's path with nothing of msync's
on it, beside Mosquitto in the same run.

C{serve} runs a bare Twisted process on the same reactor and pyOpenSSL
TLS as the daemon.  It reads keep-alive HTTP/1.1 requests, takes the
C{payload} field out of the form, puts it in a sync frame to the one
device connected over TLS and answers C{OK}: no signature, no store, no
engine, no worker process.  The driver paces one call a millisecond
through it with the same clients as C{device_bench.py latency}, and the
same count through Mosquitto with C{mqtt_bench.py latency}, interleaved.
C{device_bench.py latency} runs the relay too, after the daemon, so the
suite's S2 table shows the floor beside both servers.

What it shows: any server on this design pays at least this floor, so
a target below the floor's p99 cannot be met by work inside msync.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from lean_device import LeanDevice, tls_context  # noqa: E402
from lean_http import GatewayConnection, paced_calls  # noqa: E402
from measure import cpu_seconds, latency_figures, own_cpu  # noqa: E402

from msync.testing import CERTS  # noqa: E402
from msync.wire.messages import Hello  # noqa: E402

# --- the bare relay (runs in its own process) -------------------------


def serve() -> None:
    """Listen on two OS-chosen ports; print them; relay until killed."""
    from twisted.internet import reactor, ssl
    from twisted.internet.protocol import Factory, Protocol

    from msync.gateway.forms import decode_form
    from msync.wire.frames import encode

    devices: list[Protocol] = []
    answer_body = json.dumps(
        {"response": {"bizResult": {"returnCode": "OK"}}}
    ).encode()
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(answer_body)
    ) + answer_body

    class Device(Protocol):
        def connectionMade(self) -> None:
            devices.append(self)
            self.transport.setTcpNoDelay(True)
            self.welcomed = False

        def dataReceived(self, data: bytes) -> None:
            # The hello is answered; acks are read and dropped.
            if not self.welcomed:
                self.welcomed = True
                self.transport.write(encode({"t": "welcome", "epoch": 1}))

        def connectionLost(self, reason: object = None) -> None:
            devices.remove(self)

    class Http(Protocol):
        def connectionMade(self) -> None:
            self.buf = b""
            self.op_id = 0
            self.transport.setTcpNoDelay(True)

        def dataReceived(self, data: bytes) -> None:
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[: end + 2].lower()
                at = head.index(b"content-length:") + 15
                length = int(head[at : head.index(b"\r\n", at)])
                if len(self.buf) < end + 4 + length:
                    return
                body = self.buf[end + 4 : end + 4 + length]
                self.buf = self.buf[end + 4 + length :]
                form = dict(decode_form(body, "body"))
                payload = base64.b64decode(form["payload"])
                self.op_id += 1
                frame = encode(
                    {
                        "t": "sync",
                        "groups": [
                            [
                                form["biz_type"],
                                form.get("link_token", ""),
                                1,
                                [[self.op_id, [payload, "", 0]]],
                            ]
                        ],
                    }
                )
                for d in devices:
                    d.transport.write(frame)
                self.transport.write(answer)

    ctx = ssl.DefaultOpenSSLContextFactory(
        os.path.join(CERTS, "server.key"), os.path.join(CERTS, "server.pem")
    )
    tls = reactor.listenSSL(  # type: ignore[attr-defined]
        0, Factory.forProtocol(Device), ctx, interface="127.0.0.1"
    )
    http = reactor.listenTCP(  # type: ignore[attr-defined]
        0, Factory.forProtocol(Http), interface="127.0.0.1"
    )
    print(tls.getHost().port, http.getHost().port, flush=True)
    reactor.run()  # type: ignore[attr-defined]


# --- the driver -------------------------------------------------------


async def floor_once(count: int, interval: float) -> dict[str, float]:
    """One paced run through a fresh bare relay."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "serve"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(
            asyncio.to_thread(proc.stdout.readline), 30
        )
        tls_port, http_port = (int(p) for p in line.split())
        arrived: dict[bytes, float] = {}

        def on_op(
            biz: str, scope: str, op_id: int, payload: bytes, now: float
        ) -> None:
            arrived[payload] = now

        device = LeanDevice(
            Hello(
                instance="FLOOR",
                device="floor-1",
                secret="floor-secret",
                os="ANDROID",
                app_version="1.0.0",
            ),
            on_op=on_op,
        )
        ctx = tls_context(os.path.join(CERTS, "ca.pem"))
        await device.connect("127.0.0.1", tls_port, ctx)
        url = f"http://127.0.0.1:{http_port}"
        conns = [GatewayConnection(url, "AKFLOOR", "floor") for _ in range(16)]
        for c in conns:
            await c.open()
        payloads = [b"FLOOR-%08d" % i for i in range(count)]
        requests = [
            (p, conns[0].request_bytes("FLOOR", "FLOOR", "floor-1", p))
            for p in payloads
        ]
        cpu0, mine0 = cpu_seconds(proc.pid), own_cpu()
        start = time.perf_counter()
        sent, _ = await paced_calls(conns, requests, interval)
        deadline = time.monotonic() + 60
        while len(arrived) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("ops did not all arrive")
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        cpu1, mine1 = cpu_seconds(proc.pid), own_cpu()
        ms = [(arrived[p] - sent[p]) * 1000 for p in sent]
        for c in conns:
            await c.close()
        await device.close()
    finally:
        proc.terminate()
        proc.wait(10)
    return latency_figures(ms, cpu1 - cpu0, mine1 - mine0, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", choices=["serve"])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--interval-ms", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.mode == "serve":
        serve()
        return
    # The suite's way of running (and bounding) one Mosquitto run.
    from run_all import child, run_child

    sizes = [
        "--count",
        str(args.count),
        "--interval-ms",
        str(args.interval_ms),
    ]
    mqtt = child("mqtt_bench.py", ["latency", *sizes], 600)
    sides: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.runs):
        sides.setdefault("bare Twisted relay", []).append(
            asyncio.run(floor_once(args.count, args.interval_ms / 1000))
        )
        sides.setdefault("Mosquitto", []).append(run_child(mqtt, 600))
    print(f"{'one op a ms, medians of runs':32} {'p50 ms':>8} {'p99 ms':>8}")
    for side, runs in sides.items():
        p50 = statistics.median(r["p50 ms"] for r in runs)
        p99 = statistics.median(r["p99 ms"] for r in runs)
        p99s = ", ".join(f"{r['p99 ms']:.2f}" for r in runs)
        print(f"{side:32} {p50:8.3f} {p99:8.3f}  (p99 of each run: {p99s})")


if __name__ == "__main__":
    main()
