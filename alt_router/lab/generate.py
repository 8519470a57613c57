"""A hierarchical ALT of any size, as an ``alt-router lab`` topology (pure: numbers in, TOML out).

RFC 6836 §7.1: the ALT scales because EID prefixes are assigned hierarchically and each ALT
router aggregates what it learns from below.  ``generate`` builds such an ALT:

- a tree of ALT nodes, ``levels`` deep, each non-leaf with ``fanout`` children; the root owns the
  whole EID space (``space``, 153.16.0.0/12 by default) and every node owns a contiguous block
  carved out of its parent's, so every subtree's EIDs sit under one prefix;
- every node aggregates its own block (``[[eid.aggregates]]`` with ``summary_only``): toward its
  peers it announces one prefix, however many it learns from below;
- the leaves are Map-Server nodes; ``sites`` site prefixes (/24s, or longer when a leaf needs
  more) are spread over them, announced while configured (``always_announce``) so the tables
  have their full size without an ETR per site;
- ``frr_transits`` + ``bird_transits`` parent-child links get a reference BGP daemon in the
  middle (FRR zebra + bgpd, or BIRD 2 exporting to the kernel), which must forward;
- one or more Map-Resolver nodes (the first peers with the root, the others with leaves of
  other subtrees, so lookups start at different depths), one ITR and one ETR that registers
  the first site of the last leaf; every host sits on one underlay segment.

Host names: ``l{level}n{index}`` for ALT nodes (index within the level, left to right),
``frr{k}``/``bird{k}`` for transits, ``mr{k}``, ``itr``, ``etr``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

DEFAULT_SPACE = "153.16.0.0/12"
SITE_PREFIX_LEN = 24
UNDERLAY = IPv4Network("10.64.0.0/16")
FIRST_ASN = 65000
TRANSIT_ASN = 64900


class GenerateError(ValueError):
    """The requested ALT cannot be built (too many sites for the space, names too long, ...)."""


@dataclass(frozen=True, slots=True)
class GenNode:
    host: str
    level: int
    index: int
    block: IPv4Network
    parent: str | None
    sites: tuple[IPv4Network, ...] = ()


@dataclass(frozen=True, slots=True)
class GeneratedAlt:
    """What was generated, for whoever measures it (bench/alt_scale.py) as well as the TOML."""

    name: str
    levels: int
    fanout: int
    nodes: tuple[GenNode, ...]
    transits: dict[str, str]  # host -> daemon
    links: tuple[tuple[str, str], ...]  # tunnels, parent side first
    map_resolvers: tuple[str, ...]
    etr_site: IPv4Network
    etr_map_server: str
    aggregation: bool
    text: str = field(repr=False, default="")

    def node(self, host: str) -> GenNode:
        for n in self.nodes:
            if n.host == host:
                return n
        raise KeyError(host)

    @property
    def speakers(self) -> int:
        return len(self.nodes) + len(self.transits) + len(self.map_resolvers)


def _bits(n: int) -> int:
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


def generate(
    levels: int,
    fanout: int,
    sites: int,
    *,
    frr_transits: int = 0,
    bird_transits: int = 0,
    map_resolvers: int = 1,
    name: str = "altgen",
    space: str = DEFAULT_SPACE,
    aggregation: bool = True,
    hold_time: int = 9,
) -> GeneratedAlt:
    if levels < 1:
        raise GenerateError("--levels: at least 1")
    if fanout < 1 or (levels > 1 and fanout < 1):
        raise GenerateError("--fanout: at least 1")
    if sites < 1:
        raise GenerateError("--sites: at least 1 (the ETR registers one)")
    if frr_transits < 0 or bird_transits < 0 or map_resolvers < 1:
        raise GenerateError("--frr-transits/--bird-transits at least 0, --map-resolvers at least 1")
    try:
        root_block = IPv4Network(space)
    except ValueError as exc:
        raise GenerateError(f"--space: {exc}") from exc

    # The tree, level by level; each child takes the next slice of its parent's block.
    child_bits = _bits(fanout)
    nodes: list[GenNode] = [GenNode("l0n0", 0, 0, root_block, None)]
    by_level: list[list[GenNode]] = [[nodes[0]]]
    for level in range(1, levels):
        row: list[GenNode] = []
        for parent in by_level[-1]:
            new_len = parent.block.prefixlen + child_bits
            if new_len > SITE_PREFIX_LEN:
                raise GenerateError(f"{space} is too small for {levels} levels of fanout {fanout}")
            subnets = parent.block.subnets(new_prefix=new_len)
            for _ in range(fanout):
                row.append(GenNode(f"l{level}n{len(row)}", level, len(row), next(subnets), parent.host))
        nodes += row
        by_level.append(row)
    leaves = by_level[-1]

    # Sites, contiguous per leaf: leaf j gets sites j*k .. (the first ones take the remainder).
    per_leaf, extra = divmod(sites, len(leaves))
    with_sites: dict[str, tuple[IPv4Network, ...]] = {}
    for j, leaf in enumerate(leaves):
        count = per_leaf + (1 if j < extra else 0)
        if count == 0:
            raise GenerateError(f"--sites {sites}: fewer sites than the {len(leaves)} leaves")
        site_len = max(SITE_PREFIX_LEN, leaf.block.prefixlen + _bits(count))
        if site_len > 32:
            raise GenerateError(f"--sites {sites}: {count} sites do not fit in leaf block {leaf.block}")
        subnets = leaf.block.subnets(new_prefix=site_len)
        with_sites[leaf.host] = tuple(next(subnets) for _ in range(count))
    nodes = [
        GenNode(n.host, n.level, n.index, n.block, n.parent, with_sites.get(n.host, ())) for n in nodes
    ]

    # Transits sit on parent-child links, starting with the links to the leaves.
    child_links = [n for n in reversed(nodes) if n.parent is not None]
    wanted = ["frr"] * frr_transits + ["bird"] * bird_transits
    if len(wanted) > len(child_links):
        raise GenerateError(f"{len(wanted)} transits but only {len(child_links)} parent-child links")
    transit_on: dict[str, str] = {}  # child host -> transit host
    transits: dict[str, str] = {}
    counts = {"frr": 0, "bird": 0}
    for child, daemon in zip(child_links, wanted, strict=False):
        host = f"{daemon}{counts[daemon]}"
        counts[daemon] += 1
        transit_on[child.host] = host
        transits[host] = daemon
    links: list[tuple[str, str]] = []
    for n in nodes:
        if n.parent is None:
            continue
        if n.host in transit_on:
            links += [(n.parent, transit_on[n.host]), (transit_on[n.host], n.host)]
        else:
            links.append((n.parent, n.host))

    mrs = tuple(f"mr{k}" for k in range(map_resolvers))
    # mr0 at the root; the others at the first leaf of other subtrees (lookups from other depths).
    for k, mr in enumerate(mrs):
        if k == 0 or levels == 1:
            links.append((nodes[0].host, mr))
        else:
            links.append((leaves[(k * len(leaves) // map_resolvers) % len(leaves)].host, mr))

    etr_ms = leaves[-1].host
    etr_site = with_sites[etr_ms][0]
    hosts = [n.host for n in nodes] + list(transits) + list(mrs) + ["itr", "etr"]
    for h in hosts:
        if len(h) > 11:  # the node's tunnel device is "alt-<peer>" (IFNAMSIZ)
            raise GenerateError(f"host name {h} too long: use fewer levels or a smaller fanout")
    if len(hosts) > UNDERLAY.num_addresses - 2:
        raise GenerateError("too many hosts for the underlay")

    gen = GeneratedAlt(
        name, levels, fanout, tuple(nodes), transits, tuple(links), mrs, etr_site, etr_ms, aggregation
    )
    return GeneratedAlt(
        name, levels, fanout, tuple(nodes), transits, tuple(links), mrs, etr_site, etr_ms, aggregation,
        render(gen, hosts, sites, hold_time),
    )


def _address(i: int) -> str:
    return str(UNDERLAY.network_address + 1 + i)


def _router_id(i: int) -> str:
    return str(IPv4Address("172.16.0.1") + i)


def render(gen: GeneratedAlt, hosts: list[str], sites: int, hold_time: int) -> str:
    q = json.dumps
    transit_count = len(gen.transits)
    lines = [
        f"# Generated by `alt-router lab generate --levels {gen.levels} --fanout {gen.fanout} "
        f"--sites {sites}`: {len(gen.nodes)} ALT nodes, {transit_count} transits, "
        f"{len(gen.map_resolvers)} Map-Resolver(s); aggregation {'on' if gen.aggregation else 'off'}.",
        f"name = {q(gen.name)}",
        "",
    ]
    lines += [f"[hosts.{h}]" for h in hosts]
    lines += ["", "[[segments]]", 'name = "wan"', "members = ["]
    lines += [
        f'  {{ host = {q(h)}, ifname = "eth0", addresses = ["{_address(i)}/{UNDERLAY.prefixlen}"] }},'
        for i, h in enumerate(hosts)
    ]
    lines += ["]", "", "[alt]", f"accept = [{q(str(gen.nodes[0].block))}]", f"hold_time = {hold_time}"]
    lines += [f"tunnel_v4 = {q('10.255.0.0/16')}", 'itrs = ["itr"]', ""]
    index = {h: i for i, h in enumerate(hosts)}
    for n in gen.nodes:
        lines += [
            f"[alt.nodes.{n.host}]",
            f"asn = {FIRST_ASN + index[n.host]}",
            f"router_id = {q(_router_id(index[n.host]))}",
        ]
        if gen.aggregation:
            lines.append(f"aggregates = [{{ prefix = {q(str(n.block))}, summary_only = true }}]")
        if n.sites:
            lines.append("sites = [")
            lines += [
                f"  {{ name = \"s{n.index}x{j}\", key = \"key-{n.host}-{j}\", "
                f"eid_prefixes = [{q(str(p))}], always_announce = true }},"
                for j, p in enumerate(n.sites)
            ]
            lines.append("]")
        lines.append("")
    for mr in gen.map_resolvers:
        lines += [
            f"[alt.nodes.{mr}]",
            f"asn = {FIRST_ASN + index[mr]}",
            f"router_id = {q(_router_id(index[mr]))}",
            "map_resolver = true",
            "",
        ]
    for k, (host, daemon) in enumerate(gen.transits.items()):
        lines += [
            f"[alt.routers.{host}]",
            f"daemon = {q(daemon)}",
            f"asn = {TRANSIT_ASN + k}",
            f"router_id = {q(_router_id(index[host]))}",
            "",
        ]
    for a, b in gen.links:
        lines += ["[[alt.tunnels]]", f"between = [{q(a)}, {q(b)}]", ""]
    ms = gen.node(gen.etr_map_server)
    lines += [
        "[alt.etrs.etr]",
        f"map_server = {q(ms.host)}",
        f"key = \"key-{ms.host}-0\"",
        f"eids = [{q(str(gen.etr_site))}]",
        "",
        "[alt.demo]",
        f"eid = {q(str(gen.etr_site.network_address + 1))}",
        'itr = "itr"',
        f"map_resolver = {q(gen.map_resolvers[0])}",
        "",
    ]
    return "\n".join(lines)
