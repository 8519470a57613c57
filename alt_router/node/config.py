"""Node configuration: one TOML file per ALT node -> frozen dataclasses.

Every problem in a file is collected and reported at once in a single
``ConfigError``, each line naming the file, the dotted key (``peers[1].max_prefix``)
and what is wrong.  Unknown keys are errors: a typo such as ``max_prefixes``
must not silently fall back to a default on a router.

The file's shape is defined once, by the pydantic models of ``alt_router.node.config_model``
(also the source of ``alt-router config-schema``); this module runs them, adds the checks that span
keys, and returns the frozen dataclasses below, which the rest of the node uses.  The reference
for every key is docs/configuration.md.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_address,
)
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError

from alt_router import validation
from alt_router.alt.icmp import IcmpLimits
from alt_router.node.config_model import (
    DEFAULT_API_PORT,
    DEFAULT_FRR_BIN_DIR,
    DEFAULT_HOLD_TIME,
    DEFAULT_MAX_PREFIX,
    DEFAULT_MAX_REGISTRATIONS_PER_SITE,
    DEFAULT_MAX_REGISTRATIONS_PER_SOURCE,
    DEFAULT_MR_GLOBAL_RATE,
    DEFAULT_MR_RATE_PREFIXES,
    DEFAULT_RATE_LIMIT,
    DEFAULT_RECORD_TTL,
    DEFAULT_REGISTER_INTERVAL,
    DEFAULT_STATE_DIR,
    MD5_MAX_LEN,
    ApiModel,
    AuthAlgorithm,
    AuthLength,
    BgpSpeaker,
    EidModel,
    EtrModel,
    ExabgpModel,
    Family,
    FrrModel,
    IcmpModel,
    MapResolverModel,
    MapServerModel,
    NodeFile,
    NodeModel,
    NotifyTo,
    PeerModel,
    Replay,
    TunnelMode,
    TunnelModel,
)
from alt_router.rib.aggregate import AggregateSpec
from alt_router.rib.fib import FibKind
from alt_router.types import IPAddress, Prefix

__all__ = [
    "DEFAULT_API_PORT", "DEFAULT_HOLD_TIME", "DEFAULT_MAX_PREFIX", "DEFAULT_MAX_REGISTRATIONS_PER_SITE",
    "DEFAULT_MAX_REGISTRATIONS_PER_SOURCE", "DEFAULT_MR_GLOBAL_RATE", "DEFAULT_MR_RATE_PREFIXES",
    "DEFAULT_RATE_LIMIT", "DEFAULT_RECORD_TTL", "DEFAULT_REGISTER_INTERVAL", "DEFAULT_STATE_DIR",
    "MD5_MAX_LEN", "ApiSection", "ConfigError", "EidSection", "EtrMappingEntry", "EtrSection",
    "ExabgpSection", "FrrSection", "MapResolverSection", "MapServerRef", "MapServerSection", "NodeConfig",
    "NodeSection", "PeerConfig", "PeerTunnel", "Rloc", "SiteConfig", "Underlay", "load_config",
    "parse_config",
]

Interface = IPv4Interface | IPv6Interface

# The choices are the models' Literal types (alt_router.node.config_model); the tuples list them.
TUNNEL_MODES: tuple[TunnelMode, ...] = get_args(TunnelMode)
AUTH_ALGORITHMS: tuple[AuthAlgorithm, ...] = get_args(AuthAlgorithm)
FAMILIES: tuple[Family, ...] = get_args(Family)
BGP_SPEAKERS: tuple[BgpSpeaker, ...] = get_args(BgpSpeaker)
AUTH_LENGTHS: tuple[AuthLength, ...] = get_args(AuthLength)
SITE_NOTIFY_TO: tuple[str, ...] = get_args(NotifyTo)
SITE_REPLAY: tuple[str, ...] = get_args(Replay)


class ConfigError(ValueError):
    """One or more problems in a node configuration file."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = "\n".join(f"  {source}: {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{len(problems)} {noun} in {source}:\n{lines}")


@dataclass(frozen=True, slots=True)
class NodeSection:
    name: str
    asn: int
    router_id: IPv4Address
    tunnel_mode: TunnelMode = "auto"
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    max_prefix: int = DEFAULT_MAX_PREFIX
    fib: FibKind = "dir24"
    # Who speaks BGP for the ALT (issue 10): ExaBGP with the RIB and forwarding in this process, or
    # the node's own FRR with the RIB read back from the kernel and forwarding done by the kernel.
    bgp: BgpSpeaker = "exabgp"


@dataclass(frozen=True, slots=True)
class EidSection:
    announce: tuple[Prefix, ...]
    accept: tuple[Prefix, ...]
    aggregates: tuple[AggregateSpec, ...] = ()

    def accepts(self, prefix: Prefix) -> bool:
        return any(prefix.version == a.version and prefix.subnet_of(a) for a in self.accept)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Underlay:
    local: IPAddress
    remote: IPAddress


@dataclass(frozen=True, slots=True)
class PeerTunnel:
    """Inner addresses of the GRE tunnel: the BGP session runs between them."""

    local_ipv4: IPv4Interface | None = None
    remote_ipv4: IPv4Address | None = None
    local_ipv6: IPv6Interface | None = None
    remote_ipv6: IPv6Address | None = None

    @property
    def remotes(self) -> tuple[IPAddress, ...]:
        return tuple(a for a in (self.remote_ipv4, self.remote_ipv6) if a is not None)

    @property
    def session(self) -> tuple[IPAddress, IPAddress]:
        """(local, remote) of the BGP session: IPv4 inner addresses when there are any."""
        if self.local_ipv4 is not None and self.remote_ipv4 is not None:
            return self.local_ipv4.ip, self.remote_ipv4
        assert self.local_ipv6 is not None and self.remote_ipv6 is not None
        return self.local_ipv6.ip, self.remote_ipv6


@dataclass(frozen=True, slots=True)
class PeerConfig:
    name: str
    asn: int
    underlay: Underlay
    tunnel: PeerTunnel
    families: tuple[Family, ...]
    key: int | None = None
    md5_password: str | None = None
    max_prefix: int = DEFAULT_MAX_PREFIX
    hold_time: int = DEFAULT_HOLD_TIME
    description: str = ""


@dataclass(frozen=True, slots=True)
class ExabgpSection:
    config: Path | None = None
    binary: str = "exabgp"


@dataclass(frozen=True, slots=True)
class FrrSection:
    """``[frr]``: the node's own FRR instance in ``bgp = "frr"`` mode (docs/deploy.md)."""

    bin_dir: Path = Path(DEFAULT_FRR_BIN_DIR)
    vtysh: str = "vtysh"
    # FRR's -N: config and sockets under /etc/frr/<pathspace>, /var/run/frr/<pathspace>, so the ALT
    # instance coexists with an operator's FRR for the underlay.  Empty: the node's name.
    pathspace: str = ""
    # A kernel VRF for the ALT routes where the kernel has one; None: the node's network namespace
    # is the ALT's table (this machine has no VRF module).
    vrf: str | None = None


@dataclass(frozen=True, slots=True)
class ApiSection:
    listen: IPAddress = field(default_factory=lambda: IPv4Address("127.0.0.1"))
    port: int = DEFAULT_API_PORT
    token: str | None = None
    # Limits against hostile or stuck clients (defaults justified in alt_router.api.limits/stream).
    max_connections: int = 128
    header_timeout: float = 10.0
    keepalive_timeout: float = 30.0
    stream_clients: int = 64
    stream_queue: int = 10_000


@dataclass(frozen=True, slots=True)
class MapResolverSection:
    enabled: bool = False
    listen: IPAddress = field(default_factory=lambda: IPv4Address("0.0.0.0"))
    rate_limit: float = DEFAULT_RATE_LIMIT
    rate_burst: int = 200
    # Issue 11 / RFC 9301 §9: a global bucket, a bounded per-prefix table, a short TTL during outages.
    global_rate_limit: float = DEFAULT_MR_GLOBAL_RATE
    global_rate_burst: int = 2 * int(DEFAULT_MR_GLOBAL_RATE)
    rate_limit_prefixes: int = DEFAULT_MR_RATE_PREFIXES
    outage_negative_ttl: int = 1


@dataclass(frozen=True, slots=True)
class SiteConfig:
    name: str
    key: str
    algorithm: AuthAlgorithm
    eid_prefixes: tuple[Prefix, ...]
    accept_more_specifics: bool = False
    always_announce: bool = False
    # May share EID space with another site (checked by _check_sites; issue 11).
    allow_overlap: bool = False
    # Where Map-Notify and forwarded Map-Requests go, and the replay policy (docs/mapping.md,
    # Interoperability): the values of alt_router.mapping.map_server.NOTIFY_TO / REPLAY_POLICIES.
    notify_to: str = "rfc"
    replay: str = "enforce"


@dataclass(frozen=True, slots=True)
class MapServerSection:
    enabled: bool = False
    sites: tuple[SiteConfig, ...] = ()
    allow_overlapping_sites: bool = False
    # Registration caps (issue 11; defaults justified in docs/configuration.md).
    max_registrations_per_site: int = DEFAULT_MAX_REGISTRATIONS_PER_SITE
    max_registrations_per_source: int = DEFAULT_MAX_REGISTRATIONS_PER_SOURCE


@dataclass(frozen=True, slots=True)
class MapServerRef:
    address: IPAddress
    key: str
    algorithm: AuthAlgorithm = "hmac-sha256-128"
    auth_length: AuthLength = "full"


@dataclass(frozen=True, slots=True)
class Rloc:
    address: IPAddress
    priority: int = 1
    weight: int = 100
    local: bool = True  # an address of this ETR: the L bit of its Map-Replies (RFC 9301 §5.4)


@dataclass(frozen=True, slots=True)
class EtrMappingEntry:
    eid_prefix: Prefix
    rlocs: tuple[Rloc, ...]
    ttl: int = DEFAULT_RECORD_TTL


@dataclass(frozen=True, slots=True)
class EtrSection:
    enabled: bool = False
    map_servers: tuple[MapServerRef, ...] = ()
    mappings: tuple[EtrMappingEntry, ...] = ()
    register_interval: int = DEFAULT_REGISTER_INTERVAL
    proxy_reply: bool = False
    # RFC 6836 §3.1/§4: the ETR is attached to the ALT itself: its EID prefixes are announced into
    # the ALT and the ALT datagrams for them are answered here (no Map-Server in between).
    alt_attached: bool = False


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node: NodeSection
    eid: EidSection
    peers: tuple[PeerConfig, ...]
    exabgp: ExabgpSection = field(default_factory=ExabgpSection)
    api: ApiSection = field(default_factory=ApiSection)
    map_resolver: MapResolverSection = field(default_factory=MapResolverSection)
    map_server: MapServerSection = field(default_factory=MapServerSection)
    etr: EtrSection = field(default_factory=EtrSection)
    source: str = "<string>"
    # [icmp]: the forwarder's ICMP error limits (alt_router.alt.icmp).
    icmp: IcmpLimits = field(default_factory=IcmpLimits)
    frr: FrrSection = field(default_factory=FrrSection)

    @property
    def frr_pathspace(self) -> str:
        return self.frr.pathspace or self.node.name

    def peer(self, name: str) -> PeerConfig | None:
        return next((p for p in self.peers if p.name == name), None)

    def peer_by_address(self, address: str | IPAddress) -> PeerConfig | None:
        """The peer whose tunnel remote (inner) address is ``address``."""
        try:
            addr = ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return None
        return next((p for p in self.peers if addr in p.tunnel.remotes), None)


# --- reading -----------------------------------------------------------------
# The file's shape (types, ranges, defaults, unknown keys) is the pydantic models' business
# (alt_router.node.config_model).  What stays here by hand: the checks that span keys, and the
# defaults that depend on another key, written against the validated models.  Each top-level
# table (and each [[peers]] entry) is validated on its own, so a bad [api] does not hide a tunnel
# address outside its subnet: every problem of the file is reported at once.

M = TypeVar("M", bound=BaseModel)

_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    name: TypeAdapter(f.annotation) for name, f in NodeFile.model_fields.items()
}
_PEER = TypeAdapter(PeerModel)
_TUNNEL = TypeAdapter(TunnelModel)


