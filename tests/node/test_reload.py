"""SIGHUP reload: what ``reload.plan`` applies live and what needs a restart, and ``Node.reload``
applying new and removed peers and Map-Server sites (no tunnels, no ExaBGP: the pure parts)."""

from __future__ import annotations

import dataclasses
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from alt_router.node.config import NodeConfig, parse_config
from alt_router.node.daemon import Node
from alt_router.node.reload import plan
from alt_router.node.view import DaemonView
from alt_router.types import Prefix

from .test_daemon_core import CONFIG, state, update

PEER_D = """
[[peers]]
name = "d"
asn = 65004
[peers.underlay]
local = "10.30.0.2"
remote = "10.30.0.4"
[peers.tunnel]
local_ipv4 = "10.255.3.1/30"
remote_ipv4 = "10.255.3.2"
"""
SITES = """
[map_server]
[[map_server.sites]]
name = "s1"
key = "k1"
algorithm = "hmac-sha256-128"
eid_prefixes = ["153.17.1.0/24"]
always_announce = true
"""


def cfg(text: str, state_dir: Path | None = None) -> NodeConfig:
    if state_dir is not None:
        text = text.replace('state_dir = "/nonexistent"', f'state_dir = "{state_dir}"')
    return parse_config(text)


def test_unchanged_config_applies_nothing() -> None:
    p = plan(cfg(CONFIG), cfg(CONFIG))
    assert not p.live_changes and p.restart == () and p.summary() == "nothing to apply"


def test_added_and_removed_peers_are_applied_live() -> None:
    p = plan(cfg(CONFIG), cfg(CONFIG + PEER_D))
    assert [x.name for x in p.peers_added] == ["d"] and p.live_changes and p.restart == ()
    without_c = CONFIG[:CONFIG.index('[[peers]]\nname = "c"')]
    p = plan(cfg(CONFIG), cfg(without_c))
    assert p.peers_removed == ("c",) and p.restart == ()
    assert p.summary() == "peers removed c"


def test_a_changed_peer_needs_a_restart_unless_only_max_prefix_changed() -> None:
    p = plan(cfg(CONFIG), cfg(CONFIG.replace("max_prefix = 3", "max_prefix = 30")))
    assert [x.max_prefix for x in p.peers_updated] == [30] and p.restart == ()
    p = plan(cfg(CONFIG), cfg(CONFIG.replace('remote = "10.30.0.3"', 'remote = "10.30.0.9"')))
    assert p.peers_updated == () and p.restart == ("peers changed: c",)
    assert "needs a restart: peers changed: c" in p.summary()


def test_kernel_gre_peers_and_other_sections_need_a_restart() -> None:
    kernel = CONFIG.replace('state_dir = "/nonexistent"',
                            'state_dir = "/nonexistent"\ntunnel_mode = "kernel"')
    p = plan(cfg(kernel), cfg(kernel + PEER_D))
    assert p.peers_added == () and p.restart == ("peers added/removed with kernel GRE tunnels: d",)
    p = plan(cfg(CONFIG), cfg(CONFIG + SITES))  # the Map-Server switched on
    assert p.sites is None and p.restart == ("[map_server] changed",)


def test_map_server_sites_are_applied_live_while_it_stays_enabled() -> None:
    p = plan(cfg(CONFIG + SITES), cfg(CONFIG + SITES.replace('"k1"', '"k2"')))
    assert p.sites is not None and p.sites[0].key == "k2" and p.sites_changed == ("s1",) and p.restart == ()


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(cfg(CONFIG + SITES, tmp_path), with_tunnels=False)


def test_node_reload_adds_a_peer_that_routes_are_exported_to(node: Node, tmp_path: Path) -> None:
    result = node.reload(cfg(CONFIG + SITES + PEER_D, tmp_path))
    assert [p.name for p in result.peers_added] == ["d"]
    assert [p.name for p in node.config.peers] == ["a", "c", "d"]
    assert node.tunnel_names["d"] == "alt-d"
    assert node.mapping is not None and node.mapping.forwarder.tunnels["d"] == "alt-d"
    assert "neighbor 10.255.3.2 {" in (tmp_path / "exabgp.conf").read_text()
    node.core.on_line(state("a", "up"), 1.0)
    node.core.on_line(update("a", "10.255.1.1", ["153.16.0.0/16"], [65001]), 2.0)
    assert any(c.startswith("neighbor 10.255.3.2 announce route 153.16.0.0/16")
               for c in node.core.on_bridge_connected())


def test_node_reload_removes_a_peer_and_withdraws_its_routes(node: Node, tmp_path: Path) -> None:
    node.core.on_line(state("c", "up"), 1.0)
    node.core.on_line(update("c", "10.255.2.2", ["153.16.5.0/24"], [65003]), 2.0)
    assert node.rib.get("153.16.5.0/24") is not None
    without_c = CONFIG[:CONFIG.index('[[peers]]\nname = "c"')] + SITES
    result = node.reload(cfg(without_c, tmp_path))
    assert result.peers_removed == ("c",)
    assert node.rib.get("153.16.5.0/24") is None and node.rib.peer("c") is None
    assert "c" not in node.tunnel_names
    assert node.mapping is not None and "c" not in node.mapping.forwarder.tunnels
    assert "10.255.2.2" not in (tmp_path / "exabgp.conf").read_text()


