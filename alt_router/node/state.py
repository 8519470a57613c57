"""The node's state directory (edge): the files it keeps there, documented in docs/operations.md::

    alt-router.pid     this daemon          exabgp.conf   rendered ExaBGP config
    exabgp.pid         ExaBGP (adoptable)   exabgp.log    ExaBGP's log
    exabgp.out         ExaBGP + bridge stdout/stderr
    bridge.sock        ExaBGP's bridge connects here
    control.sock       JSON-lines queries (``alt_router.node.control.query``)
    status.json        snapshot, every STATUS_INTERVAL s and on SIGUSR1
    announcements.json run-time announcements, re-announced after a restart

Every file is replaced atomically (``write_atomic``): a reader never sees half of one.  The files
are small and local, so each write is a few syscalls on the event loop.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alt_router.bgp.supervisor import process_matches, read_pidfile

log = logging.getLogger(__name__)

PIDFILE = "alt-router.pid"
STATUS_FILE = "status.json"
ANNOUNCEMENTS_FILE = "announcements.json"
EXABGP_CONFIG = "exabgp.conf"
STATUS_INTERVAL = 2.0


class DaemonError(RuntimeError):
    """The node cannot start (another daemon runs on the state dir, a tunnel cannot be made...)."""


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def claim_pidfile(state_dir: Path) -> None:
    """Write our pid, unless another alt-router runs on ``state_dir`` (DaemonError)."""
    path = state_dir / PIDFILE
    other = read_pidfile(path)
    if other is not None and other != os.getpid() and process_matches(other, ("alt",)):
        raise DaemonError(f"another alt-router (pid {other}) runs on {state_dir}")
    write_atomic(path, f"{os.getpid()}\n")


def release_pidfile(state_dir: Path) -> None:
    if read_pidfile(state_dir / PIDFILE) == os.getpid():
        (state_dir / PIDFILE).unlink(missing_ok=True)


def save_announcements(state_dir: Path, prefixes: Iterable[object]) -> None:
    write_atomic(state_dir / ANNOUNCEMENTS_FILE, json.dumps([str(p) for p in prefixes], indent=1) + "\n")


def load_announcements(state_dir: Path) -> list[Any]:
    """The saved run-time announcements (unchecked items); a missing or broken file is none."""
    path = state_dir / ANNOUNCEMENTS_FILE
    try:
        items = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except ValueError as exc:
        log.error("ignoring %s: %s", path, exc)
        return []
    return items if isinstance(items, list) else []


def status_totals(snap: dict[str, Any]) -> dict[str, Any]:
    """What status.json holds: a status snapshot with totals in place of the registration list, so
    writing it every STATUS_INTERVAL costs the same whatever the table sizes (the lists are paged:
    ``/v1/routes``, ``/v1/registrations``)."""
    mapping = snap.get("mapping")
    if isinstance(mapping, dict) and isinstance(mapping.get("registrations"), list):
        mapping["registrations"] = len(mapping["registrations"])
    return snap


def write_status(state_dir: Path, snap: dict[str, Any]) -> Path:
    path = state_dir / STATUS_FILE
    write_atomic(path, json.dumps(snap, indent=1, sort_keys=True, default=str) + "\n")
    return path
