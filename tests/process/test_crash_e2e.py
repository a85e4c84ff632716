"""
Kill the daemon mid-write, and the devices mid-batch, and check that
nothing acknowledged is lost.

Everything is a real process on loopback: a C{twistd msync} seeded with
an instance, an access key and three configs (device target, user target
with several devices a user, global); a backend (L{crash_backend})
sending signed calls over keep-alive connections and journaling every
answer; and five device processes (L{crash_device}) of four devices
each, with durable data directories, journaling every message their app
is handed and every report.

The test SIGKILLs the daemon L{DAEMON_ROUNDS} times (at random points of
steady traffic, while a burst of calls is in flight so that a group
commit is under way, and while devices catch up on a backlog) and
restarts it on the same data each time; then it SIGKILLs device
processes mid-batch and mid-catch-up.  At the end, with everything
drained, it reads the journals and checks that every op the gateway
answered with success reached every device it addresses, in op id order
within each scope, that no reported message came back, and that no
refused message was delivered.

The kill points come from a seeded random generator: C{MSYNC_CRASH_SEED}
replays them (their timing still varies), and every failure names the
seed.  C{MSYNC_CRASH_KEEP=1} keeps the work folder (journals, logs, data)
even when the test passes; it is always kept when a check fails.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

# pytest's default ("prepend") import mode puts this test's folder on
# sys.path, which is how the helpers' shared module is importable here.
from crash_world import (
    CONFIGS,
    DEVICE_BIZ,
    DEVICES,
    INSTANCE,
    KEY,
    SECRET,
    USER_BIZ,
    Control,
    message_id,
    recipients,
    scope_of,
    target_of,
    write_control,
)
from twisted.trial.unittest import SynchronousTestCase

from msync.model import AccessKey, Instance
from msync.store import LMDBEngine, catalog, oplog
from msync.testing import BOUND, Daemon

pytestmark = pytest.mark.process

HERE = os.path.dirname(os.path.abspath(__file__))
BACKEND = os.path.join(HERE, "crash_backend.py")
DEVICE = os.path.join(HERE, "crash_device.py")

#: Daemon kills, by where they land: at a random point of steady
#: traffic, while a burst of calls is in flight, and while a restarted
#: device process is catching up on its backlog.
STEADY, MID_BURST, CATCH_UP = "steady", "mid-burst", "catch-up"
DAEMON_ROUNDS = {STEADY: 8, MID_BURST: 6, CATCH_UP: 6}

#: Rounds of the device phase; each kills one device process twice:
#: mid-batch, then again while it catches up after its restart.
DEVICE_ROUNDS = 4

#: Device processes, each hosting as many devices.
PROCESSES = 5

#: Seconds between looks at a condition: kills are timed by what the
#: journals show, so look often.
POLL = 0.005


def choose_seed() -> int:
    """Return the seed named by C{MSYNC_CRASH_SEED}, or a fresh one."""
    named = os.environ.get("MSYNC_CRASH_SEED")
    if named:
        return int(named)
    return time.time_ns() % 2**32


def seed_store(data_dir: str) -> None:
    """Prepare the daemon's data: an instance, a key, the configs."""

    def fill(tx: Any) -> None:
        oplog.initialize(tx, new_epoch=random.getrandbits(62) + 1)
        catalog.put_instance(tx, Instance(INSTANCE))
        catalog.put_access_key(tx, AccessKey(KEY, SECRET, (INSTANCE,)))
        for config in CONFIGS:
            catalog.add_config(tx, config)

    LMDBEngine.offline(data_dir, fill)