def test_node_reload_applies_new_sites_and_their_announcements(node: Node, tmp_path: Path) -> None:
    announced: list[Prefix] = []
    assert node.mapping is not None
    # Observe what the reload originates and withdraws.
    node.mapping._announce = announced.append
    node.mapping._withdraw = announced.remove
    moved = SITES.replace("153.17.1.0/24", "153.17.2.0/24")
    node.mapping.execute(node.mapping.ms.start())  # type: ignore[union-attr]
    assert [str(p) for p in announced] == ["153.17.1.0/24"]
    result = node.reload(cfg(CONFIG + moved, tmp_path))
    assert result.sites_changed == ("s1",)
    assert [str(p) for p in announced] == ["153.17.2.0/24"]
    assert node.mapping.site_prefixes() == set()  # always_announce: not tied to registrations


def test_an_invalid_config_is_refused_and_nothing_changes(node: Node, tmp_path: Path) -> None:
    source = tmp_path / "node.toml"
    source.write_text(CONFIG + "\n[bogus]\n")
    node.config = dataclasses.replace(node.config, source=str(source))
    result = node.reload()
    assert result.restart == ("config invalid",) and not result.live_changes
    assert [p.name for p in node.config.peers] == ["a", "c"]


# --- [node] bgp = "frr": bgpd takes a peer's password, ASN, hold time and [eid].accept live ---------

MODE = 'state_dir = "/nonexistent"'
FRR = CONFIG.replace(MODE, MODE + '\nbgp = "frr"')
# Each FRR_LIVE_PEER_KEYS change to peer a, in the file's words.
A_PEER = 'name = "a"\nasn = 65001\nmax_prefix = 3\n'
PEER_CHANGES = {
    "md5_password": A_PEER + 'md5_password = "s3cret"\n',
    "hold_time": A_PEER + "hold_time = 30\n",
    "asn": A_PEER.replace("65001", "65011"),
    "description": A_PEER + 'description = "to a"\n',
    "families": A_PEER + 'families = ["ipv4"]\n',
}
NARROW = 'accept = ["153.17.0.0/16", "2001:db8::/32"]'  # still holds announce and the site
WIDE = 'accept = ["153.16.0.0/12", "2001:db8::/32"]'


@pytest.mark.parametrize("key", sorted(PEER_CHANGES))
def test_frr_mode_applies_a_peers_session_settings_live(key: str) -> None:
    """FRR mode: bgpd takes the change per session (bgp/frr_config.bgpd_changes; a new password
    resets that session, RFC 2385; a hold time applies from the next OPEN, RFC 4271 §4.2)."""
    p = plan(cfg(FRR), cfg(FRR.replace(A_PEER, PEER_CHANGES[key])))
    assert [x.name for x in p.peers_updated] == ["a"] and p.restart == ()
    assert p.summary() == "peers updated a"


@pytest.mark.parametrize("key", sorted(PEER_CHANGES))
def test_exabgp_mode_still_restarts_for_a_peers_session_settings(key: str) -> None:
    p = plan(cfg(CONFIG), cfg(CONFIG.replace(A_PEER, PEER_CHANGES[key])))
    assert p.peers_updated == () and p.restart == ("peers changed: a",)


def test_frr_mode_a_peers_tunnel_change_is_still_a_tunnel_change() -> None:
    tunnel = FRR.replace('remote = "10.30.0.3"', 'remote = "10.30.0.9"')
    p = plan(cfg(FRR), cfg(tunnel))
    assert p.peers_updated == () and p.restart == ("peers changed: c",)
    # With a password change beside it, the tunnel change still decides.
    p = plan(cfg(FRR), cfg(tunnel.replace(A_PEER, PEER_CHANGES["md5_password"]).replace(
        'name = "c"\n', 'name = "c"\nmd5_password = "x"\n')))
    assert [x.name for x in p.peers_updated] == ["a"] and p.restart == ("peers changed: c",)
    p = plan(cfg(FRR), cfg(FRR.replace('name = "c"\n', 'name = "c"\nkey = 7\n')))  # the GRE key
    assert p.restart == ("peers changed: c",)


def test_frr_mode_applies_eid_accept_live_exabgp_mode_restarts() -> None:
    p = plan(cfg(FRR), cfg(FRR.replace(WIDE, NARROW)))
    assert p.accept is not None and [str(x) for x in p.accept] == ["153.17.0.0/16", "2001:db8::/32"]
    assert p.restart == () and p.live_changes
    assert p.summary() == "eid.accept 153.17.0.0/16, 2001:db8::/32"
    p = plan(cfg(CONFIG), cfg(CONFIG.replace(WIDE, NARROW)))
    assert p.accept is None and p.restart == ("eid.accept changed",)


