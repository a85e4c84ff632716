"""
A deterministic world for delivery tests: an in-memory store, a
C{task.Clock}, the engine and the sender, and fake device links that
decode what the engine writes.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from msync.delivery.engine import Engine, Refused, Session, Tuning
from msync.delivery.sender import Code, Sender, SendRequest, SendResult
from msync.metrics import Metrics
from msync.model import Instance, SyncConfig, Target
from msync.store import MemoryEngine, Store
from msync.wire.frames import MAX_SERVER_FRAME, FrameDecoder
from msync.wire.messages import (
    Ack,
    Bound,
    Error,
    Gap,
    Hello,
    Message,
    Point,
    Sync,
    Welcome,
    parse,
)

INSTANCE = "WS_app"
T0 = 1_767_225_600.0


class FakeLink:
    """A device connection that records the messages the engine sends."""

    def __init__(self) -> None:
        self.paused = False
        self.messages: list[Message] = []
        self.closed: tuple[str, str] | None = None
        self.frames = 0
        self._decoder = FrameDecoder(MAX_SERVER_FRAME)

    def send(self, data: bytes) -> None:
        assert self.closed is None, "write after close"
        for m in self._decoder.feed(data):
            self.messages.append(parse(m))
            self.frames += 1

    def close(self, code: str, text: str) -> None:
        self.closed = (code, text)

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind)]

    def ops(self, biz: str | None = None) -> list[tuple[str, str, int, bytes]]:
        """Every op received, as (biz, scope, op_id, payload), in order."""
        return [
            (g.biz, g.scope, op.op_id, op.payload)
            for s in self.of(Sync)
            for g in s.groups
            for op in g.ops
            if biz is None or g.biz == biz
        ]

    def payloads(self, biz: str | None = None) -> list[bytes]:
        return [p for *_, p in self.ops(biz)]

    def take(self) -> list[Message]:
        out, self.messages = self.messages, []
        return out


class Device:
    """A fake device: its identity, its link, its session."""

    def __init__(
        self,
        world: World,
        device_id: str,
        os: str = "ANDROID",
        app_version: str = "1.0.0",
    ) -> None:
        self.world = world
        self.device_id = device_id
        self.secret = secrets.token_urlsafe(24)
        self.os = os
        self.app_version = app_version
        self.link = FakeLink()
        self.session: Session | None = None
        self.points: dict[tuple[str, str], Point] = {}
        self.app_key = ""

    def connect(self, user: str = "", session: str = "") -> Device:
        """Say hello on a fresh link; fails the test on refusal."""
        self.link = FakeLink()
        hello = Hello(
            instance=INSTANCE,
            device=self.device_id,
            secret=self.secret,
            os=self.os,
            app_version=self.app_version,
            points=tuple(self.points.values()),
            app_key=self.app_key,
            user=user,
            session=session,
        )
        d = self.world.engine.hello(self.link, hello)
        self.session = self.world.tc.successResultOf(d)
        return self

    def refused(self, instance: str = INSTANCE) -> Refused:
        """Say hello and expect a refusal."""
        self.link = FakeLink()
        hello = Hello(
            instance=instance,
            device=self.device_id,
            secret=self.secret,
            os=self.os,
            app_version=self.app_version,
            app_key=self.app_key,
        )
        f = self.world.tc.failureResultOf(
            self.world.engine.hello(self.link, hello), Refused
        )
        return f.value  # type: ignore[return-value]

    def ack_all(self) -> None:
        """Ack the highest op of every scope received, like the SDK."""
        top: dict[tuple[str, str, int], int] = {}
        for s in self.link.of(Sync):
            for g in s.groups:
                key = (g.biz, g.scope, g.epoch)
                top[key] = max(top.get(key, 0), g.ops[-1].op_id)
        self.ack(*(Point(b, sc, e, n) for (b, sc, e), n in top.items()))

    def ack(self, *points: Point) -> None:
        for p in points:
            self.points[(p.biz, p.scope)] = p
        assert self.session is not None
        self.world.engine.heard(self.session)
        self.world.engine.ack(self.session, Ack(tuple(points)))

    def disconnect(self) -> None:
        assert self.session is not None
        self.world.engine.disconnect(self.session)
        self.session = None


class World:
    """The engine and everything around it, on a clock."""

    def __init__(self, tc: SynchronousTestCase, **tuning: Any) -> None:
        self.tc = tc
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = Store(MemoryEngine())
        self.store.open()
        tc.successResultOf(self.store.put_instance(Instance(INSTANCE)))
        self.metrics = Metrics()
        self.engine = Engine(
            self.store, self.clock, Tuning(**tuning), observer=self.metrics
        )
        self.engine.start()
        self.sender = Sender(self.engine, on_result=self.metrics.sent)
        tc.addCleanup(self._stop)

    def _stop(self) -> None:
        self.engine.stop()

    def config(
        self, biz: str, target: Target = Target.USER, **kw: Any
    ) -> SyncConfig:
        c = SyncConfig(INSTANCE, biz, target, **kw)
        self.tc.successResultOf(self.store.add_config(c))
        self.engine.config_changed(INSTANCE)
        return c

    def update(self, biz: str, **changes: Any) -> None:
        c = self.store.config(INSTANCE, biz)
        assert c is not None
        self.tc.successResultOf(
            self.store.update_config(c.modified(**changes))
        )
        self.engine.config_changed(INSTANCE)

    def device(self, device_id: str, **kw: Any) -> Device:
        return Device(self, device_id, **kw)

    def send(
        self, biz: str, payload: bytes | str, link: str = "", **kw: Any
    ) -> SendResult:
        if isinstance(payload, str):
            payload = payload.encode()
        kw.setdefault("third_msg_id", secrets.token_hex(8))
        r = SendRequest(
            instance_id=INSTANCE,
            biz_type=biz,
            payload=payload,
            link_token=link,
            **kw,
        )
        result = self.tc.successResultOf(self.sender.send(r))
        # Global ops go out once the reactor turn that stored them ends.
        self.clock.advance(0)
        return result

    def sent(
        self, biz: str, payloads: Iterable[str], link: str = "", **kw: Any
    ) -> list[int]:
        ids = []
        for p in payloads:
            r = self.send(biz, p, link, **kw)
            assert r.success, r
            ids.append(r.op_id)
        return ids


__all__ = [
    "Bound",
    "Code",
    "Device",
    "Error",
    "FakeLink",
    "Gap",
    "Sync",
    "Welcome",
    "World",
]
