"""Rendering the node's own FRR configuration (``[node] bgp = "frr"``), checked by bgpd's own parser."""

from __future__ import annotations

import dataclasses
import subprocess
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from alt_router.bgp.frr_config import (
    FrrConfigError,
    as_path,
    network_commands,
    originated,
    peer_states,
    render_frr_config,
)
from alt_router.node.config import NodeConfig, load_config
from alt_router.rib.aggregate import AggregateSpec
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
BGPD = "/usr/lib/frr/bgpd"
ZEBRA = "/usr/lib/frr/zebra"


def node_a() -> NodeConfig:
    return load_config(EXAMPLES / "node-a.toml")


def with_aggregates(cfg: NodeConfig, *aggs: AggregateSpec) -> NodeConfig:
    return dataclasses.replace(cfg, eid=dataclasses.replace(cfg.eid, aggregates=aggs))


def block(text: str, start: str, end: str) -> str:
    i = text.index(start)
    return text[i:text.index(end, i)]


def test_router_and_neighbors_on_tunnel_addresses() -> None:
    bgpd = render_frr_config(node_a()).bgpd
    router = block(bgpd, "router bgp 65001\n", "\nexit\n")
    for line in (" bgp router-id 192.0.2.1",
                 " neighbor 10.255.1.2 remote-as 65002",
                 " neighbor 10.255.1.2 update-source 10.255.1.1",
                 # hold_time 90 (RFC 4271 §4.4: keepalive a third of the hold time)
                 " neighbor 10.255.1.2 timers 30 90",
                 " neighbor 10.255.1.2 description node b over the 198.51.100.0/24 underlay",
                 " neighbor 10.255.2.2 remote-as 65003",
                 " neighbor 10.255.2.2 description ALT peer c",
                 # Originations need no route in zebra: site prefixes live as local routes or nowhere.
                 " no bgp network import-check"):
        assert line + "\n" in router, line
    assert "ebgp-requires-policy" in router and "no bgp ebgp-requires-policy" not in router


def test_filters_are_the_exabgp_modes() -> None:
    bgpd = render_frr_config(node_a()).bgpd
    # EID space inbound, per family, any length inside it (RFC 6836 §7.1: only EID prefixes).
    assert "ip prefix-list ALT-EID-V4 seq 5 permit 153.16.0.0/12 le 32\n" in bgpd
    assert "ipv6 prefix-list ALT-EID-V6 seq 5 permit 2001:db8::/32 le 128\n" in bgpd
    assert "route-map ALT-IN-V4 permit 10\n match ip address prefix-list ALT-EID-V4\n" in bgpd
    v4 = block(bgpd, " address-family ipv4 unicast\n", " exit-address-family")
    for line in ("  neighbor 10.255.1.2 activate", "  neighbor 10.255.1.2 route-map ALT-IN-V4 in",
                 "  neighbor 10.255.1.2 route-map ALT-OUT out",
                 "  neighbor 10.255.1.2 maximum-prefix 10000 restart 1",
                 "  neighbor 10.255.2.2 maximum-prefix 500 restart 1",
                 "  network 153.16.0.0/16"):
        assert line + "\n" in v4, line
    # Own ASN: FRR's default AS-path loop check (RFC 4271 §9.1.2) must not be switched off.
    assert "allowas-in" not in bgpd


def test_md5_password_only_where_configured() -> None:
    bgpd = render_frr_config(node_a()).bgpd
    assert " neighbor 10.255.1.2 password alt-a-b\n" in bgpd
    assert "neighbor 10.255.2.2 password" not in bgpd


@pytest.mark.parametrize("bad", ["two words", "tab\there", "new\nline"])
def test_unrenderable_password_is_refused(bad: str) -> None:
    cfg = node_a()
    peer = dataclasses.replace(cfg.peers[0], md5_password=bad)
    with pytest.raises(FrrConfigError, match="md5_password"):
        render_frr_config(dataclasses.replace(cfg, peers=(peer,)))


def test_ipv6_family_only_for_peers_that_carry_it() -> None:
    bgpd = render_frr_config(node_a()).bgpd
    v6 = block(bgpd, " address-family ipv6 unicast\n", " exit-address-family")
    assert "  network 2001:db8:a::/48\n" in v6
    assert "  neighbor 10.255.1.2 route-map ALT-IN-V6 in\n" in v6
    assert "10.255.2.2" not in v6  # c carries IPv4 only


def test_ipv6_only_session() -> None:
    cfg = node_a()
    b = cfg.peers[0]
    b6 = dataclasses.replace(b, families=("ipv6",), tunnel=dataclasses.replace(
        b.tunnel, local_ipv4=None, remote_ipv4=None))
    bgpd = render_frr_config(dataclasses.replace(cfg, peers=(b6,))).bgpd
    assert " neighbor fd00:255:1::2 remote-as 65002\n" in bgpd
    assert " neighbor fd00:255:1::2 update-source fd00:255:1::1\n" in bgpd
    assert " address-family ipv4 unicast" in bgpd  # the IPv4 announce still is a network
    assert "  neighbor fd00:255:1::2 activate" in block(bgpd, " address-family ipv6", "exit-address-family")


