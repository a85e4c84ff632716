"""
C{msync device}: a device on the command line, to watch pushes arrive.

Each op received is one JSON object on its own line of standard output,
with C{biz_type}, C{op_id} and either C{text} (a UTF-8 payload) or
C{base64}.  Logs go to standard error, so standard output stays JSON.

The device reports each op once it is printed (unless C{--no-ack}), and
acknowledges it to the server only then: an op not yet printed when the
command stops is pushed again next time.

Exit status: 0 when C{--count} ops were printed (or C{--timeout} ended a
watch without C{--count}); 1 when they did not come in time or the device
could not start; 2 when the server refused the device.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import TextIO

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from msync.device.client import DeviceClient
from msync.device.local import LocalStoreError
from msync.device.message import SyncMessage
from msync.tls import TLSConfigError
from msync.wire.messages import FATAL_ERRORS, Error

__all__ = ["add_arguments", "format_message", "run", "watch"]

_PROG = "msync device"


def format_message(message: SyncMessage) -> str:
    """Return C{message} as one line of JSON (without the newline)."""
    shown: dict[str, object] = {
        "biz_type": message.biz_type,
        "op_id": message.op_id,
    }
    text = message.text
    if text is None:
        shown["base64"] = base64.b64encode(message.payload).decode("ascii")
    else:
        shown["text"] = text
    return json.dumps(shown)


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare C{msync device}'s options on C{parser}."""
    parser.add_argument("--host", required=True, help="the server's host")
    parser.add_argument(
        "--port", required=True, type=int, help="its device port"
    )
    parser.add_argument(
        "--ca", required=True, help="the CA certificate to trust (PEM)"
    )
    parser.add_argument(
        "--instance", required=True, help="the app's workspaceId_appId"
    )
    parser.add_argument(
        "--device-id", help="the device id (default: the stored one)"
    )
    parser.add_argument("--user", help="bind this user (with --session)")
    parser.add_argument("--session", help="the user's session id")
    parser.add_argument(
        "--biz",
        required=True,
        action="append",
        help="a biz type to receive; repeat for more",
    )
    parser.add_argument(
        "--os",
        default="ANDROID",
        choices=["ANDROID", "IOS"],
        help="the device's OS (default: %(default)s)",
    )
    parser.add_argument(
        "--app-version",
        default="1.0.0",
        help="the app's version (default: %(default)s)",
    )
    parser.add_argument("--app-key", default="", help="the app key")
    parser.add_argument(
        "--data-dir",
        help="the local store (default: ./.msync-device/INSTANCE)",
    )
    parser.add_argument(
        "--no-ack",
        action="store_true",
        help="print ops but never report them, so they come again",
    )
    parser.add_argument(
        "--count",
        type=_positive_int,
        help="exit 0 once this many ops were printed",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        help="give up after this many seconds (exit 1 if --count ops "
        "have not come; exit 0 without --count)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="log connections too, not only warnings and errors",
    )


async def watch(
    reactor: IReactorTime,
    args: argparse.Namespace,
    *,
    endpoint: IStreamClientEndpoint | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """
    Run the device that C{args} describe until it is done; return the
    exit status.

    @param endpoint: Connect through this instead of TLS to the server.
    @param out: Where the JSON lines go; standard output if not given.
    @param err: Where the reasons for failing go; standard error if not
        given.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if (args.user is None) != (args.session is None):
        err.write(f"{_PROG}: --user and --session go together\n")
        return 1
    data_dir = args.data_dir or os.path.join(".msync-device", args.instance)

    try:
        client = DeviceClient(
            reactor,
            args.host,
            args.port,
            args.ca,
            args.instance,
            args.os,
            args.app_version,
            data_dir,
            app_key=args.app_key,
            device_id=args.device_id,
            ack_on_receive=False,
            endpoint=endpoint,
        )
        if args.user is not None:
            client.update_user_info(args.user, args.session)
    except (ValueError, TLSConfigError, LocalStoreError) as e:
        err.write(f"{_PROG}: {e}\n")
        return 1

    done: Deferred[int] = Deferred()
    printed = 0

    def received(message: SyncMessage) -> None:
        nonlocal printed
        # Ops past --count stay pending, unreported, for the next run.
        if done.called:
            return
        out.write(format_message(message) + "\n")
        out.flush()
        if not args.no_ack:
            client.report_msg_received(message)
        printed += 1
        if args.count is not None and printed >= args.count:
            done.callback(0)

    def refused(error: Error) -> None:
        if error.code in FATAL_ERRORS and not done.called:
            err.write(
                f"{_PROG}: the server refused the device: "
                f"{error.code}: {error.text}\n"
            )
            done.callback(2)

    def timed_out() -> None:
        if done.called:
            return
        if args.count is None:
            done.callback(0)
            return
        err.write(
            f"{_PROG}: timed out after {args.timeout:g} s with "
            f"{printed} of {args.count} ops\n"
        )
        done.callback(1)

    timer = None
    if args.timeout is not None:
        timer = reactor.callLater(args.timeout, timed_out)
    client.on_error(refused)
    for biz in args.biz:
        client.register_biz(biz, received)
    client.app_to_foreground()

    try:
        status = await done
    finally:
        if timer is not None and timer.active():
            timer.cancel()
        # Closing lets the last acks out before the connection goes.
        await client.close()
    return status


def _log_to_stderr(verbose: bool) -> None:
    level = LogLevel.info if verbose else LogLevel.warn
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=level)],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def run(args: argparse.Namespace) -> int:
    """Run C{msync device} with the parsed C{args}; exits the process."""
    # The command line is where the global reactor gets chosen.
    from twisted.internet.task import react

    _log_to_stderr(args.verbose)

    async def main(reactor: IReactorTime) -> None:
        status = await watch(reactor, args)
        if status:
            raise SystemExit(status)

    react(main)