class Journal:
    """
    The complete lines of a journal file, read a little more at each
    L{refresh}, with counts by kind.

    A line is written with one C{write}, so a partial last line is only
    one still being written: it is left for the next refresh.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[list[str]] = []
        self.kinds: Counter[str] = Counter()
        self.lives = 0
        """How many C{start} lines were read: the process's starts."""
        self.got_this_life = 0
        """C{got} lines since the last C{start} line."""
        self._offset = 0
        self._partial = b""

    def refresh(self) -> Journal:
        """Read what was appended since the last refresh."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return self
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        for raw in complete:
            line = raw.decode().split(" ")
            self.lines.append(line)
            self.kinds[line[0]] += 1
            if line[0] == "start":
                self.lives += 1
                self.got_this_life = 0
            elif line[0] == "got":
                self.got_this_life += 1
        return self

    @property
    def answered(self) -> int:
        """How many calls a backend journal shows answered."""
        return self.kinds["ok"] + self.kinds["err"]


class Helper:
    """One helper program, run with this Python, its output in files."""

    def __init__(self, name: str, work: str, args: list[str]) -> None:
        self.name = name
        self.args = args
        self.out_path = os.path.join(work, f"{name}.out")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the program (again), appending to its output file."""
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self, sig: int = signal.SIGKILL) -> int | None:
        """Send C{sig} if the program runs, and wait for it to end."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            status = self.proc.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait(timeout=BOUND)
        self.proc = None
        return status

    def finish(self) -> int | None:
        """
        Wait for the program to end by itself, killing it if it takes
        longer than the bound; return its exit status.
        """
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            pass
        return self.stop()

    def output(self) -> str:
        """What the program printed so far, all runs together."""
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


@dataclass
class DeviceProcess:
    """One device process: its devices, its program and its journal."""

    devices: tuple[str, ...]
    helper: Helper
    journal: Journal


@dataclass
class Audit:
    """What the journals say, against what they must say."""

    ok: int = 0
    """Calls answered with a success code."""
    refused: int = 0
    """Calls answered with a refusal."""
    sent: int = 0
    """Calls made, answered or not."""
    owed: int = 0
    """Deliveries owed: each successful op, times the devices it
    addresses."""
    got: int = 0
    """Messages the apps were handed, redeliveries included."""
    redelivered: int = 0
    """Messages handed again after a restart, never reported before."""
    lost: list[tuple[str, str]] = field(default_factory=list)
    """Owed deliveries not seen, as C{(device, message id)}."""
    problems: list[str] = field(default_factory=list)
    """Every broken rule, in journal order."""


def audit(backend: Journal, devices: list[Journal]) -> Audit:
    """Check the device journals against the backend's."""
    result = Audit()
    sent: set[str] = set()
    answered_ok: dict[str, int] = {}
    refused: set[str] = set()
    for line in backend.lines:
        if line[0] == "sent":
            sent.add(line[1])
        elif line[0] == "ok":
            answered_ok[line[1]] = int(line[2])
        elif line[0] == "err":
            refused.add(line[1])
    result.sent, result.ok, result.refused = (
        len(sent),
        len(answered_ok),
        len(refused),
    )

    seen: dict[tuple[str, str], int] = {}
    for journal in devices:
        _audit_device(journal, sent, answered_ok, refused, seen, result)

    for msg_id in answered_ok:
        for device in recipients(*target_of(msg_id)):
            result.owed += 1
            if (device, msg_id) not in seen:
                result.lost.append((device, msg_id))
    return result


