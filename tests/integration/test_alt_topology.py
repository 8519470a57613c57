"""Three alt-router nodes in a line (a-b-c), FRR bgpd peering with a (TCP-MD5) and BIRD 2 with c,
every BGP session over userspace GRE.  One lab for the whole module; the tests run in order and
the last ones change it (a node stops, FRR overflows a's max-prefix)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from alt_router.lab import Lab, ProcessHandle, ordered_list, wait_until
from alt_router.lab.daemons import Bird, FrrBgpd, start_bird, start_frr
from tests.conftest import require_tool
from tests.integration.helpers import RunningNode, alt_topology

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# topologies/alt_line.toml: the ALT nodes, their tunnels and their sessions with f and r.
# Underlay addresses (f and r make their own tunnels, _tunnel below).
U = {"a": "10.40.0.1", "b": "10.40.0.2", "c": "10.40.0.3", "f": "10.40.0.4", "r": "10.40.0.5"}
MD5 = "alt-frr-md5"
ORIGIN = {
    "a": ("153.16.0.0/16", "2001:db8:a::/48"),
    "b": ("153.17.0.0/16", "2001:db8:b::/48"),
    "c": ("153.18.0.0/16", "2001:db8:c::/48"),
    "f": ("153.19.0.0/16", "2001:db8:f::/48"),
    "r": ("153.20.0.0/16", "2001:db8:e::/48"),
}
OUT_OF_SPACE = "10.99.0.0/16"
FRR_MAX_PREFIX = 20


FRR_CONF = f"""hostname f
!
router bgp 65010
 bgp router-id 10.255.3.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 no bgp default ipv4-unicast
 neighbor 10.255.3.1 remote-as 65001
 neighbor 10.255.3.1 timers connect 1
 neighbor 10.255.3.1 timers 3 9
 neighbor 10.255.3.1 disable-connected-check
 neighbor 10.255.3.1 update-source 10.255.3.2
 neighbor 10.255.3.1 password {MD5}
 address-family ipv4 unicast
  network {ORIGIN["f"][0]}
  network {OUT_OF_SPACE}
  neighbor 10.255.3.1 activate
 exit-address-family
 address-family ipv6 unicast
  network {ORIGIN["f"][1]}
  neighbor 10.255.3.1 activate
  neighbor 10.255.3.1 route-map v6nh out
 exit-address-family
!
route-map v6nh permit 10
 set ipv6 next-hop global fd00:3::2
!
line vty
!
"""

BIRD_CONF = f"""router id 10.255.4.2;
protocol device {{}}
protocol static static_ipv4 {{ ipv4; route {ORIGIN["r"][0]} blackhole; }}
protocol static static_ipv6 {{ ipv6; route {ORIGIN["r"][1]} blackhole; }}
protocol bgp peer1 {{
  local 10.255.4.2 as 65020;
  neighbor 10.255.4.1 as 65003;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 5;
  hold time 9;
  ipv4 {{ import all; export all; next hop self; }};
  ipv6 {{ import all; export all; next hop address fd00:4::2; }};
}}
"""


@dataclass
class LineAlt:
    """The module's lab: the three nodes (RunningNode), FRR on f and BIRD on r."""

    lab: Lab
    nodes: dict[str, RunningNode]
    frr: FrrBgpd
    bird: Bird


def _tunnel(lab: Lab, host: str, peer: str, n: int) -> ProcessHandle:
    argv = [sys.executable, "-m", "alt_router.cli", "tunnel", "--name", f"gre-{peer}", "--mode", "userspace",
            "--local", U[host], "--remote", U[peer], "--key", str(n),
            "--address", f"10.255.{n}.2/30", "--address", f"fd00:{n}::2/64"]
    proc = lab.spawn(host, argv, name="tunnel")
    wait_until(lambda: "UP" in lab.exec(host, ["ip", "link", "show", f"gre-{peer}"], check=False).stdout
               or not proc.running(), 15, what=f"tunnel in {host}")
    assert proc.running(), proc.log_tail()
    return proc