def test_frr_mode_frr_section_aggregates_and_node_keys_need_a_restart() -> None:
    p = plan(cfg(FRR), cfg(FRR + '\n[frr]\nvrf = "alt"\n'))
    assert p.restart == ("[frr] changed",)
    # The ExaBGP mode runs no FRR: its [frr] section means nothing there, as before.
    assert plan(cfg(CONFIG), cfg(CONFIG + '\n[frr]\nvrf = "alt"\n')).restart == ()
    agg = '\n[[eid.aggregates]]\nprefix = "153.17.0.0/16"\n'
    with_agg = FRR.replace(WIDE, WIDE + agg)
    assert plan(cfg(FRR), cfg(with_agg)).restart == ("eid.aggregates changed",)
    p = plan(cfg(FRR), cfg(FRR.replace('asn = 65002', 'asn = 65012')))
    assert p.restart == ("node.asn changed",)
    # Switching the speaker is decided by the running mode's rules plus the restart it needs.
    p = plan(cfg(CONFIG), cfg(FRR.replace(A_PEER, PEER_CHANGES["md5_password"])))
    assert p.restart == ("node.bgp changed", "peers changed: a")


FRR_MR = FRR + "\n[map_resolver]\n"


@pytest.fixture
def frr_node(tmp_path: Path) -> Node:
    """An FRR-mode node, not started: ``FrrMode.reload`` outside a loop only records the config
    bgpd would get (the vtysh side is tests/bgp/test_frr_reload*.py)."""
    return Node(cfg(FRR_MR, tmp_path), with_tunnels=False)


def test_frr_mode_node_reload_hands_bgpd_the_peers_new_settings(frr_node: Node, tmp_path: Path) -> None:
    changed = FRR_MR.replace(A_PEER, PEER_CHANGES["asn"]).replace(
        'name = "c"\nasn = 65003\n', 'name = "c"\nasn = 65003\nmd5_password = "s3cret"\nhold_time = 30\n')
    result = frr_node.reload(cfg(changed, tmp_path))
    assert result.restart == () and [p.name for p in result.peers_updated] == ["a", "c"]
    assert frr_node.frr is not None
    bgpd = frr_node.frr.supervisor.render().bgpd
    assert " neighbor 10.255.1.1 remote-as 65011\n" in bgpd
    assert " neighbor 10.255.2.2 password s3cret\n" in bgpd and " neighbor 10.255.2.2 timers 10 30\n" in bgpd
    # What the node shows follows: /v1/peers, the status file, the config the poll reads.
    peers = {p["name"]: p for p in DaemonView(frr_node).peers()}
    assert peers["a"]["asn"] == 65011 and peers["c"]["asn"] == 65003
    assert frr_node.status(routes=False)["peers"]["a"]["asn"] == 65011
    assert frr_node.frr.config.peer("c").md5_password == "s3cret"  # type: ignore[union-attr]
    assert frr_node.rib.policy.next_hop_peer(ip_address("10.255.1.1")).asn == 65011


def test_frr_mode_node_reload_narrows_the_eid_space_everywhere(frr_node: Node, tmp_path: Path) -> None:
    mr = frr_node.mapping.mr if frr_node.mapping is not None else None
    eid = ip_address("153.16.0.1")
    assert mr is not None and mr.in_eid_space(eid)
    # Built before the reload: the negative reply's prefix for an unrouted EID is the space's.
    assert str(mr.negative_prefix(eid)) == "153.16.0.0/12"
    result = frr_node.reload(cfg(FRR_MR.replace(WIDE, NARROW), tmp_path))
    assert result.restart == () and result.accept is not None
    assert [str(p) for p in frr_node.config.eid.accept] == ["153.17.0.0/16", "2001:db8::/32"]
    assert frr_node.frr is not None
    bgpd = frr_node.frr.supervisor.render().bgpd
    assert "ip prefix-list ALT-EID-V4 seq 5 permit 153.17.0.0/16 le 32\n" in bgpd
    # The node's own import policy and the Map-Resolver (the 1-minute outage TTL only inside the
    # EID space; outside it RFC 9301 §8.4's 15 minutes) follow.
    assert not frr_node.rib.policy.accepts_prefix(ip_network("153.16.0.0/16"))
    assert frr_node.rib.policy.accepts_prefix(ip_network("153.17.1.0/24"))
    assert not mr.in_eid_space(eid)
    assert frr_node.mapping is not None and frr_node.mapping.mr is mr  # its counters and limits kept
    # Now outside: the least-specific prefix around the EID that hides none of the new space (§8.4).
    assert str(mr.negative_prefix(eid)) == "153.16.0.0/16"


def test_exabgp_mode_node_reload_keeps_the_old_settings_where_a_restart_is_needed(
    node: Node, tmp_path: Path,
) -> None:
    result = node.reload(cfg(CONFIG.replace(A_PEER, PEER_CHANGES["asn"]).replace(WIDE, NARROW) + SITES,
                             tmp_path))
    assert result.restart == ("eid.accept changed", "peers changed: a")
    assert node.config.peer("a").asn == 65001  # type: ignore[union-attr]
    assert [str(p) for p in node.config.eid.accept] == ["153.16.0.0/12", "2001:db8::/32"]
    assert node.rib.policy.accepts_prefix(ip_network("153.16.0.0/16"))
