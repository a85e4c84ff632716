"""Metrics move by the right amounts."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from msync.model import Target
from msync.wire.messages import Point
from tests.delivery_world import World


def scrape(
    text: bytes,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = (
                sample.value
            )
    return out


class MetricsTests(SynchronousTestCase):
    """Counters after known traffic."""

    def test_traffic(self) -> None:
        """Accepted, pushed, acked, dropped and redelivered ops and the
        connected devices are counted exactly."""
        w = World(self)
        w.metrics.watch(lambda: w.engine.online, w.store.total_ops, lambda: 0)
        w.config("LOCK", Target.DEVICE)
        a = w.device("a").connect()
        w.device("b").connect()
        ok = w.sent("LOCK", ["1", "2"], "a")
        w.send("LOCK", "3", "nobody")
        w.send("NOPE", "x", "a")
        a.ack(Point("LOCK", "d:a", w.store.epoch, ok[-1]))
        poison = w.send("LOCK", "p", "b")
        self.assertTrue(poison.success)
        b = w.engine.session("WS_app", "b")
        assert b is not None
        for _ in range(7):
            w.clock.advance(31)
            w.engine.heard(b)
            w.engine.heard(a.session)  # type: ignore[arg-type]
        m = scrape(w.metrics.render())
        self.assertEqual(m[("msync_connected_devices", ())], 2)
        self.assertEqual(m[("msync_ops_accepted_total", (("code", "OK"),))], 3)
        self.assertEqual(
            m[("msync_ops_accepted_total", (("code", "NOT_ONLINE"),))], 1
        )
        self.assertEqual(
            m[("msync_ops_accepted_total", (("code", "BIZ_NOT_ONLINE"),))], 1
        )
        self.assertEqual(m[("msync_ops_pushed_total", ())], 2 + 6)
        self.assertEqual(m[("msync_redeliveries_total", ())], 5)
        self.assertEqual(m[("msync_ops_acked_total", ())], 2)
        self.assertEqual(
            m[("msync_ops_dropped_total", (("reason", "retries"),))], 1
        )
        self.assertEqual(m[("msync_push_ack_seconds_count", ())], 1)
        self.assertEqual(m[("msync_backlog_ops", ())], 4)
