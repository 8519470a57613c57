"""``alt-router run -c node.toml``: run an ALT node in the foreground; SIGTERM stops it cleanly."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from alt_router.bgp.exabgp_config import ExabgpConfigError
from alt_router.gre.config import TunnelConfigError
from alt_router.gre.tunnel import ModeError
from alt_router.node.config import ConfigError, load_config
from alt_router.node.daemon import DaemonError, Node, serve
from alt_router.node.logging import setup as setup_logging

log = logging.getLogger("alt_router.run")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "run",
        help="run an ALT node: GRE tunnels, ExaBGP, the ALT RIB (foreground)",
        description="Brings up one GRE tunnel per peer, starts (or adopts) ExaBGP and keeps the ALT RIB. "
        "SIGTERM/SIGINT: stop ExaBGP (its sessions close, withdrawing our prefixes) and remove the "
        "tunnels.  SIGUSR1: write STATE_DIR/status.json.  See docs/operations.md.",
    )
    p.add_argument("-c", "--config", type=Path, required=True, help="node configuration (TOML)")
    p.add_argument("--state-dir", type=Path, help="override [node].state_dir")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Without -v the operator still wants to see sessions come and go; logfmt lines for journald.
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    if args.state_dir is not None:
        config = replace(config, node=replace(config.node, state_dir=args.state_dir))
    try:
        node = Node(config)
        code = asyncio.run(serve(node))
    except (DaemonError, ExabgpConfigError, TunnelConfigError, ModeError) as exc:
        log.error("%s", exc)
        return 1
    # The node has stopped cleanly (BGP speaker, tunnels, pidfile).  The interpreter's teardown of
    # a large RIB (a full GC pass, then one free per object: 1.7 s at 200,000 routes) would count
    # against the 3 s a SIGTERM may take (node/daemon.py), so the process ends here, with ``node``
    # still referenced.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
