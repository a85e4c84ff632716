"""
Hostile and broken clients against a real daemon over real sockets:
silent and half-open connections, floods of connections and of frames,
a device that never acks.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import ssl
import struct
import tempfile
import time
from typing import Any

import msgpack
import pytest
from twisted.trial.unittest import SynchronousTestCase

from msync.delivery.ops import Filters
from msync.model import Instance, NewOp, Scope, ScopeKind, SyncConfig, Target
from msync.store import LMDBEngine, catalog, oplog
from msync.testing import BOUND, CERTS, Daemon, wait_until
from msync.wire.messages import Hello, Ping, op_body, to_frame

pytestmark = pytest.mark.process

INSTANCE = "HOSTILE_app"


def seed(data_dir: str, backlog: int = 0) -> None:
    """An instance, a device-target config, and a backlog for 'slow'."""
    now = int(time.time() * 1000)
    scope = Scope(INSTANCE, "LOCK", ScopeKind.DEVICE, "slow")

    def fill(tx: Any) -> None:
        oplog.initialize(tx, new_epoch=secrets.randbits(62) + 1)
        catalog.put_instance(tx, Instance(INSTANCE))
        catalog.add_config(tx, SyncConfig(INSTANCE, "LOCK", Target.DEVICE))
        for i in range(backlog):
            oplog.append(
                tx,
                NewOp(
                    scope=scope,
                    body=op_body(b"x" * 1024, f"m{i}", now),
                    meta=Filters().encode(),
                    created_ms=now,
                    expire_ms=now + 86_400_000,
                ),
            )

    LMDBEngine.offline(data_dir, fill, map_size=2**31)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def closed(sock: socket.socket) -> bool:
    """Whether the peer closed C{sock} (reads EOF or a reset)."""
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except (ConnectionResetError, ssl.SSLError, OSError):
        return True


class HostileTests(SynchronousTestCase):
    """One daemon per test with short timeouts."""

    def daemon(self, *args: str, backlog: int = 0) -> Daemon:
        data = tempfile.mkdtemp(prefix="msync-hostile-")
        self.addCleanup(shutil.rmtree, data, True)
        seed(data, backlog)
        d = Daemon(data, *args)
        self.addCleanup(d.kill)
        return d.start(wait_for=("devices",))

    def connect(self, d: Daemon) -> socket.socket:
        sock = socket.create_connection(
            ("127.0.0.1", d.ports["devices"]), timeout=BOUND
        )
        self.addCleanup(sock.close)
        return sock

    def tls(self, d: Daemon) -> ssl.SSLSocket:
        ctx = ssl.create_default_context(cafile=os.path.join(CERTS, "ca.pem"))
        wrapped = ctx.wrap_socket(self.connect(d), server_hostname="localhost")
        self.addCleanup(wrapped.close)
        return wrapped

    def test_silent_connection_closed(self) -> None:
        """A TCP connection that never starts TLS is closed after the
        hello timeout."""
        d = self.daemon("--hello-timeout", "1")
        sock = self.connect(d)
        sock.setblocking(False)
        wait_until(lambda: closed(sock), "the server to close")

    def test_half_open_tls_closed(self) -> None:
        """A TLS connection that never says hello is closed, with an
        IDLE error frame."""
        d = self.daemon("--hello-timeout", "1")
        sock = self.tls(d)
        sock.settimeout(BOUND)
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        body = msgpack.unpackb(data[4:])
        self.assertEqual((body["t"], body["code"]), ("error", "IDLE"))

    def test_connection_flood_capped_per_address(self) -> None:
        """Past the per-address cap, new connections are closed at once;
        the ones within it stay open."""
        d = self.daemon("--per-address", "5")
        socks = [self.connect(d) for _ in range(12)]
        for s in socks:
            s.setblocking(False)
        wait_until(lambda: sum(closed(s) for s in socks) >= 7, "7 refusals")
        self.assertIn("refusing connections from 127.0.0.1", d.log())

    def test_frame_flood_closed(self) -> None:
        """A device flooding frames is closed with RATE."""
        d = self.daemon()
        sock = self.tls(d)
        hello = Hello(INSTANCE, "flood", "s" * 20, "IOS", "1.0")
        sock.sendall(to_frame(hello) + to_frame(Ping(1)) * 6000)
        sock.settimeout(BOUND)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            data += chunk
        codes = []
        while len(data) >= 4:
            (n,) = struct.unpack(">I", data[:4])
            m = msgpack.unpackb(data[4 : 4 + n])
            data = data[4 + n :]
            if m["t"] == "error":
                codes.append(m["code"])
        self.assertEqual(codes, ["RATE"])

    def test_never_acking_device_bounded(self) -> None:
        """A device that reads nothing and acks nothing, with a backlog far
        beyond its window, does not grow the server's memory past the
        window."""
        d = self.daemon(backlog=20_000)
        pid = d.proc.pid  # type: ignore[union-attr]
        before = rss(pid)
        sock = self.tls(d)
        hello = Hello(INSTANCE, "slow", "s" * 20, "IOS", "1.0")
        sock.sendall(to_frame(hello))
        # Read nothing more: the server's writes stop at the window and at
        # the transport's pause, not at 20 MB of backlog.
        wait_until(
            lambda: "device slow of" in d.log(), "the device to be admitted"
        )
        samples = [rss(pid)]

        def settled() -> bool:
            samples.append(rss(pid))
            return len(samples) > 5 and abs(samples[-1] - samples[-2]) < 2**18

        wait_until(settled, "the server's memory to settle")
        grown = max(samples) - before
        # 20,000 ops of 1 KiB would be 20 MiB; the window is 4 MiB.
        self.assertLess(grown, 12 * 2**20, f"grew {grown} bytes")