class _Problems(list[str]):
    def add(self, key: str, problem: str) -> None:
        self.append(f"{key}: {problem}")


def _validate(doc: dict[str, Any], out: _Problems) -> dict[str, Any]:
    """Each top-level table of ``doc`` validated against its model; None where it failed."""
    sections: dict[str, Any] = {}
    for name, info in NodeFile.model_fields.items():
        if name not in doc:
            if info.is_required():
                out.add(name, "missing required table")
            else:
                sections[name] = info.get_default(call_default_factory=True)
            continue
        raw = doc[name]
        if name == "peers" and isinstance(raw, list):
            # One by one: the duplicate checks still see the good peers when one is bad.
            peers: list[tuple[int, PeerModel]] = []
            for i, item in enumerate(raw):
                try:
                    peers.append((i, _PEER.validate_python(item)))
                except ValidationError as exc:
                    out.extend(validation.problems(exc, PeerModel, ("peers", i)))
                    _check_tunnel_of_bad_peer(item, f"peers[{i}].tunnel", out)
            sections[name] = peers
            continue
        try:
            sections[name] = _ADAPTERS[name].validate_python(raw)
        except ValidationError as exc:  # ("peers" not an array lands here too)
            out.extend(validation.problems(exc, info.annotation, (name,)))
            sections[name] = None
    for name in doc:
        if name not in NodeFile.model_fields:
            out.add(name, "unknown key")
    return sections