@pytest.fixture(scope="module")
def alt(lab_names: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LineAlt]:
    require_tool("bgpd", "/usr/lib/frr/bgpd")
    require_tool("vtysh")
    require_tool("bird")
    require_tool("birdc")
    workdir = tmp_path_factory.mktemp("alt")
    topology = alt_topology("alt_line.toml", lab_names("ndalt"))
    with Lab(topology.topology, workdir=workdir) as lab:
        _tunnel(lab, "f", "a", 3)
        _tunnel(lab, "r", "c", 4)
        nodes = {n.host: RunningNode(lab, topology, n.host, workdir).start() for n in topology.nodes}
        frr = start_frr(lab, "f", asn=65010, router_id="10.255.3.2", peers=[], config=FRR_CONF)
        bird = start_bird(lab, "r", asn=65020, router_id="10.255.4.2", peers=[], config=BIRD_CONF)
        yield LineAlt(lab, nodes, frr, bird)


def _everything_but(host: str) -> list[str]:
    return [p for h, prefixes in ORIGIN.items() if h != host for p in prefixes]


def test_every_aggregate_reaches_every_node(alt: LineAlt) -> None:
    for host, node in alt.nodes.items():
        node.wait_routes(_everything_but(host), timeout=45)
    # Transit: a hears c's and BIRD's routes through b, with the path to prove it.
    alt.nodes["a"].wait_json({"routes": {"153.20.0.0/16": {"as_path": ordered_list([65002, 65003, 65020])},
                                         "2001:db8:e::/48": {"peer": "b"}}})
    # And the ALT's routes reach the reference daemons at its edges.
    for prefix in (*ORIGIN["a"], *ORIGIN["b"], *ORIGIN["c"], *ORIGIN["r"]):
        if ":" not in prefix:
            alt.frr.wait_prefix(prefix, timeout=20)
    alt.bird.wait_route(ORIGIN["f"][0], timeout=20)


def test_md5_session_with_frr_is_up(alt: LineAlt) -> None:
    # FRR sets the TCP-MD5 key on its socket, so the kernel drops every unsigned segment:
    # an established session proves ExaBGP signs with the same key.
    alt.frr.wait_established("10.255.3.1", timeout=20)
    alt.nodes["a"].wait_json({"peers": {"f": {"up": True}}}, 20)


def test_import_filters_hold_against_frr(alt: LineAlt) -> None:
    a = alt.nodes["a"]
    a.wait_routes(ORIGIN["f"], absent=[OUT_OF_SPACE])
    # FRR sends a's own and a's transit routes back (65010 65001 ...): loop-checked here.
    wait_until(lambda: (d := a.status()["drops"].get("f", {})).get("own-asn", 0) >= 2
               and d.get("outside-eid-space", 0) >= 1, 20, what="a's drops of FRR's routes",
               on_timeout=a.diag)
    assert a.query({"cmd": "lookup", "address": "10.99.1.1"})["route"] is None
    for node in alt.nodes.values():
        assert OUT_OF_SPACE not in node.routes()


def test_stopping_a_node_withdraws_its_prefixes_everywhere(alt: LineAlt) -> None:
    c = alt.nodes["c"]
    assert c.process is not None
    c.process.signal(signal.SIGTERM)
    assert c.process.popen.wait(20) == 0, c.diag()
    gone = [*ORIGIN["c"], *ORIGIN["r"]]
    for host in ("a", "b"):
        alt.nodes[host].wait_routes(_everything_but(host)[:0], absent=gone, timeout=30)
    wait_until(lambda: not ({ORIGIN["c"][0], ORIGIN["r"][0]} & alt.frr.prefixes("ipv4")), 20,
               what="c's prefixes gone from FRR")
    assert "alt-r" not in alt.lab.exec("c", ["ip", "-o", "link"]).stdout


def test_max_prefix_from_frr_tears_the_session_down(alt: LineAlt) -> None:
    a = alt.nodes["a"]
    nets = [f" network 153.19.{i}.0/24" for i in range(FRR_MAX_PREFIX + 5)]
    alt.frr.vtysh("configure terminal", "router bgp 65010", "address-family ipv4 unicast", *nets)
    wait_until(lambda: a.status()["counters"].get("teardowns", 0) >= 1, 30,
               what="max-prefix teardown on a", on_timeout=a.diag)
    status = a.status()
    assert status["drops"]["f"].get("max-prefix", 0) >= 1
    assert status["teardowns"][0]["peer"] == "f"
    assert "max-prefix" in status["teardowns"][0]["reason"]
    wait_until(lambda: not [p for p in a.routes() if p.startswith("153.19.")], 10,
               what="FRR's routes gone from a with the session", on_timeout=a.diag)
    assert "tearing down the session with f" in (a.process.read_log() if a.process else "")
