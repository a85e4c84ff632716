"""
C{msync admin}: the admin API (C{docs/admin-api.md}) from a shell.

    msync admin --url URL (--user U --password P | --token T) [--json]
        GROUP ACTION [options]

The groups are C{instance}, C{key}, C{config}, C{send}, C{lookup},
C{signature}, C{token} and C{admin}; C{--help} on each lists its
actions.  The password and the token may instead come from the
environment (C{MSYNC_ADMIN_PASSWORD}, C{MSYNC_ADMIN_TOKEN}), which keeps
them out of the process list.

Answers are printed for people (aligned tables, C{key: value} lines), or
as the API's JSON with C{--json}.  Exit status: 0 on success; 1 when the
API refused (the reason goes to standard error) or a send failed; 2 when
the API could not be reached or the command line is wrong.

This module reads the command line and runs it.  The subcommands and
their options are in L{msync.console.admin_commands}, the HTTP client in
L{msync.console.admin_client}, and the printing for people in
L{msync.console.admin_text}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from twisted.internet.interfaces import IReactorTime

from msync.cli_support import UNREACHABLE, run_with_agent, why
from msync.console.admin_client import AdminClient, Refused, UnexpectedAnswer
from msync.console.admin_commands import Usage, add_arguments

__all__ = [
    "AdminClient",
    "Refused",
    "UnexpectedAnswer",
    "add_arguments",
    "admin",
    "run",
]

_PROG = "msync admin"


async def _connect(
    args: argparse.Namespace,
    http: Any,
    clock: IReactorTime,
    environ: Mapping[str, str],
) -> AdminClient:
    token = args.token or environ.get("MSYNC_ADMIN_TOKEN")
    password = args.password or environ.get("MSYNC_ADMIN_PASSWORD")
    if args.user and token:
        raise Usage("give --user and --password, or --token, not both")
    if not args.user and not token:
        raise Usage("give --user and --password, or --token")
    if args.user and not password:
        raise Usage("--user needs --password")
    try:
        client = AdminClient(http, args.url, clock=clock, timeout=args.timeout)
    except ValueError as e:
        raise Usage(str(e)) from e
    if token:
        client.use_token(token)
    else:
        await client.login(args.user, password or "")
    return client


async def admin(
    args: argparse.Namespace,
    http: Any,
    clock: IReactorTime,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """
    Run the command C{args} describe; print the answer; return the exit
    status.

    @param http: An C{IAgent}, or treq's C{HTTPClient} (or C{StubTreq}).
    @param clock: Times calls out.
    @param environ: Where the password or token may come from instead
        (default: the process environment).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    environ = os.environ if environ is None else environ
    try:
        client = await _connect(args, http, clock, environ)
        outcome = await args.command(client, args)
    except (Usage, OSError) as e:
        err.write(f"{_PROG}: {e}\n")
        return 2
    except UNREACHABLE as e:
        err.write(f"{_PROG}: cannot reach {args.url}: {why(e)}\n")
        return 2
    except Refused as e:
        err.write(f"{_PROG}: refused: {e}\n")
        return 1
    except UnexpectedAnswer as e:
        err.write(f"{_PROG}: {e}\n")
        return 1

    if args.json:
        out.write(json.dumps(outcome.data, indent=2, ensure_ascii=False))
        out.write("\n")
    else:
        out.write(outcome.text)
        if outcome.note:
            err.write(f"{_PROG}: {outcome.note}\n")
    out.flush()
    return 0 if outcome.ok else 1


def run(args: argparse.Namespace) -> int:
    """Run C{msync admin} with the parsed C{args}; exits the process."""
    return run_with_agent(lambda reactor, agent: admin(args, agent, reactor))
