"""
The gateway workers' reactor: each ready descriptor reaches its handler
once, a handler may remove one later in the same batch, and a handler
that raises loses its connection as on the stock reactor.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from twisted.python.failure import Failure

from msync.lean_reactor import LeanEPollReactor


class Reader:
    """A minimal readable selectable over one socket."""

    def __init__(
        self, sock: socket.socket, on_read: Callable[[], None] | None = None
    ) -> None:
        self.sock = sock
        self.on_read = on_read
        self.reads = 0
        self.lost: Failure | None = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "Reader"

    def doRead(self) -> None:
        self.reads += 1
        self.sock.recv(100)
        if self.on_read is not None:
            self.on_read()

    def connectionLost(self, reason: Failure) -> None:
        self.lost = reason


@pytest.fixture
def reactor() -> Iterator[LeanEPollReactor]:
    r = LeanEPollReactor()
    yield r
    # The tests' sockets are closed by now: drop the poller and the
    # reactor's own wake-up pipe without unregistering anything.
    r._poller.close()  # type: ignore[attr-defined]
    r.waker.connectionLost(None)  # type: ignore[attr-defined]


def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    return a, b


def test_a_ready_reader_is_read_once(reactor: LeanEPollReactor) -> None:
    """A descriptor with data is read once; a quiet one is not read."""
    a, b = pair()
    quiet_a, quiet_b = pair()
    ready, quiet = Reader(a), Reader(quiet_a)
    reactor.addReader(ready)  # type: ignore[arg-type]
    reactor.addReader(quiet)  # type: ignore[arg-type]
    b.send(b"x")
    reactor.doPoll(5)
    assert (ready.reads, quiet.reads) == (1, 0)
    for s in (a, b, quiet_a, quiet_b):
        s.close()


def test_a_reader_removed_earlier_in_the_batch_is_not_read(
    reactor: LeanEPollReactor,
) -> None:
    """A handler that removes another ready reader keeps it from being
    read in the same batch."""
    a1, b1 = pair()
    a2, b2 = pair()
    readers: list[Reader] = []

    def remove_the_other() -> None:
        for r in readers:
            if r.reads == 0:
                reactor.removeReader(r)  # type: ignore[arg-type]

    readers += [Reader(a1, remove_the_other), Reader(a2, remove_the_other)]
    for r in readers:
        reactor.addReader(r)  # type: ignore[arg-type]
    b1.send(b"x")
    b2.send(b"x")
    reactor.doPoll(5)
    # Both were ready; whichever ran first removed the other.
    assert sorted(r.reads for r in readers) == [0, 1]
    for s in (a1, b1, a2, b2):
        s.close()


def test_a_handler_that_raises_loses_its_connection(
    reactor: LeanEPollReactor,
) -> None:
    """A reader whose handler raises is disconnected with the error."""
    a, b = pair()

    def boom() -> None:
        raise RuntimeError("handler bug")

    r = Reader(a, boom)
    reactor.addReader(r)  # type: ignore[arg-type]
    b.send(b"x")
    reactor.doPoll(5)
    assert r.lost is not None and r.lost.check(RuntimeError)
    assert r not in reactor.getReaders()
    a.close()
    b.close()


def test_nothing_ready_returns_after_the_timeout(
    reactor: LeanEPollReactor,
) -> None:
    """With nothing ready, a poll returns after its timeout."""
    a, b = pair()
    r = Reader(a)
    reactor.addReader(r)  # type: ignore[arg-type]
    reactor.doPoll(0.01)
    assert r.reads == 0
    a.close()
    b.close()


def test_the_worker_process_runs_on_it() -> None:
    """The worker's entry point installs this reactor before Klein
    imports the global one, and paces the collector."""
    # Klein imports Twisted's global reactor when msync.gateway is
    # imported: the worker's entry point must install its own first.
    # With no arguments, the worker stops at its option parsing, after
    # the entry point has installed the reactor and imported the worker.
    script = (
        "import sys\n"
        "import msync.worker_process as w\n"
        "from msync.lean_reactor import LeanEPollReactor\n"
        "sys.argv = ['worker']\n"
        "try:\n"
        "    w.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'klein' in sys.modules\n"
        "from twisted.internet import reactor\n"
        "assert type(reactor) is LeanEPollReactor, type(reactor)\n"
        "import gc\n"
        "from msync.collector import YOUNG\n"
        "assert gc.get_threshold()[0] == YOUNG, gc.get_threshold()\n"
    )
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )
