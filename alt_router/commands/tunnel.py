"""``alt-router tunnel``: run GRE tunnels in the foreground so any router in the namespace can use them."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import time
from ipaddress import ip_address, ip_interface
from pathlib import Path
from types import FrameType
from typing import Any

from alt_router.gre.config import MODES, TunnelConfig, TunnelConfigError, check_set, load_toml
from alt_router.gre.tunnel import ModeError, Tunnels, make_tunnels

log = logging.getLogger("alt_router.tunnel")

STATS_INTERVAL = 1.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "tunnel",
        help="run GRE tunnels (kernel or userspace) until SIGTERM",
        description="Run one GRE tunnel from the options, or several from a TOML file (-c). "
        "Devices are removed on SIGTERM/SIGINT; SIGUSR1 logs the counters.",
    )
    p.add_argument("-c", "--config", type=Path, help="TOML file with [[tunnel]] tables (see docs/gre.md)")
    p.add_argument("--name", help="interface name of the tunnel, e.g. gre1")
    p.add_argument("--local", help="underlay source address")
    p.add_argument("--remote", help="underlay address of the peer")
    p.add_argument("--key", type=int, help="RFC 2890 key (both directions)")
    p.add_argument("--csum", action="store_true", help="send and require GRE checksums")
    p.add_argument("--seq", action="store_true", help="send sequence numbers")
    p.add_argument("--address", action="append", default=[], help="inner address/prefix (repeatable)")
    p.add_argument("--ttl", type=int, default=64, help="outer TTL / hop limit (default 64)")
    p.add_argument("--underlay-mtu", type=int, default=1500, help="MTU of the underlay path (default 1500)")
    p.add_argument("--mode", choices=MODES, help="kernel GRE, userspace GRE, or auto (default: auto)")
    p.add_argument("--stats", type=Path, help="write counters as JSON here every second and at exit")
    p.set_defaults(func=run)


def configs_from_args(args: argparse.Namespace) -> tuple[str, tuple[TunnelConfig, ...]]:
    """(mode, tunnels) from either -c or the single-tunnel options; the --mode option wins."""
    single = [args.name, args.local, args.remote]
    if args.config is not None:
        if any(v is not None for v in single) or args.address:
            raise TunnelConfigError("give either -c FILE or --name/--local/--remote, not both")
        try:
            text = args.config.read_text()
        except OSError as exc:
            raise TunnelConfigError(f"cannot read {args.config}: {exc.strerror}") from None
        mode, tunnels = load_toml(text)
        return args.mode or mode, tunnels
    if any(v is None for v in single):
        raise TunnelConfigError("need -c FILE, or all of --name, --local and --remote")
    try:
        config = TunnelConfig(
            name=args.name, local=ip_address(args.local), remote=ip_address(args.remote), key=args.key,
            checksum=args.csum, sequence=args.seq, ttl=args.ttl, underlay_mtu=args.underlay_mtu,
            addresses=tuple(ip_interface(a) for a in args.address),
        )
    except ValueError as exc:
        raise TunnelConfigError(str(exc)) from None
    return args.mode or "auto", check_set([config])


def write_stats(path: Path, stats: dict[str, Any]) -> None:
    """Replace ``path`` atomically so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _snapshot(tunnels: Tunnels) -> dict[str, Any]:
    return {"mode": tunnels.mode, "time": time.time(), "pid": os.getpid(), **tunnels.stats()}


def run(args: argparse.Namespace) -> int:
    try:
        mode, configs = configs_from_args(args)
        tunnels = make_tunnels(configs, mode)
    except (TunnelConfigError, ModeError) as exc:
        log.error("%s", exc)
        return 2

    stopping = False
    report = False

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        tunnels.stop()

    def on_report(signum: int, _frame: FrameType | None) -> None:
        nonlocal report
        report = True
        tunnels.stop()

    # Installed before any device exists, so an early SIGTERM still cleans up.
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_report)
    try:
        tunnels.open()
    except Exception as exc:
        log.error("cannot set up tunnels: %s", exc)
        return 1
    log.info("tunnels up (%s): %s", tunnels.mode, ", ".join(c.name for c in configs))
    try:
        next_write = time.monotonic()
        while not stopping:
            now = time.monotonic()
            if now >= next_write:
                if args.stats is not None:
                    write_stats(args.stats, _snapshot(tunnels))
                next_write = now + STATS_INTERVAL
            if report:
                report = False
                log.warning("counters: %s", json.dumps(tunnels.stats(), sort_keys=True))
            tunnels.poll(max(0.0, next_write - time.monotonic()))
        final = _snapshot(tunnels)
    finally:
        tunnels.close()
    if args.stats is not None:
        write_stats(args.stats, final)
    log.info("tunnels removed; exiting")
    return 0
