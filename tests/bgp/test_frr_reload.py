"""A reload in FRR mode, as vtysh commands: only what changed, only the sessions it touches (pure).

``bgpd_changes(old, new)`` compares two rendered bgpd configs.  tests/bgp/test_frr_reload_netns.py
applies the same commands to a real bgpd and watches the sessions.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Interface, ip_network
from pathlib import Path

from alt_router.bgp.frr_config import bgpd_changes, render_frr_config
from alt_router.node.config import NodeConfig, PeerConfig, load_config
from alt_router.rib.aggregate import AggregateSpec

ROOT = Path(__file__).resolve().parents[2]
B, C = "10.255.1.2", "10.255.2.2"  # docs/examples/node-a.toml: peer b carries IPv4 and IPv6, c IPv4


def node_a() -> NodeConfig:
    return load_config(ROOT / "docs" / "examples" / "node-a.toml")


def bgpd(cfg: NodeConfig, vrf: str | None = None) -> str:
    return render_frr_config(cfg, vrf=vrf).bgpd


def with_peer(cfg: NodeConfig, name: str, **changes: object) -> NodeConfig:
    peers = tuple(dataclasses.replace(p, **changes) if p.name == name else p for p in cfg.peers)
    return dataclasses.replace(cfg, peers=peers)


def peer_d(cfg: NodeConfig) -> PeerConfig:
    """A third peer, IPv4 only, as c is."""
    tunnel = dataclasses.replace(cfg.peers[1].tunnel, local_ipv4=IPv4Interface("10.255.3.1/30"),
                                 remote_ipv4=IPv4Address("10.255.3.2"))
    return dataclasses.replace(cfg.peers[1], name="d", asn=65004, tunnel=tunnel)


def scenarios() -> dict[str, tuple[NodeConfig, NodeConfig]]:
    """Reloads (before, after) that must apply live: tests/bgp/test_frr_reload_netns.py checks that
    a real bgpd given ``before`` and then the commands ends up as one started with ``after``."""
    cfg = node_a()
    accept = (ip_network("153.16.0.0/13"), ip_network("153.32.0.0/12"), ip_network("2001:db8::/32"))
    agg = dataclasses.replace(cfg.eid, announce=(ip_network("153.16.2.0/24"), *cfg.eid.announce[1:]),
                              aggregates=(AggregateSpec(ip_network("153.16.0.0/12")),))
    with_agg = dataclasses.replace(cfg, eid=agg)
    return {
        "peer added": (cfg, dataclasses.replace(cfg, peers=(*cfg.peers, peer_d(cfg)))),
        "peer removed": (cfg, dataclasses.replace(cfg, peers=cfg.peers[:1])),
        "password changed": (cfg, with_peer(cfg, "b", md5_password="new-secret")),
        "password removed": (cfg, with_peer(cfg, "b", md5_password=None)),
        "password added": (cfg, with_peer(cfg, "c", md5_password="c-secret")),
        "max_prefix": (cfg, with_peer(cfg, "b", max_prefix=50)),
        "hold time": (cfg, with_peer(cfg, "c", hold_time=30)),
        "description": (cfg, with_peer(cfg, "c", description="the c node")),
        "peer ASN": (cfg, with_peer(cfg, "c", asn=65033)),
        "accept wider": (cfg, dataclasses.replace(cfg, eid=dataclasses.replace(cfg.eid, accept=accept))),
        "accept without IPv6": (cfg, dataclasses.replace(cfg, eid=dataclasses.replace(cfg.eid,
                                                                                    accept=accept[:1]))),
        "announce and aggregate": (cfg, with_agg),
        "aggregate options": (with_agg, dataclasses.replace(cfg, eid=dataclasses.replace(
            agg, aggregates=(AggregateSpec(ip_network("153.16.0.0/12"), summary_only=True, as_set=True),)))),
        "family dropped": (cfg, with_peer(cfg, "b", families=("ipv4",))),
        "family added": (with_peer(cfg, "b", families=("ipv4",)), cfg),
        "several": (cfg, with_peer(dataclasses.replace(cfg, peers=cfg.peers[:1]), "b",
                                   md5_password="rotated")),
    }


def test_every_scenario_applies_live() -> None:
    for name, (before, after) in scenarios().items():
        change = bgpd_changes(bgpd(before), bgpd(after))
        assert change.restart is None and change.configure, name


def test_the_same_config_changes_nothing() -> None:
    cfg = node_a()
    assert bgpd_changes(bgpd(cfg), bgpd(cfg)).empty
    # The header comments (source file name) are not configuration.
    moved = dataclasses.replace(cfg, source="/elsewhere.toml")
    assert bgpd_changes(bgpd(cfg), bgpd(moved)).empty


def test_a_new_peer_is_added_and_no_other_session_is_touched() -> None:
    cfg = node_a()
    new = dataclasses.replace(cfg, peers=(*cfg.peers, peer_d(cfg)))
    change = bgpd_changes(bgpd(cfg), bgpd(new))
    assert change.restart is None and change.touched == ("10.255.3.2",)
    assert change.configure == (
        "configure terminal", "router bgp 65001",
        "neighbor 10.255.3.2 remote-as 65004",
        "neighbor 10.255.3.2 description ALT peer d",
        "neighbor 10.255.3.2 update-source 10.255.3.1",
        "neighbor 10.255.3.2 timers 30 90",
        "neighbor 10.255.3.2 timers connect 5",
        "address-family ipv4 unicast",
        "neighbor 10.255.3.2 activate",
        "neighbor 10.255.3.2 route-map ALT-IN-V4 in",
        "neighbor 10.255.3.2 route-map ALT-OUT out",
        "neighbor 10.255.3.2 maximum-prefix 500 restart 1",
        "exit-address-family", "exit")
    assert change.clear == ()  # a new session needs no reset or refresh


def test_a_removed_peer_is_one_no_neighbor() -> None:
    cfg = node_a()
    new = dataclasses.replace(cfg, peers=cfg.peers[:1])
    change = bgpd_changes(bgpd(cfg), bgpd(new))
    # bgpd closes that session with a Cease (RFC 4486 §4, subcode 3 "Peer De-configured") and
    # drops its per-family settings with it: nothing else is sent.
    assert change.configure == ("configure terminal", "router bgp 65001", f"no neighbor {C}", "exit")
    assert change.touched == (C,) and change.clear == ()


def test_a_new_password_replaces_the_old_one_on_that_session_only() -> None:
    cfg = node_a()
    change = bgpd_changes(bgpd(cfg), bgpd(with_peer(cfg, "b", md5_password="new-secret")))
    # RFC 2385: bgpd resets the session itself when its TCP-MD5 key changes.
    assert change.configure == ("configure terminal", "router bgp 65001", f"neighbor {B} password new-secret",
                                "exit")
    assert change.touched == (B,) and change.clear == ()
    change = bgpd_changes(bgpd(cfg), bgpd(with_peer(cfg, "b", md5_password=None)))
    assert change.configure[2:] == (f"no neighbor {B} password alt-a-b", "exit")
    change = bgpd_changes(bgpd(cfg), bgpd(with_peer(cfg, "c", md5_password="c-secret")))
    assert change.configure[2:] == (f"neighbor {C} password c-secret", "exit") and change.touched == (C,)


def test_max_prefix_is_replaced_per_family_without_a_reset() -> None:
    cfg = node_a()
    change = bgpd_changes(bgpd(cfg), bgpd(with_peer(cfg, "b", max_prefix=50)))
    assert change.configure == (
        "configure terminal", "router bgp 65001",
        "address-family ipv4 unicast", f"neighbor {B} maximum-prefix 50 restart 1", "exit-address-family",
        "address-family ipv6 unicast", f"neighbor {B} maximum-prefix 50 restart 1", "exit-address-family",
        "exit")
    # bgpd checks the new limit against what the session holds now (RFC 4486 §4 if over it).
    assert change.clear == () and change.touched == (B,)


def test_a_new_hold_time_resets_that_session() -> None:
    cfg = node_a()
    change = bgpd_changes(bgpd(cfg), bgpd(with_peer(cfg, "c", hold_time=30)))
    assert change.configure[2:] == (f"neighbor {C} timers 10 30", "exit")
    # RFC 4271 §4.2: the hold time is agreed in the OPEN; only a new session uses the new one.
    assert change.clear == (f"clear bgp vrf default {C}",)
    assert change.touched == (C,)


def test_description_changes_live_without_a_reset() -> None:
    cfg = node_a()
    change = bgpd_changes(bgpd(cfg), bgpd(with_peer(cfg, "c", description="the c node")))
    assert change.configure[2:] == (f"neighbor {C} description the c node", "exit")
    assert change.clear == ()


def test_a_filter_change_refreshes_the_sessions_of_that_family() -> None:
    cfg = node_a()
    accept = (ip_network("153.16.0.0/13"), ip_network("153.32.0.0/12"), ip_network("2001:db8::/32"))
    new = dataclasses.replace(cfg, eid=dataclasses.replace(cfg.eid, accept=accept))
    change = bgpd_changes(bgpd(cfg), bgpd(new))
    assert change.restart is None and change.filters
    assert change.configure == (
        "configure terminal",
        "ip prefix-list ALT-EID-V4 seq 5 permit 153.16.0.0/13 le 32",  # replaces seq 5
        "ip prefix-list ALT-EID-V4 seq 10 permit 153.32.0.0/12 le 32")
    # RFC 2918 route refresh: routes now outside the EID space (RFC 6836 §7.1) leave, ones now
    # inside arrive, without a session reset.  IPv6's filter did not change.
    assert change.clear == (f"clear bgp vrf default ipv4 unicast {B} soft in",
                            f"clear bgp vrf default ipv4 unicast {C} soft in")
    assert change.touched == ()
    narrower = dataclasses.replace(cfg, eid=dataclasses.replace(cfg.eid, accept=accept[:1] + accept[2:]))
    change = bgpd_changes(bgpd(new), bgpd(narrower))
    assert change.configure == ("configure terminal",
                                "no ip prefix-list ALT-EID-V4 seq 10 permit 153.32.0.0/12 le 32")
    v6_gone = dataclasses.replace(cfg, eid=dataclasses.replace(cfg.eid, accept=accept[:1]))
    change = bgpd_changes(bgpd(cfg), bgpd(v6_gone))
    assert "ipv6 prefix-list ALT-EID-V6 seq 5 deny any" in change.configure
    assert f"clear bgp vrf default ipv6 unicast {B} soft in" in change.clear


def test_originations_and_aggregates_change_live() -> None:
    cfg = node_a()
    eid = dataclasses.replace(cfg.eid, announce=(ip_network("153.16.2.0/24"), *cfg.eid.announce[1:]),
                              aggregates=(AggregateSpec(ip_network("153.16.0.0/12")),))
    change = bgpd_changes(bgpd(cfg), bgpd(dataclasses.replace(cfg, eid=eid)))
    assert change.configure == (
        "configure terminal", "router bgp 65001", "address-family ipv4 unicast",
        "network 153.16.2.0/24", "aggregate-address 153.16.0.0/12", "no network 153.16.0.0/16",
        "exit-address-family", "exit")
    assert change.touched == () and change.clear == ()
    # New options replace the aggregate in place (bgpd re-creates it).
    summary = dataclasses.replace(eid, aggregates=(AggregateSpec(ip_network("153.16.0.0/12"),
                                                                 summary_only=True),))
    before, after = dataclasses.replace(cfg, eid=eid), dataclasses.replace(cfg, eid=summary)
    change = bgpd_changes(bgpd(before), bgpd(after))
    assert change.configure[3:-2] == ("aggregate-address 153.16.0.0/12 summary-only",)


def test_a_peer_losing_a_family_is_deactivated_there() -> None:
    cfg = node_a()
    change = bgpd_changes(bgpd(cfg), bgpd(with_peer(cfg, "b", families=("ipv4",))))
    assert change.configure == (
        "configure terminal", "router bgp 65001", "address-family ipv6 unicast",
        f"no neighbor {B} maximum-prefix 10000 restart 1", f"no neighbor {B} route-map ALT-OUT out",
        f"no neighbor {B} route-map ALT-IN-V6 in", f"no neighbor {B} activate",
        "exit-address-family", "exit")


def test_asn_router_id_and_vrf_need_a_restart() -> None:
    cfg = node_a()
    asn = dataclasses.replace(cfg, node=dataclasses.replace(cfg.node, asn=65009))
    change = bgpd_changes(bgpd(cfg), bgpd(asn))
    assert change.restart is not None and "ASN" in change.restart and "65009" in change.restart
    assert change.blocks == []
    rid = dataclasses.replace(cfg, node=dataclasses.replace(cfg.node, router_id=IPv4Address("192.0.2.9")))
    change = bgpd_changes(bgpd(cfg), bgpd(rid))
    assert change.restart is not None and change.restart.startswith("router-id changed")
    change = bgpd_changes(bgpd(cfg), bgpd(cfg, vrf="alt"))
    assert change.restart is not None and "VRF" in change.restart
    assert bgpd_changes("", bgpd(cfg)).restart is not None  # nothing to compare with


def test_a_vrf_instance_clears_in_its_vrf() -> None:
    cfg = node_a()
    change = bgpd_changes(bgpd(cfg, "alt"), bgpd(with_peer(cfg, "c", hold_time=30), "alt"))
    assert change.configure[1] == "router bgp 65001 vrf alt"
    assert change.clear == (f"clear bgp vrf alt {C}",)


def test_several_changes_touch_only_their_sessions() -> None:
    cfg = node_a()
    new = with_peer(dataclasses.replace(cfg, peers=cfg.peers[:1]), "b", md5_password="rotated")
    change = bgpd_changes(bgpd(cfg), bgpd(new))
    assert change.configure == ("configure terminal", "router bgp 65001", f"no neighbor {C}",
                                f"neighbor {B} password rotated", "exit")
    assert change.touched == (B, C)
    assert change.blocks == [list(change.configure)]
