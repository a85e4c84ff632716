"""
The device SDK's front: L{DeviceClient}, the API an app calls.

It owns the local store (L{msync.device.local}), keeps one connection
(L{msync.device.protocol}) open while the app is in the foreground, and
hands each op to the callback of its biz type, in op id order within a
scope, once as the app sees it.

Delivery, in the default mode (acknowledge on receipt): each sync frame is
stored in one durable transaction (new ops become pending, points move),
then acknowledged, then delivered.  A message stays pending until the app
reports it, so one the app never reported comes back after a restart and
one it did report never does.  With C{ack_on_receive=False} the server
hears of a message only when the app reports it, so an app that dies
mid-way gets the unreported ops pushed again.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger

from msync.device.local import LocalStore
from msync.device.message import SyncMessage
from msync.device.protocol import DeviceFactory, DeviceProtocol
from msync.tls import client_options
from msync.wire.messages import (
    FATAL_ERRORS,
    Bind,
    Bound,
    Error,
    Gap,
    Hello,
    Message,
    Point,
    Pull,
    Sync,
    Unbind,
    Welcome,
)

__all__ = ["DeviceClient", "ServerRefused"]

_log = Logger()

#: Reconnect delays: 0.5 s, doubling, at most 30 s, plus jitter.
INITIAL_DELAY = 0.5
BACKOFF_FACTOR = 2.0
MAX_DELAY = 30.0

_BIZ = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*")
_OS_TYPES = frozenset({"ANDROID", "IOS"})

#: What the app registers for a biz type.
MessageCallback = Callable[[SyncMessage], object]

#: Told of a gap: C{(biz, scope, through, reason)}.
GapCallback = Callable[[str, str, int, str], object]

#: Told of every error frame the server sends.
ErrorCallback = Callable[[Error], object]


class ServerRefused(Exception):
    """
    The server sent an error after which reconnecting cannot help; the
    device stays offline until the app comes to the foreground again.
    """

    def __init__(self, error: Error) -> None:
        super().__init__(f"{error.code}: {error.text}")
        self.code = error.code
        self.text = error.text


def _check_text(what: str, value: str, lo: int, hi: int) -> None:
    size = len(value.encode("utf-8"))
    if not lo <= size <= hi or any(ord(c) < 0x20 for c in value):
        raise ValueError(
            f"{what} must be {lo}-{hi} bytes without control characters"
        )


def _check_biz(biz_type: str) -> None:
    if not _BIZ.fullmatch(biz_type):
        raise ValueError(f"bad biz type {biz_type!r}")


class DeviceClient:
    """
    One app's connection to msync, with its local store.

    The store opens here, so that L{device_id} is known at once; two
    clients cannot share a data directory in one process.

    @param reactor: Schedules everything; it must also provide
        C{IReactorTCP} and a name resolver unless C{endpoint} is given.
    @param host: The server's device listener.
    @param port: Its port.
    @param ca_file: The PEM CA certificate the server's must chain to.
    @param instance_id: The app's C{workspaceId_appId}.
    @param os_type: C{ANDROID} or C{IOS}.
    @param app_version: The app's dotted numeric version.
    @param data_dir: Where the local store lives.
    @param app_key: The instance's app key, if it has one.
    @param server_name: The name the server's certificate must carry;
        C{host} if not given.
    @param ack_on_receive: Acknowledge ops once stored (the default), or
        only when the app reports them.
    @param device_id: Use this device id instead of the stored or a
        generated one.
    @param sync_writes: Whether local writes wait for the disk.
    @param endpoint: Connect through this endpoint instead of TLS to
        C{host:port} (for tests and unusual transports).
    @param jitter: Gives the random seconds added to each reconnect delay;
        0 to 1 if not given.
    @raise ValueError: if an identifying argument is malformed.
    @raise msync.tls.TLSConfigError: if the CA file cannot be used.
    @raise msync.device.local.LocalStoreError: if the store cannot open.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        host: str,
        port: int,
        ca_file: str,
        instance_id: str,
        os_type: str,
        app_version: str,
        data_dir: str,
        *,
        app_key: str = "",
        server_name: str | None = None,
        ack_on_receive: bool = True,
        device_id: str | None = None,
        sync_writes: bool = True,
        endpoint: IStreamClientEndpoint | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        # Refuse what the server would refuse, before anything connects.
        _check_text("instance_id", instance_id, 1, 128)
        os_type = os_type.upper()
        if os_type not in _OS_TYPES:
            raise ValueError(f"os_type must be one of {sorted(_OS_TYPES)}")
        if not _VERSION.fullmatch(app_version) or len(app_version) > 64:
            raise ValueError("app_version must be dotted numbers, e.g. 1.2.0")
        _check_text("app_key", app_key, 0, 128)
        if device_id is not None:
            _check_text("device_id", device_id, 1, 128)

        self._reactor = reactor
        self._instance = instance_id
        self._os = os_type
        self._app_version = app_version
        self._app_key = app_key
        self._ack_on_receive = ack_on_receive
        self._where = f"{host}:{port}"

        if endpoint is None:
            tls = client_options(server_name or host, ca_file)
            endpoint = wrapClientTLS(
                tls, HostnameEndpoint(reactor, host, port)
            )

        self._store = LocalStore(data_dir, sync=sync_writes)
        self._identity = self._store.identity(device_id)
        self._closed = False

        # ClientService counts failures since the last TCP connection, but
        # a server that accepts and then refuses (RATE, SHUTDOWN, a full
        # per-address cap) must see the device back off too: count since
        # the last welcome.
        self._backoff = backoffPolicy(
            initialDelay=INITIAL_DELAY,
            factor=BACKOFF_FACTOR,
            maxDelay=MAX_DELAY,
            jitter=jitter or random.random,
        )
        self._failures = 0
        self._service = ClientService(
            endpoint,
            DeviceFactory(reactor, self),
            retryPolicy=self._retry_delay,
            clock=reactor,
        )

        # The connection open now, and the same once it is welcome.
        self._open: DeviceProtocol | None = None
        self._protocol: DeviceProtocol | None = None
        self._hello_user: tuple[str, str] | None = None
        self._callbacks: dict[str, MessageCallback] = {}
        self._backlog: dict[str, IDelayedCall] = {}
        self._delivered: set[tuple[str, str, int, int]] = set()
        self._gap_callbacks: list[GapCallback] = []
        self._error_callbacks: list[ErrorCallback] = []
        self._waiting: list[Deferred[Welcome]] = []
        self._last_error: Error | None = None

    # --- the app's API ----------------------------------------------------

    @property
    def device_id(self) -> str:
        """This device's id, kept in the local store."""
        return self._identity.device_id

    @property
    def last_error(self) -> Error | None:
        """The last error frame from the server (C{code}, C{text})."""
        return self._last_error

    def is_connected(self) -> bool:
        """Whether the server has welcomed the device on a live link."""
        return self._protocol is not None

    def app_to_foreground(self) -> None:
        """Connect, and keep reconnecting until sent to the background."""
        if self._closed:
            raise RuntimeError("this DeviceClient is closed")
        if not self._service.running:
            self._failures = 0
            self._service.startService()

    def app_to_background(self) -> Deferred[None]:
        """
        Disconnect and stop reconnecting.

        @return: Fires once the connection (or attempt) is over.
        """
        # Nothing more is read from a connection the app is leaving, so no
        # frame still in flight is delivered after this call.
        if self._open is not None:
            self._open.close()

        # Safe to repeat: a service already stopping (after a fatal error)
        # answers when it is done, one never started at once.
        stopped: Deferred[None] = self._service.stopService()
        return stopped

    def close(self) -> Deferred[None]:
        """
        Go to the background for good and close the local store, so that
        another client may open it.
        """
        self._closed = True
        done = self.app_to_background()

        def closed(result: None) -> None:
            for call in self._backlog.values():
                call.cancel()
            self._backlog.clear()
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.cancel()
            self._store.close()

        return done.addCallback(closed)

    def when_connected(self) -> Deferred[Welcome]:
        """
        Return a Deferred that fires with the server's next welcome, or
        fails with L{ServerRefused} if a fatal error comes first.
        """
        d: Deferred[Welcome] = Deferred()
        self._waiting.append(d)
        return d

    def update_user_info(self, user_id: str, session_id: str) -> None:
        """Bind C{user_id} with its session, now and on every connection."""
        _check_text("user_id", user_id, 1, 128)
        _check_text("session_id", session_id, 1, 512)
        self._store.bind_user(user_id, session_id)
        if self._protocol is not None:
            self._protocol.send(Bind(user_id, session_id))
            self._hello_user = (user_id, session_id)

    def clear_user_info(self) -> None:
        """Unbind the user, now and on every connection."""
        self._store.unbind_user()
        if self._protocol is not None:
            self._protocol.send(Unbind())
            self._hello_user = None

    def register_biz(self, biz_type: str, callback: MessageCallback) -> None:
        """
        Call C{callback} with each message of C{biz_type}.

        Messages already waiting on the device follow shortly (from the
        reactor, never from within this call), before any newer ones.
        """
        _check_biz(biz_type)
        self._callbacks[biz_type] = callback
        if biz_type not in self._backlog:
            self._backlog[biz_type] = self._reactor.callLater(
                0, self._deliver_backlog, biz_type
            )

    def unregister_biz(self, biz_type: str) -> None:
        """Stop delivering C{biz_type}: its messages wait on the device."""
        self._callbacks.pop(biz_type, None)
        call = self._backlog.pop(biz_type, None)
        if call is not None:
            call.cancel()

    def report_msg_received(self, message: SyncMessage) -> None:
        """
        The app has consumed C{message}: it is never delivered again, not
        even after a restart.
        """
        point = self._store.report(message, advance=not self._ack_on_receive)
        self._delivered.discard(message.key)
        if point is not None and self._protocol is not None:
            self._protocol.send_points([point])

    def pending_messages(
        self, biz_type: str | None = None
    ) -> list[SyncMessage]:
        """
        Return the messages received but not yet reported, of C{biz_type}
        or of every biz type, in (biz, scope, op id) order.
        """
        return self._store.pending(biz_type)

    def sync_points(self) -> list[Point]:
        """Return the device's point in every scope it has heard of."""
        return self._store.points()

    def pull(self) -> None:
        """Ask the server for everything not yet pushed, if connected."""
        if self._protocol is not None:
            self._protocol.send(Pull())

    def on_gap(self, callback: GapCallback) -> None:
        """Call C{callback(biz, scope, through, reason)} for each gap."""
        self._gap_callbacks.append(callback)

    def on_error(self, callback: ErrorCallback) -> None:
        """Call C{callback(error)} for each error frame from the server."""
        self._error_callbacks.append(callback)

    # --- what the connection reports (msync.device.protocol.Owner) -------

    def hello(self, protocol: DeviceProtocol) -> Hello:
        """Return the hello for C{protocol}, a new connection."""
        self._open = protocol
        user = self._store.user()
        self._hello_user = user
        return Hello(
            instance=self._instance,
            device=self._identity.device_id,
            secret=self._identity.secret,
            os=self._os,
            app_version=self._app_version,
            points=tuple(self._store.points()),
            app_key=self._app_key,
            user=user[0] if user else "",
            session=user[1] if user else "",
        )

    def welcomed(self, protocol: DeviceProtocol, welcome: Welcome) -> None:
        """The server took the device: reset the backoff, tell waiters."""
        _log.info(
            "Connected to {where} as device {device}",
            where=self._where,
            device=welcome.device,
        )
        self._protocol = protocol
        self._failures = 0

        # The user may have changed between the hello and now.
        user = self._store.user()
        if user != self._hello_user:
            protocol.send(Unbind() if user is None else Bind(*user))
            self._hello_user = user

        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(welcome)

    def message_received(
        self, protocol: DeviceProtocol, message: Message
    ) -> None:
        """Act on a sync, gap, bound or error from the server."""
        if isinstance(message, Sync):
            self._synced(protocol, message)
        elif isinstance(message, Gap):
            self._gap(message)
        elif isinstance(message, Bound):
            _log.info(
                "Bound user {user!r} (validated: {validated})",
                user=message.user,
                validated=message.validated,
            )
        elif isinstance(message, Error):
            self._error(message)

    def connection_lost(self, protocol: DeviceProtocol) -> None:
        """A connection ended; the service reconnects if it should."""
        if self._open is protocol:
            self._open = None
        if self._protocol is protocol:
            _log.info("Disconnected from {where}", where=self._where)
            self._protocol = None

    # --- internals --------------------------------------------------------

    def _retry_delay(self, attempt: int) -> float:
        delay = self._backoff(self._failures)
        self._failures += 1
        return delay

    def _synced(self, protocol: DeviceProtocol, sync: Sync) -> None:
        # Stored (durably) first, acknowledged second, delivered last: an
        # ack never names an op the device could still lose, and a
        # callback that fails or crashes the app loses nothing either.
        received = self._store.receive(sync, advance=self._ack_on_receive)
        if received.points:
            protocol.send_points(received.points)
        self._deliver(received.new)

    def _deliver(self, messages: Iterable[SyncMessage]) -> None:
        for message in messages:
            biz = message.biz_type

            # While a biz type's backlog is due, newer messages wait for
            # it in the store, so that they do not overtake older ones.
            if biz in self._backlog:
                continue
            callback = self._callbacks.get(biz)
            if callback is None or message.key in self._delivered:
                continue
            self._delivered.add(message.key)
            try:
                callback(message)
            except Exception:
                # The message stays pending, so a restart delivers it again.
                _log.failure(
                    "The callback for {biz} failed on op {op_id}",
                    biz=biz,
                    op_id=message.op_id,
                )

    def _deliver_backlog(self, biz_type: str) -> None:
        del self._backlog[biz_type]
        self._deliver(self._store.pending(biz_type))

    def _gap(self, gap: Gap) -> None:
        _log.warn(
            "Ops of {biz} {scope} were dropped ({reason}); "
            "the device now stands at {through}",
            biz=gap.biz,
            scope=gap.scope,
            reason=gap.reason,
            through=gap.through,
        )
        self._store.set_point(
            Point(gap.biz, gap.scope, gap.epoch, gap.through)
        )
        for callback in list(self._gap_callbacks):
            try:
                callback(gap.biz, gap.scope, gap.through, gap.reason)
            except Exception:
                _log.failure("A gap callback failed")

    def _error(self, error: Error) -> None:
        self._last_error = error
        if error.code in FATAL_ERRORS:
            _log.error(
                "The server refused the device: {code}: {text}; not "
                "reconnecting until the app comes to the foreground again",
                code=error.code,
                text=error.text,
            )
            self._service.stopService()
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.errback(ServerRefused(error))
        else:
            _log.warn(
                "The server closed the connection: {code}: {text}",
                code=error.code,
                text=error.text,
            )
        for callback in list(self._error_callbacks):
            try:
                callback(error)
            except Exception:
                _log.failure("An error callback failed")
