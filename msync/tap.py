"""
C{twistd msync}: the options and the service tree, and nothing else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from treq.client import HTTPClient
from twisted.application.internet import (
    StreamServerEndpointService,
    TimerService,
)
from twisted.application.service import IService, MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.client import Agent, HTTPConnectionPool

from msync import __version__, collector, devcerts, logs
from msync.bootstrap import BootstrapService
from msync.consistency.validator import SessionValidator
from msync.console.api import ConsoleApi
from msync.console.pages import ConsolePages
from msync.delivery.engine import Engine, Tuning
from msync.delivery.sender import Sender
from msync.gateway.app import GatewayApp
from msync.gateway.lean import GatewayFactory, adopter
from msync.gateway.workers import Workers, default_count
from msync.link.protocol import AddressGate, DeviceFactory
from msync.link.tls import LeanTLSFactory
from msync.metrics import Metrics
from msync.settings import Settings, SettingsError, load_file, resolve
from msync.store import StoreService, sweep_expired
from msync.tls import TLSConfigError, server_options
from msync.web import Root, RootApp, front, site

_log = Logger()
_DEFAULTS = Settings()


class Options(usage.Options):
    """The command line of C{twistd msync}; unset flags fall back to the
    config file, then to the embedded defaults."""

    optParameters = [
        ["data-dir", None, None, f"Data directory [{_DEFAULTS.data_dir}]"],
        [
            "device-port",
            None,
            None,
            f"Device listener (TLS) endpoint [{_DEFAULTS.device_port}]",
        ],
        ["http-port", None, None, f"HTTP endpoint [{_DEFAULTS.http_port}]"],
        ["cert", None, None, f"PEM certificate chain [{_DEFAULTS.cert}]"],
        ["key", None, None, f"PEM private key [{_DEFAULTS.key}]"],
        ["config", None, None, "TOML config file with the settings above"],
        [
            "map-size-mb",
            None,
            None,
            f"Largest store size in MiB [{_DEFAULTS.map_size_mb}]",
        ],
        [
            "heartbeat",
            None,
            None,
            f"Seconds between device pings [{_DEFAULTS.heartbeat}]",
        ],
        [
            "hello-timeout",
            None,
            None,
            f"Seconds a device has to say hello [{_DEFAULTS.hello_timeout}]",
        ],
        [
            "per-address",
            None,
            None,
            "Device connections one address may hold "
            f"[{_DEFAULTS.per_address}]",
        ],
        [
            "log-format",
            None,
            None,
            f"Log lines as text or json [{_DEFAULTS.log_format}]",
        ],
        [
            "gateway-workers",
            None,
            None,
            "Processes answering /gateway.do beside the daemon; 0: none; "
            "-1: one per core but one, at most 4 "
            f"[{_DEFAULTS.gateway_workers}]",
        ],
        [
            "sweep-interval",
            None,
            None,
            f"Seconds between expiry sweeps [{_DEFAULTS.sweep_interval}]",
        ],
    ]

    def postOptions(self) -> None:
        try:
            file_values = load_file(self["config"]) if self["config"] else {}
        except SettingsError as e:
            raise usage.UsageError(str(e)) from e
        flags = {
            str(name).replace("-", "_"): self[str(name)]
            for name, *_ in self.optParameters
            if name != "config"
        }
        try:
            self.settings = resolve(file_values, flags)
        except SettingsError as e:
            raise usage.UsageError(str(e)) from e
        if self.settings.log_format == "json" and self.parent is not None:
            # twistd builds its log observer from its own --logger option.
            logs.use_json(self.parent.get("logfile"))
            self.parent["logger"] = "msync.logs.json_observer"


def makeService(options: Options) -> IService:
    """Build the msync service tree from parsed options."""
    from twisted.internet import reactor as _reactor

    # The global reactor provides every reactor interface; its stub type
    # names only a few.
    reactor: Any = _reactor

    collector.pace()
    settings: Settings = options.settings
    if settings.default_certs:
        made = devcerts.ensure_dev_certs(os.path.dirname(settings.cert))
        if made.created:
            _log.info(
                "generated development certificates in {dir}",
                dir=os.path.dirname(made.cert),
            )
    try:
        tls = server_options(settings.cert, settings.key)
    except TLSConfigError as e:
        raise SystemExit(f"msync: {e}") from e

    root = MultiService()
    metrics = Metrics()
    storage = StoreService(
        settings.data_dir, reactor, settings.map_size_mb * 2**20
    )
    storage.setServiceParent(root)
    store = storage.store

    bootstrap = BootstrapService(store, settings.data_dir, reactor, _say)
    bootstrap.setServiceParent(root)
    TimerService(
        settings.sweep_interval, _sweep, store, reactor, metrics
    ).setServiceParent(root)

    # Tenant validation calls: pooled connections, bounded connect time.
    pool = HTTPConnectionPool(reactor)
    http = HTTPClient(Agent(reactor, connectTimeout=5, pool=pool))
    engine = Engine(
        store,
        reactor,
        Tuning(
            heartbeat=settings.heartbeat,
            hello_timeout=settings.hello_timeout,
        ),
        validate=SessionValidator(http, reactor, store),
        observer=metrics,
    )
    metrics.watch(lambda: engine.online, store.total_ops, store.used_bytes)
    EngineService(engine).setServiceParent(root)
    devices = DeviceFactory(engine)
    _listener(
        "devices",
        settings.device_port,
        AddressGate(
            LeanTLSFactory(tls, False, devices),
            devices,
            settings.per_address,
        ),
        reactor,
    ).setServiceParent(root)

    sender = Sender(engine, on_result=metrics.sent)
    gateway = GatewayApp(store, sender, reactor)
    web = RootApp(store, gateway, metrics)
    console = ConsoleApi(
        store,
        engine,
        sender,
        reactor,
        secure_cookies=settings.http_port.startswith("ssl:"),
    )
    pages = Root(web.resource(), console.resource(), ConsolePages().resource())
    http_front = front(site(pages), gateway, reactor)
    listener = _listener("HTTP", settings.http_port, http_front, reactor)
    listener.setServiceParent(root)
    workers = _gateway_workers(
        settings, reactor, gateway, http_front, listener, root
    )
    if workers is not None:
        store.on_catalog_change(workers.catalog_changed)
    _Ready(reactor, bootstrap, workers).setServiceParent(root)
    return root


def _gateway_workers(
    settings: Settings,
    reactor: Any,
    gateway: GatewayApp,
    http_front: GatewayFactory,
    listener: _Listener,
    root: MultiService,
) -> Workers | None:
    count = settings.gateway_workers
    if count < 0:
        count = default_count(os.cpu_count())
    if count == 0:
        return None
    if not settings.http_port.startswith("tcp:"):
        _log.info(
            "gateway workers need a tcp: HTTP port; answering in process"
        )
        return None
    workers = Workers(
        count,
        reactor,
        settings.data_dir,
        gateway.intake,
        adopter(reactor, http_front),
        max_body=gateway.max_body,
        skew_seconds=gateway.checks.skew,
    )
    listener.bound.append(workers.listen_on)
    workers.setServiceParent(root)
    return workers


class EngineService(Service):
    """Starts the delivery engine once the store is open; stops it (every
    device told, positions written) before the store closes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def startService(self) -> None:
        super().startService()
        self.engine.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.engine.stop()