def _audit_device(
    journal: Journal,
    sent: set[str],
    answered_ok: dict[str, int],
    refused: set[str],
    seen: dict[tuple[str, str], int],
    result: Audit,
) -> None:
    """
    Check one device process's journal line by line, adding the
    messages it got to C{seen} (C{(device, message id)} to op id).
    """
    life = 0
    first_life: dict[tuple[str, str, str, int], int] = {}
    reported: set[tuple[str, str, str, int]] = set()
    last: dict[tuple[str, str, str], int] = {}
    say = result.problems.append
    for line in journal.lines:
        kind = line[0]
        if kind == "start":
            life += 1
        elif kind == "gap":
            say(f"{journal.path}: the server sent a gap: {line}")
        elif kind == "refused":
            say(f"{journal.path}: the server refused a device: {line}")
        elif kind == "report":
            key = (line[1], line[2], line[3], int(line[4]))
            if key not in first_life:
                say(f"{journal.path}: reported before got: {line}")
            reported.add(key)
        elif kind == "got":
            device, biz, scope, op_text, msg_id = line[1:]
            op_id = int(op_text)
            key = (device, biz, scope, op_id)
            result.got += 1

            # Handed again: only a message never reported may come back,
            # and only from a restart of its process.
            if key in first_life:
                if key in reported:
                    say(f"{journal.path}: reported op handed again: {line}")
                elif first_life[key] == life:
                    say(f"{journal.path}: handed twice in a life: {line}")
                else:
                    result.redelivered += 1
                continue
            first_life[key] = life

            # The op is one the backend sent, to this device, never
            # refused, stored once, under the id the gateway answered.
            if msg_id not in sent:
                say(f"{journal.path}: a message never sent: {line}")
                continue
            want_biz, link = target_of(msg_id)
            if device not in recipients(want_biz, link) or (biz, scope) != (
                want_biz,
                scope_of(want_biz, link),
            ):
                say(f"{journal.path}: misrouted: {line}")
            if msg_id in refused:
                say(f"{journal.path}: a refused message arrived: {line}")
            if answered_ok.get(msg_id, op_id) != op_id:
                say(
                    f"{journal.path}: op id {op_id}, but the gateway "
                    f"answered {answered_ok[msg_id]}: {line}"
                )
            if seen.setdefault((device, msg_id), op_id) != op_id:
                say(f"{journal.path}: one message, two ops: {line}")

            # In op id order within each scope, as the app saw it.
            previous = last.get((device, biz, scope), 0)
            if op_id <= previous:
                say(
                    f"{journal.path}: op {op_id} handed after {previous}: "
                    f"{line}"
                )
            last[(device, biz, scope)] = max(op_id, previous)


