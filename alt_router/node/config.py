"""Node configuration: one TOML file per ALT node -> frozen dataclasses.

Every problem in a file is collected and reported at once in a single
``ConfigError``, each line naming the file, the dotted key (``peers[1].max_prefix``)
and what is wrong.  Unknown keys are errors: a typo such as ``max_prefixes``
must not silently fall back to a default on a router.

The reference for every key is docs/configuration.md.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_address,
    ip_interface,
    ip_network,
)
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from alt_router.alt.icmp import IcmpLimits
from alt_router.rib.aggregate import AggregateSpec
from alt_router.rib.fib import FIB_KINDS, FibKind
from alt_router.types import IPAddress, Prefix

Interface = IPv4Interface | IPv6Interface

TunnelMode = Literal["auto", "kernel", "userspace"]
AuthAlgorithm = Literal["hmac-sha1-96", "hmac-sha256-128"]
Family = Literal["ipv4", "ipv6"]

TUNNEL_MODES: tuple[TunnelMode, ...] = ("auto", "kernel", "userspace")
AUTH_ALGORITHMS: tuple[AuthAlgorithm, ...] = ("hmac-sha1-96", "hmac-sha256-128")
FAMILIES: tuple[Family, ...] = ("ipv4", "ipv6")
BgpSpeaker = Literal["exabgp", "frr"]
BGP_SPEAKERS: tuple[BgpSpeaker, ...] = ("exabgp", "frr")
AuthLength = Literal["full", "truncated"]
AUTH_LENGTHS: tuple[AuthLength, ...] = ("full", "truncated")

DEFAULT_MAX_PREFIX = 10_000
DEFAULT_HOLD_TIME = 90
DEFAULT_API_PORT = 8179
DEFAULT_STATE_DIR = "/var/lib/alt-router"
DEFAULT_FRR_BIN_DIR = "/usr/lib/frr"
DEFAULT_RATE_LIMIT = 100.0
DEFAULT_MAX_REGISTRATIONS_PER_SITE = 1024
DEFAULT_MAX_REGISTRATIONS_PER_SOURCE = 256
SITE_NOTIFY_TO = ("rfc", "source-port")
SITE_REPLAY = ("enforce", "log-only", "off")
DEFAULT_MR_GLOBAL_RATE = 1000.0
DEFAULT_MR_RATE_PREFIXES = 16384
DEFAULT_REGISTER_INTERVAL = 60
DEFAULT_RECORD_TTL = 1440
# Linux refuses TCP-MD5 keys longer than TCP_MD5SIG_MAXKEYLEN.
MD5_MAX_LEN = 80


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

T = TypeVar("T")
_MISSING: Any = object()


class _Reader:
    """Pulls typed values out of a TOML table, recording problems instead of raising."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def error(self, key: str, problem: str) -> None:
        self.problems.append(f"{key}: {problem}")

    def table(
        self, parent: dict[str, Any], name: str, path: str, *, required: bool = False,
    ) -> dict[str, Any]:
        value = parent.pop(name, _MISSING)
        key = _join(path, name)
        if value is _MISSING:
            if required:
                self.error(key, "missing required table")
            return {}
        if not isinstance(value, dict):
            self.error(key, f"must be a table, not {_tname(value)}")
            return {}
        return value

    def tables(self, parent: dict[str, Any], name: str, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        value = parent.pop(name, _MISSING)
        key = _join(path, name)
        if value is _MISSING:
            return
        if not isinstance(value, list):
            self.error(key, f"must be an array of tables ([[{key}]]), not {_tname(value)}")
            return
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                self.error(f"{key}[{i}]", f"must be a table, not {_tname(item)}")
                continue
            yield f"{key}[{i}]", item

    def get(
        self, table: dict[str, Any], name: str, path: str, conv: Callable[[Any], T], default: Any = _MISSING,
    ) -> Any:
        """Convert ``table[name]``; on a problem record it and return ``default`` (or None)."""
        value = table.pop(name, _MISSING)
        key = _join(path, name)
        if value is _MISSING:
            if default is _MISSING:
                self.error(key, "missing required key")
                return None
            return default
        try:
            return conv(value)
        except (TypeError, ValueError) as exc:
            self.error(key, str(exc))
            return None if default is _MISSING else default

    def done(self, table: dict[str, Any], path: str) -> None:
        for name in table:
            self.error(_join(path, name), "unknown key")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _tname(value: object) -> str:
    return {
        bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# Converters: each raises ValueError/TypeError with a message meant for the operator.

def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be a string, not {_tname(value)}")
    return value


def _name(value: Any) -> str:
    s = _str(value)
    if not s or not all(c.isalnum() or c in "-_." for c in s):
        raise ValueError(f"{s!r} is not a valid name (letters, digits, '-', '_', '.')")
    return s


def _secret(value: Any) -> str:
    s = _str(value)
    if not s:
        raise ValueError("must not be empty")
    return s


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"must be true or false, not {_tname(value)}")
    return value


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def conv(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"must be an integer, not {_tname(value)}")
        if not lo <= value <= hi:
            raise ValueError(f"{value} is out of range {lo}..{hi}")
        return value
    return conv


def _asn(value: Any) -> int:
    asn = _int_range(1, 0xFFFFFFFF)(value)
    if asn == 23456:
        raise ValueError("23456 is AS_TRANS (RFC 6793), not a real AS number")
    return asn


def _hold_time(value: Any) -> int:
    hold = _int_range(0, 65535)(value)
    if hold in (1, 2):
        raise ValueError(f"{hold} is not allowed: the hold time must be 0 or 3..65535 (RFC 4271)")
    return hold


def _positive_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"must be a number, not {_tname(value)}")
    if not value > 0:
        raise ValueError(f"{value} must be greater than 0")
    return float(value)


