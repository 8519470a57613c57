"""The node configuration file's shape: pydantic models, the one definition of every key.

Types, ranges, defaults, choices and each key's description live here; ``alt-router
config-schema`` prints them as a JSON Schema for TOML-aware editors, and
``alt_router.node.config`` validates a file against them, then checks what spans keys (a tunnel
address inside its subnet, site prefixes inside the EID space, duplicates) and builds the frozen
dataclasses the rest of the node uses.  The reference for every key is docs/configuration.md.

A default that depends on another key (a peer's ``max_prefix`` from ``[node]``, its
``families`` from ``[eid].accept``, a section's ``enabled`` from its presence) is ``None`` here and
resolved by ``alt_router.node.config``.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from alt_router.rib.fib import FibKind
from alt_router.validation import (
    Address,
    Asn,
    FilePath,
    InterfaceT,
    IPv4,
    Name,
    NameOrEmpty,
    Prefixes,
    PrefixT,
    Secret,
    StrictTable,
)

DEFAULT_MAX_PREFIX = 10_000
DEFAULT_HOLD_TIME = 90
DEFAULT_API_PORT = 8179
DEFAULT_STATE_DIR = "/var/lib/alt-router"
DEFAULT_FRR_BIN_DIR = "/usr/lib/frr"
DEFAULT_RATE_LIMIT = 100.0
DEFAULT_MAX_REGISTRATIONS_PER_SITE = 1024
DEFAULT_MAX_REGISTRATIONS_PER_SOURCE = 256
DEFAULT_MR_GLOBAL_RATE = 1000.0
DEFAULT_MR_RATE_PREFIXES = 16384
DEFAULT_REGISTER_INTERVAL = 60
DEFAULT_RECORD_TTL = 1440
# Linux refuses TCP-MD5 keys longer than TCP_MD5SIG_MAXKEYLEN.
MD5_MAX_LEN = 80

TunnelMode = Literal["auto", "kernel", "bpf", "userspace"]
AuthAlgorithm = Literal["hmac-sha1-96", "hmac-sha256-128"]
Family = Literal["ipv4", "ipv6"]
BgpSpeaker = Literal["exabgp", "frr"]
AuthLength = Literal["full", "truncated"]
NotifyTo = Literal["rfc", "source-port"]
Replay = Literal["enforce", "log-only", "off"]


def _hold_time(value: int) -> int:
    if value in (1, 2):
        raise ValueError(f"{value} is not allowed: the hold time must be 0 or 3..65535 (RFC 4271)")
    return value


def _md5(value: str) -> str:
    if len(value.encode()) > MD5_MAX_LEN:
        raise ValueError(f"longer than {MD5_MAX_LEN} bytes (the Linux TCP-MD5 limit)")
    return value


def _families(value: tuple[Family, ...]) -> tuple[Family, ...]:
    return tuple(dict.fromkeys(value))


PositiveFloat = Annotated[StrictFloat, Field(gt=0)]


class NodeModel(StrictTable):
    """[node]: who this node is."""

    name: Name = Field(description="This node's name: letters, digits, '-', '_', '.'.")
    asn: Asn = Field(description="This node's AS number, 1..4294967295 (23456, AS_TRANS, is refused).")
    router_id: IPv4 = Field(description="BGP router ID, an IPv4 address.")
    tunnel_mode: TunnelMode = Field(
        "auto", description="GRE implementation: auto, kernel, bpf (tc-BPF programs beside the userspace "
        "engine; no forwarder hook, so FRR mode only) or userspace.")
    state_dir: FilePath = Field(
        Path(DEFAULT_STATE_DIR), description="Rendered ExaBGP config, pidfile, sockets, ETR nonce."
    )
    max_prefix: StrictInt = Field(
        DEFAULT_MAX_PREFIX, ge=1, le=10_000_000, description="Default max-prefix of every peer."
    )
    fib: FibKind = Field(
        "dir24", description="IPv4 longest-match index of the Loc-RIB: dir24 (DIR-24-8 array) or tree "
        "(pytricia only). Needs a restart.",
    )
    bgp: BgpSpeaker = Field(
        "exabgp", description="The ALT's BGP speaker: exabgp (RIB and forwarding in this process) or frr "
        "(the node's own FRR; RIB read back from the kernel, forwarding by the kernel; see [frr]).",
    )


class AggregateModel(StrictTable):
    """[[eid.aggregates]]: an EID-prefix aggregate (RFC 6836 §7.1)."""

    prefix: PrefixT = Field(description="The aggregate; must lie inside [eid].accept.")
    summary_only: StrictBool = Field(False, description="Do not export the more-specifics it covers.")
    as_set: StrictBool = Field(
        False,
        description="Carry an AS_SET of the contributors' ASes (else ATOMIC_AGGREGATE, RFC 4271 §5.1.6).",
    )
    always: StrictBool = Field(False, description="Originate it even with no contributing route.")


class EidModel(StrictTable):
    """[eid]: the EID space."""

    announce: Prefixes = Field(
        (), description="EID-prefix aggregates this node originates into the ALT; each inside accept."
    )
    accept: Prefixes = Field(description="The EID space: received routes outside it are refused.")
    aggregates: tuple[AggregateModel, ...] = Field((), description="EID-prefix aggregates (RFC 6836 §7.1).")


class UnderlayModel(StrictTable):
    """[peers.underlay]: the GRE tunnel's outer addresses."""

    local: Address = Field(description="GRE outer source address.")
    remote: Address = Field(description="GRE outer destination address, same family as local.")


