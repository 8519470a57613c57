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
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any

from alt_router.lab.daemon_text import BgpPeer, render_bird, render_frr_bgpd
from alt_router.lab.topology import Topology, TopologyError
from alt_router.types import IPAddress, Prefix

# A simulated BGP route: its AS path, and the AS_SET members of an aggregate on the way.
_Route = tuple[tuple[int, ...], frozenset[int]]

DEFAULT_ACCEPT = ("153.16.0.0/12", "2001:db8::/32")
DEFAULT_TUNNEL_V4 = "10.255.0.0/16"
DEFAULT_TUNNEL_V6 = "fd00:255::/48"
DEFAULT_HOLD_TIME = 9
DEFAULT_REGISTER_INTERVAL = 5
DEFAULT_ALGORITHM = "hmac-sha256-128"
ALGORITHMS = ("hmac-sha1-96", "hmac-sha256-128")
# Both forward: FRR runs zebra beside bgpd, BIRD exports into the kernel table
# (alt_runner._start_frr, _start_bird).
ROUTER_DAEMONS = ("frr", "bird")


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
    """A host running a reference BGP daemon that peers with the ALT over GRE (IPv4 unicast)."""

    host: str
    daemon: str
    asn: int
    router_id: IPv4Address
    announce: tuple[Prefix, ...] = ()


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
            return tuple(p for p in router.announce if _inside(p, self.accept))

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
        ``accept``, sessions with a router carry IPv4 only.  Shortest AS path wins.
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
        neighbours: dict[str, list[tuple[str, bool]]] = {h: [] for h in speakers}
        for t in self.tunnels:
            v4_only = t.a not in nodes or t.b not in nodes
            neighbours[t.a].append((t.b, v4_only))
            neighbours[t.b].append((t.a, v4_only))
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
                for peer, v4_only in neighbours[h]:
                    for p, (path, aset) in exported[peer].items():
                        if asn[h] in path or asn[h] in aset or (v4_only and p.version != 4):
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
            # No GRE in many kernels (and the ALT forwarder needs the userspace data path anyway).
            'tunnel_mode = "userspace"',
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
            peer_is_router = any(r.host == ends.remote for r in self.routers)
            lines += [
                "",
                "[[peers]]",
                f"name = {q(ends.remote)}",
                f"asn = {self.asn_of(ends.remote)}",
                f"key = {ends.tunnel.key}",
                f"hold_time = {self.hold_time}",
            ]
            if peer_is_router:
                lines.append('families = ["ipv4"]')
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
            if not peer_is_router:
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
        for eid in etr.eids:
            argv += ["--eid", str(eid)]
        return argv

    def _router_peers(self, host: str) -> list[BgpPeer]:
        """A router host's BGP sessions: one per tunnel, IPv4, over the tunnel's inner addresses."""
        return [
            BgpPeer(
                e.inner4_remote, self.asn_of(e.remote), e.inner4_local.split("/")[0], e.tunnel.md5_password
            )
            for e in self.tunnels_of(host)
        ]

    def frr_config(self, host: str) -> str:
        """bgpd.conf for a router host: one IPv4 session per tunnel, over the tunnel's inner addresses."""
        router = self.router(host)
        peers = self._router_peers(host)
        text = render_frr_bgpd(
            router.asn,
            str(router.router_id),
            peers,
            [str(p) for p in router.announce if p.version == 4],
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
            [str(p) for p in router.announce if p.version == 4],
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
        ]


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

_ALT_KEYS = {
    "accept",
    "hold_time",
    "tunnel_v4",
    "tunnel_v6",
    "nodes",
    "tunnels",
    "etrs",
    "itrs",
    "routers",
    "demo",
}


def _check(
    table: Mapping[str, Any], key: str, allowed: AbstractSet[str], required: AbstractSet[str] = frozenset()
) -> None:
    for name in table:
        if name not in allowed:
            raise AltTopologyError(f"{key}.{name}: unknown key (allowed: {', '.join(sorted(allowed))})")
    for name in sorted(required):
        if name not in table:
            raise AltTopologyError(f"{key}.{name}: missing")