def _address(value: Any) -> IPAddress:
    s = _str(value)
    try:
        return ip_address(s)
    except ValueError:
        raise ValueError(f"{s!r} is not an IPv4 or IPv6 address") from None


def _ipv4(value: Any) -> IPv4Address:
    addr = _address(value)
    if not isinstance(addr, IPv4Address):
        raise ValueError(f"{value!r} is not an IPv4 address")
    return addr


def _prefix(value: Any) -> Prefix:
    s = _str(value)
    if "/" not in s:
        raise ValueError(f"{s!r} needs a prefix length, e.g. {s}/24")
    try:
        return ip_network(s, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ip_network(s, strict=False)
            raise ValueError(f"{s!r} has host bits set (did you mean {fixed}?)") from None
        raise ValueError(f"{s!r} is not an IP prefix") from None


def _prefixes(value: Any) -> tuple[Prefix, ...]:
    if not isinstance(value, list):
        raise TypeError(f"must be an array of prefixes, not {_tname(value)}")
    problems, out = [], []
    for i, item in enumerate(value):
        try:
            out.append(_prefix(item))
        except (TypeError, ValueError) as exc:
            problems.append(f"[{i}] {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    dupes = sorted({str(p) for p in out if out.count(p) > 1})
    if dupes:
        raise ValueError(f"duplicate prefixes: {', '.join(dupes)}")
    return tuple(out)


def _interface(value: Any) -> Interface:
    s = _str(value)
    if "/" not in s:
        raise ValueError(f"{s!r} needs a prefix length, e.g. {s}/30")
    try:
        return ip_interface(s)
    except ValueError:
        raise ValueError(f"{s!r} is not an address with a prefix length") from None


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def conv(value: Any) -> str:
        s = _str(value)
        if s not in options:
            raise ValueError(f"{s!r} is not one of {', '.join(repr(o) for o in options)}")
        return s
    return conv


def _families(value: Any) -> tuple[Family, ...]:
    if not isinstance(value, list) or not value:
        raise TypeError("must be a non-empty array of families (\"ipv4\", \"ipv6\")")
    out = []
    for item in value:
        if item not in FAMILIES:
            raise ValueError(f"{item!r} is not a family; use \"ipv4\" and/or \"ipv6\"")
        if item not in out:
            out.append(item)
    return tuple(cast(Family, f) for f in out)


# --- sections ------------------------------------------------------------------

def _read_node(r: _Reader, doc: dict[str, Any]) -> NodeSection | None:
    t = r.table(doc, "node", "", required=True)
    p = "node"
    name = r.get(t, "name", p, _name)
    asn = r.get(t, "asn", p, _asn)
    router_id = r.get(t, "router_id", p, _ipv4)
    mode = r.get(t, "tunnel_mode", p, _choice(TUNNEL_MODES), "auto")
    state_dir = r.get(t, "state_dir", p, lambda v: Path(_secret(v)), Path(DEFAULT_STATE_DIR))
    max_prefix = r.get(t, "max_prefix", p, _int_range(1, 10_000_000), DEFAULT_MAX_PREFIX)
    fib = r.get(t, "fib", p, _choice(FIB_KINDS), "dir24")
    bgp = r.get(t, "bgp", p, _choice(BGP_SPEAKERS), "exabgp")
    r.done(t, p)
    if name is None or asn is None or router_id is None:
        return None
    return NodeSection(name, asn, router_id, mode, state_dir, max_prefix, fib, bgp)


def _read_eid(r: _Reader, doc: dict[str, Any]) -> EidSection:
    t = r.table(doc, "eid", "", required=True)
    announce = r.get(t, "announce", "eid", _prefixes, ())
    accept = r.get(t, "accept", "eid", _prefixes)
    aggregates = _read_aggregates(r, t)
    r.done(t, "eid")
    eid = EidSection(announce or (), accept or (), aggregates)
    if accept:
        for i, prefix in enumerate(eid.announce):
            if not eid.accepts(prefix):
                r.error(f"eid.announce[{i}]", f"{prefix} is outside the accepted EID space (eid.accept)")
        for i, agg in enumerate(aggregates):
            if not eid.accepts(agg.prefix):
                r.error(f"eid.aggregates[{i}].prefix",
                        f"{agg.prefix} is outside the accepted EID space (eid.accept)")
    return eid


def _read_aggregates(r: _Reader, t: dict[str, Any]) -> tuple[AggregateSpec, ...]:
    """``[[eid.aggregates]]``: RFC 6836 §7.1 EID-prefix aggregation (docs/configuration.md)."""
    out: list[AggregateSpec] = []
    seen: dict[Prefix, str] = {}
    for key, a in r.tables(t, "aggregates", "eid"):
        prefix = r.get(a, "prefix", key, _prefix)
        summary_only = r.get(a, "summary_only", key, _bool, False)
        as_set = r.get(a, "as_set", key, _bool, False)
        always = r.get(a, "always", key, _bool, False)
        r.done(a, key)
        if prefix is None:
            continue
        if prefix in seen:
            r.error(f"{key}.prefix", f"{prefix} is already aggregated by {seen[prefix]}")
            continue
        seen[prefix] = key
        out.append(AggregateSpec(prefix, summary_only, as_set, always))
    return tuple(out)


def _read_tunnel(r: _Reader, t: dict[str, Any], path: str) -> PeerTunnel:
    lv4 = r.get(t, "local_ipv4", path, _interface, None)
    rv4 = r.get(t, "remote_ipv4", path, _address, None)
    lv6 = r.get(t, "local_ipv6", path, _interface, None)
    rv6 = r.get(t, "remote_ipv6", path, _address, None)
    r.done(t, path)
    out: dict[str, Any] = {}
    for version, given_local, given_remote, lk, rk in ((4, lv4, rv4, "local_ipv4", "remote_ipv4"),
                                                       (6, lv6, rv6, "local_ipv6", "remote_ipv6")):
        local, remote = given_local, given_remote
        if local is not None and local.version != version:
            r.error(f"{path}.{lk}", f"{local} is not an IPv{version} address")
            local = None
        if remote is not None and remote.version != version:
            r.error(f"{path}.{rk}", f"{remote} is not an IPv{version} address")
            remote = None
        if (local is None) != (remote is None):
            missing = rk if local is not None else lk
            r.error(f"{path}.{missing}", f"missing: {lk} and {rk} go together")
            continue
        if local is None:
            continue
        if remote == local.ip:
            r.error(f"{path}.{rk}", f"{remote} is the local tunnel address")
        elif remote not in local.network:
            r.error(f"{path}.{rk}", f"{remote} is not inside the local tunnel subnet {local.network}")
        out[lk], out[rk] = local, remote
    if lv4 is None and lv6 is None and rv4 is None and rv6 is None:
        r.error(path, "needs local_ipv4/remote_ipv4 and/or local_ipv6/remote_ipv6")
    return PeerTunnel(**out)


def _read_peer(r: _Reader, t: dict[str, Any], path: str, node: NodeSection | None,
               eid: EidSection) -> PeerConfig | None:
    name = r.get(t, "name", path, _name)
    asn = r.get(t, "asn", path, _asn)
    description = r.get(t, "description", path, _str, "")
    key = r.get(t, "key", path, _int_range(0, 0xFFFFFFFF), None)
    md5 = r.get(t, "md5_password", path, _secret, None)
    if md5 is not None and len(md5.encode()) > MD5_MAX_LEN:
        r.error(f"{path}.md5_password", f"longer than {MD5_MAX_LEN} bytes (the Linux TCP-MD5 limit)")
    default_max = node.max_prefix if node else DEFAULT_MAX_PREFIX
    max_prefix = r.get(t, "max_prefix", path, _int_range(1, 10_000_000), default_max)
    hold_time = r.get(t, "hold_time", path, _hold_time, DEFAULT_HOLD_TIME)
    default_families = tuple(f for f in FAMILIES if any(p.version == int(f[-1]) for p in eid.accept))
    families = r.get(t, "families", path, _families, default_families or ("ipv4",))

    ut = r.table(t, "underlay", path, required=True)
    upath = f"{path}.underlay"
    ulocal = r.get(ut, "local", upath, _address)
    uremote = r.get(ut, "remote", upath, _address)
    r.done(ut, upath)
    underlay = None
    if ulocal is not None and uremote is not None:
        if ulocal.version != uremote.version:
            r.error(f"{upath}.remote", f"{uremote} and local {ulocal} are different address families")
        elif ulocal == uremote:
            r.error(f"{upath}.remote", f"{uremote} is the same as the local address")
        else:
            underlay = Underlay(ulocal, uremote)

    tunnel = _read_tunnel(r, r.table(t, "tunnel", path, required=True), f"{path}.tunnel")
    r.done(t, path)
    if name is None or asn is None or underlay is None or not tunnel.remotes:
        return None
    return PeerConfig(name, asn, underlay, tunnel, families, key, md5, max_prefix, hold_time, description)


def _read_peers(r: _Reader, doc: dict[str, Any], node: NodeSection | None,
                eid: EidSection) -> tuple[PeerConfig, ...]:
    peers: list[PeerConfig] = []
    seen_names: dict[str, str] = {}
    seen_addrs: dict[IPAddress, str] = {}
    seen_keys: dict[tuple[IPAddress, IPAddress, int | None], str] = {}
    for path, t in r.tables(doc, "peers", ""):
        peer = _read_peer(r, t, path, node, eid)
        if peer is None:
            continue
        if peer.name in seen_names:
            r.error(f"{path}.name", f"{peer.name!r} is already used by {seen_names[peer.name]}")
        seen_names[peer.name] = path
        for addr in peer.tunnel.remotes:
            if addr in seen_addrs:
                r.error(f"{path}.tunnel", f"remote address {addr} is already used by {seen_addrs[addr]}")
            seen_addrs[addr] = path
        # Two tunnels between the same underlay pair are only told apart by the GRE key.
        gre_id = (peer.underlay.local, peer.underlay.remote, peer.key)
        if gre_id in seen_keys:
            r.error(f"{path}.key",
                    f"same underlay pair and GRE key as {seen_keys[gre_id]}; set distinct keys")
        seen_keys[gre_id] = path
        peers.append(peer)
    return tuple(peers)


def _read_exabgp(r: _Reader, doc: dict[str, Any]) -> ExabgpSection:
    t = r.table(doc, "exabgp", "")
    config = r.get(t, "config", "exabgp", lambda v: Path(_secret(v)), None)
    binary = r.get(t, "binary", "exabgp", _secret, "exabgp")
    r.done(t, "exabgp")
    return ExabgpSection(config, binary)


def _read_frr(r: _Reader, doc: dict[str, Any]) -> FrrSection:
    t = r.table(doc, "frr", "")
    bin_dir = r.get(t, "bin_dir", "frr", lambda v: Path(_secret(v)), Path(DEFAULT_FRR_BIN_DIR))
    vtysh = r.get(t, "vtysh", "frr", _secret, "vtysh")
    pathspace = r.get(t, "pathspace", "frr", _name, "")
    vrf = r.get(t, "vrf", "frr", _name, None)
    r.done(t, "frr")
    return FrrSection(bin_dir, vtysh, pathspace, vrf)


def _read_api(r: _Reader, doc: dict[str, Any]) -> ApiSection:
    t = r.table(doc, "api", "")
    listen = r.get(t, "listen", "api", _address, IPv4Address("127.0.0.1"))
    port = r.get(t, "port", "api", _int_range(1, 65535), DEFAULT_API_PORT)
    token = r.get(t, "token", "api", _secret, None)
    d = ApiSection()
    max_connections = r.get(t, "max_connections", "api", _int_range(1, 65535), d.max_connections)
    header_timeout = r.get(t, "header_timeout", "api", _positive_float, d.header_timeout)
    keepalive_timeout = r.get(t, "keepalive_timeout", "api", _positive_float, d.keepalive_timeout)
    stream_clients = r.get(t, "stream_clients", "api", _int_range(1, 65535), d.stream_clients)
    stream_queue = r.get(t, "stream_queue", "api", _int_range(1, 1_000_000), d.stream_queue)
    r.done(t, "api")
    if not listen.is_loopback and token is None:
        r.error("api.token", f"required when the API listens on a non-loopback address ({listen})")
    if stream_clients > max_connections:
        r.error("api.stream_clients",
                f"{stream_clients} is more than api.max_connections ({max_connections})")
    return ApiSection(listen, port, token, max_connections, header_timeout, keepalive_timeout,
                      stream_clients, stream_queue)


def _read_map_resolver(r: _Reader, doc: dict[str, Any]) -> MapResolverSection:
    present = "map_resolver" in doc
    t = r.table(doc, "map_resolver", "")
    p = "map_resolver"
    enabled = r.get(t, "enabled", p, _bool, present)
    listen = r.get(t, "listen", p, _address, IPv4Address("0.0.0.0"))
    rate = r.get(t, "rate_limit", p, _positive_float, DEFAULT_RATE_LIMIT)
    burst = r.get(t, "rate_burst", p, _int_range(1, 1_000_000), max(1, int(2 * rate)))
    grate = r.get(t, "global_rate_limit", p, _positive_float, DEFAULT_MR_GLOBAL_RATE)
    gburst = r.get(t, "global_rate_burst", p, _int_range(1, 10_000_000), max(1, int(2 * grate)))
    table = r.get(t, "rate_limit_prefixes", p, _int_range(1, 10_000_000), DEFAULT_MR_RATE_PREFIXES)
    outage_ttl = r.get(t, "outage_negative_ttl", p, _int_range(0, 15), 1)
    r.done(t, p)
    return MapResolverSection(enabled, listen, rate, burst, grate, gburst, table, outage_ttl)


def _read_map_server(r: _Reader, doc: dict[str, Any], eid: EidSection) -> MapServerSection:
    present = "map_server" in doc
    t = r.table(doc, "map_server", "")
    p = "map_server"
    enabled = r.get(t, "enabled", p, _bool, present)
    sites: list[SiteConfig] = []
    paths: list[str] = []  # each site's dotted key, for the errors of _check_sites
    names: dict[str, str] = {}
    for sp, st in r.tables(t, "sites", p):
        name = r.get(st, "name", sp, _name)
        key = r.get(st, "key", sp, _secret)
        algorithm = r.get(st, "algorithm", sp, _choice(AUTH_ALGORITHMS), "hmac-sha256-128")
        prefixes = r.get(st, "eid_prefixes", sp, _prefixes)
        if prefixes == ():
            r.error(f"{sp}.eid_prefixes", "must list at least one prefix")
        more = r.get(st, "accept_more_specifics", sp, _bool, False)
        always = r.get(st, "always_announce", sp, _bool, False)
        overlap = r.get(st, "allow_overlap", sp, _bool, False)
        notify_to = r.get(st, "notify_to", sp, _choice(SITE_NOTIFY_TO), "rfc")
        replay = r.get(st, "replay", sp, _choice(SITE_REPLAY), "enforce")
        r.done(st, sp)
        if name in names:
            r.error(f"{sp}.name", f"{name!r} is already used by {names[name]}")
        if name is not None:
            names[name] = sp
        if None not in (name, key, algorithm) and prefixes:
            sites.append(SiteConfig(name, key, algorithm, prefixes, more, always, bool(overlap),
                                    notify_to or "rfc", replay or "enforce"))
            paths.append(sp)
    allow_overlapping = r.get(t, "allow_overlapping_sites", p, _bool, False)
    per_site = r.get(t, "max_registrations_per_site", p, _int_range(1, 1_000_000),
                     DEFAULT_MAX_REGISTRATIONS_PER_SITE)
    per_source = r.get(t, "max_registrations_per_source", p, _int_range(1, 1_000_000),
                       DEFAULT_MAX_REGISTRATIONS_PER_SOURCE)
    r.done(t, p)
    if enabled and not sites and not r.problems:
        r.error(f"{p}.sites", "an enabled Map-Server needs at least one [[map_server.sites]]")
    _check_sites(r, eid, sites, paths, bool(allow_overlapping))
    return MapServerSection(
        enabled, tuple(sites), bool(allow_overlapping),
        per_site or DEFAULT_MAX_REGISTRATIONS_PER_SITE, per_source or DEFAULT_MAX_REGISTRATIONS_PER_SOURCE,
    )


def _check_sites(
    r: _Reader, eid: EidSection, sites: list[SiteConfig], paths: list[str], allow_overlapping: bool
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
                    r.error(f"{sp}.eid_prefixes[{j}]",
                            f"{prefix} is outside the accepted EID space (eid.accept)")
    if allow_overlapping:
        return
    # Two prefixes overlap only if one contains the other. In (family, address, length) order every
    # prefix comes after the prefixes that contain it, and those are exactly the stack left when the
    # ones that do not contain it are popped: one sort and a walk, not a comparison of every pair
    # (a generated lab has thousands of sites).
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
            r.error(f"{paths[i]}.eid_prefixes[{j}]",
                    f"{prefix} overlaps {outer} of site {sites[clash].name!r} ({paths[clash]}); set "
                    "allow_overlap = true on one of the sites, or [map_server] allow_overlapping_sites = "
                    "true, if intended")
        stack.append((prefix, i))


def _within(inner: Prefix, outer: Prefix) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


def _read_etr(r: _Reader, doc: dict[str, Any]) -> EtrSection:
    present = "etr" in doc
    t = r.table(doc, "etr", "")
    p = "etr"
    enabled = r.get(t, "enabled", p, _bool, present)
    servers: list[MapServerRef] = []
    for mp, mt in r.tables(t, "map_servers", p):
        addr = r.get(mt, "address", mp, _address)
        key = r.get(mt, "key", mp, _secret)
        algorithm = r.get(mt, "algorithm", mp, _choice(AUTH_ALGORITHMS), "hmac-sha256-128")
        auth_length = r.get(mt, "auth_length", mp, _choice(AUTH_LENGTHS), "full")
        r.done(mt, mp)
        if None not in (addr, key, algorithm, auth_length):
            servers.append(MapServerRef(addr, key, algorithm, auth_length))
    mappings: list[EtrMappingEntry] = []
    for mp, mt in r.tables(t, "mappings", p):
        prefix = r.get(mt, "eid_prefix", mp, _prefix)
        ttl = r.get(mt, "ttl", mp, _int_range(0, 0xFFFFFFFF), DEFAULT_RECORD_TTL)
        had_rlocs = "rlocs" in mt
        rlocs: list[Rloc] = []
        for rp, rt in r.tables(mt, "rlocs", mp):
            addr = r.get(rt, "address", rp, _address)
            prio = r.get(rt, "priority", rp, _int_range(0, 255), 1)
            weight = r.get(rt, "weight", rp, _int_range(0, 255), 100)
            local = r.get(rt, "local", rp, _bool, True)
            r.done(rt, rp)
            if None not in (addr, prio, weight, local):
                rlocs.append(Rloc(addr, prio, weight, local))
        if not had_rlocs:
            r.error(f"{mp}.rlocs", "must list at least one RLOC ([[etr.mappings.rlocs]] or rlocs = [...])")
        r.done(mt, mp)
        if prefix is not None and rlocs:
            mappings.append(EtrMappingEntry(prefix, tuple(rlocs), ttl))
    interval = r.get(t, "register_interval", p, _int_range(1, 86400), DEFAULT_REGISTER_INTERVAL)
    proxy = r.get(t, "proxy_reply", p, _bool, False)
    alt_attached = r.get(t, "alt_attached", p, _bool, False)
    r.done(t, p)
    if enabled and not r.problems:
        if not servers and not alt_attached:
            r.error(f"{p}.map_servers", "an enabled ETR needs at least one [[etr.map_servers]] "
                                        "(or alt_attached = true)")
        if not mappings:
            r.error(f"{p}.mappings", "an enabled ETR needs at least one [[etr.mappings]]")
    return EtrSection(enabled, tuple(servers), tuple(mappings), interval, proxy, bool(alt_attached))


def _read_icmp(r: _Reader, doc: dict[str, Any]) -> IcmpLimits:
    t = r.table(doc, "icmp", "")
    p = "icmp"
    d = IcmpLimits()
    rate = r.get(t, "rate", p, _positive_float, d.rate)
    burst = r.get(t, "burst", p, _int_range(1, 1_000_000), d.burst)
    per_rate = r.get(t, "per_destination_rate", p, _positive_float, d.per_destination_rate)
    per_burst = r.get(t, "per_destination_burst", p, _int_range(1, 1_000_000), d.per_destination_burst)
    table = r.get(t, "max_destinations", p, _int_range(1, 10_000_000), d.max_destinations)
    r.done(t, p)
    return IcmpLimits(rate, burst, per_rate, per_burst, table)


def parse_config(text: str, source: str = "<string>") -> NodeConfig:
    """Parse and validate one node's TOML configuration; raise ConfigError listing every problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    r = _Reader()
    node = _read_node(r, doc)
    eid = _read_eid(r, doc)
    peers = _read_peers(r, doc, node, eid)
    exabgp = _read_exabgp(r, doc)
    api = _read_api(r, doc)
    mr = _read_map_resolver(r, doc)
    ms = _read_map_server(r, doc, eid)
    etr = _read_etr(r, doc)
    if etr.alt_attached and eid.accept:
        # Announced into the ALT: outside the accepted space every ALT node would refuse it.
        for i, m in enumerate(etr.mappings):
            if not eid.accepts(m.eid_prefix):
                r.error(f"etr.mappings[{i}].eid_prefix",
                        f"{m.eid_prefix} is outside the accepted EID space (eid.accept), "
                        "which an ALT-attached ETR announces into")
    icmp = _read_icmp(r, doc)
    frr = _read_frr(r, doc)
    r.done(doc, "")
    if r.problems or node is None:
        raise ConfigError(source, r.problems or ["[node] is incomplete"])
    return NodeConfig(node, eid, peers, exabgp, api, mr, ms, etr, source, icmp=icmp, frr=frr)


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate a node configuration file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [f"cannot read: {exc}"]) from None
    return parse_config(text, source=str(p))