class _Ready(Service):
    """Says when the daemon is up: listeners bound, signals handled."""

    def __init__(
        self,
        reactor: Any,
        bootstrap: BootstrapService,
        workers: Workers | None,
    ) -> None:
        self._reactor = reactor
        self._bootstrap = bootstrap
        self._workers = workers

    def startService(self) -> None:
        super().startService()
        self._reactor.callWhenRunning(self._running)

    def _running(self) -> None:
        waits = [self._bootstrap.ready]
        if self._workers is not None:
            waits.append(self._workers.ready())
        DeferredList(waits).addBoth(
            lambda _: _log.info("msync {version} ready", version=__version__)
        )


class _Listener(StreamServerEndpointService):
    """A listener that stops startup with one clear line if it cannot
    bind."""

    def __init__(
        self, role: str, description: str, endpoint: Any, factory: Any
    ) -> None:
        super().__init__(endpoint, factory)
        self._role = role
        self._description = description
        # Bind in privilegedStartService and raise there, as strports does.
        self._raiseSynchronously = True
        self.bound: list[Callable[[Any], object]] = []
        """Called with the port once it is bound."""

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            why = getattr(e.socketError, "strerror", None) or e.socketError
            raise SystemExit(
                f"msync: cannot listen for {self._role} on "
                f"{e.interface or '*'}:{e.port} ({self._description}): {why}"
            ) from e
        if self._waitingForPort is not None:
            self._waitingForPort.addCallback(self._bound)

    def _bound(self, port: Any) -> Any:
        address = port.getHost()
        _log.info(
            "listening for {role} on {host}:{port}",
            role=self._role,
            host=getattr(address, "host", ""),
            port=getattr(address, "port", 0),
        )
        for call in self.bound:
            call(port)
        return port


def _listener(
    role: str, description: str, factory: Any, reactor: Any
) -> _Listener:
    try:
        endpoint = endpoints.serverFromString(reactor, description)
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(
            f"msync: bad {role} endpoint {description!r}: {e}"
        ) from e
    return _Listener(role, description, endpoint, factory)


def _sweep(store: Any, clock: Any, metrics: Metrics) -> Deferred[Any]:
    # A failing sweep must not stop the timer: log it and try next time.
    d = sweep_expired(store, clock)
    d.addCallback(metrics.sweep)
    d.addErrback(lambda f: _log.failure("expiry sweep failed", f))
    return d


def _say(text: str) -> None:
    # Straight to the terminal, not through twistd's log: the bootstrap
    # secrets must not end up in a log file.
    out = sys.__stdout__
    if out is not None and not out.closed:
        out.write(text)
        out.flush()
