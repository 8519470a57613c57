"""``alt-router check -c node.toml``: validate a node config and print the ExaBGP config it renders.

The check itself is ``alt_router.node.config_check`` (the lab runs it too); this is its command line.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from alt_router.commands.etr import etr_auth_notes
from alt_router.node.config import ConfigError, load_config
from alt_router.node.config_check import CheckError, check_config, check_config_text

__all__ = ["CheckError", "check_config", "check_config_text", "register", "run"]


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