def _table(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise AltTopologyError(f"{key}: expected a table, got {type(value).__name__}")
    return value


def _list(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise AltTopologyError(f"{key}: expected an array, got {type(value).__name__}")
    return value


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise AltTopologyError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def _int(value: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise AltTopologyError(f"{key}: expected an integer in {lo}..{hi}, got {value!r}")
    return value


def _prefix(value: Any, key: str) -> Prefix:
    text = _str(value, key)
    try:
        return ip_network(text, strict=True)
    except ValueError as exc:
        raise AltTopologyError(f"{key}: bad prefix {text!r}: {exc}") from exc


def _prefixes(value: Any, key: str) -> tuple[Prefix, ...]:
    return tuple(_prefix(v, f"{key}[{i}]") for i, v in enumerate(_list(value, key)))


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise AltTopologyError(f"{key}: expected true or false, got {value!r}")
    return value


def _algorithm(value: Any, key: str) -> str:
    text = _str(value, key)
    if text not in ALGORITHMS:
        raise AltTopologyError(f"{key}: {text!r} is not one of {', '.join(ALGORITHMS)}")
    return text


def _router_id(value: Any, key: str) -> IPv4Address:
    text = _str(value, key)
    try:
        rid = ip_address(text)
    except ValueError as exc:
        raise AltTopologyError(f"{key}: bad router id {text!r}") from exc
    if not isinstance(rid, IPv4Address):
        raise AltTopologyError(f"{key}: a router id is an IPv4 address, got {text!r}")
    return rid


def _host(value: Any, key: str, hosts: set[str]) -> str:
    name = _str(value, key)
    if name not in hosts:
        raise AltTopologyError(f"{key}: unknown host {name!r}")
    return name


def parse(data: Mapping[str, Any]) -> AltTopology:
    """A lab topology dict with an ``[alt]`` table (raises AltTopologyError / TopologyError)."""
    rest = dict(data)
    raw_alt = rest.pop("alt", None)
    topo = Topology.from_dict(rest)
    if raw_alt is None:
        raise AltTopologyError("alt: missing (an ALT lab needs an [alt] table; see docs/lab.md)")
    alt = _table(raw_alt, "alt")
    _check(alt, "alt", _ALT_KEYS, {"nodes"})
    hosts = {h.name for h in topo.hosts}
    accept = _prefixes(alt.get("accept", list(DEFAULT_ACCEPT)), "alt.accept")
    hold = _int(alt.get("hold_time", DEFAULT_HOLD_TIME), "alt.hold_time", 3, 65535)
    try:
        v4 = IPv4Network(_str(alt.get("tunnel_v4", DEFAULT_TUNNEL_V4), "alt.tunnel_v4"))
        v6 = IPv6Network(_str(alt.get("tunnel_v6", DEFAULT_TUNNEL_V6), "alt.tunnel_v6"))
    except ValueError as exc:
        raise AltTopologyError(f"alt.tunnel_v4/tunnel_v6: {exc}") from exc
    if v4.prefixlen > 28 or v6.prefixlen > 60:
        raise AltTopologyError("alt.tunnel_v4/tunnel_v6: pools too small (at most /28 and /60)")

    nodes: list[AltNodeSpec] = []
    for host, raw in _table(alt["nodes"], "alt.nodes").items():
        key = f"alt.nodes.{host}"
        _host(host, key, hosts)
        t = _table(raw, key)
        _check(
            t,
            key,
            {"asn", "router_id", "announce", "map_resolver", "sites", "extra", "aggregates", "etr", "bgp"},
            {"asn", "router_id"},
        )
        announce = _prefixes(t.get("announce", []), f"{key}.announce")
        for i, p in enumerate(announce):
            if not _inside(p, accept):
                raise AltTopologyError(f"{key}.announce[{i}]: {p} is outside alt.accept")
        sites: list[SiteSpec] = []
        for i, raw_site in enumerate(_list(t.get("sites", []), f"{key}.sites")):
            sk = f"{key}.sites[{i}]"
            st = _table(raw_site, sk)
            _check(
                st, sk, {"name", "key", "eid_prefixes", "always_announce", "algorithm"},
                {"name", "key", "eid_prefixes"},
            )
            sites.append(
                SiteSpec(
                    _str(st["name"], f"{sk}.name"),
                    _str(st["key"], f"{sk}.key"),
                    _prefixes(st["eid_prefixes"], f"{sk}.eid_prefixes"),
                    _bool(st.get("always_announce", False), f"{sk}.always_announce"),
                    _algorithm(st.get("algorithm", DEFAULT_ALGORITHM), f"{sk}.algorithm"),
                )
            )
        aggregates: list[LabAggregate] = []
        for i, raw_agg in enumerate(_list(t.get("aggregates", []), f"{key}.aggregates")):
            ak = f"{key}.aggregates[{i}]"
            at = _table(raw_agg, ak)
            _check(at, ak, {"prefix", "summary_only", "as_set", "always"}, {"prefix"})
            prefix = _prefix(at["prefix"], f"{ak}.prefix")
            if not _inside(prefix, accept):
                raise AltTopologyError(f"{ak}.prefix: {prefix} is outside alt.accept")
            aggregates.append(
                LabAggregate(
                    prefix,
                    _bool(at.get("summary_only", False), f"{ak}.summary_only"),
                    _bool(at.get("as_set", False), f"{ak}.as_set"),
                    _bool(at.get("always", False), f"{ak}.always"),
                )
            )
        attached: AttachedEtr | None = None
        if "etr" in t:
            ek = f"{key}.etr"
            et = _table(t["etr"], ek)
            _check(et, ek, {"eids", "alt_attached", "rloc"}, {"eids", "alt_attached"})
            if et["alt_attached"] is not True:
                raise AltTopologyError(f"{ek}.alt_attached: a node's own ETR is ALT-attached (true); "
                                       "an MS-registered ETR is an [[alt.etrs]] host")
            eids = _prefixes(et["eids"], f"{ek}.eids")
            for i, p in enumerate(eids):
                if not _inside(p, accept):
                    raise AltTopologyError(f"{ek}.eids[{i}]: {p} is outside alt.accept")
            try:
                rloc = ip_address(et.get("rloc", t["router_id"]))
            except (TypeError, ValueError):
                raise AltTopologyError(f"{ek}.rloc: expected an IP address") from None
            attached = AttachedEtr(eids, rloc)
        mr = t.get("map_resolver", False)
        if not isinstance(mr, bool):
            raise AltTopologyError(f"{key}.map_resolver: expected true or false")
        extra = t.get("extra", "")
        if not isinstance(extra, str):
            raise AltTopologyError(f"{key}.extra: expected a string of TOML")
        bgp = t.get("bgp", "exabgp")
        if bgp not in ("exabgp", "frr"):
            raise AltTopologyError(f"{key}.bgp: expected \"exabgp\" or \"frr\", not {bgp!r}")
        nodes.append(
            AltNodeSpec(
                host,
                _int(t["asn"], f"{key}.asn", 1, 0xFFFFFFFF),
                _router_id(t["router_id"], f"{key}.router_id"),
                announce,
                mr,
                tuple(sites),
                extra,
                tuple(aggregates),
                attached,
                bgp,
            )
        )
    if not nodes:
        raise AltTopologyError("alt.nodes: at least one node is needed")
    node_hosts = {n.host for n in nodes}

    routers: list[RouterSpec] = []
    for host, raw in _table(alt.get("routers", {}), "alt.routers").items():
        key = f"alt.routers.{host}"
        _host(host, key, hosts)
        if host in node_hosts:
            raise AltTopologyError(f"{key}: {host!r} already runs an ALT node")
        t = _table(raw, key)
        _check(t, key, {"daemon", "asn", "router_id", "announce"}, {"daemon", "asn", "router_id"})
        daemon = _str(t["daemon"], f"{key}.daemon")
        if daemon not in ROUTER_DAEMONS:
            raise AltTopologyError(f"{key}.daemon: {daemon!r} is not one of {', '.join(ROUTER_DAEMONS)}")
        routers.append(
            RouterSpec(
                host,
                daemon,
                _int(t["asn"], f"{key}.asn", 1, 0xFFFFFFFF),
                _router_id(t["router_id"], f"{key}.router_id"),
                _prefixes(t.get("announce", []), f"{key}.announce"),
            )
        )
    speakers = node_hosts | {r.host for r in routers}

    tunnels: list[TunnelSpec] = []
    seen_pairs: set[frozenset[str]] = set()
    max_tunnels = min(2 ** (30 - v4.prefixlen), 2 ** (64 - v6.prefixlen))
    for i, raw in enumerate(_list(alt.get("tunnels", []), "alt.tunnels")):
        key = f"alt.tunnels[{i}]"
        t = _table(raw, key)
        _check(t, key, {"between", "key", "md5_password"}, {"between"})
        between = _list(t["between"], f"{key}.between")
        if len(between) != 2:
            raise AltTopologyError(f"{key}.between: expected two hosts")
        a, b = (_host(h, f"{key}.between[{j}]", hosts) for j, h in enumerate(between))
        for j, h in enumerate((a, b)):
            if h not in speakers:
                raise AltTopologyError(
                    f"{key}.between[{j}]: {h!r} is neither an alt.nodes nor an alt.routers host"
                )
        if a == b:
            raise AltTopologyError(f"{key}.between: a tunnel joins two different hosts")
        if a not in node_hosts and b not in node_hosts:
            raise AltTopologyError(f"{key}.between: one end must be an ALT node")
        pair = frozenset((a, b))
        if pair in seen_pairs:
            raise AltTopologyError(f"{key}.between: {a} and {b} already have a tunnel")
        seen_pairs.add(pair)
        if i >= max_tunnels:
            raise AltTopologyError(f"{key}: the tunnel address pools hold only {max_tunnels} tunnels")
        md5 = t.get("md5_password")
        tunnel = TunnelSpec(
            i,
            a,
            b,
            _int(t.get("key", i + 1), f"{key}.key", 0, 0xFFFFFFFF),
            _str(md5, f"{key}.md5_password") if md5 is not None else None,
        )
        try:
            underlay_pair(topo, a, b)
        except AltTopologyError as exc:
            raise AltTopologyError(f"{key}: {exc}") from None
        tunnels.append(tunnel)

    site_keys = {(n.host, s.key) for n in nodes for s in n.sites}
    site_algs = {(n.host, s.key, s.algorithm) for n in nodes for s in n.sites}
    etrs: list[EtrSpec] = []
    for host, raw in _table(alt.get("etrs", {}), "alt.etrs").items():
        key = f"alt.etrs.{host}"
        _host(host, key, hosts)
        t = _table(raw, key)
        _check(
            t, key, {"map_server", "key", "eids", "register_interval", "algorithm", "register_port"},
            {"map_server", "key", "eids"},
        )
        ms = _host(t["map_server"], f"{key}.map_server", hosts)
        if ms not in node_hosts or not any(n.sites for n in nodes if n.host == ms):
            raise AltTopologyError(f"{key}.map_server: {ms!r} is not an ALT node with map-server sites")
        etr = EtrSpec(
            host,
            ms,
            _str(t["key"], f"{key}.key"),
            _prefixes(t["eids"], f"{key}.eids"),
            _int(t.get("register_interval", DEFAULT_REGISTER_INTERVAL), f"{key}.register_interval", 1, 86400),
            _algorithm(t.get("algorithm", DEFAULT_ALGORITHM), f"{key}.algorithm"),
            _int(t["register_port"], f"{key}.register_port", 0, 65535) if "register_port" in t else None,
        )
        if (ms, etr.key) not in site_keys:
            raise AltTopologyError(f"{key}.key: no site on {ms!r} has this key")
        if (ms, etr.key, etr.algorithm) not in site_algs:
            # The Map-Server would refuse every Map-Register (bad-key-id, RFC 9301 §5.6).
            raise AltTopologyError(
                f"{key}.algorithm: the site on {ms!r} with this key uses another algorithm"
            )
        try:
            underlay_pair(topo, host, ms)
        except AltTopologyError as exc:
            raise AltTopologyError(f"{key}: {exc}") from None
        etrs.append(etr)

    itrs = tuple(
        _host(h, f"alt.itrs[{i}]", hosts) for i, h in enumerate(_list(alt.get("itrs", []), "alt.itrs"))
    )

    demo: DemoSpec | None = None
    if "demo" in alt:
        t = _table(alt["demo"], "alt.demo")
        _check(t, "alt.demo", {"eid", "itr", "map_resolver"}, {"eid", "itr", "map_resolver"})
        try:
            eid = ip_address(_str(t["eid"], "alt.demo.eid"))
        except ValueError as exc:
            raise AltTopologyError(f"alt.demo.eid: {exc}") from exc
        mr = _host(t["map_resolver"], "alt.demo.map_resolver", hosts)
        if not any(n.host == mr and n.map_resolver for n in nodes):
            raise AltTopologyError(
                f"alt.demo.map_resolver: {mr!r} is not an ALT node with map_resolver = true"
            )
        itr = _host(t["itr"], "alt.demo.itr", hosts)
        try:
            underlay_pair(topo, itr, mr)
        except AltTopologyError as exc:
            raise AltTopologyError(f"alt.demo: {exc}") from None
        demo = DemoSpec(eid, itr, mr)

    return AltTopology(
        topo, accept, tuple(nodes), tuple(tunnels), tuple(etrs), itrs, tuple(routers), demo, hold, v4, v6
    )