def test_empty_family_space_denies_everything() -> None:
    cfg = node_a()
    v4_only = dataclasses.replace(cfg, eid=dataclasses.replace(
        cfg.eid, accept=(ip_network("153.16.0.0/12"),), announce=(ip_network("153.16.0.0/16"),)))
    bgpd = render_frr_config(v4_only).bgpd
    # A route-map matching a missing prefix-list would accept anything.
    assert "ipv6 prefix-list ALT-EID-V6 seq 5 deny any\n" in bgpd


def test_vrf() -> None:
    bgpd = render_frr_config(node_a(), vrf="alt").bgpd
    assert "router bgp 65001 vrf alt\n" in bgpd
    assert network_commands(65001, "alt", ip_network("153.16.1.0/24")) == [
        "configure terminal", "router bgp 65001 vrf alt", "address-family ipv4 unicast",
        "network 153.16.1.0/24"]
    assert network_commands(65001, None, ip_network("2001:db8:a:1::/64"), withdraw=True)[-2:] == [
        "address-family ipv6 unicast", "no network 2001:db8:a:1::/64"]


def test_aggregates_and_run_time_originations() -> None:
    cfg = with_aggregates(node_a(),
                          AggregateSpec(ip_network("153.16.0.0/12"), summary_only=True, as_set=True),
                          AggregateSpec(ip_network("2001:db8::/32"), always=True))
    site = ip_network("153.16.1.0/24")
    bgpd = render_frr_config(cfg, extra=[site]).bgpd
    v4 = block(bgpd, " address-family ipv4 unicast\n", " exit-address-family")
    assert "  aggregate-address 153.16.0.0/12 summary-only as-set\n" in v4
    assert "  network 153.16.1.0/24\n" in v4
    v6 = block(bgpd, " address-family ipv6 unicast\n", " exit-address-family")
    assert "  aggregate-address 2001:db8::/32\n" in v6
    assert "  network 2001:db8::/32\n" in v6  # always: originated without contributors too
    assert originated(cfg, [site])[0] == ip_network("153.16.0.0/16")


def test_zebra_config_turns_forwarding_on() -> None:
    zebra = render_frr_config(node_a()).zebra
    assert "ip forwarding\n" in zebra and "ipv6 forwarding\n" in zebra
    assert "router bgp" not in zebra  # zebra logs each bgpd command it does not know as an error


def test_bgpd_and_zebra_accept_the_rendered_text(tmp_path: Path) -> None:
    require_tool("bgpd", BGPD)
    agg = AggregateSpec(ip_network("153.16.0.0/12"), summary_only=True, as_set=True)
    cfg = with_aggregates(node_a(), agg)
    for vrf in (None, "alt"):
        rendered = render_frr_config(cfg, vrf=vrf, extra=[ip_network("153.16.1.0/24")])
        for daemon, text in ((BGPD, rendered.bgpd), (ZEBRA, rendered.zebra)):
            path = tmp_path / "check.conf"
            path.write_text(text)
            path.chmod(0o644)
            argv = [daemon, "-C", "-f", str(path), "--log", "stdout"] + (["-Z"] if daemon == BGPD else [])
            run = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
            out = run.stdout + run.stderr
            assert run.returncode == 0 and "No such command" not in out and "% " not in out, out


def test_peer_states_from_summary_json() -> None:
    summary: dict[str, Any] = {
        "ipv4Unicast": {"peers": {"10.255.1.2": {"state": "Established"}, "10.255.2.2": {"state": "Active"}}},
        "ipv6Unicast": {"peers": {"10.255.1.2": {"state": "Established"}}},
        "junk": 3,
    }
    assert peer_states(summary) == {"10.255.1.2": "Established", "10.255.2.2": "Active"}
    # A session shut down by max-prefix in one family is not up, whatever the other says.
    summary["ipv6Unicast"]["peers"]["10.255.1.2"]["state"] = "Idle (PfxCt)"
    assert peer_states(summary)["10.255.1.2"] == "Idle (PfxCt)"
    assert peer_states({"ipv4Unicast": {"peers": {"x": "bad"}}}) == {}


def test_as_path_from_route_json() -> None:
    route = {"prefix": "153.16.0.0/16", "paths": [
        {"aspath": {"string": "65002 65003"}, "bestpath": {}},
        {"aspath": {"string": "65004 {65005,65006}"}, "bestpath": {"overall": True}},
        "junk",
    ]}
    assert as_path(route) == [[65004, 65005, 65006], [65002, 65003]]
    assert as_path({}) == []
