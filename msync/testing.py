"""
Run a real C{twistd msync} on loopback, for tests and benchmarks:
OS-chosen ports, waits on conditions with generous bounds, and stops that
check the daemon shut down cleanly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
CERTS = os.path.join(ROOT, "certs")

#: Generous: CI machines are busy.
BOUND = 60.0

_LISTENING = re.compile(r"listening for (\S+) on [^:]*:(\d+)")


def wait_until(
    condition: Callable[[], object], what: str, bound: float = BOUND
) -> object:
    """
    Poll C{condition} until it returns something true, or fail after
    C{bound} seconds naming C{what}.
    """
    deadline = time.monotonic() + bound
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {bound}s waiting for {what}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class Daemon:
    """One C{twistd -n msync} process with its own data directory."""

    def __init__(
        self, data_dir: str | None = None, *args: str, logfile: bool = False
    ) -> None:
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="msync-data-")
        self.args = list(args)
        logs = tempfile.mkdtemp(prefix="msync-log-")
        self.log_path = os.path.join(logs, "twistd.log")
        # With logfile, twistd writes its log itself and stdout is apart.
        self.logfile = logfile
        self.stdout_path = os.path.join(logs, "stdout.txt")
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self._log_from = 0

    def command(self) -> list[str]:
        """The command line that starts this daemon."""
        return [
            TWISTD,
            "-n",
            "--pidfile=",
            *([f"--logfile={self.log_path}"] if self.logfile else []),
            "msync",
            "--data-dir",
            self.data_dir,
            "--http-port",
            "tcp:0:interface=127.0.0.1",
            "--device-port",
            "tcp:0:interface=127.0.0.1",
            "--cert",
            os.path.join(CERTS, "server.pem"),
            "--key",
            os.path.join(CERTS, "server.key"),
            *self.args,
        ]

    def start(self, wait_for: tuple[str, ...] = ("HTTP",)) -> Daemon:
        """Start the process and wait until the named listeners are up."""
        # Read only what this start logs: a restart appends to the file.
        self._log_from = len(_read(self.log_path).encode("utf-8"))
        log = open(self.stdout_path if self.logfile else self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
        log.close()
        self.ports = {}
        wait_until(lambda: self._ready(wait_for), f"listeners {wait_for}")
        return self

    def _ready(self, roles: tuple[str, ...]) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"daemon exited with {self.proc.returncode}:\n{self.log()}"
            )
        log = (
            _read(self.log_path)
            .encode("utf-8")[self._log_from :]
            .decode("utf-8", "replace")
        )
        self.ports = {
            m.group(1): int(m.group(2)) for m in _LISTENING.finditer(log)
        }
        for line in log.splitlines():
            # With --log-format json the fields are there, not in text.
            if line.startswith("{") and '"role"' in line:
                event = json.loads(line)
                self.ports[event["role"]] = int(event["port"])
        return (
            "msync" in self.log()
            and " ready" in self.log()
            and all(r in self.ports for r in roles)
        )

    def log(self) -> str:
        """Everything the daemon logged so far."""
        return _read(self.log_path)

    def stdout(self) -> str:
        """What the daemon wrote to its standard output (with a logfile)."""
        return _read(self.stdout_path)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send C{sig}, wait for the exit, and return the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            status = self.proc.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait(timeout=BOUND)
        self.proc = None
        return status

    def terminate(self) -> None:
        """
        Stop with SIGTERM and check that the stop was clean: twistd ends
        by re-raising the signal, and the store said it closed.
        """
        status = self.stop(signal.SIGTERM)
        log = self.log()
        if status not in (0, -signal.SIGTERM) or "store closed" not in log:
            raise AssertionError(f"unclean stop ({status}):\n{log}")

    def kill(self) -> int:
        """SIGKILL the daemon: the crash tests' tool."""
        return self.stop(signal.SIGKILL)

    @property
    def http_url(self) -> str:
        """The base URL of the HTTP listener."""
        return f"http://127.0.0.1:{self.ports['HTTP']}"


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a command to completion with a bound, capturing its output."""
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=BOUND,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""
