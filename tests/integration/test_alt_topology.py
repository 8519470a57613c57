"""Three alt-router nodes in a line (a-b-c), FRR bgpd peering with a (TCP-MD5, max-prefix) and
BIRD 2 with c, every BGP session over userspace GRE and carrying IPv4 and IPv6 (RFC 4760).

Everything comes from topologies/alt_line.toml, started as ``alt-router lab up`` starts it: the
nodes' configs, the routers' tunnels and daemon configs.  One lab for the module; the tests run in
order and the last ones change it (a node stops, FRR overflows a's max-prefix).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import pytest

from alt_router.lab import Lab, ordered_list, wait_until
from alt_router.lab.daemons import Bird, FrrBgpd
from tests.conftest import require_tool
from tests.integration.helpers import LabAlt, alt_topology, start_alt

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# What each speaker originates (topologies/alt_line.toml).
ORIGIN = {
    "a": ("153.16.0.0/16", "2001:db8:a::/48"),
    "b": ("153.17.0.0/16", "2001:db8:b::/48"),
    "c": ("153.18.0.0/16", "2001:db8:c::/48"),
    "f": ("153.19.0.0/16", "2001:db8:f::/48"),
    "r": ("153.20.0.0/16", "2001:db8:e::/48"),
}
OUT_OF_SPACE = "10.99.0.0/16"  # f announces it; outside alt.accept


@pytest.fixture(scope="module")
def alt(lab_names: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabAlt]:
    require_tool("bgpd", "/usr/lib/frr/bgpd")
    require_tool("zebra", "/usr/lib/frr/zebra")
    require_tool("vtysh")
    require_tool("bird")
    require_tool("birdc")
    workdir = tmp_path_factory.mktemp("alt")
    topology = alt_topology("alt_line.toml", lab_names("ndalt"))
    with Lab(topology.topology, workdir=workdir) as lab:
        yield start_alt(lab, topology, workdir)


def _frr(alt: LabAlt) -> FrrBgpd:
    return alt.frr["f"]


def _bird(alt: LabAlt) -> Bird:
    return alt.bird["r"]


def _a_address_towards(alt: LabAlt, router: str) -> str:
    """The ALT node's inner IPv4 address on its tunnel with ``router``: the router's BGP neighbor."""
    (ends,) = alt.alt.tunnels_of(router)
    return ends.inner4_remote


def _everything_but(host: str) -> list[str]:
    return [p for h, prefixes in ORIGIN.items() if h != host for p in prefixes]


def test_every_prefix_reaches_every_node_and_both_reference_daemons(alt: LabAlt) -> None:
    for host, node in alt.nodes.items():
        node.wait_routes(_everything_but(host), timeout=45)
    # Transit: a hears c's and BIRD's routes through b, with the path to prove it (RFC 4271 §5.1.2).
    alt.nodes["a"].wait_json({"routes": {"153.20.0.0/16": {"as_path": ordered_list([65002, 65003, 65020])},
                                         "2001:db8:e::/48": {"peer": "b"}}})
    # And the ALT's routes reach the reference daemons at its edges, IPv6 included.
    for prefix in _everything_but("f"):
        _frr(alt).wait_prefix(prefix, timeout=20)
    for prefix in ORIGIN["f"]:
        _bird(alt).wait_route(prefix, timeout=20)


def test_md5_session_with_frr_is_up(alt: LabAlt) -> None:
    # FRR sets the TCP-MD5 key on its socket, so the kernel drops every unsigned segment:
    # an established session proves ExaBGP signs with the same key (RFC 2385).
    _frr(alt).wait_established(_a_address_towards(alt, "f"), timeout=20)
    alt.nodes["a"].wait_json({"peers": {"f": {"up": True}}}, 20)


def test_import_filters_hold_against_frr(alt: LabAlt) -> None:
    a = alt.nodes["a"]
    a.wait_routes(ORIGIN["f"], absent=[OUT_OF_SPACE])
    # FRR sends a's own and a's transit routes back (65010 65001 ...): loop-checked here (RFC 4271 §9.1.2).
    wait_until(lambda: (d := a.status()["drops"].get("f", {})).get("own-asn", 0) >= 2
               and d.get("outside-eid-space", 0) >= 1, 20, what="a's drops of FRR's routes",
               on_timeout=a.diag)
    # Counted as dropped, so never in the RIB: no route for an address in it.
    assert a.query({"cmd": "lookup", "address": "10.99.1.1"})["route"] is None
    for node in alt.nodes.values():
        node.wait_json({"routes": {OUT_OF_SPACE: None}}, what=f"{OUT_OF_SPACE} absent on {node.host}")


def test_stopping_a_node_withdraws_its_prefixes_everywhere(alt: LabAlt) -> None:
    c = alt.nodes["c"]
    assert c.process is not None
    c.process.signal(signal.SIGTERM)
    assert c.process.popen.wait(20) == 0, c.diag()
    gone = [*ORIGIN["c"], *ORIGIN["r"]]
    for host in ("a", "b"):
        alt.nodes[host].wait_routes([], absent=gone, timeout=30)
    wait_until(lambda: not ({ORIGIN["c"][0], ORIGIN["r"][0]} & _frr(alt).prefixes("ipv4")), 20,
               what="c's prefixes gone from FRR")
    # The daemon removes its tunnels before it exits (it exited: nothing to wait for).
    assert "alt-r" not in alt.lab.exec("c", ["ip", "-o", "link"]).stdout


def test_max_prefix_from_frr_tears_the_session_down(alt: LabAlt) -> None:
    a = alt.nodes["a"]
    limit = alt.alt.router("f").max_prefix
    assert limit is not None
    nets = [f" network 153.19.{i}.0/24" for i in range(limit + 5)]
    router_bgp = f"router bgp {alt.alt.router('f').asn}"
    _frr(alt).vtysh("configure terminal", router_bgp, "address-family ipv4 unicast", *nets)
    wait_until(lambda: a.status()["counters"].get("teardowns", 0) >= 1, 30,
               what="max-prefix teardown on a", on_timeout=a.diag)
    status = a.wait_json({"teardowns": [{"peer": "f"}]}, what="a's teardown record for f")
    assert status["drops"]["f"].get("max-prefix", 0) >= 1, status["drops"]
    assert "max-prefix" in status["teardowns"][0]["reason"], status["teardowns"]
    wait_until(lambda: not [p for p in a.routes() if p.startswith("153.19.")], 10,
               what="FRR's routes gone from a with the session", on_timeout=a.diag)
    process = a.process
    assert process is not None
    wait_until(lambda: "tearing down the session with f" in process.read_log(), 10,
               what="a logging the teardown", on_timeout=a.diag)