class TunnelModel(StrictTable):
    """[peers.tunnel]: inner addresses; an IPv4 pair, an IPv6 pair or both. BGP runs over IPv4 if present."""

    local_ipv4: InterfaceT | None = Field(None, description="Inner IPv4 address/length, e.g. 10.255.1.1/30.")
    remote_ipv4: Address | None = Field(None, description="The peer's inner IPv4 address, inside local_ipv4.")
    local_ipv6: InterfaceT | None = Field(
        None, description="Inner IPv6 address/length, e.g. fd00:255:1::1/64."
    )
    remote_ipv6: Address | None = Field(None, description="The peer's inner IPv6 address, inside local_ipv6.")


class PeerModel(StrictTable):
    """[[peers]]: one GRE tunnel and the BGP session over it."""

    name: Name = Field(description="The peer's name, unique among peers.")
    asn: Asn = Field(description="The peer's AS number.")
    description: StrictStr = Field("", description="Rendered into the ExaBGP neighbor.")
    key: StrictInt | None = Field(
        None, ge=0, le=0xFFFFFFFF,
        description="GRE key. Two tunnels over the same underlay pair need distinct keys.",
    )
    md5_password: Annotated[Secret, AfterValidator(_md5)] | None = Field(
        None, description=f"TCP-MD5 password (RFC 2385), at most {MD5_MAX_LEN} bytes."
    )
    max_prefix: StrictInt | None = Field(
        None, ge=1, le=10_000_000, description="Per-peer max-prefix; default [node].max_prefix."
    )
    hold_time: Annotated[StrictInt, AfterValidator(_hold_time)] = Field(
        DEFAULT_HOLD_TIME, ge=0, le=65535, description="BGP hold time in seconds: 0 or 3..65535 (RFC 4271)."
    )
    families: Annotated[tuple[Family, ...], Field(min_length=1), AfterValidator(_families)] | None = Field(
        None,
        description="Address families of the session; default: the families present in [eid].accept.",
    )
    underlay: UnderlayModel = Field(description="Outer (underlay) addresses of the GRE tunnel.")
    tunnel: TunnelModel = Field(description="Inner addresses of the GRE tunnel.")


class ExabgpModel(StrictTable):
    """[exabgp]: the ExaBGP process (bgp = "exabgp")."""

    config: FilePath | None = Field(
        None, description="Use this ExaBGP config instead of rendering one; it must still run the "
        "alt-router API process with encoder json.",
    )
    binary: Secret = Field("exabgp", description="The exabgp executable.")


class FrrModel(StrictTable):
    """[frr]: the node's own FRR instance in bgp = "frr" mode (docs/deploy.md)."""

    bin_dir: FilePath = Field(Path(DEFAULT_FRR_BIN_DIR), description="Where bgpd and zebra are.")
    vtysh: Secret = Field("vtysh", description="The vtysh executable.")
    pathspace: NameOrEmpty = Field(
        "", description="FRR's -N pathspace, so the ALT instance coexists with another FRR; "
        "empty: the node's name.",
    )
    vrf: Name | None = Field(None, description="A kernel VRF for the ALT routes; none: the node's namespace.")


