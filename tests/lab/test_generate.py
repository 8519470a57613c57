"""``alt-router lab generate``: a hierarchical ALT with hierarchical EID allocation (RFC 6836 §7.1:
EID prefixes are assigned so that each ALT router can aggregate what lies below it)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from ipaddress import IPv4Network, ip_network
from pathlib import Path
from typing import Any

import pytest

from alt_router.commands.check import check_config_text
from alt_router.lab.alt_topology import AltTopology, AltTopologyError
from alt_router.lab.generate import GeneratedAlt, GenerateError, generate


def _topology(
    levels: int = 3, fanout: int = 3, sites: int = 40, **kw: Any
) -> tuple[AltTopology, GeneratedAlt]:
    gen = generate(levels, fanout, sites, **kw)
    return AltTopology.from_toml(gen.text), gen


def test_counts_levels_fanout_sites_and_transits() -> None:
    alt, gen = _topology(levels=3, fanout=3, sites=40, frr_transits=2, bird_transits=1)
    assert gen.speakers == 13 + 3 + 1
    assert len([n for n in alt.nodes if not n.map_resolver]) == 1 + 3 + 9
    assert sum(n.map_resolver for n in alt.nodes) == 1
    assert sorted(r.daemon for r in alt.routers) == ["bird", "frr", "frr"]
    sites = [p for n in alt.nodes for s in n.sites for p in s.eid_prefixes]
    assert len(sites) == 40
    # Only the leaves are Map-Servers, each with 4 or 5 of the 40 sites.
    leaves = [n for n in alt.nodes if n.host.startswith("l2")]
    assert all(4 <= len(n.sites) <= 5 for n in leaves)
    assert not [n for n in alt.nodes if n.sites and not n.host.startswith("l2")]
    # A tree: every parent-child link is a tunnel, or two through a transit.
    assert len(alt.tunnels) == 12 + 3 + 1
    assert alt.itrs == ("itr",) and len(alt.etrs) == 1 and alt.demo is not None
    assert alt.demo.map_resolver == "mr0"


def test_allocation_is_hierarchical_and_non_overlapping() -> None:
    alt, _ = _topology(levels=3, fanout=3, sites=60)
    aggs = {n.host: n.aggregates[0].prefix for n in alt.nodes if n.aggregates}
    assert aggs["l0n0"] == ip_network("153.16.0.0/12")
    for level in (1, 2):
        blocks = [p for h, p in aggs.items() if h.startswith(f"l{level}")]
        assert len(blocks) == 3**level
        assert all(not a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1:]), blocks
    # Each child's block lies in its parent's (the parent is its tunnel peer one level up).
    for t in alt.tunnels:
        a, b = t.a, t.b
        if a in aggs and b in aggs and int(b[1]) == int(a[1]) + 1:
            assert aggs[b].subnet_of(aggs[a])  # type: ignore[arg-type]
    # Every site under its own leaf's block; no two sites overlap.
    sites: list[IPv4Network] = []
    for n in alt.nodes:
        for s in n.sites:
            for p in s.eid_prefixes:
                assert p.subnet_of(aggs[n.host])  # type: ignore[arg-type]
                assert isinstance(p, IPv4Network)
                sites.append(p)
    assert len(set(sites)) == len(sites)
    assert all(not a.overlaps(b) for i, a in enumerate(sites) for b in sites[i + 1:])
    # Every non-leaf node summarises its block (summary_only): the tables shrink upward.
    assert all(n.aggregates[0].summary_only for n in alt.nodes if n.aggregates)


def test_expected_routes_follow_the_aggregation() -> None:
    alt, _ = _topology(levels=3, fanout=2, sites=8, frr_transits=1)
    # The root carries only the level-1 aggregates; the Map-Resolver under it only the root's.
    assert alt.expected_routes("l0n0") == {"153.16.0.0/13", "153.24.0.0/13"}
    assert alt.expected_routes("mr0") == {"153.16.0.0/12"}
    assert alt.expected_routes("l1n0") == {"153.16.0.0/12", "153.16.0.0/14", "153.20.0.0/14"}
    # A leaf hears its parent's aggregate and the root's, never its siblings' sites.
    assert alt.expected_routes("l2n3") == {"153.16.0.0/12", "153.24.0.0/13"}


def test_without_aggregation_every_site_reaches_the_top() -> None:
    alt, _ = _topology(levels=3, fanout=2, sites=8, aggregation=False)
    assert not any(n.aggregates for n in alt.nodes)
    assert len(alt.expected_routes("l0n0")) == 8
    assert len(alt.expected_routes("mr0")) == 8


def test_every_node_config_passes_check(tmp_path: Path) -> None:
    alt, _ = _topology(levels=2, fanout=3, sites=9, bird_transits=1)
    for node in alt.nodes:
        text = alt.node_config(node.host, tmp_path / node.host)
        check_config_text(text, f"{node.host}.toml")
        doc = tomllib.loads(text)
        if node.aggregates:
            assert doc["eid"]["aggregates"][0]["summary_only"] is True
    # A BIRD transit forwards by its kernel table (RFC 6836 §3): every route exported there.
    bird = alt.bird_config(alt.routers[0].host)
    assert "protocol kernel kernel_ipv4 { ipv4 { export all; }; }" in bird
    assert f"hold time {alt.hold_time};" in bird


def test_aggregates_and_always_announce_in_the_lab_format_are_checked(tmp_path: Path) -> None:
    _, gen = _topology(levels=2, fanout=2, sites=2)
    bad = gen.text.replace("summary_only = true", "summary_only = 1", 1)
    with pytest.raises(AltTopologyError, match=r"alt\.nodes\.l0n0\.aggregates\[0\]\.summary_only"):
        AltTopology.from_toml(bad)
    outside = gen.text.replace('prefix = "153.16.0.0/12"', 'prefix = "10.0.0.0/8"', 1)
    with pytest.raises(AltTopologyError, match=r"outside alt\.accept"):
        AltTopology.from_toml(outside)
    alt = AltTopology.from_toml(gen.text)
    text = alt.node_config("l1n1", tmp_path)
    assert "always_announce = true" in text and "[[eid.aggregates]]" in text


def test_longer_site_prefixes_when_a_leaf_needs_more_than_256() -> None:
    # 3 levels of fanout 3: /16 leaves, 256 /24s each; 300 sites a leaf need /25s.
    alt, gen = _topology(levels=3, fanout=3, sites=2700)
    lens = {p.prefixlen for n in alt.nodes for s in n.sites for p in s.eid_prefixes}
    assert lens == {25}
    assert gen.speakers == 13 + 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"levels": 0}, "--levels"),
        ({"sites": 2}, "fewer sites"),
        ({"frr_transits": 50}, "transits"),
        ({"levels": 9, "fanout": 4}, "too small"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(args: dict[str, int], message: str) -> None:
    full = {"levels": 3, "fanout": 3, "sites": 40} | args
    with pytest.raises(GenerateError, match=message):
        generate(full.pop("levels"), full.pop("fanout"), full.pop("sites"), **full)


def test_cli_writes_a_file_that_parses(tmp_path: Path) -> None:
    out = tmp_path / "alt.toml"
    result = subprocess.run(
        [sys.executable, "-m", "alt_router.cli", "lab", "generate", "--levels", "2", "--fanout", "2",
         "--sites", "4", "--frr-transits", "1", "-o", str(out)],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "BGP speakers" in result.stdout
    alt = AltTopology.from_toml(out)
    assert [r.daemon for r in alt.routers] == ["frr"]