class CrashTests(SynchronousTestCase):
    """SIGKILL the daemon and the devices, repeatedly, and audit."""

    def setUp(self) -> None:
        self.started = time.monotonic()
        self.seed = choose_seed()
        self.random = random.Random(self.seed)
        self.failed = False
        self.work = tempfile.mkdtemp(prefix="msync-crash-e2e-")
        self.addCleanup(self.tidy)
        self.data_dir = os.path.join(self.work, "daemon")
        self.control_path = os.path.join(self.work, "control.json")
        self.control = Control()
        write_control(self.control_path, self.control)
        self.stage = "setup"
        self.figures: Counter[str] = Counter()
        self.in_flight: list[int] = []
        self.owed_at_kill: list[int] = []

        seed_store(self.data_dir)
        self.daemons: list[Daemon] = []
        self.addCleanup(self.stop_daemon)
        self.start_daemon()

        backend = os.path.join(self.work, "backend.journal")
        self.backend = Helper(
            "backend",
            self.work,
            [BACKEND, self.control_path, backend, str(self.seed)],
        )
        self.backend_journal = Journal(backend)
        self.addCleanup(self.backend.stop)
        self.backend.start()

        self.processes = []
        size = len(DEVICES) // PROCESSES
        for n in range(PROCESSES):
            devices = DEVICES[n * size : (n + 1) * size]
            journal = os.path.join(self.work, f"devices-{n}.journal")
            helper = Helper(
                f"devices-{n}",
                self.work,
                [
                    DEVICE,
                    self.control_path,
                    os.path.join(self.work, "device-data"),
                    journal,
                    *devices,
                ],
            )
            self.addCleanup(helper.stop)
            helper.start()
            self.processes.append(
                DeviceProcess(devices, helper, Journal(journal))
            )
        self.wait(self.answered, "the backend's first answer")
        for process in self.processes:
            self.wait(
                lambda p=process: (
                    p.journal.refresh().kinds["welcome"] >= len(p.devices)
                ),
                "every device to be welcome",
            )

    # --- tools --------------------------------------------------------

    def check(self, ok: bool, what: str) -> None:
        """Fail, naming the seed and the stage, unless C{ok}."""
        if not ok:
            self.failed = True
            raise self.failureException(
                f"seed {self.seed} (set MSYNC_CRASH_SEED to replay), "
                f"{self.stage}: {what}\n(work folder kept: {self.work})"
            )

    def wait(
        self, condition: Callable[[], object], what: str, bound: float = BOUND
    ) -> None:
        """
        Look at C{condition} every L{POLL} seconds until it holds; fail
        naming C{what} after C{bound} seconds, or at once if a helper
        died.
        """
        deadline = time.monotonic() + bound
        while not condition():
            self.check(time.monotonic() <= deadline, f"no {what} in {bound}s")
            self.check_helpers()
            time.sleep(POLL)

    def check_helpers(self) -> None:
        """Fail at once, with its output, if a helper ended by itself."""
        for helper in [self.backend] + [p.helper for p in self.processes]:
            if helper.proc is not None and helper.proc.poll() is not None:
                self.check(
                    False,
                    f"{helper.name} exited with {helper.proc.returncode}:\n"
                    + helper.output()[-3000:],
                )

    def tidy(self) -> None:
        """Remove the work folder and the daemons' logs, unless kept."""
        if self.failed or os.environ.get("MSYNC_CRASH_KEEP"):
            print(f"work folder kept: {self.work}")
            for n, daemon in enumerate(self.daemons):
                shutil.copy(
                    daemon.log_path,
                    os.path.join(self.work, f"daemon-{n}.log"),
                )
        else:
            shutil.rmtree(self.work, True)
        for daemon in self.daemons:
            shutil.rmtree(os.path.dirname(daemon.log_path), True)

    # --- the daemon ---------------------------------------------------

    def start_daemon(self) -> None:
        """
        Start a daemon on the data directory, check that its store
        opened, and point the helpers at its ports.

        A new L{Daemon} each time: one L{Daemon} restarted would find
        the last run's "ready" and ports in its log and not wait.
        """
        daemon = Daemon(self.data_dir)
        self.daemons.append(daemon)
        try:
            daemon.start(wait_for=("HTTP", "devices"))
        except AssertionError as e:
            self.check(False, f"the daemon did not start: {e}")
        log = daemon.log()
        self.check(
            "store open" in log and " ready" in log,
            f"the store did not reopen cleanly:\n{log}",
        )
        self.control = replace(
            self.control,
            http=daemon.ports["HTTP"],
            devices=daemon.ports["devices"],
        )
        write_control(self.control_path, self.control)

    def kill_daemon(self) -> None:
        """SIGKILL the daemon, and check that the kill is what ended it."""
        daemon = self.daemons[-1]
        status = daemon.kill()
        self.check(
            status == -signal.SIGKILL,
            f"daemon ended with {status}, not by SIGKILL:\n{daemon.log()}",
        )
        self.figures["daemon kills"] += 1

    def stop_daemon(self) -> None:
        """Kill the last daemon if it still runs (cleanup)."""
        if self.daemons:
            self.daemons[-1].kill()

    # --- the helpers --------------------------------------------------

    def answered(self) -> int:
        """How many calls the backend has seen answered so far."""
        return self.backend_journal.refresh().answered

    def after_answers(
        self, low: int, high: int, since: int | None = None
    ) -> None:
        """
        Wait until a random number of further calls were answered,
        counting from C{since} answers if given, else from now.
        """
        start = self.answered() if since is None else since
        target = start + self.random.randint(low, high)
        self.wait(lambda: self.answered() >= target, f"{target} answers")

    def burst(self) -> None:
        """
        Ask the backend for a burst of concurrent calls, and wait until
        they are on their way.
        """
        self.control = replace(self.control, bursts=self.control.bursts + 1)
        write_control(self.control_path, self.control)
        self.wait(
            lambda: (
                self.backend_journal.refresh().kinds["burst"]
                >= self.control.bursts
            ),
            "the backend to start a burst",
        )

    def kill_devices(self, process: DeviceProcess) -> None:
        """SIGKILL a device process, checking the kill ended it."""
        status = process.helper.stop(signal.SIGKILL)
        self.check(
            status == -signal.SIGKILL,
            f"{process.helper.name} ended with {status}:\n"
            + process.helper.output()[-3000:],
        )
        self.figures["device kills"] += 1

    def restart_devices(self, process: DeviceProcess) -> None:
        """Start a device process again, on the same data directories."""
        lives = process.journal.refresh().lives
        process.helper.start()
        self.wait(
            lambda: process.journal.refresh().lives > lives,
            f"{process.helper.name} to start",
        )

    def after_deliveries(
        self, process: DeviceProcess, low: int, high: int
    ) -> None:
        """
        Wait until a device process, in its current life, was handed a
        random number of further messages.
        """
        journal = process.journal.refresh()
        target = journal.got_this_life + self.random.randint(low, high)
        self.wait(
            lambda: journal.refresh().got_this_life >= target,
            f"{process.helper.name} to get {target} messages",
        )

    def owed_to(self, process: DeviceProcess) -> int:
        """How many owed deliveries to C{process}'s devices are missing."""
        result = audit(
            self.backend_journal.refresh(),
            [p.journal.refresh() for p in self.processes],
        )
        return sum(1 for device, _ in result.lost if device in process.devices)

    # --- rounds -------------------------------------------------------

    def daemon_round(self, kind: str) -> None:
        """Kill the daemon at a point of the given kind, and restart it."""
        if kind == STEADY:
            self.after_answers(20, 300)
        elif kind == MID_BURST:
            # Count the calls already in trouble, so that what is left
            # at the kill is the burst (and the workers) in flight.
            # The kill is timed from the burst's start, not from when
            # this process noticed it: a busy machine may notice late.
            journal = self.backend_journal.refresh()
            before = journal.kinds["sent"] - journal.answered
            answered = journal.answered
            self.burst()
            self.after_answers(1, 50, since=answered)
            journal.refresh()
            self.in_flight.append(
                journal.kinds["sent"] - journal.answered - before
            )
        else:
            # A backlog builds for a dead device process; it starts again
            # and the daemon dies while it catches up.
            process = self.random.choice(self.processes)
            self.kill_devices(process)
            self.burst()
            self.after_answers(150, 300)
            self.restart_devices(process)
            self.after_deliveries(process, 1, 40)
            self.owed_at_kill.append(self.owed_to(process))
        self.kill_daemon()
        self.start_daemon()

    def device_round(self) -> None:
        """
        Kill a device process mid-batch, let a backlog build, restart it,
        kill it again while it catches up, and restart it.
        """
        process = self.random.choice(self.processes)
        self.burst()
        self.after_deliveries(process, 1, 30)
        self.kill_devices(process)
        self.after_answers(50, 250)
        self.restart_devices(process)
        self.after_deliveries(process, 1, 30)
        self.kill_devices(process)
        self.restart_devices(process)

    def drain(self) -> Audit:
        """
        Stop the backend, wait until every owed op arrived (or the
        bound passed), stop everything, and audit the journals.
        """
        self.control = replace(self.control, stop=True)
        write_control(self.control_path, self.control)
        status = self.backend.finish()
        self.check(
            status == 0,
            f"backend ended with {status}:\n{self.backend.output()}",
        )

        def arrived() -> bool:
            return not audit(
                self.backend_journal.refresh(),
                [p.journal.refresh() for p in self.processes],
            ).lost

        try:
            self.wait(arrived, "delivery of every owed op")
        except self.failureException:
            pass  # The audit below says what is missing.

        for process in self.processes:
            status = process.helper.stop(signal.SIGTERM)
            self.check(
                status == 0,
                f"{process.helper.name} ended with {status}:\n"
                + process.helper.output()[-3000:],
            )
        self.daemons[-1].terminate()
        return audit(
            self.backend_journal.refresh(),
            [p.journal.refresh() for p in self.processes],
        )

    def report(self, result: Audit) -> None:
        """Print the run's figures to the test's output."""
        kinds = Counter(line[0] for line in self.backend_journal.lines)
        lines = [
            f"seed {self.seed}",
            f"rounds: {sum(DAEMON_ROUNDS.values())} daemon "
            f"({', '.join(f'{n} {k}' for k, n in DAEMON_ROUNDS.items())}), "
            f"{DEVICE_ROUNDS} device",
            f"kills: {self.figures['daemon kills']} daemon, "
            f"{self.figures['device kills']} device process",
            f"calls: {result.sent} sent, {result.ok} answered OK, "
            f"{result.refused} refused, "
            f"{result.sent - kinds['ok'] - kinds['err']} unanswered",
            f"calls in flight at burst kills: {_spread(self.in_flight)}",
            f"ops owed at catch-up kills: {_spread(self.owed_at_kill)}",
            f"deliveries owed: {result.owed}",
            f"messages handed to apps: {result.got} "
            f"({result.got - result.redelivered} first, "
            f"{result.redelivered} redeliveries of unreported)",
            f"lost: {len(result.lost)}",
            f"problems: {len(result.problems)}",
            f"elapsed: {time.monotonic() - self.started:.1f}s",
        ]
        print("\n" + "\n".join(f"crash e2e: {line}" for line in lines))

    # --- the test -----------------------------------------------------

    def test_nothing_acknowledged_is_lost(self) -> None:
        """Every op the gateway accepted reaches each device it addresses,
        in order and once as reported, across daemon and device kills."""
        kinds = [k for k, n in DAEMON_ROUNDS.items() for _ in range(n)]
        self.random.shuffle(kinds)
        for n, kind in enumerate(kinds):
            self.stage = f"daemon round {n} ({kind})"
            self.daemon_round(kind)
        for n in range(DEVICE_ROUNDS):
            self.stage = f"device round {n}"
            self.device_round()

        self.stage = "final audit"
        result = self.drain()
        self.report(result)
        self.check(
            not result.problems,
            f"{len(result.problems)} problems, the first ones:\n"
            + "\n".join(result.problems[:20]),
        )
        self.check(
            not result.lost,
            f"{len(result.lost)} of {result.owed} deliveries lost, e.g. "
            f"{result.lost[:10]}",
        )

        # Each daemon reopened its store and logged no failure, nor did
        # any helper, even the ones killed.
        logs = {f"daemon {n}": d.log() for n, d in enumerate(self.daemons)}
        for helper in [self.backend] + [p.helper for p in self.processes]:
            logs[helper.name] = helper.output()
        for name, log in logs.items():
            self.check("Traceback" not in log, f"{name} logged a failure")

        # The rounds did their work, so the checks had something to see.
        self.check(result.ok >= 1000, f"only {result.ok} calls succeeded")
        self.check(
            sum(self.owed_at_kill) > 0,
            "no catch-up kill found a device still catching up",
        )


