"""``alt-router check -c node.toml``: validate a node config and print the ExaBGP config it renders.

``check_config_text`` is the whole check; ``alt-router lab up`` runs it on every node config it
generates before it builds anything, so a lab never starts a node that ``check`` would refuse.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from alt_router.bgp.exabgp_config import ExabgpConfigError
from alt_router.commands.etr import etr_auth_notes
from alt_router.gre.config import TunnelConfigError
from alt_router.node.config import ConfigError, NodeConfig, load_config, parse_config
from alt_router.node.daemon import exabgp_config_text, tunnel_configs


class CheckError(Exception):
    """A node config that ``alt-router run`` would refuse; the message names the file and the key."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "check",
        help="validate a node config and print the rendered ExaBGP config",
        description="Exit 0 and print the ExaBGP configuration `alt-router run` would use; exit 2 and "
        "list every problem otherwise.",
    )
    p.add_argument("-c", "--config", type=Path, required=True, help="node configuration (TOML)")
    p.add_argument("--exabgp-validate", action="store_true",
                   help="also run `exabgp validate` on the rendered config")
    p.set_defaults(func=run)


def check_config(config: NodeConfig) -> str:
    """Everything ``alt-router run`` derives from a parsed config; returns the ExaBGP config text."""
    try:
        tunnel_configs(config)
        if config.exabgp.config is not None:
            text = config.exabgp.config.read_text()
            return f"# operator-supplied ExaBGP config {config.exabgp.config}, used as is\n{text}"
        return exabgp_config_text(config)
    except (ExabgpConfigError, TunnelConfigError, OSError) as exc:
        raise CheckError(f"{config.source}: {exc}") from exc


def check_config_text(text: str, source: str) -> str:
    """``alt-router check`` on config ``text`` read from ``source`` (a file name, for the messages)."""
    try:
        config = parse_config(text, source=source)
    except ConfigError as exc:
        raise CheckError(str(exc)) from exc
    return check_config(config)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        text = check_config(config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except CheckError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(text, end="")
    for note in etr_auth_notes(config):  # the HMAC length choice, on stderr beside the config
        print(note, file=sys.stderr)
    if args.exabgp_validate:
        return _validate(config.exabgp.binary, text)
    return 0


def _validate(binary: str, text: str) -> int:
    exe = shutil.which(binary)
    if exe is None:
        print(f"cannot validate: {binary} not found", file=sys.stderr)
        return 1
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as fh:
        fh.write(text)
        fh.flush()
        proc = subprocess.run([exe, "validate", fh.name], capture_output=True, text=True, check=False,
                              env={"exabgp.daemon.user": "root", "PATH": "/usr/bin:/bin"})
    if proc.returncode != 0:
        print(f"exabgp validate failed:\n{proc.stdout}{proc.stderr}", file=sys.stderr)
        return 1
    return 0
