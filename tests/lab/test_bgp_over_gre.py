"""FRR bgpd and ExaBGP peer on the inner addresses of a userspace GRE tunnel (``alt-router tunnel``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from alt_router.lab import Lab, ProcessHandle, Topology, wait_until
from alt_router.lab.daemon_text import BgpPeer
from alt_router.lab.daemons import start_exabgp, start_frr
from tests.conftest import require_tool

pytestmark = [pytest.mark.netns, pytest.mark.slow]

UNDERLAY = """
name = "{name}"
[hosts.a]
[hosts.b]
[[links]]
a = {{ host = "a", ifname = "eth0", addresses = ["10.14.0.1/24"] }}
b = {{ host = "b", ifname = "eth0", addresses = ["10.14.0.2/24"] }}
"""

INNER = {"a": ("10.255.0.1/30", "fd00:255::1/64"), "b": ("10.255.0.2/30", "fd00:255::2/64")}
UNDER = {"a": "10.14.0.1", "b": "10.14.0.2"}


def _tunnel(lab: Lab, host: str, peer: str, stats: Path) -> ProcessHandle:
    argv = [
        sys.executable,
        "-m",
        "alt_router.cli",
        "tunnel",
        "--name",
        "gre1",
        "--mode",
        "userspace",
        "--local",
        UNDER[host],
        "--remote",
        UNDER[peer],
        "--key",
        "42",
        "--stats",
        str(stats),
    ]
    for address in INNER[host]:
        argv += ["--address", address]
    return lab.spawn(host, argv, name="tunnel")


def _tunnel_ready(lab: Lab, host: str, proc: ProcessHandle) -> bool:
    if not proc.running():
        raise AssertionError(f"alt-router tunnel on {host} exited {proc.returncode}:\n{proc.log_tail()}")
    out = lab.exec(host, ["ip", "-o", "addr", "show", "dev", "gre1"], check=False).stdout
    return (
        INNER[host][0].split("/")[0] in out and "UP" in lab.exec(host, ["ip", "link", "show", "gre1"]).stdout
    )


def _gre1_counters(path: Path) -> tuple[int, int]:
    """(rx, tx) packets of gre1 from an ``alt-router tunnel --stats`` file; (0, 0) until it exists."""
    try:
        gre1 = json.loads(path.read_text())["tunnels"]["gre1"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return (0, 0)
    return (int(gre1["rx_packets"]), int(gre1["tx_packets"]))


def test_frr_and_exabgp_peer_across_a_userspace_gre_tunnel(
    netns_lab: Callable[[str], str], tmp_path: Path
) -> None:
    require_tool("bgpd", "/usr/lib/frr/bgpd")
    require_tool("vtysh")
    require_tool("exabgp")
    name = netns_lab("ltgre")
    with Lab(Topology.from_toml(UNDERLAY.format(name=name)), workdir=tmp_path) as lab:
        tunnels = {h: _tunnel(lab, h, p, tmp_path / f"{h}-stats.json") for h, p in (("a", "b"), ("b", "a"))}
        for host, proc in tunnels.items():
            wait_until(
                lambda h=host, p=proc: _tunnel_ready(lab, h, p),
                15,
                what=f"gre1 up in {host}",
                on_timeout=lambda p=proc: p.log_tail(),
            )
        frr = start_frr(
            lab,
            "a",
            asn=65001,
            router_id="10.255.0.1",
            peers=[BgpPeer("10.255.0.2", 65002)],
            networks=["203.0.113.0/24"],
        )
        exa = start_exabgp(
            lab,
            "b",
            asn=65002,
            router_id="10.255.0.2",
            peers=[BgpPeer("10.255.0.1", 65001, local_address="10.255.0.2")],
            routes=["198.51.100.0/24"],
        )
        exa.wait_established("10.255.0.1", timeout=25)
        frr.wait_established("10.255.0.2", timeout=10)
        exa.wait_prefix("203.0.113.0/24")
        frr.wait_prefix("198.51.100.0/24")
        # The session really rode the tunnel: both ends counted GRE packets in and out
        # (the stats file is rewritten every second, hence the wait).
        for host in ("a", "b"):
            wait_until(
                lambda h=host: min(_gre1_counters(tmp_path / f"{h}-stats.json")) >= 5,
                5,
                what=f"GRE packet counters in {host}",
                on_timeout=lambda h=host: (tmp_path / f"{h}-stats.json").read_text(),
            )
        for proc in tunnels.values():
            assert proc.running(), proc.log_tail()