def _check_tunnel_of_bad_peer(raw: Any, path: str, out: _Problems) -> None:
    """A peer with a bad key elsewhere still gets its tunnel addresses checked against each other."""
    try:
        tunnel = _TUNNEL.validate_python(raw.get("tunnel") if isinstance(raw, dict) else None)
    except ValidationError:
        return  # already reported with the peer
    _tunnel(tunnel, path, out)


def _get(sections: dict[str, Any], name: str, tp: type[M]) -> M | None:
    value = sections.get(name)
    return value if isinstance(value, tp) else None


def _eid(m: EidModel | None, out: _Problems) -> EidSection:
    if m is None:
        return EidSection((), ())
    eid = EidSection(m.announce, m.accept)
    aggregates: list[AggregateSpec] = []
    seen: dict[Prefix, str] = {}
    for i, a in enumerate(m.aggregates):
        key = f"eid.aggregates[{i}]"
        if a.prefix in seen:
            out.add(f"{key}.prefix", f"{a.prefix} is already aggregated by {seen[a.prefix]}")
            continue
        seen[a.prefix] = key
        aggregates.append(AggregateSpec(a.prefix, a.summary_only, a.as_set, a.always))
    eid = EidSection(m.announce, m.accept, tuple(aggregates))
    if eid.accept:
        for i, prefix in enumerate(eid.announce):
            if not eid.accepts(prefix):
                out.add(f"eid.announce[{i}]", f"{prefix} is outside the accepted EID space (eid.accept)")
        for i, agg in enumerate(m.aggregates):
            if not eid.accepts(agg.prefix):
                out.add(f"eid.aggregates[{i}].prefix",
                        f"{agg.prefix} is outside the accepted EID space (eid.accept)")
    return eid


