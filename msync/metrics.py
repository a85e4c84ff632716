"""
Prometheus metrics: what the engine, the sender and the sweep report, and
what is read off the store and the engine when scraped.

One L{Metrics} a daemon, with its own registry (so tests can make many);
it is the engine's L{msync.delivery.engine.Observer}: C{pushed}, C{acked}
and C{dropped} are its methods.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from msync.delivery.sender import SendResult
from msync.store.oplog import SweepResult

CONTENT_TYPE = CONTENT_TYPE_LATEST

_ACK_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class Metrics:
    """Every msync metric, in one registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connected = Gauge(
            "msync_connected_devices", "Devices connected now", registry=r
        )
        self.accepted = Counter(
            "msync_ops_accepted",
            "Send calls answered, by result code",
            ["code"],
            registry=r,
        )
        self.ops_pushed = Counter(
            "msync_ops_pushed", "Ops pushed to devices", registry=r
        )
        self.redeliveries = Counter(
            "msync_redeliveries",
            "Pushes of ops pushed before without an ack",
            registry=r,
        )
        self.ops_acked = Counter(
            "msync_ops_acked", "Ops acked by devices", registry=r
        )
        self.dropped_ops = Counter(
            "msync_ops_dropped",
            "Ops dropped for a device, by reason",
            ["reason"],
            registry=r,
        )
        self.ack_latency = Histogram(
            "msync_push_ack_seconds",
            "Time from pushing an op to its ack",
            buckets=_ACK_BUCKETS,
            registry=r,
        )
        self.backlog = Gauge(
            "msync_backlog_ops", "Ops stored over every scope", registry=r
        )
        self.store_bytes = Gauge(
            "msync_store_bytes", "Bytes used by the store", registry=r
        )
        self.swept = Counter(
            "msync_swept",
            "Records removed by the expiry sweep, by kind",
            ["kind"],
            registry=r,
        )

    # --- what the engine reports -----------------------------------

    def pushed(self, ops: int, again: int) -> None:
        self.ops_pushed.inc(ops)
        if again:
            self.redeliveries.inc(again)

    def acked(self, ops: int, latency: float | None) -> None:
        self.ops_acked.inc(ops)
        if latency is not None:
            self.ack_latency.observe(latency)

    def dropped(self, reason: str) -> None:
        self.dropped_ops.labels(reason).inc()

    # --- what others report ------------------------------------------

    def sent(self, result: SendResult) -> None:
        """A send call was answered."""
        self.accepted.labels(result.code.value).inc()

    def sweep(self, result: SweepResult) -> None:
        """A sweep removed what expired."""
        for kind in ("ops", "deliveries", "counters"):
            count = getattr(result, kind)
            if count:
                self.swept.labels(kind).inc(count)

    def watch(
        self,
        connected: Callable[[], float],
        backlog: Callable[[], float],
        store_bytes: Callable[[], float],
    ) -> None:
        """Read these figures at each scrape."""
        self.connected.set_function(connected)
        self.backlog.set_function(backlog)
        self.store_bytes.set_function(store_bytes)

    def render(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)