class ApiModel(StrictTable):
    """[api]: the monitoring API (docs/api.md). Not changed by SIGHUP."""

    listen: Address = Field(IPv4Address("127.0.0.1"), description="Listen address.")
    port: StrictInt = Field(DEFAULT_API_PORT, ge=1, le=65535, description="TCP port.")
    token: Secret | None = Field(None, description="Bearer token; required off loopback.")
    max_connections: StrictInt = Field(128, ge=1, le=65535, description="Open connections at once.")
    header_timeout: PositiveFloat = Field(10.0, description="Seconds to send a complete request.")
    keepalive_timeout: PositiveFloat = Field(30.0, description="Seconds an idle keep-alive connection lives.")
    stream_clients: StrictInt = Field(
        64, ge=1, le=65535, description="/v1/stream clients at once; at most max_connections."
    )
    stream_queue: StrictInt = Field(
        10_000, ge=1, le=1_000_000, description="Events a stream client may fall behind before it is dropped."
    )


class MapResolverModel(StrictTable):
    """[map_resolver]: present means enabled unless enabled = false."""

    enabled: StrictBool | None = Field(None, description="Default: true if the section exists.")
    listen: Address = Field(IPv4Address("0.0.0.0"), description="UDP 4342 listen address.")
    rate_limit: PositiveFloat = Field(
        DEFAULT_RATE_LIMIT, description="Map-Requests per second per source prefix (IPv4 /24, IPv6 /64)."
    )
    rate_burst: StrictInt | None = Field(
        None, ge=1, le=1_000_000, description="Depth of each prefix bucket; default 2 x rate_limit."
    )
    global_rate_limit: PositiveFloat = Field(
        DEFAULT_MR_GLOBAL_RATE, description="Map-Requests per second over all sources."
    )
    global_rate_burst: StrictInt | None = Field(
        None, ge=1, le=10_000_000, description="Depth of the global bucket; default 2 x global_rate_limit."
    )
    rate_limit_prefixes: StrictInt = Field(
        DEFAULT_MR_RATE_PREFIXES, ge=1, le=10_000_000, description="Prefix buckets kept (LRU)."
    )
    outage_negative_ttl: StrictInt = Field(
        1, ge=0, le=15, description="Minutes: TTL of a negative Map-Reply for an EID inside [eid].accept "
        "with no ALT route.",
    )


class SiteModel(StrictTable):
    """[[map_server.sites]]: one site the Map-Server accepts registrations for."""

    name: Name = Field(description="The site's name, unique.")
    key: Secret = Field(description="Map-Register authentication key.")
    algorithm: AuthAlgorithm = Field("hmac-sha256-128", description="HMAC: key id 2 (sha256) or 1 (sha1).")
    eid_prefixes: Prefixes = Field(
        min_length=1,
        description="What the site may register; inside [eid].accept, not overlapping other sites.",
    )
    accept_more_specifics: StrictBool = Field(False, description="Accept registrations of more-specifics.")
    always_announce: StrictBool = Field(False, description="Announce the prefixes even when not registered.")
    allow_overlap: StrictBool = Field(False, description="This site may share EID space with other sites.")
    notify_to: NotifyTo = Field(
        "rfc",
        description="Where Map-Notify and forwarded Map-Requests go: rfc (port 4342, RFC 9301 §5.7) or "
        "source-port (the Map-Register's source, for ETRs behind NAT).",
    )
    replay: Replay = Field(
        "enforce", description="Map-Register nonce check (RFC 9301 §5.6): enforce, log-only or off."
    )


class MapServerModel(StrictTable):
    """[map_server]: present means enabled unless enabled = false."""

    enabled: StrictBool | None = Field(None, description="Default: true if the section exists.")
    sites: tuple[SiteModel, ...] = Field((), description="The sites; an enabled Map-Server needs one.")
    allow_overlapping_sites: StrictBool = Field(False, description="Any sites may share EID space.")
    max_registrations_per_site: StrictInt = Field(
        DEFAULT_MAX_REGISTRATIONS_PER_SITE, ge=1, le=1_000_000, description="Registrations a site may hold."
    )
    max_registrations_per_source: StrictInt = Field(
        DEFAULT_MAX_REGISTRATIONS_PER_SOURCE, ge=1, le=1_000_000,
        description="Registrations one source address may hold across sites.",
    )