def _tunnel(t: TunnelModel, path: str, out: _Problems) -> PeerTunnel:
    given = dict(t)
    pairs: dict[str, Any] = {}
    for version, lk, rk in ((4, "local_ipv4", "remote_ipv4"), (6, "local_ipv6", "remote_ipv6")):
        local, remote = given[lk], given[rk]
        if local is not None and local.version != version:
            out.add(f"{path}.{lk}", f"{local} is not an IPv{version} address")
            local = None
        if remote is not None and remote.version != version:
            out.add(f"{path}.{rk}", f"{remote} is not an IPv{version} address")
            remote = None
        if (local is None) != (remote is None):
            missing = rk if local is not None else lk
            out.add(f"{path}.{missing}", f"missing: {lk} and {rk} go together")
            continue
        if local is None:
            continue
        if remote == local.ip:
            out.add(f"{path}.{rk}", f"{remote} is the local tunnel address")
        elif remote not in local.network:
            out.add(f"{path}.{rk}", f"{remote} is not inside the local tunnel subnet {local.network}")
        pairs[lk], pairs[rk] = local, remote
    if all(v is None for v in given.values()):
        out.add(path, "needs local_ipv4/remote_ipv4 and/or local_ipv6/remote_ipv6")
    return PeerTunnel(**pairs)


def _peer(
    m: PeerModel, path: str, node: NodeModel | None, eid: EidSection, out: _Problems
) -> PeerConfig | None:
    u = m.underlay
    underlay = None
    if u.local.version != u.remote.version:
        out.add(f"{path}.underlay.remote", f"{u.remote} and local {u.local} are different address families")
    elif u.local == u.remote:
        out.add(f"{path}.underlay.remote", f"{u.remote} is the same as the local address")
    else:
        underlay = Underlay(u.local, u.remote)
    tunnel = _tunnel(m.tunnel, f"{path}.tunnel", out)
    if underlay is None or not tunnel.remotes:
        return None
    default_families = tuple(f for f in FAMILIES if any(p.version == int(f[-1]) for p in eid.accept))
    return PeerConfig(
        m.name, m.asn, underlay, tunnel, m.families or default_families or ("ipv4",), m.key, m.md5_password,
        m.max_prefix or (node.max_prefix if node else DEFAULT_MAX_PREFIX), m.hold_time, m.description,
    )


