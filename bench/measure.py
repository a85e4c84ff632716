"""
What the benchmarks read about processes: CPU seconds, resident memory,
percentiles, and the file descriptor limit.

Shared by the msync side (C{device_bench.py}) and the Mosquitto side
(C{mqtt_bench.py}), so that both are measured the same way.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Awaitable, Callable


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces: the fields follow its ")".
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_bytes(pid: int) -> int:
    """A process's resident memory, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def own_cpu() -> float:
    """User plus system CPU seconds this process (the client) has used."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def percentile(values: list[float], q: float) -> float:
    """The C{q} quantile (0 to 1) of C{values}, nearest rank below."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_figures(
    ms: list[float], server_cpu: float, client_cpu: float, seconds: float
) -> dict[str, float]:
    """A paced latency run's figures: the percentiles of C{ms} and each
    side's CPU seconds over the run's C{seconds}."""
    return {
        "p50 ms": percentile(ms, 0.50),
        "p99 ms": percentile(ms, 0.99),
        "p99.9 ms": percentile(ms, 0.999),
        "server cpu s": server_cpu,
        "client cpu s": client_cpu,
        "seconds": seconds,
    }


def raise_fd_limit() -> int:
    """
    Raise this process's soft limit on open files to its hard limit, and
    return the new soft limit.

    Thousands of client connections need as many descriptors; processes
    started afterwards (the daemon, the broker) inherit the limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Tally:
    """
    A count shared by many connections, and a way to wait until it
    reaches a target.

    Counting in one place lets thousands of clients report receipts
    without the waiter polling each of them.
    """

    def __init__(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.reached_at = 0.0
        self.reached: asyncio.Future[None] = (
            asyncio.get_running_loop().create_future()
        )

    def add(self, n: int) -> None:
        """Count C{n} more, noting the time the target is reached."""
        self.count += n
        if self.count >= self.target and not self.reached.done():
            self.reached_at = time.perf_counter()
            self.reached.set_result(None)


async def wait_for(
    condition: Callable[[], bool], what: str, bound: float
) -> None:
    """
    Poll C{condition} every millisecond until it is true, or fail after
    C{bound} seconds naming C{what}: a stuck run must end loudly.
    """
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {bound}s waiting for {what}")
        await asyncio.sleep(0.001)


async def bounded(
    name: str, run: Awaitable[dict[str, float]], timeout: float
) -> dict[str, float]:
    """One run, failing loudly when it takes longer than C{timeout}."""
    try:
        return await asyncio.wait_for(run, timeout)
    except TimeoutError:
        raise SystemExit(f"{name}: no result within {timeout:g} s") from None