class MapServerRefModel(StrictTable):
    """[[etr.map_servers]]: a Map-Server this ETR registers with."""

    address: Address = Field(description="The Map-Server's address.")
    key: Secret = Field(description="The site's authentication key.")
    algorithm: AuthAlgorithm = Field("hmac-sha256-128", description="HMAC algorithm.")
    auth_length: AuthLength = Field(
        "full", description="HMAC bytes in Map-Registers: full digest, or truncated (12/16)."
    )


class RlocModel(StrictTable):
    """[[etr.mappings.rlocs]]: one RLOC of a mapping."""

    address: Address = Field(description="The RLOC.")
    priority: StrictInt = Field(1, ge=0, le=255, description="0..255 (255: do not use).")
    weight: StrictInt = Field(100, ge=0, le=255, description="0..255.")
    local: StrictBool = Field(True, description="An address of this ETR: the L bit (RFC 9301 §5.4).")


class EtrMappingModel(StrictTable):
    """[[etr.mappings]]: an EID-prefix this ETR is authoritative for."""

    eid_prefix: PrefixT = Field(description="The EID-prefix.")
    ttl: StrictInt = Field(DEFAULT_RECORD_TTL, ge=0, le=0xFFFFFFFF, description="Record TTL in minutes.")
    rlocs: tuple[RlocModel, ...] = Field(
        min_length=1, description="At least one RLOC ([[etr.mappings.rlocs]] or rlocs = [...])."
    )


class EtrModel(StrictTable):
    """[etr]: present means enabled unless enabled = false."""

    enabled: StrictBool | None = Field(None, description="Default: true if the section exists.")
    map_servers: tuple[MapServerRefModel, ...] = Field((), description="Map-Servers to register with.")
    mappings: tuple[EtrMappingModel, ...] = Field((), description="The EID-prefixes and their RLOCs.")
    register_interval: StrictInt = Field(
        DEFAULT_REGISTER_INTERVAL, ge=1, le=86400, description="Seconds between Map-Registers."
    )
    proxy_reply: StrictBool = Field(False, description="Ask the Map-Server to answer for us (P bit).")
    alt_attached: StrictBool = Field(
        False, description="Attached to the ALT itself (RFC 6836 §3.1, §4): mapping prefixes are announced "
        "into the ALT and answered here.",
    )


class IcmpModel(StrictTable):
    """[icmp]: the ALT forwarder's ICMP error limits (token buckets, RFC 1812 §4.3.2.8)."""

    rate: PositiveFloat = Field(100.0, description="Errors per second from the whole node.")
    burst: StrictInt = Field(50, ge=1, le=1_000_000, description="Depth of the global bucket.")
    per_destination_rate: PositiveFloat = Field(1.0, description="Errors per second to one destination.")
    per_destination_burst: StrictInt = Field(
        6, ge=1, le=1_000_000, description="Depth of each destination's bucket."
    )
    max_destinations: StrictInt = Field(
        4096, ge=1, le=10_000_000, description="Destination buckets kept (LRU)."
    )


class NodeFile(StrictTable):
    """One ALT node's configuration file (docs/configuration.md)."""

    node: NodeModel = Field(description="Who this node is.")
    eid: EidModel = Field(description="The EID space.")
    peers: tuple[PeerModel, ...] = Field((), description="One per GRE tunnel / BGP session.")
    exabgp: ExabgpModel = Field(ExabgpModel(), description="The ExaBGP process.")
    frr: FrrModel = Field(FrrModel(), description="The node's own FRR (bgp = \"frr\").")
    api: ApiModel = Field(ApiModel(), description="The monitoring API.")
    map_resolver: MapResolverModel = Field(MapResolverModel(), description="The Map-Resolver.")
    map_server: MapServerModel = Field(MapServerModel(), description="The Map-Server.")
    etr: EtrModel = Field(EtrModel(), description="The ETR.")
    icmp: IcmpModel = Field(IcmpModel(), description="ICMP error limits.")