def _peers(models: list[tuple[int, PeerModel]], node: NodeModel | None, eid: EidSection,
           out: _Problems) -> tuple[PeerConfig, ...]:
    peers: list[PeerConfig] = []
    seen_names: dict[str, str] = {}
    seen_addrs: dict[IPAddress, str] = {}
    seen_keys: dict[tuple[IPAddress, IPAddress, int | None], str] = {}
    for i, m in models:
        path = f"peers[{i}]"
        peer = _peer(m, path, node, eid, out)
        if peer is None:
            continue
        if peer.name in seen_names:
            out.add(f"{path}.name", f"{peer.name!r} is already used by {seen_names[peer.name]}")
        seen_names[peer.name] = path
        for addr in peer.tunnel.remotes:
            if addr in seen_addrs:
                out.add(f"{path}.tunnel", f"remote address {addr} is already used by {seen_addrs[addr]}")
            seen_addrs[addr] = path
        # Two tunnels between the same underlay pair are only told apart by the GRE key.
        gre_id = (peer.underlay.local, peer.underlay.remote, peer.key)
        if gre_id in seen_keys:
            out.add(f"{path}.key",
                    f"same underlay pair and GRE key as {seen_keys[gre_id]}; set distinct keys")
        seen_keys[gre_id] = path
        peers.append(peer)
    return tuple(peers)


def _api(m: ApiModel, out: _Problems) -> ApiSection:
    if not m.listen.is_loopback and m.token is None:
        out.add("api.token", f"required when the API listens on a non-loopback address ({m.listen})")
    if m.stream_clients > m.max_connections:
        out.add("api.stream_clients",
                f"{m.stream_clients} is more than api.max_connections ({m.max_connections})")
    return ApiSection(**dict(m))


def _map_resolver(m: MapResolverModel, present: bool) -> MapResolverSection:
    return MapResolverSection(
        present if m.enabled is None else m.enabled, m.listen, m.rate_limit,
        m.rate_burst or max(1, int(2 * m.rate_limit)), m.global_rate_limit,
        m.global_rate_burst or max(1, int(2 * m.global_rate_limit)), m.rate_limit_prefixes,
        m.outage_negative_ttl,
    )


def _map_server(m: MapServerModel, present: bool, eid: EidSection, out: _Problems) -> MapServerSection:
    enabled = present if m.enabled is None else m.enabled
    sites: list[SiteConfig] = []
    paths: list[str] = []  # each site's dotted key, for the errors of _check_sites
    names: dict[str, str] = {}
    for i, s in enumerate(m.sites):
        sp = f"map_server.sites[{i}]"
        if s.name in names:
            out.add(f"{sp}.name", f"{s.name!r} is already used by {names[s.name]}")
        names[s.name] = sp
        sites.append(SiteConfig(s.name, s.key, s.algorithm, s.eid_prefixes, s.accept_more_specifics,
                                s.always_announce, s.allow_overlap, s.notify_to, s.replay))
        paths.append(sp)
    if enabled and not sites and not out:
        out.add("map_server.sites", "an enabled Map-Server needs at least one [[map_server.sites]]")
    _check_sites(out, eid, sites, paths, m.allow_overlapping_sites)
    return MapServerSection(enabled, tuple(sites), m.allow_overlapping_sites, m.max_registrations_per_site,
                            m.max_registrations_per_source)


