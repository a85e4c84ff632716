"""
The delivery engine's own cost per op, without TLS or sockets.

N ops are stored for one device in a fresh LMDB store (as C{device_bench
drain} does); the engine then pushes them to a link that acks every sync
frame on the next reactor turn, until the last op is in.  This prints
the wall time and the process CPU per op, and with C{--profile} the
functions that took it (cProfile, which slows everything about 2x).

Run C{python bench/engine_drain.py [--ops N] [--runs R] [--profile]}.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from device_bench import INSTANCE, hello, seed
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from msync.delivery.engine import Engine
from msync.store import LMDBEngine, Store
from msync.wire.frames import MAX_SERVER_FRAME, FrameDecoder
from msync.wire.messages import Ack, Point

DEVICE = "drainer"


class AckingLink:
    """A device link that acks each sync frame on the next turn."""

    paused = False

    def __init__(self, engine: Engine, ops: int) -> None:
        self._engine = engine
        self._decoder = FrameDecoder(MAX_SERVER_FRAME)
        self._left = ops
        self.done: Deferred[None] = Deferred()

    def send(self, data: bytes) -> None:
        for m in self._decoder.feed(data):
            if m.get("t") != "sync":
                continue
            points = []
            for biz, scope, epoch, ops in m["groups"]:
                self._left -= len(ops)
                points.append(Point(biz, scope, epoch, ops[-1][0]))
            reactor.callLater(0, self._ack, Ack(tuple(points)))
        if self._left <= 0 and not self.done.called:
            self.done.callback(None)

    def _ack(self, ack: Ack) -> None:
        session = self._engine.session(INSTANCE, DEVICE)
        if session is not None:
            self._engine.ack(session, ack)

    def close(self, code: str, text: str) -> None:
        raise RuntimeError(f"the engine closed the link: {code} {text}")


def run_once(ops: int, profile: cProfile.Profile | None) -> dict[str, float]:
    """Drain C{ops} ops through a fresh engine; wall and CPU figures."""
    data_dir = tempfile.mkdtemp(prefix="msync-engine-")
    try:
        seed(data_dir, ops, 256, DEVICE)
        store = Store(LMDBEngine(data_dir, reactor, map_size=2**32))
        store.open()
        engine = Engine(store, reactor)
        link = AckingLink(engine, ops)
        out: dict[str, float] = {}

        def start() -> None:
            out["wall"], out["cpu"] = time.perf_counter(), time.process_time()
            if profile is not None:
                profile.enable()
            engine.hello(link, hello(DEVICE)).addErrback(stop_on_error)

        def finished(_: object) -> None:
            if profile is not None:
                profile.disable()
            out["wall"] = time.perf_counter() - out["wall"]
            out["cpu"] = time.process_time() - out["cpu"]
            reactor.stop()

        def stop_on_error(failure: Any) -> None:
            out["error"] = 1
            failure.printTraceback()
            reactor.stop()

        link.done.addCallback(finished)
        reactor.callWhenRunning(start)
        reactor.run()  # type: ignore[attr-defined]
        if "error" in out:
            raise SystemExit(1)
        store.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "ops/s": ops / out["wall"],
        "cpu us/op": out["cpu"] / ops * 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    if args.runs != 1:
        # The reactor runs once a process: one child a run.
        runs = []
        for _ in range(args.runs):
            child = [sys.executable, os.path.abspath(__file__)]
            out = subprocess.run(
                [*child, "--ops", str(args.ops)],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            ).stdout
            sys.stdout.write(out)
            runs.append(float(out.split("cpu ")[1].split()[0]))
        sys.stdout.write(
            f"median cpu {statistics.median(runs):.2f} us/op"
            f" over {args.runs} runs\n"
        )
        return
    profile = cProfile.Profile() if args.profile else None
    r = run_once(args.ops, profile)
    sys.stdout.write(
        f"{args.ops:,} ops: {r['ops/s']:,.0f} ops/s,"
        f" cpu {r['cpu us/op']:.2f} us/op\n"
    )
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
