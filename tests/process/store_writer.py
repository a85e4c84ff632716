"""
A writer for the store crash test: append ops to an LMDB store until
killed, and log every append the store reported durable.

Run as C{python store_writer.py DATA_DIR LOG_FILE}.  It keeps
L{IN_FLIGHT} appends queued at once, so that the engine's writer thread
commits them in groups, and spreads them round-robin over L{SCOPES}.

Each op's body is C{b"<scope index> <seq>"}, where C{seq} counts the ops
of that scope from zero across every run on the same data directory: on
start the writer reads the last op of each scope and carries on after it.
For each append whose Deferred fired it writes one line
C{"<scope index> <op id> <seq>"} to C{LOG_FILE}.  A line is written only
after the commit holding the op was synced, so every logged op must be
found in the store after the process is killed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import react
from twisted.python.failure import Failure

from msync.model import AppendResult, NewOp, Scope, ScopeKind
from msync.store import LMDBEngine, Store

#: The scopes the writer appends to, by index.
SCOPES = tuple(
    Scope("crash_app", "CRASH", ScopeKind.USER, f"user{i}") for i in range(5)
)

#: How many appends are queued at any moment.
IN_FLIGHT = 50

#: The size of the store's memory map; far more than a crash test needs.
MAP_SIZE = 2**30


def encode_body(scope_index: int, seq: int) -> bytes:
    """Return the body of the C{seq}th op of the scope C{scope_index}."""
    return b"%d %d" % (scope_index, seq)


def decode_body(body: bytes) -> tuple[int, int]:
    """
    Read back what L{encode_body} wrote.

    @return: the scope index and the sequence number.
    @raise ValueError: if C{body} was not written by L{encode_body}.
    """
    scope_text, seq_text = body.split(b" ")
    return int(scope_text), int(seq_text)


def next_seqs(store: Store) -> list[int]:
    """
    Return, for each scope, the sequence number its next op should carry:
    one past that of its last stored op, or zero for an empty scope.
    """
    seqs = []
    for index, scope in enumerate(SCOPES):
        last_id = store.scope_info(scope).last_id
        last = store.get_op(scope, last_id) if last_id else None
        if last is None:
            seqs.append(0)
            continue
        stored_index, seq = decode_body(last.body)
        if stored_index != index:
            raise ValueError(f"scope {index} holds an op of {stored_index}")
        seqs.append(seq + 1)
    return seqs


class Writer:
    """
    Keeps L{IN_FLIGHT} appends queued on a store and logs each one that
    fires to a file descriptor.
    """

    def __init__(self, store: Store, log_fd: int, seqs: list[int]) -> None:
        self._store = store
        self._log_fd = log_fd
        self._seqs = seqs
        self._turn = 0
        self.failed: Deferred[None] = Deferred()
        """Fires with the first append failure; never succeeds."""

    def start(self) -> None:
        """Queue the first L{IN_FLIGHT} appends."""
        for _ in range(IN_FLIGHT):
            self._issue()

    def _issue(self) -> None:
        if self.failed.called:
            return
        index = self._turn
        self._turn = (self._turn + 1) % len(SCOPES)
        seq = self._seqs[index]
        self._seqs[index] += 1

        d = self._store.append(
            NewOp(SCOPES[index], body=encode_body(index, seq))
        )
        d.addCallbacks(self._logged, self._failed, (index, seq))

    def _logged(self, result: AppendResult, index: int, seq: int) -> None:
        # One write per line on an O_APPEND descriptor: the line reaches
        # the page cache whole, and a killed process cannot take that
        # back, so no flush or sync is needed.
        os.write(self._log_fd, b"%d %d %d\n" % (index, result.op_id, seq))
        self._issue()

    def _failed(self, failure: Failure) -> None:
        if not self.failed.called:
            self.failed.errback(failure)


@inlineCallbacks
def main(
    reactor: IReactorThreads, data_dir: str, log_path: str
) -> Generator[Deferred[Any], Any, None]:
    """
    Open the store in C{data_dir} and append to it until killed or until
    an append fails (which ends the process with an error).
    """
    store = Store(LMDBEngine(data_dir, reactor, map_size=MAP_SIZE))
    store.open()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        writer = Writer(store, log_fd, next_seqs(store))
        writer.start()
        yield writer.failed
    finally:
        # Close the store first: the appends it drains still log.
        yield store.close()
        os.close(log_fd)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} DATA_DIR LOG_FILE")
    react(main, sys.argv[1:])
