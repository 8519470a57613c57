"""SIGHUP to a running FRR-mode node (``[node] bgp = "frr"``) hands bgpd a peer's new TCP-MD5 password
live: only that session resets, the node counts ``reload-live``, bgpd is never restarted.

The node (``Node`` in namespace n, its own zebra + bgpd) has sessions p1 and p2 with a plain FRR
bgpd in p over the veth of topologies/frr/lab_veth.toml (node_three_peers.toml less p3; the
sessions need no GRE, so the node runs without tunnels).  p1 gets a password in the node's file,
then SIGHUP: the node's reload plan treats it as live in this mode (node/reload.py,
``FRR_LIVE_PEER_KEYS``), bgpd gets ``neighbor X password`` through vtysh and resets that session
(RFC 2385: the segments of the old connection no longer verify), and p2's session is untouched:
its ``connectionsEstablished`` in the node's ``show bgp summary json`` stays as it was.  p1 comes
back once p has the same password.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alt_router.bgp.frr_config import ESTABLISHED
from alt_router.lab import Lab, wait_until
from alt_router.lab.daemon_text import BgpPeer
from alt_router.lab.daemons import start_frr
from alt_router.node.daemon import query
from tests.bgp.frr_netns import frr_lab_name, frr_state_root
from tests.integration.topologies.frr_topology import FILES, frr_lab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

P1, P2 = "10.0.0.2", "10.0.0.6"  # p's ends of the node's sessions p1, p2 (lab_veth.toml)
N1, N2 = "10.0.0.1", "10.0.0.5"  # the node's
PASSWORD = "rotated-secret"
# The node as ``alt-router run`` runs it (node/daemon.py ``serve``: SIGHUP reloads), without tunnels.
NODE = """
import asyncio, logging, sys
from alt_router.node.config import load_config
from alt_router.node.daemon import Node, serve
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
sys.exit(asyncio.run(serve(Node(load_config(sys.argv[1]), with_tunnels=False))))
"""


@pytest.fixture
def lab_name() -> Iterator[str]:
    yield from frr_lab_name("frrhup")


@pytest.fixture
def state_root() -> Iterator[Path]:
    yield from frr_state_root()


def node_text(state_dir: Path, pathspace: str, password: str | None = None) -> str:
    """node_three_peers.toml less p3, as the file the node reads again on SIGHUP."""
    text = (FILES / "node_three_peers.toml").read_text()
    text = text[:text.index('[[peers]]\nname = "p3"')]
    text = text.replace("[node]\n", f"[node]\nstate_dir = {json.dumps(str(state_dir))}\n", 1)
    if password is not None:
        text = text.replace('name = "p1"\n', f'name = "p1"\nmd5_password = {json.dumps(password)}\n', 1)
    return f"{text}\n[frr]\npathspace = {json.dumps(pathspace)}\n"


def test_sighup_gives_one_peer_a_password_without_resetting_the_other(
    lab_name: str, state_root: Path, tmp_path: Path,
) -> None:
    state_dir = state_root / "n"
    config = state_root / "n.toml"
    config.write_text(node_text(state_dir, f"{lab_name}-n"))

    def status() -> dict[str, Any]:
        try:
            return query(state_dir, {"cmd": "status", "routes": False}, timeout=5)
        except (OSError, ValueError) as exc:
            return {"error": str(exc)}

    def summary() -> dict[str, dict[str, Any]]:
        """The node's bgpd, ``show bgp summary json``: neighbor -> its entry (IPv4 unicast)."""
        out = subprocess.run(["vtysh", "--vty_socket", str(state_dir / "frr"), "-c",
                              "show bgp vrf default summary json"],
                             capture_output=True, text=True, timeout=20, check=False)
        try:
            peers = json.loads(out.stdout).get("ipv4Unicast", {}).get("peers", {})
        except ValueError:
            return {}
        return peers if isinstance(peers, dict) else {}

    def state(address: str) -> str | None:
        entry = summary().get(address, {})
        return str(entry.get("state")) if isinstance(entry, dict) else None

    def up(peer: str) -> bool | None:
        value = status().get("peers", {}).get(peer, {}).get("up")
        return None if value is None else bool(value)

    with Lab(frr_lab("lab_veth.toml", lab_name), workdir=tmp_path) as lab:
        p = start_frr(lab, "p", asn=65002, router_id="10.0.0.2", peers=[
            BgpPeer(remote, 65001, local_address=own, families=("ipv4",))
            for remote, own in ((N1, P1), (N2, P2))])
        node = lab.spawn("n", [sys.executable, "-c", NODE, str(config)], name="alt-router",
                         log=tmp_path / "n-alt-router.log")

        def diag() -> str:
            return (f"{json.dumps(status(), default=str)[:3000]}\n{json.dumps(summary())[:2000]}\n"
                    f"--- node log ---\n{node.log_tail(40)}")

        try:
            # Both sessions up, in FRR and in the node's view of it (its poll of FRR's summary).
            wait_until(lambda: up("p1") and up("p2"), 60, interval=0.3, what="p1 and p2 up at the node",
                       on_timeout=diag)
            before = summary()
            bgpd = status()["frr"]["pids"]["bgpd"]

            config.write_text(node_text(state_dir, f"{lab_name}-n", password=PASSWORD))
            os.kill(int((state_dir / "alt-router.pid").read_text()), signal.SIGHUP)
            wait_until(lambda: status().get("frr", {}).get("reload-live") == 1, 20, interval=0.2,
                       what="the reload applied live", on_timeout=diag)
            # bgpd resets p1 (RFC 2385); it stays down while p has no password, and the node sees it.
            wait_until(lambda: state(P1) not in (None, ESTABLISHED), 20, interval=0.2,
                       what="the session with p1 to reset", on_timeout=diag)
            wait_until(lambda: up("p1") is False, 20, interval=0.3, what="the node to see p1 down",
                       on_timeout=diag)

            p.vtysh("configure terminal", "router bgp 65002", f"neighbor {N1} password {PASSWORD}")
            wait_until(lambda: state(P1) == ESTABLISHED and up("p1"), 60, interval=0.3,
                       what="p1 established again with the password", on_timeout=diag)

            after = summary()
            assert after[P2]["state"] == ESTABLISHED
            assert after[P2]["connectionsEstablished"] == before[P2]["connectionsEstablished"], \
                "the reload reset the session with p2"
            assert after[P2]["connectionsDropped"] == before[P2]["connectionsDropped"]
            assert after[P1]["connectionsEstablished"] == before[P1]["connectionsEstablished"] + 1
            frr = status()["frr"]
            assert frr["pids"]["bgpd"] == bgpd and frr["reload-restart"] == 0  # never restarted
            assert frr["reload-live"] == 1 and frr["counters"]["reload-errors"] == 0
            assert f" neighbor {P1} password {PASSWORD}\n" in (state_dir / "frr" / "bgpd.conf").read_text()
            log = node.read_log()
            assert "reloaded" in log and "peers updated p1" in log and "needs a restart" not in log
        finally:
            pid = node.pid
            if node.running():
                os.kill(pid, signal.SIGTERM)  # the node alone: it stops its FRR itself
                wait_until(lambda: not node.running(), 20, what="the node to stop", on_timeout=diag)
            node.stop()
