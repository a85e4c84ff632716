"""
The C{msync} command line: one subcommand per task.

  - C{msync certs [DIR]}: make development certificates if missing.
  - C{msync version}: print the version.
  - C{msync device ...}: a device that prints the ops pushed to it.
  - C{msync push ...}: send one op through a gateway, as a backend.
  - C{msync validator ...}: the reference user-consistency endpoint.
  - C{msync admin ...}: instances, keys, configs and sends, through the
    daemon's admin API.
"""

from __future__ import annotations

import argparse
import sys

from msync import __version__, devcerts
from msync.consistency import cli as validator_cli
from msync.console import admin_cli
from msync.device import cli as device_cli
from msync.gateway import cli as push_cli


def _certs(args: argparse.Namespace) -> int:
    return devcerts.main([args.directory])


def _version(args: argparse.Namespace) -> int:
    sys.stdout.write(f"msync {__version__}\n")
    return 0


def parser() -> argparse.ArgumentParser:
    """Build the command-line parser."""
    p = argparse.ArgumentParser(
        prog="msync",
        description="msync: server-to-device data sync. The daemon runs "
        "as `twistd -n msync`; this command does everything else.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("certs", help="make development TLS certificates")
    c.add_argument("directory", nargs="?", default="certs")
    c.set_defaults(run=_certs)
    v = sub.add_parser("version", help="print the version")
    v.set_defaults(run=_version)
    d = sub.add_parser("device", help="watch pushes arrive, as a device")
    device_cli.add_arguments(d)
    d.set_defaults(run=device_cli.run)
    g = sub.add_parser("push", help="send one op through a gateway")
    push_cli.add_arguments(g)
    g.set_defaults(run=push_cli.run)
    r = sub.add_parser(
        "validator",
        help="run the reference user-consistency endpoint (tenant side)",
    )
    validator_cli.add_arguments(r)
    r.set_defaults(run=validator_cli.run)
    a = sub.add_parser("admin", help="manage msync through its admin API")
    admin_cli.add_arguments(a)
    a.set_defaults(run=admin_cli.run)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = parser().parse_args(argv)
    status: int = args.run(args)
    return status
