"""
How fast the LMDB store appends durably, with and without group commit,
and how fast it reads an oplog back.

Three figures, each measured on a fresh data directory under the system
temporary folder (so on the filesystem of C{/tmp}), with the real reactor
and the store's own writer thread:

  - B{(a) group commit}: appends per second with many appends in flight
    at once (256 by default).  The engine's writer thread takes every
    queued write into one transaction and syncs once, so this is the
    rate the daemon reaches under load.
  - B{(b) one commit per append}: appends per second when each append is
    issued only after the previous one fired, so that every append pays
    for its own commit and sync.  This is roughly the disk's sync rate,
    and the rate a store without group commit would be held to.
  - B{(c) read_after}: ops per second read back from one scope of 100,000
    ops in pages of 1,000, as a device catching up would read them.  The
    data was just written, so it is in the page cache: this measures the
    cost of the store's read path, not the disk.

The ratio (a)/(b) is what group commit buys.  The three measurements are
interleaved run by run, in a rotating order, so that a slow patch of the
machine or the disk spreads over all of them instead of skewing one;
medians and ranges over the runs are reported.

Run as C{python bench/store_bench.py [--ops N] [--runs R]}; see
C{bench/README.md}.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import lmdb
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import react
from twisted.python.failure import Failure

from msync.model import AppendResult, NewOp, Scope, ScopeKind
from msync.store import LMDBEngine, Store

#: Appends of (a) spread round-robin over this many scopes.
SCOPES = tuple(
    Scope("bench_app", "BENCH", ScopeKind.USER, f"user{i}") for i in range(16)
)

#: How many appends (a) keeps in flight.
IN_FLIGHT = 256

#: The body of every appended op.
PAYLOAD = b"\xa5" * 256

#: The page size of (c).
READ_PAGE = 1000

#: Large enough for every measurement; LMDB's map file is sparse.
MAP_SIZE = 2**32

#: Seconds any one measurement may take before the bench gives up: a
#: store that stops answering must end the run, not hang it.
MEASURE_TIMEOUT = 900


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement: a rate, and for appends the mean group size."""

    rate: float
    per_commit: float | None = None


class Appender:
    """
    Appends C{total} ops to a store, keeping C{width} of them in flight:
    each time one fires, the next is issued.
    """

    def __init__(
        self, store: Store, total: int, width: int, scopes: Sequence[Scope]
    ) -> None:
        self._store = store
        self._total = total
        self._width = width
        self._scopes = scopes
        self._issued = 0
        self._fired = 0
        self.done: Deferred[None] = Deferred()
        """Fires once all C{total} appends fired, or with the first
        failure."""

    def start(self) -> Deferred[None]:
        """Issue the first appends and return L{done}."""
        for _ in range(min(self._width, self._total)):
            self._issue()
        return self.done

    def _issue(self) -> None:
        scope = self._scopes[self._issued % len(self._scopes)]
        self._issued += 1
        d = self._store.append(NewOp(scope, body=PAYLOAD))
        d.addCallbacks(self._fired_one, self._failed)

    def _fired_one(self, result: AppendResult) -> None:
        self._fired += 1
        if self.done.called:
            return
        if self._issued < self._total:
            self._issue()
        elif self._fired == self._total:
            self.done.callback(None)

    def _failed(self, failure: Failure) -> None:
        if not self.done.called:
            self.done.errback(failure)


@inlineCallbacks
def with_store(
    reactor: IReactorThreads,
    use: Callable[[Store, LMDBEngine], Deferred[Sample]],
) -> Generator[Deferred[Any], Any, Sample]:
    """
    Open a store on a fresh temporary data directory, hand it to C{use},
    and close and delete it again whatever happens.
    """
    path = tempfile.mkdtemp(prefix="msync-bench-")
    try:
        engine = LMDBEngine(path, reactor, map_size=MAP_SIZE)
        store = Store(engine)
        store.open()
        try:
            d = use(store, engine)
            d.addTimeout(MEASURE_TIMEOUT, IReactorTime(reactor))
            sample: Sample = yield d
        finally:
            yield store.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return sample


def append_rate(
    reactor: IReactorThreads, total: int, width: int
) -> Deferred[Sample]:
    """
    Measure durable appends per second with C{width} appends in flight.
    """

    @inlineCallbacks
    def use(
        store: Store, engine: LMDBEngine
    ) -> Generator[Deferred[Any], Any, Sample]:
        start = time.perf_counter()
        yield Appender(store, total, width, SCOPES).start()
        elapsed = time.perf_counter() - start
        return Sample(total / elapsed, total / engine.commits)

    return with_store(reactor, use)


