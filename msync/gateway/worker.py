"""
A gateway worker process, run by L{msync.worker_process} (started and
watched by the daemon, L{msync.gateway.workers.Workers}; never run by
hand).

It accepts connections on the daemon's HTTP listening socket (inherited
as a file descriptor), reads gateway requests with the lean reader,
checks them (forms, signature, parameters) against the store opened
read-only, and sends each checked call over its link to the daemon,
which owns the replay memory, the store's writes and the devices.  It
signs and writes each answer once the daemon says the op is durable.

A connection whose first request is not the gateway's is handed, file
descriptor and bytes read, to the daemon.  The worker exits when its
link to the daemon closes, or on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

from twisted.internet.error import ReactorNotRunning
from twisted.logger import (
    FileLogObserver,
    Logger,
    eventAsText,
    globalLogBeginner,
)

from msync.gateway.calls import Checks, Gateway
from msync.gateway.lean import GatewayFactory
from msync.gateway.relay import OneProtocol, WorkerLink
from msync.store import Store
from msync.store.lmdb_engine import LMDBReader

_log = Logger()


def _options(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="msync.worker_process")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--listen-fd", type=int, required=True)
    p.add_argument("--link-fd", type=int, required=True)
    p.add_argument("--max-body", type=int, required=True)
    p.add_argument("--skew", type=float, required=True)
    return p.parse_args(argv)


def _family(fd: int) -> socket.AddressFamily:
    probe = socket.socket(fileno=os.dup(fd))
    try:
        return probe.family
    finally:
        probe.close()


def run(reactor: Any, argv: list[str]) -> None:
    """Set the worker up on C{reactor} and run it until it stops."""
    options = _options(argv)

    # Log lines go to stderr, which the daemon reads into its own log:
    # the daemon's lines carry the time.
    globalLogBeginner.beginLoggingTo(
        [
            FileLogObserver(
                sys.stderr,
                lambda event: (
                    eventAsText(
                        event, includeTimestamp=False, includeSystem=False
                    )
                    + "\n"
                ),
            )
        ],
        redirectStandardIO=False,
    )

    # The worker reads keys, instances and the signature switch; every
    # write is the daemon's, which says over the link when the catalog
    # changed.
    reader: Any = LMDBReader(options.data_dir)
    store = Store(reader)

    def stop() -> None:
        # The link also closes as the reactor stops on SIGTERM.
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass

    link = WorkerLink(reactor, stop, store.forget)
    gateway = Gateway(Checks(store, reactor, options.skew), link.take)
    factory = GatewayFactory(
        gateway.answer, link.handoff, options.max_body, reactor
    )

    reactor.adoptStreamConnection(
        options.link_fd, socket.AF_UNIX, OneProtocol(link)
    )
    os.close(options.link_fd)
    reactor.adoptStreamPort(
        options.listen_fd, _family(options.listen_fd), factory
    )
    os.close(options.listen_fd)
    reactor.run()
    reader.close()