def _spread(values: list[int]) -> str:
    """Describe a few counts: least, median, most."""
    if not values:
        return "none"
    return (
        f"min {min(values)}, median {statistics.median(values):g}, "
        f"max {max(values)}"
    )


class AuditTests(SynchronousTestCase):
    """The audit finds each broken rule in journals written by hand."""

    LOCK = message_id(1, DEVICE_BIZ, "dev00")
    CHAT = message_id(2, USER_BIZ, "user0")
    NOPE = message_id(3, DEVICE_BIZ, "dev00")

    def journal(self, *lines: str) -> Journal:
        """Return a journal holding C{lines}."""
        fd, path = tempfile.mkstemp(prefix="msync-audit-")
        self.addCleanup(os.remove, path)
        os.write(fd, "".join(line + "\n" for line in lines).encode())
        os.close(fd)
        return Journal(path).refresh()

    def backend(self) -> Journal:
        """A backend's journal: two ops stored, one call refused."""
        return self.journal(
            f"sent {self.LOCK}",
            f"sent {self.CHAT}",
            f"sent {self.NOPE}",
            f"ok {self.LOCK} 5 OK",
            f"ok {self.CHAT} 7 NOT_ONLINE",
            f"err {self.NOPE} INVALID_PARAMETER",
        )

    def got(self, device: str, msg_id: str, op_id: int) -> list[str]:
        """The two lines of one message handed to the app and reported."""
        biz, link = target_of(msg_id)
        fields = f"{device} {biz} {scope_of(biz, link)} {op_id}"
        return [f"got {fields} {msg_id}", f"report {fields}"]

    def test_complete_journals_pass(self) -> None:
        """Journals showing every op at every device it addresses pass."""
        result = audit(
            self.backend(),
            [
                self.journal(
                    "start 1",
                    *self.got("dev00", self.LOCK, 5),
                    *self.got("dev00", self.CHAT, 7),
                ),
                self.journal("start 2", *self.got("dev10", self.CHAT, 7)),
            ],
        )
        self.assertEqual(
            (result.problems, result.lost, result.owed, result.got),
            ([], [], 3, 3),
        )

    def test_missing_delivery_is_lost(self) -> None:
        """An op one of its user's devices never got counts as lost."""
        result = audit(
            self.backend(),
            [
                self.journal(
                    "start 1",
                    *self.got("dev00", self.LOCK, 5),
                    *self.got("dev00", self.CHAT, 7),
                )
            ],
        )
        self.assertEqual(result.lost, [("dev10", self.CHAT)])

    def test_unreported_redelivery_allowed(self) -> None:
        """A message got but not reported may come again after a restart,
        and is counted as a redelivery."""
        lines = self.got("dev00", self.LOCK, 5)
        result = audit(
            self.backend(),
            [self.journal("start 1", lines[0], "start 2", *lines)],
        )
        self.assertEqual((result.problems, result.redelivered), ([], 1))

    def test_reported_message_again(self) -> None:
        """A reported message handed again, even after a restart, is a
        problem."""
        lines = self.got("dev00", self.LOCK, 5)
        result = audit(
            self.backend(),
            [self.journal("start 1", *lines, "start 2", *lines)],
        )
        self.assertIn("reported op handed again", result.problems[0])

    def test_twice_in_one_life(self) -> None:
        """A message handed twice without a restart is a problem."""
        lines = self.got("dev00", self.LOCK, 5)
        result = audit(
            self.backend(), [self.journal("start 1", lines[0], lines[0])]
        )
        self.assertIn("handed twice in a life", result.problems[0])

    def test_out_of_order(self) -> None:
        """A lower op id after a higher one in a scope is a problem."""
        later = message_id(4, DEVICE_BIZ, "dev00")
        backend = self.journal(
            f"sent {self.LOCK}",
            f"sent {later}",
            f"ok {later} 9 OK",
            f"ok {self.LOCK} 5 OK",
        )
        result = audit(
            backend,
            [
                self.journal(
                    "start 1",
                    *self.got("dev00", later, 9),
                    *self.got("dev00", self.LOCK, 5),
                )
            ],
        )
        self.assertIn("op 5 handed after 9", result.problems[0])

    def test_refused_message_delivered(self) -> None:
        """A message the gateway refused must never reach a device."""
        result = audit(
            self.backend(),
            [self.journal("start 1", *self.got("dev00", self.NOPE, 6))],
        )
        self.assertIn("a refused message arrived", result.problems[0])

    def test_misrouted_message(self) -> None:
        """A device op handed to another device is a problem."""
        result = audit(
            self.backend(),
            [self.journal("start 1", *self.got("dev01", self.LOCK, 5))],
        )
        self.assertIn("misrouted", result.problems[0])
