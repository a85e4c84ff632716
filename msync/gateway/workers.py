"""
The daemon's gateway worker processes: started with the daemon, started
again when one dies, stopped with it.

How the traffic splits (one listening socket, no proxy):

  - every worker inherits the HTTP listener's socket and accepts on it;
    while at least one worker is ready, the daemon stops accepting there
    itself, so gateway calls are parsed, checked and signed in the
    workers, on the machine's other cores;
  - a worker sends each checked call to the daemon over its own UNIX
    socket (L{msync.gateway.relay}); the daemon runs the replay memory
    and the L{Sender} (durable append, push to devices) and sends back
    the outcome, which the worker signs and writes;
  - a connection whose first request is not C{/gateway.do} (console,
    C{/api}, C{/metrics}, C{/healthz}) is handed, file descriptor and
    bytes, to the daemon, which serves it exactly as connections it
    accepts itself (L{msync.web.front});
  - when no worker is ready, the daemon accepts again and answers
    everything in process, with the same code.

Workers need a plain C{tcp:} HTTP listener: with C{ssl:} the daemon
answers everything itself.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import (
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
)
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from msync.gateway.calls import Intake
from msync.gateway.relay import DaemonLink, OneProtocol

__all__ = ["Workers", "default_count"]

_log = Logger()

#: Seconds before a worker that died is started again.
RESTART_DELAY = 1.0

#: Seconds the daemon waits for its workers before it says it is ready.
READY_WAIT = 10.0

#: Seconds a stopping worker has before it is killed.
STOP_GRACE = 5.0


def default_count(cores: int | None) -> int:
    """One worker per core but one (the daemon's), at most four."""
    return max(0, min(4, (cores or 1) - 1))


class Workers(Service):
    """
    C{count} gateway worker processes over the daemon's HTTP listening
    port, with their links to the L{Intake}.
    """

    def __init__(
        self,
        count: int,
        reactor: Any,
        data_dir: str,
        intake: Intake,
        adopt: Callable[[int, bytes], None],
        *,
        max_body: int,
        skew_seconds: float,
    ) -> None:
        """
        @param adopt: Serves a connection handed over by a worker: its
            file descriptor (still the caller's to close) and the bytes
            already read.
        """
        self.count = count
        self._reactor = reactor
        self._data_dir = data_dir
        self._intake = intake
        self._adopt = adopt
        self._max_body = max_body
        self._skew = skew_seconds
        self._port: Any = None
        self._processes: dict[int, _Worker] = {}
        self._restarts: dict[int, IDelayedCall] = {}
        self._ready: set[DaemonLink] = set()
        self._links: set[DaemonLink] = set()
        self._first: Deferred[None] | None = Deferred()
        self._first_timeout: IDelayedCall | None = None

    def ready(self) -> Deferred[None]:
        """
        Fires once every worker first said it is ready, or after
        L{READY_WAIT} seconds without that (the daemon then serves
        alone until they are).
        """
        if self._first is None:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._first.addCallback(lambda _: waiting.callback(None))
        return waiting

    def catalog_changed(self) -> None:
        """
        Tell every worker that the catalog changed (wire this to
        L{msync.store.Store.on_catalog_change}), ready or not: a worker
        still starting may already have read the old values.
        """
        for link in list(self._links):
            link.catalog_changed()

    def listen_on(self, port: Any) -> None:
        """Use C{port} (a bound TCP port) as the workers' listener."""
        self._port = port
        if self.running:
            self._start_all()

    def startService(self) -> None:
        super().startService()
        self._first_timeout = self._reactor.callLater(
            READY_WAIT, self._all_ready
        )
        if self._port is not None:
            self._start_all()

    def _all_ready(self) -> None:
        if self._first_timeout is not None and self._first_timeout.active():
            self._first_timeout.cancel()
        self._first_timeout = None
        if self._first is not None:
            first, self._first = self._first, None
            first.callback(None)

    def _start_all(self) -> None:
        for n in range(self.count):
            if n not in self._processes:
                self._spawn(n)

    def _spawn(self, n: int) -> None:
        self._restarts.pop(n, None)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            ours.setblocking(False)
            link = DaemonLink(
                self._intake.take,
                self._adopt,
                self._reactor,
                lambda link, pid: self._link_ready(n, link, pid),
                self._link_lost,
            )
            self._reactor.adoptStreamConnection(
                ours.fileno(), socket.AF_UNIX, OneProtocol(link)
            )
            self._links.add(link)
            worker = _Worker(self, n)
            argv = [
                sys.executable,
                "-m",
                "msync.worker_process",
                "--data-dir",
                self._data_dir,
                "--listen-fd",
                "3",
                "--link-fd",
                "4",
                "--max-body",
                str(self._max_body),
                "--skew",
                repr(self._skew),
            ]
            self._reactor.spawnProcess(
                worker,
                sys.executable,
                argv,
                env=dict(os.environ),
                childFDs={
                    0: "w",
                    1: "r",
                    2: "r",
                    3: self._port.fileno(),
                    4: theirs.fileno(),
                },
            )
        finally:
            ours.close()
            theirs.close()
        self._processes[n] = worker
        _log.info(
            "gateway worker {n} started (pid {pid})",
            n=n,
            pid=worker.transport.pid if worker.transport else 0,
        )

    def _link_ready(self, n: int, link: DaemonLink, pid: int) -> None:
        self._ready.add(link)
        _log.info("gateway worker {n} accepting (pid {pid})", n=n, pid=pid)
        if len(self._ready) == 1 and self._port is not None:
            # The workers take the listener's connections from now on.
            self._port.stopReading()
        if len(self._ready) >= self.count:
            self._all_ready()

    def _link_lost(self, link: DaemonLink) -> None:
        self._ready.discard(link)
        self._links.discard(link)
        if not self._ready and self._listening():
            self._port.startReading()

    def _listening(self) -> bool:
        return self._port is not None and bool(
            getattr(self._port, "connected", False)
        )

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        n = worker.number
        if self._processes.get(n) is worker:
            del self._processes[n]
        if not self.running:
            return
        _log.warn(
            "gateway worker {n} ended ({why}); starting it again",
            n=n,
            why=reason.getErrorMessage(),
        )
        self._restarts[n] = self._reactor.callLater(
            RESTART_DELAY, self._spawn, n
        )

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self._all_ready()
        for call in self._restarts.values():
            call.cancel()
        self._restarts.clear()
        stopping = [w.stop(self._reactor) for w in self._processes.values()]
        if not stopping:
            return succeed(None)
        return DeferredList(stopping)


class _Worker(ProcessProtocol):
    """One worker process: its output goes to the daemon's log."""

    def __init__(self, workers: Workers, number: int) -> None:
        self.number = number
        self._workers = workers
        self._partial: dict[int, bytes] = {}
        self._ended: Deferred[None] | None = None
        self._gone = False

    def childDataReceived(self, child_fd: int, data: bytes) -> None:
        lines = (self._partial.get(child_fd, b"") + data).split(b"\n")
        self._partial[child_fd] = lines.pop()
        for line in lines:
            if line.strip():
                _log.info(
                    "gateway worker {n}: {line}",
                    n=self.number,
                    line=line.decode("utf-8", "replace"),
                )

    def stop(self, clock: Any) -> Deferred[None]:
        """Ask the process to end; kill it if it takes too long."""
        if self._gone or self.transport is None:
            return succeed(None)
        ended: Deferred[None] = Deferred()
        self._ended = ended
        self._signal("TERM")
        kill = clock.callLater(STOP_GRACE, self._signal, "KILL")

        def stopped(_: None) -> None:
            if kill.active():
                kill.cancel()

        return ended.addCallback(stopped)

    def _signal(self, name: str) -> None:
        if self._gone or self.transport is None:
            return
        try:
            self.transport.signalProcess(name)
        except ProcessExitedAlready:
            pass

    def processEnded(self, reason: Failure) -> None:
        self._gone = True
        if not reason.check(ProcessDone, ProcessTerminated):
            _log.failure("gateway worker {n} ended", reason, n=self.number)
        self._workers._ended(self, reason)
        if self._ended is not None:
            ended, self._ended = self._ended, None
            ended.callback(None)
