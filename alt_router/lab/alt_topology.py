"""An ALT on one machine, described in one TOML file (pure: parse, validate, render; no I/O but reading it).

A lab topology (docs/lab.md) plus an ``[alt]`` table that says which hosts run
an alt_router node and in which roles, which nodes peer over GRE, which hosts
are ETRs and ITRs, and which run FRR as a plain BGP peer of the ALT.  From it
this module derives everything ``alt-router lab up`` needs: per-node TOML
configs, GRE keys and inner addresses, the ETR command lines, and which
prefixes every node must have learned before the ALT counts as converged.
The format is documented in docs/lab.md ("ALT labs").

Underlay addresses are never written twice: a tunnel between two hosts runs
between their addresses on the link or segment they share.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, get_args

from pydantic import TypeAdapter, ValidationError

from alt_router import validation
from alt_router.lab.daemon_text import BgpPeer, render_bird, render_frr_bgpd
from alt_router.lab.topology import Topology, TopologyError
from alt_router.lab.topology_model import (
    DEFAULT_ACCEPT,
    DEFAULT_ALGORITHM,
    DEFAULT_HOLD_TIME,
    DEFAULT_REGISTER_INTERVAL,
    DEFAULT_TUNNEL_V4,
    DEFAULT_TUNNEL_V6,
    AltModel,
    RouterDaemon,
)
from alt_router.node.config_model import AuthAlgorithm
from alt_router.types import IPAddress, Prefix

__all__ = [
    "ALGORITHMS", "DEFAULT_ACCEPT", "DEFAULT_ALGORITHM", "DEFAULT_HOLD_TIME", "DEFAULT_REGISTER_INTERVAL",
    "DEFAULT_TUNNEL_V4", "DEFAULT_TUNNEL_V6", "ROUTER_DAEMONS", "AltTopology", "AltTopologyError", "parse",
]

# A simulated BGP route: its AS path, and the AS_SET members of an aggregate on the way.
_Route = tuple[tuple[int, ...], frozenset[int]]

ALGORITHMS: tuple[str, ...] = get_args(AuthAlgorithm)
# Both forward: FRR runs zebra beside bgpd, BIRD exports into the kernel table
# (alt_runner._start_frr, _start_bird).
ROUTER_DAEMONS: tuple[str, ...] = get_args(RouterDaemon)


class AltTopologyError(TopologyError):
    """The ``[alt]`` part of a lab file is malformed; the message starts with the offending key."""


@dataclass(frozen=True, slots=True)
class SiteSpec:
    name: str
    key: str
    eid_prefixes: tuple[Prefix, ...]
    # Announced with no ETR registered: a generated ALT of many sites needs no ETR per site.
    always_announce: bool = False
    algorithm: str = DEFAULT_ALGORITHM  # the site's HMAC (docs/configuration.md, map_server.sites)


@dataclass(frozen=True, slots=True)
class LabAggregate:
    """One ``[[eid.aggregates]]`` of a node (RFC 6836 §7.1; the keys are docs/configuration.md's)."""

    prefix: Prefix
    summary_only: bool = False
    as_set: bool = False
    always: bool = False


@dataclass(frozen=True, slots=True)
class AttachedEtr:
    """An ETR run by the node itself and attached to the ALT (``[etr] alt_attached``, RFC 6836 §4)."""

    eids: tuple[Prefix, ...]
    rloc: IPAddress


@dataclass(frozen=True, slots=True)
class AltNodeSpec:
    """A host running ``alt-router run``."""

    host: str
    asn: int
    router_id: IPv4Address
    announce: tuple[Prefix, ...] = ()
    map_resolver: bool = False
    sites: tuple[SiteSpec, ...] = ()
    extra: str = ""  # raw TOML appended to the generated config, for keys this format does not cover
    aggregates: tuple[LabAggregate, ...] = ()
    etr: AttachedEtr | None = None
    # The node's BGP speaker: "exabgp" (default) or "frr", its own FRR (issue 10, docs/deploy.md).
    bgp: str = "exabgp"

    @property
    def roles(self) -> tuple[str, ...]:
        return (
            "alt",
            *(("map-resolver",) if self.map_resolver else ()),
            *(("map-server",) if self.sites else ()),
            *(("etr",) if self.etr is not None else ()),
        )


@dataclass(frozen=True, slots=True)
class RouterSpec:
    """A host running a reference BGP daemon that peers with the ALT over GRE.

    One session per tunnel, over the tunnel's inner IPv4 addresses.  With ``"ipv6"`` in
    ``families`` it carries IPv6 unicast too (multiprotocol BGP, RFC 4760), with the tunnel's
    inner IPv6 address as the next hop, as the ALT nodes' own sessions do.
    """

    host: str
    daemon: str
    asn: int
    router_id: IPv4Address
    announce: tuple[Prefix, ...] = ()
    # Lab file key alt.routers.X.families: "ipv4" and/or "ipv6" (default ["ipv4"]).
    families: tuple[str, ...] = ("ipv4",)
    # Lab file key alt.routers.X.max_prefix: what each ALT node accepts from this router before
    # it tears the session down (the node's [[peers]] max_prefix); None: the node's default.
    max_prefix: int | None = None


@dataclass(frozen=True, slots=True)
class TunnelSpec:
    """A GRE tunnel and the BGP session over it; ``index`` picks the key and the inner subnets."""

    index: int
    a: str
    b: str
    key: int
    md5_password: str | None = None


@dataclass(frozen=True, slots=True)
class EtrSpec:
    host: str
    map_server: str
    key: str
    eids: tuple[Prefix, ...]
    register_interval: int = DEFAULT_REGISTER_INTERVAL
    algorithm: str = DEFAULT_ALGORITHM
    # `alt-router etr --register-port`: Map-Registers from another port (0: ephemeral, RFC 9301 §5.6).
    register_port: int | None = None
    # Lab file key alt.etrs.X.proxy_reply: the P bit, the Map-Server answers for this ETR (RFC 9301 §5.6).
    proxy_reply: bool = False


@dataclass(frozen=True, slots=True)
class DemoSpec:
    """What ``lab demo`` looks up: ``eid`` from ``itr`` through the Map-Resolver on ``map_resolver``."""

    eid: IPAddress
    itr: str
    map_resolver: str


@dataclass(frozen=True, slots=True)
class TunnelEnds:
    """One side's view of a tunnel: addresses and what to call the device."""

    tunnel: TunnelSpec
    local: str
    remote: str
    underlay_local: IPAddress
    underlay_remote: IPAddress
    inner4_local: str  # address/len
    inner4_remote: str
    inner6_local: str
    inner6_remote: str


@dataclass(frozen=True, slots=True)
class AltTopology:
    topology: Topology
    accept: tuple[Prefix, ...]
    nodes: tuple[AltNodeSpec, ...]
    tunnels: tuple[TunnelSpec, ...]
    etrs: tuple[EtrSpec, ...] = ()
    itrs: tuple[str, ...] = ()
    routers: tuple[RouterSpec, ...] = ()
    demo: DemoSpec | None = None
    hold_time: int = DEFAULT_HOLD_TIME
    tunnel_v4: IPv4Network = field(default_factory=lambda: IPv4Network(DEFAULT_TUNNEL_V4))
    tunnel_v6: IPv6Network = field(default_factory=lambda: IPv6Network(DEFAULT_TUNNEL_V6))

    @property
    def name(self) -> str:
        return self.topology.name

    @classmethod
    def from_toml(cls, source: str | Path, *, name: str | None = None) -> AltTopology:
        """Parse from TOML text, or from a file given as a Path or an existing path string.

        ``name`` replaces the file's lab name (checked like it), so one topology can run twice.
        """
        if isinstance(source, Path) or ("\n" not in source and Path(source).is_file()):
            try:
                text = Path(source).read_text()
            except OSError as exc:
                raise AltTopologyError(f"cannot read topology file {source}: {exc}") from exc
        else:
            text = source
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise AltTopologyError(f"not valid TOML: {exc}") from exc
        if name is not None:
            data["name"] = name
        return parse(data)

    def node(self, host: str) -> AltNodeSpec:
        for node in self.nodes:
            if node.host == host:
                return node
        raise KeyError(host)

    def router(self, host: str) -> RouterSpec:
        for router in self.routers:
            if router.host == host:
                return router
        raise KeyError(host)

    def asn_of(self, host: str) -> int:
        try:
            return self.node(host).asn
        except KeyError:
            return self.router(host).asn

    # --- addresses -----------------------------------------------------------------------------------------

    def underlay(self, a: str, b: str) -> tuple[IPAddress, IPAddress]:
        """The addresses ``a`` and ``b`` have on a link or segment they share (IPv4 preferred)."""
        return underlay_pair(self.topology, a, b)

    def ends(self, tunnel: TunnelSpec, host: str) -> TunnelEnds:
        """``tunnel`` as seen from ``host`` (one of its two ends)."""
        if host not in (tunnel.a, tunnel.b):
            raise KeyError(host)
        side = 1 if host == tunnel.a else 2
        remote = tunnel.b if side == 1 else tunnel.a
        local_u, remote_u = self.underlay(host, remote)
        # One /30 and one /64 per tunnel, taken in order from the pools.
        net4 = IPv4Network((int(self.tunnel_v4.network_address) + 4 * tunnel.index, 30))
        net6 = IPv6Network((int(self.tunnel_v6.network_address) + (tunnel.index << 64), 64))
        h4 = [net4.network_address + 1, net4.network_address + 2]
        h6 = [net6.network_address + 1, net6.network_address + 2]
        me, other = side - 1, 2 - side
        return TunnelEnds(
            tunnel,
            host,
            remote,
            local_u,
            remote_u,
            f"{h4[me]}/30",
            str(h4[other]),
            f"{h6[me]}/64",
            str(h6[other]),
        )

    def tunnels_of(self, host: str) -> list[TunnelEnds]:
        return [self.ends(t, host) for t in self.tunnels if host in (t.a, t.b)]

    # --- what converged means ------------------------------------------------------------------------------

    def originated(self, host: str) -> tuple[Prefix, ...]:
        try:
            return self.node(host).announce
        except KeyError:
            router = self.router(host)
            return tuple(
                p for p in router.announce if _inside(p, self.accept) and _carried(p, router.families)
            )

    def session_families(self, a: str, b: str) -> tuple[str, ...]:
        """The address families the BGP session between speakers ``a`` and ``b`` carries."""
        for host in (a, b):
            try:
                return self.router(host).families
            except KeyError:
                pass
        return ("ipv4", "ipv6")

    def expected_routes(self, host: str) -> set[str]:
        """Prefixes ``host``'s RIB must hold: what every other BGP speaker it can reach originates.

        With aggregates or always-announced sites anywhere, what a node exports depends on what it
        learns, so the ALT's routing is simulated (``simulate_ribs``).
        """
        if any(n.aggregates or n.etr is not None or any(s.always_announce for s in n.sites)
               for n in self.nodes):
            return {str(p) for p in self.simulate_ribs().get(host, {})}
        reach = self._reachable(host)
        own = set(self.originated(host))
        return {str(p) for h in reach if h != host for p in self.originated(h) if p not in own}

    def simulate_ribs(self) -> dict[str, dict[Prefix, tuple[int, ...]]]:
        """Every speaker's learned routes (prefix -> AS path) once BGP has converged, computed.

        A path-vector fixpoint with the ALT nodes' export rules (alt_router/node/core.py): own
        prefixes are not learned, a summary-only aggregate hides the more-specifics it covers
        (static ``announce`` prefixes excepted), an aggregate is active while a contributor
        exists, AS_PATH (and AS_SET) loops are refused (RFC 4271 §9.1.2), nodes take only
        ``accept``, sessions with a router carry its ``families``.  Shortest AS path wins.
        """
        speakers = [n.host for n in self.nodes] + [r.host for r in self.routers]
        asn = {h: self.asn_of(h) for h in speakers}
        nodes = {n.host: n for n in self.nodes}
        static = {h: set(self.originated(h)) for h in speakers}
        dynamic = {
            h: ({p for s in n.sites if s.always_announce for p in s.eid_prefixes}
                | set(n.etr.eids if n.etr is not None else ())) - static[h]
            for h, n in nodes.items()
        }
        neighbours: dict[str, list[tuple[str, tuple[str, ...]]]] = {h: [] for h in speakers}
        for t in self.tunnels:
            families = self.session_families(t.a, t.b)
            neighbours[t.a].append((t.b, families))
            neighbours[t.b].append((t.a, families))
        ribs: dict[str, dict[Prefix, _Route]] = {h: {} for h in speakers}

        def exports(h: str) -> dict[Prefix, _Route]:
            me = asn[h]
            own = static[h] | dynamic.get(h, set())
            out: dict[Prefix, _Route] = {p: ((me,), frozenset()) for p in own}
            learned = {p: r for p, r in ribs[h].items() if p not in own}
            node = nodes.get(h)
            hidden: set[Prefix] = set()
            if node is not None:
                for agg in node.aggregates:
                    inside = [
                        p for p in (*learned, *own)
                        if p != agg.prefix and p.version == agg.prefix.version
                        and p.subnet_of(agg.prefix)  # type: ignore[arg-type]
                    ]
                    if not inside and not agg.always:
                        continue
                    members: set[int] = set()
                    if agg.as_set:
                        for p in inside:
                            path, aset = learned.get(p, ((), frozenset()))
                            members |= set(path) | aset
                    out.setdefault(agg.prefix, ((me,), frozenset(members)))
                    if agg.summary_only:
                        hidden.update(p for p in inside if p not in static[h])
            for p in hidden:
                out.pop(p, None)  # an own (site) prefix under a summary-only aggregate
            for p, (path, aset) in learned.items():
                if p not in hidden and p not in out:
                    out[p] = ((me, *path), aset)
            return out

        for _ in range(4 * len(speakers) + 4):
            exported = {h: exports(h) for h in speakers}
            new: dict[str, dict[Prefix, _Route]] = {}
            for h in speakers:
                best: dict[Prefix, _Route] = {}
                for peer, families in neighbours[h]:
                    for p, (path, aset) in exported[peer].items():
                        if asn[h] in path or asn[h] in aset or not _carried(p, families):
                            continue
                        if h in nodes and not _inside(p, self.accept):
                            continue
                        if p not in best or len(path) < len(best[p][0]):
                            best[p] = (path, aset)
                new[h] = best
            if new == ribs:
                break
            ribs = new
        return {h: {p: r[0] for p, r in rib.items()} for h, rib in ribs.items()}

    def shortest_hops(self, a: str, b: str) -> int | None:
        """Tunnels on the shortest path between speakers ``a`` and ``b`` (None: not connected)."""
        dist = {a: 0}
        todo = [a]
        while todo:
            h = todo.pop(0)
            for t in self.tunnels:
                for x, y in ((t.a, t.b), (t.b, t.a)):
                    if x == h and y not in dist:
                        dist[y] = dist[h] + 1
                        todo.append(y)
        return dist.get(b)

    def _reachable(self, host: str) -> set[str]:
        seen = {host}
        todo = [host]
        while todo:
            h = todo.pop()
            for t in self.tunnels:
                for x, y in ((t.a, t.b), (t.b, t.a)):
                    if x == h and y not in seen:
                        seen.add(y)
                        todo.append(y)
        return seen

    # --- rendering -----------------------------------------------------------------------------------------

    def node_config(self, host: str, state_dir: Path) -> str:
        """The node's TOML configuration (docs/configuration.md)."""
        node = self.node(host)
        q = json.dumps
        lines = [
            f"# Generated by `alt-router lab up` for host {host} of lab {self.name}.",
            "[node]",
            f"name = {q(host)}",
            f"asn = {node.asn}",
            f"router_id = {q(str(node.router_id))}",
            # The ALT forwarder (ExaBGP mode) needs the userspace data path; an FRR-mode node takes
            # kernel GRE, else tc-BPF GRE, else userspace ("auto").
            f'tunnel_mode = "{"auto" if node.bgp == "frr" else "userspace"}"',
            f"state_dir = {q(str(state_dir))}",
            f"bgp = {q(node.bgp)}",
            "",
            "[eid]",
            f"announce = {q([str(p) for p in node.announce])}",
            f"accept = {q([str(p) for p in self.accept])}",
        ]
        for agg in node.aggregates:
            lines += [
                "[[eid.aggregates]]",
                f"prefix = {q(str(agg.prefix))}",
                f"summary_only = {q(agg.summary_only)}",
                f"as_set = {q(agg.as_set)}",
                f"always = {q(agg.always)}",
            ]
        for ends in self.tunnels_of(host):
            router = next((r for r in self.routers if r.host == ends.remote), None)
            lines += [
                "",
                "[[peers]]",
                f"name = {q(ends.remote)}",
                f"asn = {self.asn_of(ends.remote)}",
                f"key = {ends.tunnel.key}",
                f"hold_time = {self.hold_time}",
            ]
            if router is not None:
                lines.append(f"families = {q(list(router.families))}")
                if router.max_prefix is not None:
                    lines.append(f"max_prefix = {router.max_prefix}")
            if ends.tunnel.md5_password is not None:
                lines.append(f"md5_password = {q(ends.tunnel.md5_password)}")
            lines += [
                "[peers.underlay]",
                f"local = {q(str(ends.underlay_local))}",
                f"remote = {q(str(ends.underlay_remote))}",
                "[peers.tunnel]",
                f"local_ipv4 = {q(ends.inner4_local)}",
                f"remote_ipv4 = {q(ends.inner4_remote)}",
            ]
            if router is None or "ipv6" in router.families:
                lines += [f"local_ipv6 = {q(ends.inner6_local)}", f"remote_ipv6 = {q(ends.inner6_remote)}"]
        if node.map_resolver:
            lines += ["", "[map_resolver]", "enabled = true"]
        if node.sites:
            lines += ["", "[map_server]", "enabled = true"]
            for site in node.sites:
                lines += [
                    "",
                    "[[map_server.sites]]",
                    f"name = {q(site.name)}",
                    f"key = {q(site.key)}",
                    f"eid_prefixes = {q([str(p) for p in site.eid_prefixes])}",
                ]
                if site.always_announce:
                    lines.append("always_announce = true")
                if site.algorithm != DEFAULT_ALGORITHM:
                    lines.append(f"algorithm = {q(site.algorithm)}")
        if node.etr is not None:
            lines += ["", "[etr]", "alt_attached = true"]
            for eid in node.etr.eids:
                lines += ["[[etr.mappings]]", f"eid_prefix = {q(str(eid))}",
                          f"rlocs = [{{ address = {q(str(node.etr.rloc))} }}]"]
        if node.bgp == "frr" and "[frr]" not in node.extra:
            # The FRR pathspace (-N) is global to the machine, and host names repeat across labs
            # (a test's lab beside an operator's): name it after the lab too.  (``extra`` may
            # bring its own [frr] table instead.)
            lines += ["", "[frr]", f"pathspace = {q(f'{self.name}-{host}')}"]
        text = "\n".join(lines) + "\n"
        if node.extra:
            text += "\n" + node.extra.rstrip("\n") + "\n"
        return text

    def etr_argv(self, etr: EtrSpec) -> list[str]:
        rloc, ms = self.underlay(etr.host, etr.map_server)
        argv = [
            sys.executable,
            "-m",
            "alt_router.cli",
            "etr",
            "--map-server",
            str(ms),
            "--key",
            etr.key,
            "--rloc",
            str(rloc),
            "--interval",
            str(etr.register_interval),
        ]
        if etr.algorithm != DEFAULT_ALGORITHM:
            argv += ["--alg", etr.algorithm]
        if etr.register_port is not None:
            argv += ["--register-port", str(etr.register_port)]
        if etr.proxy_reply:
            argv.append("--proxy-reply")
        for eid in etr.eids:
            argv += ["--eid", str(eid)]
        return argv

    def _router_peers(self, host: str) -> list[BgpPeer]:
        """A router host's BGP sessions: one per tunnel, over the tunnel's inner IPv4 addresses.

        IPv6 routes travel over the same session (RFC 4760) with the router's inner IPv6 address as
        their next hop, as the node's ExaBGP announces its own (bgp/exabgp_config.next_hop_for).
        """
        families = self.router(host).families
        return [
            BgpPeer(
                e.inner4_remote, self.asn_of(e.remote), e.inner4_local.split("/")[0], e.tunnel.md5_password,
                families=families,
                ipv6_next_hop=e.inner6_local.split("/")[0] if "ipv6" in families else None,
            )
            for e in self.tunnels_of(host)
        ]

    def _router_networks(self, host: str) -> list[str]:
        router = self.router(host)
        return [str(p) for p in router.announce if _carried(p, router.families)]

    def frr_config(self, host: str) -> str:
        """bgpd.conf for a router host: one session per tunnel, over the tunnel's inner addresses."""
        router = self.router(host)
        peers = self._router_peers(host)
        text = render_frr_bgpd(
            router.asn,
            str(router.router_id),
            peers,
            self._router_networks(host),
            hostname=host,
        )
        # The ALT's hold time, so a lab session that dies is noticed in seconds, not minutes.
        timers = "".join(
            f" neighbor {p.address} timers {max(1, self.hold_time // 3)} {self.hold_time}\n" for p in peers
        )
        return text.replace(" no bgp default ipv4-unicast\n", " no bgp default ipv4-unicast\n" + timers, 1)

    def bird_config(self, host: str, socket_dir: str = "") -> str:
        """bird.conf for a router host: BGP over the tunnels, every route exported into the kernel.

        The kernel export is what makes BIRD a forwarding ALT router (RFC 6836 §3): it attracts
        ALT datagrams with its announcements and the kernel forwards them over the GRE TUNs.
        """
        router = self.router(host)
        peers = self._router_peers(host)
        text = render_bird(
            router.asn,
            str(router.router_id),
            peers,
            self._router_networks(host),
            kernel=True,
        )
        timers = f"  hold time {self.hold_time};\n  keepalive time {max(1, self.hold_time // 3)};\n"
        return text.replace("  connect delay time 1;\n", timers + "  connect delay time 1;\n")

    def tunnel_argv(self, ends: TunnelEnds) -> list[str]:
        """``alt-router tunnel`` for a router host (the ALT nodes make their own tunnels)."""
        return [
            sys.executable,
            "-m",
            "alt_router.cli",
            "tunnel",
            "--name",
            f"gre-{ends.remote}"[:15],
            "--mode",
            "userspace",
            "--local",
            str(ends.underlay_local),
            "--remote",
            str(ends.underlay_remote),
            "--key",
            str(ends.tunnel.key),
            "--address",
            ends.inner4_local,
            *(("--address", ends.inner6_local) if "ipv6" in self.router(ends.local).families else ()),
        ]


def _carried(prefix: Prefix, families: tuple[str, ...]) -> bool:
    return f"ipv{prefix.version}" in families


def _inside(prefix: Prefix, space: tuple[Prefix, ...]) -> bool:
    return any(prefix.version == s.version and prefix.subnet_of(s) for s in space)  # type: ignore[arg-type]


def underlay_pair(topo: Topology, a: str, b: str) -> tuple[IPAddress, IPAddress]:
    candidates: list[tuple[IPAddress, IPAddress]] = []
    groups = [(link.a, link.b) for link in topo.links] + [tuple(s.members) for s in topo.segments]
    for group in groups:
        ea = [e for e in group if e.host == a]
        eb = [e for e in group if e.host == b]
        if not ea or not eb:
            continue
        for x in ea[0].addresses:
            for y in eb[0].addresses:
                if x.version == y.version and y.ip in x.network:
                    candidates.append((x.ip, y.ip))
    if not candidates:
        raise AltTopologyError(f"hosts {a!r} and {b!r} share no link or segment with addresses in one subnet")
    candidates.sort(key=lambda c: c[0].version)
    return candidates[0]


# --- parsing -----------------------------------------------------------------------------------------------
# The shape of [alt] (types, ranges, defaults, unknown keys) is alt_router.lab.topology_model's.
# What stays here: the checks that need the rest of the file (hosts, links) or span entries, each
# collected, so one run of `lab up` lists every problem of the file.


def _problems_of(alt: AltModel, topo: Topology) -> tuple[list[str], AltTopology | None]:
    out: list[str] = []
    hosts = {h.name for h in topo.hosts}

    def host(name: str, key: str) -> bool:
        if name not in hosts:
            out.append(f"{key}: unknown host {name!r}")
            return False
        return True

    def underlay_ok(a: str, b: str, key: str) -> bool:
        try:
            underlay_pair(topo, a, b)
        except AltTopologyError as exc:
            out.append(f"{key}: {exc}")
            return False
        return True

    accept = alt.accept
    nodes: list[AltNodeSpec] = []
    for name, n in alt.nodes.items():
        key = f"alt.nodes.{name}"
        host(name, key)
        for i, p in enumerate(n.announce):
            if not _inside(p, accept):
                out.append(f"{key}.announce[{i}]: {p} is outside alt.accept")
        for i, agg in enumerate(n.aggregates):
            if not _inside(agg.prefix, accept):
                out.append(f"{key}.aggregates[{i}].prefix: {agg.prefix} is outside alt.accept")
        attached: AttachedEtr | None = None
        if n.etr is not None:
            if not n.etr.alt_attached:
                out.append(f"{key}.etr.alt_attached: a node's own ETR is ALT-attached (true); "
                           "an MS-registered ETR is an [alt.etrs] host")
            for i, p in enumerate(n.etr.eids):
                if not _inside(p, accept):
                    out.append(f"{key}.etr.eids[{i}]: {p} is outside alt.accept")
            attached = AttachedEtr(n.etr.eids, n.etr.rloc if n.etr.rloc is not None else n.router_id)
        sites = tuple(
            SiteSpec(s.name, s.key, s.eid_prefixes, s.always_announce, s.algorithm) for s in n.sites
        )
        aggregates = tuple(LabAggregate(a.prefix, a.summary_only, a.as_set, a.always) for a in n.aggregates)
        nodes.append(AltNodeSpec(name, n.asn, n.router_id, n.announce, n.map_resolver, sites, n.extra,
                                 aggregates, attached, n.bgp))
    node_hosts = {n.host for n in nodes}

    routers: list[RouterSpec] = []
    for name, r in alt.routers.items():
        key = f"alt.routers.{name}"
        host(name, key)
        if name in node_hosts:
            out.append(f"{key}: {name!r} already runs an ALT node")
        routers.append(RouterSpec(name, r.daemon, r.asn, r.router_id, r.announce, r.families, r.max_prefix))
    speakers = node_hosts | {r.host for r in routers}

    tunnels: list[TunnelSpec] = []
    seen_pairs: set[frozenset[str]] = set()
    max_tunnels = min(2 ** (30 - alt.tunnel_v4.prefixlen), 2 ** (64 - alt.tunnel_v6.prefixlen))
    for i, t in enumerate(alt.tunnels):
        key = f"alt.tunnels[{i}]"
        a, b = t.between
        ends_ok = True
        for j, h in enumerate((a, b)):
            if not host(h, f"{key}.between[{j}]"):
                ends_ok = False
            elif h not in speakers:
                out.append(f"{key}.between[{j}]: {h!r} is neither an alt.nodes nor an alt.routers host")
                ends_ok = False
        if a == b:
            out.append(f"{key}.between: a tunnel joins two different hosts")
            continue
        if not ends_ok:
            continue
        if a not in node_hosts and b not in node_hosts:
            out.append(f"{key}.between: one end must be an ALT node")
        pair = frozenset((a, b))
        if pair in seen_pairs:
            out.append(f"{key}.between: {a} and {b} already have a tunnel")
        seen_pairs.add(pair)
        if i >= max_tunnels:
            out.append(f"{key}: the tunnel address pools hold only {max_tunnels} tunnels")
        if underlay_ok(a, b, key):
            tunnels.append(TunnelSpec(i, a, b, t.key if t.key is not None else i + 1, t.md5_password))

    site_keys = {(n.host, s.key) for n in nodes for s in n.sites}
    site_algs = {(n.host, s.key, s.algorithm) for n in nodes for s in n.sites}
    etrs: list[EtrSpec] = []
    for name, e in alt.etrs.items():
        key = f"alt.etrs.{name}"
        ok = host(name, key) and host(e.map_server, f"{key}.map_server")
        ms = e.map_server
        if ok and not any(n.sites for n in nodes if n.host == ms):
            out.append(f"{key}.map_server: {ms!r} is not an ALT node with map-server sites")
        elif ok and (ms, e.key) not in site_keys:
            out.append(f"{key}.key: no site on {ms!r} has this key")
        elif ok and (ms, e.key, e.algorithm) not in site_algs:
            # The Map-Server would refuse every Map-Register (bad-key-id, RFC 9301 §5.6).
            out.append(f"{key}.algorithm: the site on {ms!r} with this key uses another algorithm")
        elif ok and underlay_ok(name, ms, key):
            etrs.append(EtrSpec(name, ms, e.key, e.eids, e.register_interval, e.algorithm, e.register_port,
                                e.proxy_reply))

    for i, h in enumerate(alt.itrs):
        host(h, f"alt.itrs[{i}]")

    demo: DemoSpec | None = None
    if alt.demo is not None:
        d = alt.demo
        mr_ok = host(d.map_resolver, "alt.demo.map_resolver")
        if mr_ok and not any(n.host == d.map_resolver and n.map_resolver for n in nodes):
            out.append(
                f"alt.demo.map_resolver: {d.map_resolver!r} is not an ALT node with map_resolver = true"
            )
            mr_ok = False
        if host(d.itr, "alt.demo.itr") and mr_ok and underlay_ok(d.itr, d.map_resolver, "alt.demo"):
            demo = DemoSpec(d.eid, d.itr, d.map_resolver)

    if out:
        return out, None
    return out, AltTopology(
        topo, accept, tuple(nodes), tuple(tunnels), tuple(etrs), alt.itrs, tuple(routers), demo,
        alt.hold_time, alt.tunnel_v4, alt.tunnel_v6,
    )


_ALT = TypeAdapter(AltModel)


def parse(data: Mapping[str, Any]) -> AltTopology:
    """A lab topology dict with an ``[alt]`` table (raises AltTopologyError / TopologyError).

    AltTopologyError lists every problem of ``[alt]``, one ``dotted.key: problem`` per line.
    """
    rest = dict(data)
    raw_alt = rest.pop("alt", None)
    topo = Topology.from_dict(rest)
    if raw_alt is None:
        raise AltTopologyError("alt: missing (an ALT lab needs an [alt] table; see docs/lab.md)")
    try:
        alt = _ALT.validate_python(raw_alt)
    except ValidationError as exc:
        raise AltTopologyError("\n".join(validation.problems(exc, AltModel, ("alt",)))) from None
    problems, result = _problems_of(alt, topo)
    if result is None:
        raise AltTopologyError("\n".join(problems))
    return result