@inlineCallbacks
def read_rate(
    reactor: IReactorThreads, total: int
) -> Generator[Deferred[Any], Any, Sample]:
    """
    Measure C{read_after} ops per second over one scope of C{total} ops.

    The scope is filled on its own directory with syncing off (how the
    ops were written does not change how they read), then read back
    through a store opened the way the daemon opens it.
    """
    scope = SCOPES[0]
    path = tempfile.mkdtemp(prefix="msync-bench-")
    try:
        filler = Store(LMDBEngine(path, reactor, MAP_SIZE, sync=False))
        filler.open()
        try:
            d = Appender(filler, total, IN_FLIGHT, (scope,)).start()
            d.addTimeout(MEASURE_TIMEOUT, IReactorTime(reactor))
            yield d
        finally:
            yield filler.close()

        store = Store(LMDBEngine(path, reactor, MAP_SIZE))
        store.open()
        try:
            start = time.perf_counter()
            read = 0
            after = 0
            # One page more than needed, to see the scope end.
            for _ in range(total // READ_PAGE + 2):
                page = store.read_after(scope, after, READ_PAGE, 0)
                if not page:
                    break
                read += len(page)
                after = page[-1].op_id
            elapsed = time.perf_counter() - start
        finally:
            yield store.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    if read != total:
        raise RuntimeError(f"read back {read} ops of {total}")
    return Sample(read / elapsed)


@dataclass(frozen=True, slots=True)
class Measure:
    """One of the figures the bench reports."""

    label: str
    unit: str
    run: Callable[[], Deferred[Sample]]


def summary(samples: list[Sample]) -> tuple[float, float, float]:
    """Return the median, least and greatest rate of C{samples}."""
    rates = [s.rate for s in samples]
    return statistics.median(rates), min(rates), max(rates)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Read the command line."""

    def positive(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError("must be at least 1")
        return value

    parser = argparse.ArgumentParser(
        description="Measure the msync store's append and read rates."
    )
    parser.add_argument(
        "--ops",
        type=positive,
        default=20_000,
        help="appends per group-commit run (default: %(default)s)",
    )
    parser.add_argument(
        "--serial-ops",
        type=positive,
        default=1_000,
        help="appends per one-commit-each run (default: %(default)s)",
    )
    parser.add_argument(
        "--read-ops",
        type=positive,
        default=100_000,
        help="ops in the scope read back (default: %(default)s)",
    )
    parser.add_argument(
        "--runs",
        type=positive,
        default=3,
        help="interleaved runs of each measure, at least 3 "
        "(default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error("--runs must be at least 3 for a median and range")
    return args


@inlineCallbacks
def main(
    reactor: IReactorThreads, *argv: str
) -> Generator[Deferred[Any], Any, None]:
    """Run every measure C{--runs} times, interleaved, and report."""
    args = parse_args(argv)
    measures = [
        Measure(
            "(a) group commit",
            "appends/s",
            lambda: append_rate(reactor, args.ops, IN_FLIGHT),
        ),
        Measure(
            "(b) one commit per append",
            "appends/s",
            lambda: append_rate(reactor, args.serial_ops, 1),
        ),
        Measure(
            "(c) read_after",
            "ops/s",
            lambda: read_rate(reactor, args.read_ops),
        ),
    ]
    print(
        f"msync store bench: {args.runs} interleaved runs, data under "
        f"{tempfile.gettempdir()}, Python {sys.version.split()[0]}, "
        f"LMDB {'.'.join(map(str, lmdb.version()))}"
    )
    print(
        f"  (a) {args.ops:,} appends, {IN_FLIGHT} in flight, "
        f"{len(PAYLOAD)}-byte bodies over {len(SCOPES)} scopes"
    )
    print(f"  (b) {args.serial_ops:,} appends, one in flight")
    print(
        f"  (c) one scope of {args.read_ops:,} ops read in pages of "
        f"{READ_PAGE:,}"
    )
    print()

    # Rotate the order every run, so no measure always goes first (onto
    # a quiet disk) or last.
    samples: dict[str, list[Sample]] = {m.label: [] for m in measures}
    for run in range(args.runs):
        shift = run % len(measures)
        for measure in measures[shift:] + measures[:shift]:
            sample: Sample = yield measure.run()
            samples[measure.label].append(sample)
            extra = (
                f"  ({sample.per_commit:.1f} appends/commit)"
                if sample.per_commit is not None
                else ""
            )
            print(
                f"run {run + 1}  {measure.label:<26} "
                f"{sample.rate:>12,.0f} {measure.unit}{extra}"
            )
            sys.stdout.flush()

    print()
    print(f"{'':<38}{'median':>12}{'min':>12}{'max':>12}")
    for measure in measures:
        median, low, high = summary(samples[measure.label])
        name = f"{measure.label} {measure.unit}"
        print(f"{name:<38}{median:>12,.0f}{low:>12,.0f}{high:>12,.0f}")
    grouped = summary(samples[measures[0].label])[0]
    serial = summary(samples[measures[1].label])[0]
    print()
    print(
        f"group commit speed-up, median (a) / median (b): "
        f"{grouped / serial:.1f}x"
    )


if __name__ == "__main__":
    react(main, sys.argv[1:])
