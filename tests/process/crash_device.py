"""
Devices for the daemon crash test: one process hosting several
L{DeviceClient}s, each with its own data directory, writing what its app
sees to the process's journal.

Run as C{python crash_device.py CONTROL DATA_ROOT JOURNAL DEVICE...}.

Each device binds its user (L{crash_world.user_of}), registers a callback
for every config's biz type and connects, over TLS, to the device port
the control file names.  When that port changes (the daemon was
restarted) every device goes to the background and comes straight back,
so that it reconnects at once instead of waiting out its backoff.

Journal lines, each written with one C{write}:

  - C{start PID} when the process starts;
  - C{welcome DEVICE} each time the server takes a device;
  - C{got DEVICE BIZ SCOPE OPID MSGID} when a callback is handed a
    message, written before the message is reported;
  - C{report DEVICE BIZ SCOPE OPID} once C{report_msg_received} returned;
  - C{gap DEVICE BIZ SCOPE THROUGH REASON} when the server says ops were
    dropped;
  - C{refused DEVICE CODE} when the server refuses a device for good
    (it then stays offline until the next daemon restart).

So a message the journal shows reported must never be got again, while
one got but not reported may be got once more after a restart.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable
from typing import Any

from crash_world import (
    CONFIGS,
    CONTROL_INTERVAL,
    INSTANCE,
    SESSION,
    append_line,
    open_journal,
    read_control,
    user_of,
)
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    gatherResults,
)
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import LoopingCall, react
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.python.failure import Failure
from zope.interface import implementer

from msync.device import DeviceClient, ServerRefused, SyncMessage
from msync.device.protocol import DeviceProtocol
from msync.testing import CERTS
from msync.tls import client_options

CA = os.path.join(CERTS, "ca.pem")


@implementer(IStreamClientEndpoint)
class CurrentPort:
    """
    Connects over TLS to the device port last read from the control
    file: a device's endpoint that follows the daemon across restarts.
    """

    def __init__(self, reactor: Any, ca_file: str) -> None:
        self.port = 0
        self._reactor = reactor
        self._tls = client_options("localhost", ca_file)

    def connect(self, factory: Any) -> Deferred[DeviceProtocol]:
        """Connect C{factory} to the current port, if there is one."""
        if not self.port:
            return fail(ConnectionRefusedError("no daemon port yet"))
        inner = HostnameEndpoint(self._reactor, "127.0.0.1", self.port)
        connected: Deferred[DeviceProtocol] = wrapClientTLS(
            self._tls, inner
        ).connect(factory)
        return connected


class Devices:
    """
    The devices of this process and the journal of what their app saw.

    @param journal_fd: An C{O_APPEND} descriptor for the journal.
    """

    def __init__(
        self,
        reactor: Any,
        control_path: str,
        data_root: str,
        journal_fd: int,
        device_ids: list[str],
    ) -> None:
        self._reactor = reactor
        self._control_path = control_path
        self._journal = journal_fd
        self._endpoint = CurrentPort(reactor, CA)
        self._port = 0
        self.clients = [
            self._client(device_id, os.path.join(data_root, device_id))
            for device_id in device_ids
        ]

    def _client(self, device_id: str, data_dir: str) -> DeviceClient:
        client = DeviceClient(
            self._reactor,
            "127.0.0.1",
            0,
            CA,
            INSTANCE,
            "ANDROID",
            "1.0.0",
            data_dir,
            device_id=device_id,
            endpoint=self._endpoint,
            # A short jitter: a daemon restart sends every device back at
            # once, and the test waits for all of them.
            jitter=lambda: random.random() * 0.2,
        )
        client.update_user_info(user_of(device_id), SESSION)
        for config in CONFIGS:
            client.register_biz(config.biz_type, self._app(client))
        client.on_gap(self._gap(device_id))
        return client

    def _app(self, client: DeviceClient) -> Callable[[SyncMessage], None]:
        """Return the app's callback for C{client}: journal, report."""
        device = client.device_id

        def received(message: SyncMessage) -> None:
            fields = (device, message.biz_type, message.scope, message.op_id)
            append_line(self._journal, "got", *fields, message.text)
            client.report_msg_received(message)
            append_line(self._journal, "report", *fields)

        return received

    def _gap(self, device: str) -> Callable[[str, str, int, str], None]:
        def gap(biz: str, scope: str, through: int, reason: str) -> None:
            append_line(
                self._journal, "gap", device, biz, scope, through, reason
            )

        return gap

    def start(self) -> Deferred[None]:
        """
        Follow the control file and connect every device.

        @return: Fires with a failure if this program fails.
        """
        self._port = self._endpoint.port = self._current_port()
        for client in self.clients:
            self._welcome(client)
            client.app_to_foreground()
        watch = LoopingCall(self._follow)
        watch.clock = self._reactor
        done: Deferred[None] = watch.start(CONTROL_INTERVAL, now=False)
        return done

    def _welcome(self, client: DeviceClient) -> None:
        """
        Journal the next welcome of C{client}, or the fatal refusal that
        came instead, and each after it until the client is closed.
        """

        def welcomed(_: object) -> None:
            append_line(self._journal, "welcome", client.device_id)
            self._welcome(client)

        def refused(failure: Failure) -> None:
            failure.trap(ServerRefused)
            code = failure.value.code
            append_line(self._journal, "refused", client.device_id, code)
            self._welcome(client)

        d = client.when_connected().addCallbacks(welcomed, refused)
        # What is left is the cancel of close(): nothing more to say.
        d.addErrback(lambda f: f.trap(CancelledError))

    def _current_port(self) -> int:
        return read_control(self._control_path).devices

    def _follow(self) -> None:
        port = self._current_port()
        if port == self._port:
            return
        self._port = self._endpoint.port = port
        for client in self.clients:
            # Reconnect now, to the new port, with a fresh backoff.
            client.app_to_background().addCallback(
                lambda _, c=client: c.app_to_foreground()
            )

    def close(self) -> Deferred[list[None]]:
        """Close every device, so that their stores close cleanly."""
        return gatherResults([client.close() for client in self.clients])


def main(
    reactor: Any,
    control_path: str,
    data_root: str,
    journal_path: str,
    *device_ids: str,
) -> Deferred[None]:
    """Run the devices until this process is killed or stopped."""
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    journal = open_journal(journal_path)
    append_line(journal, "start", os.getpid())
    devices = Devices(
        reactor, control_path, data_root, journal, list(device_ids)
    )
    reactor.addSystemEventTrigger("before", "shutdown", devices.close)
    return devices.start()


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(f"usage: {sys.argv[0]} CONTROL DATA_ROOT JOURNAL DEVICE...")
    react(main, sys.argv[1:])
