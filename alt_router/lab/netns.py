"""Namespaces, veth pairs, bridges, addresses, routes and sysctls (edge: the ``ip`` and ``sysctl`` tools).

Interfaces are created directly inside lab namespaces (a veth's peer is born in
the other namespace), so the root namespace never holds a lab interface and
deleting a lab's namespaces removes every link and bridge it made.  What can
outlive a namespace's name is a process still running in it, so removal kills
those first.

Why ``ip`` and not pyroute2: pyroute2 0.9.7 creates namespaces and per-namespace
netlink sockets from forked helper processes; here that left helpers running
inside lab namespaces and, intermittently, an interface created in the wrong
namespace.  One ``ip`` call per operation is slower (milliseconds) but exact.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from alt_router.lab.topology import IPInterface, Route, lab_netns_prefix

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")


class NetnsError(Exception):
    """A namespace, link, address or sysctl operation failed."""


def _ip(argv: Sequence[str], what: str) -> str:
    proc = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetnsError(f"{what}: ip {' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def create_netns(name: str) -> None:
    _ip(["netns", "add", name], f"cannot create namespace {name}")


def delete_netns(name: str) -> None:
    """Remove a namespace; absent is fine (teardown is idempotent)."""
    if name not in list_netns():
        return
    _ip(["netns", "delete", name], f"cannot remove namespace {name}")


def netns_pids(name: str) -> list[int]:
    """PIDs of processes whose network namespace is ``name`` (daemons that forked away included)."""
    proc = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return []
    return [int(p) for p in proc.stdout.split() if p.isdigit() and int(p) != os.getpid()]


def kill_pids(pids: Iterable[int], *, grace: float = 3.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL whatever is left."""
    pending = set(pids)
    for pid in list(pending):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pending.discard(pid)
    deadline = time.monotonic() + grace
    while pending and time.monotonic() < deadline:
        pending = {pid for pid in pending if _alive(pid)}
        if pending:
            time.sleep(0.05)
    for pid in pending:
        log.warning("pid %d ignored SIGTERM for %.1fs, sending SIGKILL", pid, grace)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    # Our own children linger as zombies until reaped; reap them so they stop counting as alive.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def set_sysctls(name: str, settings: Iterable[tuple[str, str]]) -> None:
    # /proc/sys/net shows the namespace of the *reading* process, so the write
    # has to happen from a process inside the namespace.
    args = [f"{k}={v}" for k, v in settings]
    if not args:
        return
    proc = subprocess.run(
        ["ip", "netns", "exec", name, "sysctl", "-q", "-w", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise NetnsError(f"sysctl in {name} failed ({' '.join(args)}): {proc.stderr.strip()}")


def add_veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    _ip(
        ["-n", ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b],
        f"cannot create veth {ns_a}/{if_a} <-> {ns_b}/{if_b}",
    )


def add_bridge(name: str, bridge: str) -> None:
    _ip(["-n", name, "link", "add", bridge, "type", "bridge"], f"cannot create bridge {bridge} in {name}")


def configure_interface(
    name: str,
    ifname: str,
    *,
    addresses: Iterable[IPInterface] = (),
    mtu: int | None = None,
    master: str | None = None,
) -> None:
    """Set MTU, bridge master and addresses, then bring the interface up (one ``ip -batch``)."""
    lines: list[str] = []
    if mtu is not None:
        lines.append(f"link set dev {ifname} mtu {mtu}")
    if master is not None:
        lines.append(f"link set dev {ifname} master {master}")
    lines += [f"addr add {addr.with_prefixlen} dev {ifname}" for addr in addresses]
    lines.append(f"link set dev {ifname} up")
    proc = subprocess.run(
        ["ip", "-n", name, "-batch", "-"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise NetnsError(f"cannot configure {ifname} in {name}: {proc.stderr.strip()}")


def add_route(name: str, route: Route) -> None:
    argv = ["-n", name, f"-{route.to.version}", "route", "add", route.to.with_prefixlen]
    if route.via is not None:
        argv += ["via", str(route.via)]
    if route.dev is not None:
        argv += ["dev", route.dev]
    _ip(argv, f"cannot add route {route.to} in {name}")


def stale_netns(lab: str) -> list[str]:
    prefix = lab_netns_prefix(lab)
    return [n for n in list_netns() if n.startswith(prefix)]


def remove_lab(lab: str, *, grace: float = 3.0) -> list[str]:
    """Remove everything lab ``lab`` left behind: its processes, then its namespaces.

    Returns the namespaces removed.  Safe to call when nothing is left.
    """
    names = stale_netns(lab)
    pids = [pid for name in names for pid in netns_pids(name)]
    if pids:
        log.info("lab %s: killing %d leftover process(es): %s", lab, len(pids), pids)
        kill_pids(pids, grace=grace)
    for name in names:
        delete_netns(name)
    return names
