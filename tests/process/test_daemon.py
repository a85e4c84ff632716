"""
The real daemon on loopback: startup, bootstrap, clean stops, and refusals
that stop startup with a clear message.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import urllib.request

import pytest
from twisted.trial.unittest import SynchronousTestCase

from msync.testing import TWISTD, Daemon, run

pytestmark = pytest.mark.process

MSYNC = os.path.join(os.path.dirname(TWISTD), "msync")


class DaemonTests(SynchronousTestCase):
    """C{twistd -n msync} as an operator runs it."""

    def daemon(self, *args: str, data_dir: str | None = None) -> Daemon:
        d = Daemon(data_dir, *args)
        self.addCleanup(d.kill)
        return d

    def test_first_start_bootstraps_once(self) -> None:
        """The first start writes bootstrap.json (0600) and prints the
        credentials; a restart reuses them without printing."""
        d = self.daemon().start()
        path = os.path.join(d.data_dir, "bootstrap.json")
        with open(path) as f:
            first = json.load(f)
        self.assertEqual(
            sorted(first),
            [
                "access_key",
                "admin_password",
                "admin_user",
                "instance_id",
                "secret",
            ],
        )
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertIn("admin_password", d.log())
        d.terminate()

        again = self.daemon(data_dir=d.data_dir)
        again.start()
        with open(path) as f:
            self.assertEqual(json.load(f), first)
        self.assertNotIn("first start", again.log())
        again.terminate()

    def test_secrets_stay_out_of_log_file(self) -> None:
        """With a log file, the bootstrap secret goes to the terminal
        only, never into the log."""
        d = Daemon(logfile=True)
        self.addCleanup(d.kill)
        d.start()
        with open(os.path.join(d.data_dir, "bootstrap.json")) as f:
            secret = json.load(f)["secret"]
        self.assertIn(secret, d.stdout())
        self.assertIn("bootstrap credentials", d.log())
        self.assertNotIn(secret, d.log())
        d.terminate()

    def test_json_logs(self) -> None:
        """With --log-format json every line of the log file is one JSON
        object with the event's fields; the bootstrap banner stays out."""
        d = Daemon(None, "--log-format", "json", logfile=True)
        self.addCleanup(d.kill)
        d.start(("HTTP", "devices"))
        d.terminate()
        self.assertIn("admin_password", d.stdout())
        lines = d.log().splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        self.assertEqual(len(events), len([x for x in lines if x.strip()]))
        ready = [e for e in events if e.get("log_namespace") == "msync.tap"]
        self.assertTrue(any("version" in e for e in ready))

    def test_health_and_sigterm(self) -> None:
        """The health endpoint answers, and SIGTERM stops the daemon
        cleanly."""
        d = self.daemon().start()
        with urllib.request.urlopen(d.http_url + "/healthz", timeout=30) as r:
            self.assertEqual(r.status, 200)
            self.assertEqual(json.load(r)["status"], "ok")
        d.terminate()
        self.assertIn("Server Shut Down", d.log())

    def test_port_in_use_stops_startup(self) -> None:
        """A port that cannot be bound stops startup with one clear line."""
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d = self.daemon()
        result = run(
            [*d.command(), "--http-port", f"tcp:{port}:interface=127.0.0.1"]
        )
        self.assertNotEqual(result.returncode, 0)
        out = result.stdout + result.stderr
        self.assertIn(
            f"msync: cannot listen for HTTP on 127.0.0.1:{port}", out
        )
        self.assertNotIn("Traceback", out)

    def test_bad_settings_refused(self) -> None:
        """Unreadable config files, unknown settings and bad values are
        refused before anything starts."""
        d = self.daemon()
        bad_toml = os.path.join(d.data_dir, "bad.toml")
        with open(bad_toml, "w") as f:
            f.write('colour = "blue"\n')
        cases = [
            (["--config", "/nonexistent.toml"], "cannot read config file"),
            (["--config", bad_toml], "unknown setting 'colour'"),
            (["--map-size-mb", "lots"], "map-size-mb"),
            (["--http-port", "nonsense:1"], "bad HTTP endpoint"),
            (
                ["--cert", "/etc/hostname", "--key", "/etc/hostname"],
                "holds no PEM certificate",
            ),
        ]
        for extra, message in cases:
            result = run([*d.command(), *extra])
            out = result.stdout + result.stderr
            self.assertNotEqual(result.returncode, 0, extra)
            self.assertIn(message, out, extra)
            self.assertNotIn("Traceback", out, extra)

    def test_config_file_sets_values(self) -> None:
        """Settings from a config file apply, and flags override them."""
        d = self.daemon()
        other = os.path.join(d.data_dir, "elsewhere")
        conf = os.path.join(d.data_dir, "msync.toml")
        with open(conf, "w") as f:
            f.write(f'data-dir = "{other}"\nsweep-interval = 5\n')
        d.args = ["--config", conf]
        cmd = [a for a in d.command()]
        i = cmd.index("--data-dir")
        del cmd[i : i + 2]
        d.command = lambda: cmd  # type: ignore[method-assign]
        d.start()
        self.assertTrue(os.path.exists(os.path.join(other, "bootstrap.json")))
        d.terminate()

    def test_command_line_entry_point(self) -> None:
        """The installed `msync` command runs."""
        result = run([MSYNC, "version"])
        self.assertEqual(result.returncode, 0)
        self.assertTrue(result.stdout.startswith("msync "))
