"""
Run a private Mosquitto broker for the side-by-side benchmarks.

Each L{Broker} writes its own configuration into a fresh temporary
directory (persistence there too), listens with TLS on a port the OS
chose, using msync's development certificates, and is stopped and its
directory removed at the end.  Nothing of the system's own Mosquitto
service or configuration is used.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from types import TracebackType

MOSQUITTO = "/usr/sbin/mosquitto"

#: Seconds the broker may take to start listening or to stop.
BOUND = 30.0


def ensure_installed() -> None:
    """
    Install Debian's C{mosquitto} package if the broker is missing.

    @raise RuntimeError: if it is missing and this process is not root,
        naming the command to run.
    """
    if os.access(MOSQUITTO, os.X_OK):
        return
    if os.geteuid() != 0:
        raise RuntimeError(
            f"{MOSQUITTO} is missing; as root run: "
            "apt-get update && apt-get install -y mosquitto"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "mosquitto"], check=True, env=env
    )


def version() -> str:
    """The first line of C{mosquitto -h}, e.g. C{mosquitto version 2.0.11}."""
    out = subprocess.run(
        [MOSQUITTO, "-h"],
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    lines = (out.stdout or out.stderr).splitlines()
    return lines[0].strip() if lines else "unknown"


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def config_text(
    directory: str,
    port: int,
    certs: str,
    max_queued: int = 200_000,
    max_inflight: int = 4096,
) -> str:
    """
    The broker's configuration file.

    @param max_inflight: QoS 1 messages sent to one client and not yet
        acknowledged; the default matches msync's per-connection window.
    """
    return "\n".join(
        [
            # Run as root, the broker would switch to the "mosquitto"
            # user, who can read neither the development key nor this
            # directory.
            "user root",
            "persistence true",
            f"persistence_location {directory}/",
            "persistence_file mosquitto.db",
            f"max_queued_messages {max_queued}",
            "max_queued_bytes 0",
            f"max_inflight_messages {max_inflight}",
            "max_keepalive 65535",
            f"log_dest file {directory}/mosquitto.log",
            "allow_anonymous true",
            f"listener {port} 127.0.0.1",
            f"cafile {certs}/ca.pem",
            f"certfile {certs}/server.pem",
            f"keyfile {certs}/server.key",
            "set_tcp_nodelay true",
            "",
        ]
    )


class Broker:
    """One C{mosquitto -c FILE} process with its own directory."""

    def __init__(self, certs: str, **settings: int) -> None:
        self.certs = os.path.abspath(certs)
        self.settings = settings
        self.directory = ""
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The broker's process id."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Broker:
        """Write the configuration, start the broker, wait for its port."""
        self.directory = tempfile.mkdtemp(prefix="mosquitto-bench-")
        self.port = free_port()
        path = os.path.join(self.directory, "mosquitto.conf")
        with open(path, "w") as f:
            f.write(
                config_text(
                    self.directory, self.port, self.certs, **self.settings
                )
            )
        out = open(os.path.join(self.directory, "stdout.txt"), "wb")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", path],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        out.close()
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + BOUND
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.proc.returncode}:\n"
                    + self.log()
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), 1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mosquitto did not listen within {BOUND}s"
                    ) from None
                time.sleep(0.02)

    def log(self) -> str:
        """What the broker logged, and wrote to its output."""
        text = []
        for name in ("stdout.txt", "mosquitto.log"):
            try:
                with open(os.path.join(self.directory, name)) as f:
                    text.append(f.read())
            except FileNotFoundError:
                pass
        return "\n".join(text)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and remove its files."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=BOUND)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=BOUND)
            self.proc = None
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