def _check_sites(
    out: _Problems, eid: EidSection, sites: list[SiteConfig], paths: list[str], allow_overlapping: bool
) -> None:
    """A site's prefixes lie inside [eid].accept, and two sites share no EID space unless allowed.

    A site outside the accepted space could register, but the aggregate the Map-Server announces for
    it into the ALT (RFC 6833 §4.2, RFC 6836 §4.2) would be refused by every ALT node. Two
    sites claiming the same EIDs make the Map-Server's answer depend on which site registered;
    an operator who means it (a customer site inside a provider's) says so with allow_overlap.
    """
    if eid.accept:
        for site, sp in zip(sites, paths, strict=True):
            for j, prefix in enumerate(site.eid_prefixes):
                if not eid.accepts(prefix):
                    out.add(f"{sp}.eid_prefixes[{j}]",
                            f"{prefix} is outside the accepted EID space (eid.accept)")
    if allow_overlapping:
        return
    # Two prefixes overlap only if one contains the other. In (family, address, length) order every
    # prefix comes after the prefixes that contain it, and those are exactly the stack left when the
    # ones that do not contain it are popped: one sort and a walk, not a comparison of every pair
    # (a generated lab has thousands of sites).  No schema can say this, hence code.
    entries = sorted(
        ((prefix, i, j) for i, site in enumerate(sites) for j, prefix in enumerate(site.eid_prefixes)),
        key=lambda e: (e[0].version, int(e[0].network_address), e[0].prefixlen),
    )
    stack: list[tuple[Prefix, int]] = []
    for prefix, i, j in entries:
        while stack and not _within(prefix, stack[-1][0]):
            stack.pop()
        clash = next((k for _, k in reversed(stack)
                      if k != i and not (sites[i].allow_overlap or sites[k].allow_overlap)), None)
        if clash is not None:
            outer = next(q for q, k in reversed(stack) if k == clash)
            out.add(f"{paths[i]}.eid_prefixes[{j}]",
                    f"{prefix} overlaps {outer} of site {sites[clash].name!r} ({paths[clash]}); set "
                    "allow_overlap = true on one of the sites, or [map_server] allow_overlapping_sites = "
                    "true, if intended")
        stack.append((prefix, i))


def _within(inner: Prefix, outer: Prefix) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


def _etr(m: EtrModel, present: bool, eid: EidSection, out: _Problems) -> EtrSection:
    enabled = present if m.enabled is None else m.enabled
    servers = tuple(MapServerRef(s.address, s.key, s.algorithm, s.auth_length) for s in m.map_servers)
    mappings = tuple(
        EtrMappingEntry(
            e.eid_prefix, tuple(Rloc(r.address, r.priority, r.weight, r.local) for r in e.rlocs), e.ttl
        )
        for e in m.mappings
    )
    if enabled and not out:
        if not servers and not m.alt_attached:
            out.add("etr.map_servers", "an enabled ETR needs at least one [[etr.map_servers]] "
                                       "(or alt_attached = true)")
        if not mappings:
            out.add("etr.mappings", "an enabled ETR needs at least one [[etr.mappings]]")
    if m.alt_attached and eid.accept:
        # Announced into the ALT: outside the accepted space every ALT node would refuse it.
        for i, e in enumerate(mappings):
            if not eid.accepts(e.eid_prefix):
                out.add(f"etr.mappings[{i}].eid_prefix",
                        f"{e.eid_prefix} is outside the accepted EID space (eid.accept), "
                        "which an ALT-attached ETR announces into")
    return EtrSection(enabled, servers, mappings, m.register_interval, m.proxy_reply, m.alt_attached)


def parse_config(text: str, source: str = "<string>") -> NodeConfig:
    """Parse and validate one node's TOML configuration; raise ConfigError listing every problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    out = _Problems()
    sections = _validate(doc, out)
    node = _get(sections, "node", NodeModel)
    eid = _eid(_get(sections, "eid", EidModel), out)
    peers = _peers(sections.get("peers") or [], node, eid, out)
    exabgp = _get(sections, "exabgp", ExabgpModel)
    frr = _get(sections, "frr", FrrModel)
    api = _get(sections, "api", ApiModel)
    mr = _get(sections, "map_resolver", MapResolverModel)
    ms = _get(sections, "map_server", MapServerModel)
    etr = _get(sections, "etr", EtrModel)
    icmp = _get(sections, "icmp", IcmpModel)
    api_section = _api(api, out) if api is not None else None
    mr_section = _map_resolver(mr, "map_resolver" in doc) if mr is not None else None
    ms_section = _map_server(ms, "map_server" in doc, eid, out) if ms is not None else None
    etr_section = _etr(etr, "etr" in doc, eid, out) if etr is not None else None
    if out or None in (node, exabgp, frr, api_section, mr_section, ms_section, etr_section, icmp):
        raise ConfigError(source, out or ["[node] is incomplete"])
    assert node is not None and exabgp is not None and frr is not None and icmp is not None
    assert api_section and mr_section and ms_section and etr_section
    return NodeConfig(
        NodeSection(**dict(node)), eid, peers, ExabgpSection(exabgp.config, exabgp.binary), api_section,
        mr_section, ms_section, etr_section, source, icmp=IcmpLimits(**dict(icmp)),
        frr=FrrSection(**dict(frr)),
    )


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate a node configuration file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [f"cannot read: {exc}"]) from None
    return parse_config(text, source=str(p))
