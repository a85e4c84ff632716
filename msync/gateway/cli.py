"""
C{msync push}: send one op through a gateway, as a backend would.

The answer is printed as one JSON object on standard output (the fields
of L{GatewayResult}); reasons for failing go to standard error.

Exit status: 0 when the business call succeeded (C{OK},
C{DUPLICATED_BIZ_ID} or C{NOT_ONLINE}); 1 when it was refused, or the
answer could not be believed; 2 when the gateway could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any, TextIO

from twisted.internet.interfaces import IReactorTime

from msync.cli_support import UNREACHABLE, run_with_agent, why
from msync.gateway import signing
from msync.gateway.app import GLOBAL_METHOD, METHOD
from msync.gateway.client import (
    GatewayClient,
    UnexpectedAnswer,
    business_params,
)

__all__ = ["add_arguments", "push", "request_from_args", "run"]

_PROG = "msync push"


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare C{msync push}'s options on C{parser}."""
    parser.add_argument(
        "--endpoint",
        required=True,
        help="the gateway, e.g. http://127.0.0.1:8080/gateway.do",
    )
    parser.add_argument("--access-key", required=True, help="the key id")
    parser.add_argument("--secret", required=True, help="the key's secret")
    parser.add_argument(
        "--instance", required=True, help="the app's workspaceId_appId"
    )
    parser.add_argument("--biz", required=True, help="the biz type")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--link-token", help="the user or device to send to (syncdata)"
    )
    target.add_argument(
        "--global",
        dest="to_all",
        action="store_true",
        help="send to every device (syncglobal)",
    )
    payload = parser.add_mutually_exclusive_group(required=True)
    payload.add_argument("--payload", help="the payload, as UTF-8 text")
    payload.add_argument(
        "--payload-file", help="read the payload's bytes from this file"
    )
    parser.add_argument(
        "--third-msg-id", required=True, help="the op's idempotency id"
    )
    parser.add_argument(
        "--os", choices=["IOS", "ANDROID"], help="only to this platform"
    )
    parser.add_argument("--app-min-version", help="only to apps this new")
    parser.add_argument("--app-max-version", help="only to apps this old")
    parser.add_argument("--device-id", help="only to this device")
    parser.add_argument(
        "--start-date",
        help='not before "yyyy-MM-dd HH:mm:ss" (instance time zone)',
    )
    parser.add_argument(
        "--expire-date",
        help='not after "yyyy-MM-dd HH:mm:ss" (instance time zone)',
    )
    parser.add_argument(
        "--no-immediate",
        dest="immediate",
        action="store_false",
        help="store only; devices get it at their next sync",
    )
    parser.add_argument(
        "--sign-type",
        choices=sorted(signing.ALGORITHMS),
        default=signing.DEFAULT_ALGORITHM,
        help="the signature algorithm (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        help="seconds to wait for the answer (default: %(default)s)",
    )


def request_from_args(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """
    Return the method and business parameters C{args} ask for.

    @raise OSError: if C{--payload-file} cannot be read.
    """
    if args.payload_file is not None:
        with open(args.payload_file, "rb") as f:
            payload = f.read()
    else:
        payload = args.payload.encode("utf-8")
    business = business_params(
        args.instance,
        args.biz,
        payload,
        args.third_msg_id,
        link_token=args.link_token or "",
        immediate=args.immediate,
        os_type=args.os or "",
        app_min_version=args.app_min_version or "",
        app_max_version=args.app_max_version or "",
        device_id=args.device_id or "",
        start_date=args.start_date or "",
        expire_date=args.expire_date or "",
    )
    return (GLOBAL_METHOD if args.to_all else METHOD), business


async def push(
    clock: IReactorTime,
    args: argparse.Namespace,
    http: Any,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """
    Send the op C{args} describe; print the answer; return the exit
    status.

    @param http: An C{IAgent}, or treq's C{HTTPClient} (or C{StubTreq}).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        method, business = request_from_args(args)
        client = GatewayClient(
            http,
            args.endpoint,
            args.access_key,
            args.secret,
            clock=clock,
            sign_type=args.sign_type,
            timeout=args.timeout,
        )
    except (OSError, ValueError) as e:
        err.write(f"{_PROG}: {e}\n")
        return 1

    try:
        result = await client.call(method, business)
    except UNREACHABLE as e:
        err.write(f"{_PROG}: cannot reach {args.endpoint}: {why(e)}\n")
        return 2
    except UnexpectedAnswer as e:
        err.write(f"{_PROG}: {e}\n")
        return 1
    out.write(json.dumps(asdict(result), ensure_ascii=False) + "\n")
    out.flush()
    return 0 if result.result_code == "OK" and result.success else 1


def run(args: argparse.Namespace) -> int:
    """Run C{msync push} with the parsed C{args}; exits the process."""
    return run_with_agent(lambda reactor, agent: push(reactor, args, agent))
