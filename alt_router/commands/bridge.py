"""``alt-router bridge``: the API process ExaBGP runs; relays to the daemon's unix socket (not for humans)."""

from __future__ import annotations

import argparse
from pathlib import Path

from alt_router.bgp.bridge import DEFAULT_BUFFER, run_bridge


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "bridge",
        help="ExaBGP API process: relay ExaBGP <-> the alt-router daemon (started by ExaBGP)",
        description="Reads ExaBGP's JSON on stdin and relays it to the daemon's unix socket; writes the "
        "daemon's commands to stdout.  Reconnects when the daemon restarts, buffering meanwhile.",
    )
    p.add_argument("--socket", type=Path, required=True,
                   help="the daemon's bridge socket (STATE_DIR/bridge.sock)")
    p.add_argument("--buffer", type=int, default=DEFAULT_BUFFER,
                   help=f"lines kept while the daemon is away (default {DEFAULT_BUFFER})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.buffer < 1:
        raise SystemExit("alt-router bridge: --buffer must be at least 1")
    return run_bridge(args.socket, args.buffer)
