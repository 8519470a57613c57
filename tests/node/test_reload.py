"""SIGHUP reload: what ``reload.plan`` applies live and what needs a restart, and ``Node.reload``
applying new and removed peers and Map-Server sites (no tunnels, no ExaBGP: the pure parts)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from alt_router.node.config import NodeConfig, parse_config
from alt_router.node.daemon import Node
from alt_router.node.reload import plan
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
