"""
The daemon's settings: embedded defaults, overridden by a TOML config
file, overridden by command-line flags.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from typing import Any


class SettingsError(ValueError):
    """A setting is missing, unknown or malformed; the text says which."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything C{twistd msync} can be told."""

    data_dir: str = "var/msync"
    device_port: str = "tcp:7443:backlog=1024"
    http_port: str = "tcp:8080:interface=127.0.0.1"
    cert: str = "certs/server.pem"
    key: str = "certs/server.key"
    ca: str = "certs/ca.pem"
    map_size_mb: int = 65536
    sweep_interval: float = 60.0
    heartbeat: int = 30
    """Seconds between device pings; three silent ones close a link."""
    hello_timeout: float = 20.0
    """Seconds a new device connection has to finish TLS and say hello."""
    per_address: int = 4096
    """Device connections one address may hold open (carrier NAT puts
    many phones behind one address, so the default is generous)."""
    log_format: str = "text"
    gateway_workers: int = -1
    """Processes that answer C{/gateway.do} beside the daemon; 0 answers
    in the daemon alone; -1 picks one per core but one, at most four."""

    @property
    def default_certs(self) -> bool:
        """Whether the certificates are the generated development ones."""
        return (self.cert, self.key) == (_DEFAULT_CERT, _DEFAULT_KEY)


_DEFAULT_CERT = "certs/server.pem"
_DEFAULT_KEY = "certs/server.key"
_FILE_KEYS = {f.name.replace("_", "-"): f for f in fields(Settings)}


def load_file(path: str) -> dict[str, Any]:
    """
    Read a TOML config file of C{name = value} lines using the flag names
    (C{data-dir}, C{device-port}, ...).

    @raise SettingsError: if it cannot be read or names unknown settings.
    """
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise SettingsError(f"cannot read config file {path}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"config file {path} is not TOML: {e}") from e
    out = {}
    for name, value in raw.items():
        spec = _FILE_KEYS.get(name)
        if spec is None:
            raise SettingsError(
                f"config file {path}: unknown setting {name!r} (known: "
                f"{', '.join(sorted(_FILE_KEYS))})"
            )
        out[spec.name] = value
    return out


def resolve(file_values: dict[str, Any], flags: dict[str, Any]) -> Settings:
    """
    Merge config-file values and flags (flags win) over the defaults, and
    check each value's type.

    @raise SettingsError: naming the first bad value.
    """
    merged = {
        **file_values,
        **{k: v for k, v in flags.items() if v is not None},
    }
    checked: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name not in merged:
            continue
        value = merged[f.name]
        want = type(getattr(Settings(), f.name))
        try:
            if want is int and not isinstance(value, int):
                value = int(value)
            elif want is float:
                value = float(value)
            elif want is str and not isinstance(value, str):
                raise TypeError("expected text")
        except (TypeError, ValueError) as e:
            raise SettingsError(
                f"setting {f.name.replace('_', '-')}: {value!r} is not "
                f"a valid {want.__name__}"
            ) from e
        checked[f.name] = value
    settings = replace(Settings(), **checked)
    if settings.map_size_mb < 16:
        raise SettingsError("setting map-size-mb: must be at least 16")
    if not 1 <= settings.heartbeat <= 3600:
        raise SettingsError("setting heartbeat: must be 1 to 3600 seconds")
    if settings.hello_timeout <= 0:
        raise SettingsError("setting hello-timeout: must be positive")
    if settings.per_address < 1:
        raise SettingsError("setting per-address: must be at least 1")
    if settings.sweep_interval <= 0:
        raise SettingsError("setting sweep-interval: must be positive")
    if not -1 <= settings.gateway_workers <= 64:
        raise SettingsError("setting gateway-workers: must be -1 to 64")
    if settings.log_format not in ("text", "json"):
        raise SettingsError("setting log-format: must be text or json")
    if not settings.default_certs:
        for name in ("cert", "key"):
            path = getattr(settings, name)
            if not os.path.isfile(path):
                raise SettingsError(f"setting {name}: no file at {path}")
    return settings
