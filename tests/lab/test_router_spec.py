"""Reference BGP daemons in an ALT lab (``[alt.routers]``): what their configs, their tunnels and
the ALT nodes' sessions with them are made of, rendered from the topology (no namespaces).

The lab file is tests/integration/topologies/alt_line.toml: FRR on f (TCP-MD5, max-prefix) and
BIRD on r, both carrying IPv4 and IPv6 unicast over one session per tunnel (RFC 4760), the IPv6
routes with the tunnel's inner IPv6 address as next hop (RFC 2545 §3).
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path

import pytest

from alt_router.lab.alt_topology import AltTopology
from alt_router.lab.daemon_text import BgpPeer, render_bird, render_frr_bgpd
from alt_router.node.config import parse_config

LINE = Path(__file__).parents[1] / "integration" / "topologies" / "alt_line.toml"


def line() -> AltTopology:
    return AltTopology.from_toml(LINE)


def test_the_lab_file_gives_routers_both_families_and_a_max_prefix() -> None:
    alt = line()
    f, r = alt.router("f"), alt.router("r")
    assert (f.daemon, f.families, f.max_prefix) == ("frr", ("ipv4", "ipv6"), 20)
    assert (r.daemon, r.families, r.max_prefix) == ("bird", ("ipv4", "ipv6"), None)
    tunnels = [(t.a, t.b, t.md5_password) for t in alt.tunnels]
    assert tunnels[2:] == [("a", "f", "alt-frr-md5"), ("c", "r", None)]


def test_a_nodes_session_with_a_router_carries_its_families_and_max_prefix(tmp_path: Path) -> None:
    alt = line()
    a = parse_config(alt.node_config("a", tmp_path), "a")
    f = a.peer("f")
    ends = alt.ends(alt.tunnels[2], "a")
    assert f is not None and f.families == ("ipv4", "ipv6") and f.max_prefix == 20
    assert f.md5_password == "alt-frr-md5"
    assert f.tunnel.local_ipv6 is not None and str(f.tunnel.local_ipv6) == ends.inner6_local
    c = parse_config(alt.node_config("c", tmp_path), "c")
    r = c.peer("r")
    assert r is not None and r.families == ("ipv4", "ipv6") and r.max_prefix == c.node.max_prefix
    # An IPv4-only router (the default) gets an IPv4 session and no IPv6 tunnel addresses.
    v4 = replace(alt, routers=tuple(replace(x, families=("ipv4",), max_prefix=None) for x in alt.routers))
    f4 = parse_config(v4.node_config("a", tmp_path), "a").peer("f")
    assert f4 is not None and f4.families == ("ipv4",) and f4.tunnel.local_ipv6 is None


def test_frr_config_announces_both_families_with_the_tunnels_ipv6_next_hop() -> None:
    alt = line()
    f = alt.ends(alt.tunnels[2], "f")
    a_addr, f6 = f.inner4_remote, f.inner6_local.split("/")[0]
    conf = alt.frr_config("f")
    for line_ in (f"neighbor {a_addr} remote-as 65001", f"neighbor {a_addr} password alt-frr-md5",
                  f"neighbor {a_addr} timers 3 9", "network 153.19.0.0/16", "network 10.99.0.0/16",
                  "network 2001:db8:f::/48", f"neighbor {a_addr} route-map v6nh-1 out",
                  f"set ipv6 next-hop global {f6}"):
        assert line_ in conf, (line_, conf)
    v6 = conf[conf.index("address-family ipv6"):]
    assert f"neighbor {a_addr} activate" in v6[:v6.index("exit-address-family")]
    # The tunnel process gives the TUN the inner IPv6 address the next hop names.
    argv = alt.tunnel_argv(f)
    assert [argv[i + 1] for i, x in enumerate(argv) if x == "--address"] == [f.inner4_local, f.inner6_local]


def test_bird_config_has_an_ipv6_channel_on_the_ipv4_session() -> None:
    alt = line()
    r = alt.ends(alt.tunnels[3], "r")
    conf = alt.bird_config("r")
    assert f"neighbor {r.inner4_remote} as 65003;" in conf
    assert "ipv4 { import all; export all; next hop self; };" in conf
    assert f"ipv6 {{ import all; export all; next hop address {r.inner6_local.split('/')[0]}; }};" in conf
    assert "route 2001:db8:e::/48 blackhole;" in conf and "hold time 9;" in conf


def test_an_ipv4_only_router_activates_and_announces_ipv4_only() -> None:
    alt = line()
    v4 = replace(alt, routers=tuple(replace(x, families=("ipv4",)) for x in alt.routers))
    frr = v4.frr_config("f")
    assert "2001:db8:f::/48" not in frr and "route-map" not in frr
    assert "activate" not in frr[frr.index("address-family ipv6"):]
    assert "ipv6 {" not in v4.bird_config("r").split("protocol bgp")[1]
    argv = v4.tunnel_argv(v4.ends(v4.tunnels[2], "f"))
    assert argv.count("--address") == 1
    # What converged means follows: the routers' IPv6 prefixes are expected only when carried.
    assert "2001:db8:f::/48" not in v4.expected_routes("c")
    assert "2001:db8:f::/48" in alt.expected_routes("c") and "2001:db8:e::/48" in alt.expected_routes("a")
    assert "10.99.0.0/16" not in alt.expected_routes("a")  # outside alt.accept


def test_simulated_ribs_carry_ipv6_only_over_sessions_that_have_it() -> None:
    alt = line()
    v4 = replace(alt, routers=(replace(alt.router("f"), families=("ipv4",)), alt.router("r")))
    ribs = v4.simulate_ribs()
    assert ip_network("2001:db8:a::/48") not in ribs["f"] and ip_network("153.16.0.0/16") in ribs["f"]
    assert ip_network("2001:db8:e::/48") in ribs["a"] and ip_network("2001:db8:f::/48") not in ribs["c"]
    assert ribs["r"][ip_network("2001:db8:a::/48")] == (65003, 65002, 65001)


def test_daemon_text_refuses_ipv6_over_ipv4_without_a_next_hop() -> None:
    peer = BgpPeer("10.255.0.1", 65001, "10.255.0.2", families=("ipv4", "ipv6"))
    with pytest.raises(ValueError, match="ipv6_next_hop"):
        render_frr_bgpd(65010, "192.0.2.10", [peer], ["2001:db8:f::/48"])
    with pytest.raises(ValueError, match="ipv6_next_hop"):
        render_bird(65010, "192.0.2.10", [peer])
    with pytest.raises(ValueError, match="not ipv4 or ipv6"):
        BgpPeer("10.255.0.1", 65001, families=("ipv5",))
    # Without families each daemon keeps its default: FRR activates both, BIRD the session's own.
    plain = BgpPeer("10.255.0.1", 65001, "10.255.0.2")
    assert render_frr_bgpd(65010, "192.0.2.10", [plain]).count("neighbor 10.255.0.1 activate") == 2
    assert "ipv6 {" not in render_bird(65010, "192.0.2.10", [plain])
