"""Real-daemon sessions in the lab: FRR bgpd <-> ExaBGP and BIRD <-> ExaBGP over plain veths."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from alt_router.lab import Lab, Topology, wait_until
from alt_router.lab.daemon_text import BgpPeer, bird_protocol_name
from alt_router.lab.daemons import start_bird, start_exabgp, start_frr
from tests.conftest import require_tool

pytestmark = [pytest.mark.netns, pytest.mark.slow]

PAIR = """
name = "{name}"
[hosts.d]
[hosts.x]
[[links]]
a = {{ host = "d", ifname = "eth0", addresses = ["10.13.0.1/30", "fd13::1/64"] }}
b = {{ host = "x", ifname = "eth0", addresses = ["10.13.0.2/30", "fd13::2/64"] }}
"""


def test_frr_and_exabgp_exchange_routes(netns_lab: Callable[[str], str], tmp_path: Path) -> None:
    require_tool("bgpd", "/usr/lib/frr/bgpd")
    require_tool("vtysh")
    require_tool("exabgp")
    name = netns_lab("ltfrr")
    with Lab(Topology.from_toml(PAIR.format(name=name)), workdir=tmp_path) as lab:
        frr = start_frr(
            lab,
            "d",
            asn=65001,
            router_id="10.13.0.1",
            peers=[BgpPeer("10.13.0.2", 65002)],
            networks=["203.0.113.0/24", "2001:db8:13::/48"],
        )
        exa = start_exabgp(
            lab,
            "x",
            asn=65002,
            router_id="10.13.0.2",
            peers=[BgpPeer("10.13.0.1", 65001, local_address="10.13.0.2")],
            routes=["198.51.100.0/24"],
        )
        exa.wait_established("10.13.0.1")
        frr.wait_established("10.13.0.2")
        exa.wait_prefix("203.0.113.0/24")
        exa.wait_prefix("2001:db8:13::/48")
        frr.wait_prefix("198.51.100.0/24")
        # FRR's view of the route names ExaBGP's AS as the origin.
        table = frr.vtysh_json("show bgp ipv4 unicast 198.51.100.0/24 json")
        assert "65002" in str(table["paths"][0]["aspath"]["string"])
        assert frr.rundir.exists()
    # The frr-owned run directory goes with the lab; the config copy and the logs stay.
    assert not frr.rundir.exists()
    assert "no bgp ebgp-requires-policy" in (tmp_path / "d-bgpd.conf").read_text()
    assert (tmp_path / "d-bgpd.log").stat().st_size > 0  # bgpd --log stdout reached the lab log


def test_bird_and_exabgp_exchange_routes(netns_lab: Callable[[str], str], tmp_path: Path) -> None:
    require_tool("bird")
    require_tool("birdc")
    require_tool("exabgp")
    name = netns_lab("ltbird")
    with Lab(Topology.from_toml(PAIR.format(name=name)), workdir=tmp_path) as lab:
        bird = start_bird(
            lab,
            "d",
            asn=65003,
            router_id="10.13.0.1",
            peers=[BgpPeer("10.13.0.2", 65002)],
            networks=["198.18.0.0/15"],
        )
        exa = start_exabgp(
            lab,
            "x",
            asn=65002,
            router_id="10.13.0.2",
            peers=[BgpPeer("10.13.0.1", 65003, local_address="10.13.0.2")],
            routes=["192.0.2.0/24"],
        )
        exa.wait_established("10.13.0.1")
        bird.wait_established(bird_protocol_name(0))
        exa.wait_prefix("198.18.0.0/15")
        bird.wait_route("192.0.2.0/24")
        assert bird.protocols()[bird_protocol_name(0)].proto == "BGP"


def test_frr_with_zebra_installs_learned_routes_in_the_kernel(
    netns_lab: Callable[[str], str], tmp_path: Path
) -> None:
    require_tool("zebra", "/usr/lib/frr/zebra")
    require_tool("bgpd", "/usr/lib/frr/bgpd")
    require_tool("exabgp")
    name = netns_lab("ltzeb")
    with Lab(Topology.from_toml(PAIR.format(name=name)), workdir=tmp_path) as lab:
        frr = start_frr(
            lab, "d", asn=65001, router_id="10.13.0.1", peers=[BgpPeer("10.13.0.2", 65002)], zebra=True
        )
        start_exabgp(
            lab,
            "x",
            asn=65002,
            router_id="10.13.0.2",
            peers=[BgpPeer("10.13.0.1", 65001, local_address="10.13.0.2")],
            routes=["198.51.100.0/24"],
        )
        frr.wait_prefix("198.51.100.0/24")

        def kernel_route() -> str:
            return lab.exec("d", ["ip", "-o", "route", "show", "198.51.100.0/24"]).stdout.strip()

        route = wait_until(kernel_route, 10, what="kernel route from zebra")
        assert "via 10.13.0.2" in route and "proto bgp" in route, route
