"""Settings: defaults, config files and flags, and their refusals."""

from __future__ import annotations

import os
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from msync.settings import Settings, SettingsError, load_file, resolve


class SettingsTests(SynchronousTestCase):
    """How C{twistd msync} settings are merged and checked."""

    def write(self, text: str) -> str:
        fd, path = tempfile.mkstemp(suffix=".toml")
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def test_defaults(self) -> None:
        """With nothing given, the embedded defaults apply."""
        s = resolve({}, {})
        self.assertEqual(s, Settings())
        self.assertEqual(s.device_port, "tcp:7443:backlog=1024")
        self.assertEqual(s.http_port, "tcp:8080:interface=127.0.0.1")
        self.assertTrue(s.default_certs)

    def test_flags_override_file(self) -> None:
        """A flag beats the config file, which beats the default."""
        path = self.write('data-dir = "/a"\nhttp-port = "tcp:1"\n')
        s = resolve(load_file(path), {"data_dir": "/b", "http_port": None})
        self.assertEqual((s.data_dir, s.http_port), ("/b", "tcp:1"))

    def test_numbers_from_text(self) -> None:
        """Numeric flags arrive as text and are converted."""
        s = resolve({}, {"map_size_mb": "128", "sweep_interval": "2.5"})
        self.assertEqual((s.map_size_mb, s.sweep_interval), (128, 2.5))

    def test_refusals(self) -> None:
        """Bad values are refused with the setting's name."""
        cases = [
            ({"map_size_mb": "x"}, "map-size-mb"),
            ({"map_size_mb": 1}, "map-size-mb"),
            ({"sweep_interval": 0}, "sweep-interval"),
            ({"log_format": "xml"}, "log-format"),
            ({"cert": "/nope.pem", "key": "/nope.key"}, "cert"),
            ({"data_dir": 5}, "data-dir"),
            ({"gateway_workers": "-2"}, "gateway-workers"),
            ({"gateway_workers": 65}, "gateway-workers"),
        ]
        for flags, name in cases:
            e = self.assertRaises(SettingsError, resolve, {}, flags)
            self.assertIn(name, str(e))

    def test_bad_files(self) -> None:
        """Unknown keys, broken TOML and missing files are refused."""
        unknown = self.write("colour = 1\n")
        broken = self.write("data-dir = \n")
        for path, words in [
            (unknown, "unknown setting 'colour'"),
            (broken, "is not TOML"),
            ("/nonexistent.toml", "cannot read"),
        ]:
            e = self.assertRaises(SettingsError, load_file, path)
            self.assertIn(words, str(e))
