"""
The store survives its process being killed mid-write.

A real writer process (L{store_writer}) appends to an LMDB store with many
appends in flight, logging each one the store reported durable; the test
kills it with SIGKILL at a random point, opens the store itself, and
checks what the writer was promised against what is on disk.  Then it
starts a new writer on the same data and does it again.

The kill points come from a seeded random generator.  The seed is taken
from C{MSYNC_CRASH_SEED} if set (to replay the same kill targets; the
timing of a kill still varies) and is named in every failure message.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import IO, Any

import pytest

# pytest's default ("prepend") import mode puts this test's folder on
# sys.path, which is how the writer program is importable here.
from store_writer import MAP_SIZE, SCOPES, decode_body
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from msync.store import LMDBEngine, Store

pytestmark = pytest.mark.process

WRITER = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "store_writer.py"
)

#: How many times the writer is started and killed.
ROUNDS = 20

#: Bounds of the random number of logged appends to wait for before a
#: kill.  The writer always has fifty appends in flight, so every kill
#: lands with writes queued or mid-commit.
MIN_LINES = 50
MAX_LINES = 2000

#: Seconds to wait for a writer to log its quota (it has to start
#: Python and import Twisted first), and for a killed one to exit.
LOG_TIMEOUT = 60.0
EXIT_TIMEOUT = 30.0

#: Seconds between looks at a condition being waited on.
POLL_INTERVAL = 0.01

#: The page size used to read scopes back.
PAGE = 10_000


@dataclass(frozen=True, slots=True)
class Logged:
    """One line of a writer's log: an append the store reported durable."""

    scope_index: int
    op_id: int
    seq: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the store held after one kill."""

    epoch: int
    ops: tuple[tuple[tuple[int, int], ...], ...]
    """For each scope, by index: its C{(op id, seq)} pairs in read order."""

    @property
    def max_id(self) -> int:
        """The largest op id stored in any scope (0 when empty)."""
        return max((ops[-1][0] for ops in self.ops if ops), default=0)


def read_log(path: str) -> list[Logged]:
    """
    Return the complete lines of a writer's log.

    A line is written with one C{write} call after its append fired, so a
    kill cannot cut it short in practice; should a final fragment without
    its newline appear anyway, it names no promise and is left out.
    """
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")[:-1]
    out = []
    for line in lines:
        scope_index, op_id, seq = (int(part) for part in line.split(b" "))
        out.append(Logged(scope_index, op_id, seq))
    return out


def count_lines(path: str) -> int:
    """Return how many complete lines the file at C{path} holds so far."""
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def choose_seed() -> int:
    """Return the seed named by C{MSYNC_CRASH_SEED}, or a fresh one."""
    named = os.environ.get("MSYNC_CRASH_SEED")
    if named:
        return int(named)
    return time.time_ns() % 2**32


class StoreCrashTests(TestCase):
    """SIGKILL a writer process, repeatedly, and audit the store."""

    # Room for every round to use its full bounds before trial steps in.
    timeout = ROUNDS * (LOG_TIMEOUT + EXIT_TIMEOUT) + 60

    def setUp(self) -> None:
        self.seed = choose_seed()
        self.random = random.Random(self.seed)
        self.work = tempfile.mkdtemp(prefix="msync-crash-")
        self.addCleanup(shutil.rmtree, self.work, True)
        self.data_dir = os.path.join(self.work, "data")
        self.round = 0

    def check(self, ok: bool, what: str) -> None:
        """
        Fail, naming the seed and the round, unless C{ok}.

        Failures are described by hand rather than by C{assertEqual}
        because the values compared run to thousands of items.
        """
        if not ok:
            raise self.failureException(
                f"seed {self.seed} (set MSYNC_CRASH_SEED to replay), "
                f"round {self.round}: {what}"
            )

    @inlineCallbacks
    def wait_for(
        self, condition: Callable[[], bool], timeout: float, what: str
    ) -> Generator[Deferred[Any], Any, None]:
        """
        Wait, letting the reactor run, until C{condition()} is true; fail
        naming C{what} if C{timeout} seconds pass first.
        """
        deadline = time.monotonic() + timeout
        while not condition():
            self.check(
                time.monotonic() <= deadline,
                f"gave up after {timeout}s waiting for {what}",
            )
            yield deferLater(reactor, POLL_INTERVAL, lambda: None)

    def output(self, name: str) -> IO[bytes]:
        """Open a file in the work folder for a writer's output."""
        f = open(os.path.join(self.work, name), "wb")
        self.addCleanup(f.close)
        return f

    def start_writer(self, log_path: str) -> subprocess.Popen[bytes]:
        """Start a writer process, to be killed at cleanup if it lives."""
        proc = subprocess.Popen(
            [sys.executable, WRITER, self.data_dir, log_path],
            stdin=subprocess.DEVNULL,
            stdout=self.output(f"writer-{self.round}.out"),
            stderr=self.output(f"writer-{self.round}.err"),
        )
        self.addCleanup(self.reap, proc)
        return proc

    def reap(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill C{proc} if it still runs, and collect its exit status."""
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=EXIT_TIMEOUT)

    def writer_errors(self) -> str:
        """Return what the current round's writer wrote to stderr."""
        path = os.path.join(self.work, f"writer-{self.round}.err")
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    @inlineCallbacks
    def run_and_kill(
        self, log_path: str
    ) -> Generator[Deferred[Any], Any, None]:
        """
        Start a writer, wait until it has logged a random number of
        appends, and SIGKILL it.
        """
        target = self.random.randint(MIN_LINES, MAX_LINES)
        proc = self.start_writer(log_path)

        def logged_enough() -> bool:
            # A writer that stops by itself has failed: say why at once
            # rather than after the whole timeout.
            self.check(
                proc.poll() is None,
                f"writer exited with {proc.returncode}:\n"
                + self.writer_errors(),
            )
            return count_lines(log_path) >= target

        yield self.wait_for(
            logged_enough, LOG_TIMEOUT, f"{target} logged appends"
        )
        proc.send_signal(signal.SIGKILL)
        yield self.wait_for(
            lambda: proc.poll() is not None, EXIT_TIMEOUT, "the writer to die"
        )
        self.check(
            proc.returncode == -signal.SIGKILL,
            f"writer ended with {proc.returncode}, not by SIGKILL",
        )

    @inlineCallbacks
    def snapshot(self) -> Generator[Deferred[Any], Any, Snapshot]:
        """
        Open the store in this process, read every scope back whole, check
        each scope's own consistency, and close it again.
        """
        engine = LMDBEngine(
            self.data_dir, IReactorThreads(reactor), map_size=MAP_SIZE
        )
        store = Store(engine)
        store.open()
        try:
            scopes = []
            for index, scope in enumerate(SCOPES):
                ops = self.read_scope(store, index)
                scopes.append(ops)
                info = store.scope_info(scope)
                last_id = ops[-1][0] if ops else 0
                self.check(
                    (info.last_id, info.count) == (last_id, len(ops)),
                    f"scope {index} records last id {info.last_id} and "
                    f"count {info.count}, but holds {len(ops)} ops up to "
                    f"id {last_id}",
                )
            return Snapshot(store.epoch, tuple(scopes))
        finally:
            yield store.close()

    def read_scope(
        self, store: Store, index: int
    ) -> tuple[tuple[int, int], ...]:
        """
        Read one scope page by page and return its C{(op id, seq)} pairs,
        checking that ids rise and that the seqs are exactly 0, 1, 2, ...

        Gapless seqs are owed, not just rising ones: the engine commits
        queued writes in the order they were queued, so what a kill
        leaves is a prefix of what the writers issued, and each writer
        resumes after the last stored seq.
        """
        ops: list[tuple[int, int]] = []
        after = 0
        while True:
            page = store.read_after(SCOPES[index], after, PAGE, 0)
            if not page:
                return tuple(ops)
            for op in page:
                # Checked as read, so that the loop always moves on.
                self.check(
                    op.op_id > after,
                    f"scope {index}: id {op.op_id} read after {after}",
                )
                stored_index, seq = decode_body(op.body)
                self.check(
                    (stored_index, seq) == (index, len(ops)),
                    f"scope {index}: op {op.op_id} holds seq {seq} of "
                    f"scope {stored_index}; expected seq {len(ops)}",
                )
                ops.append((op.op_id, seq))
                after = op.op_id

    def check_promises(
        self,
        now: Snapshot,
        before: Snapshot | None,
        logged: list[Logged],
        fresh: list[Logged],
    ) -> None:
        """
        Check the store after a kill against the one before it and against
        every append any writer saw fire.

        @param logged: every line logged by every writer so far.
        @param fresh: the lines logged by the writer just killed.
        """
        # No id is in two scopes.
        ids = [op_id for ops in now.ops for op_id, _ in ops]
        self.check(len(set(ids)) == len(ids), "an op id is in two scopes")

        # A crash starts no new log.
        if before is not None:
            self.check(
                now.epoch == before.epoch,
                f"epoch changed from {before.epoch} to {now.epoch}",
            )

        # What was stored before this writer ran is all still there,
        # including ops that were committed but never logged.
        if before is not None:
            for index, (old, new) in enumerate(
                zip(before.ops, now.ops, strict=True)
            ):
                self.check(
                    new[: len(old)] == old,
                    f"scope {index}: the {len(old)} ops stored before "
                    f"this round are no longer the first ones",
                )

        # Every append a writer saw fire is stored, in the logged scope,
        # with the logged body.
        stored = [dict(ops) for ops in now.ops]
        for line in logged:
            seq = stored[line.scope_index].get(line.op_id)
            self.check(
                seq == line.seq,
                f"logged op {line.op_id} (scope {line.scope_index}, "
                f"seq {line.seq}) reads back as seq {seq}",
            )

        # A restarted writer reuses no id, not even one that was
        # committed but never reported.
        floor = before.max_id if before is not None else 0
        low = min((line.op_id for line in fresh), default=floor + 1)
        self.check(
            low > floor,
            f"new writer issued id {low}; ids up to {floor} were stored",
        )

    @inlineCallbacks
    def test_killed_writer_keeps_its_promises(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """Every append a killed writer saw fire is stored in order after
        restart, and restarted writers reuse no op id."""
        logged: list[Logged] = []
        before: Snapshot | None = None
        for n in range(ROUNDS):
            self.round = n
            log_path = os.path.join(self.work, f"log-{self.round}.txt")
            yield self.run_and_kill(log_path)
            fresh = read_log(log_path)
            logged.extend(fresh)
            now = yield self.snapshot()
            self.check_promises(now, before, logged, fresh)
            before = now

        # The rounds did write, so the checks above had something to see.
        self.check(
            len(logged) >= ROUNDS * MIN_LINES,
            f"only {len(logged)} appends were logged",
        )
