"""The lab file's ``[alt]`` table: pydantic models, the one definition of its keys (docs/lab.md).

Types, ranges, defaults, choices and descriptions live here; ``alt-router config-schema --lab``
prints them as a JSON Schema.  ``alt_router.lab.alt_topology.parse`` validates ``[alt]`` against
``AltModel``, then checks what needs the rest of the file (hosts that exist, a link two tunnel
ends share, an ETR's key on its Map-Server) and builds the ``*Spec`` records.

The rest of a lab file (``name``, ``hosts``, ``links``, ``segments``, ``processes``) is read by
``alt_router.lab.topology``; ``LabFile`` only names those keys for editors.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

from alt_router.node.config_model import AggregateModel, AuthAlgorithm, BgpSpeaker, Family
from alt_router.validation import Address, Asn, IPv4, Name, Prefixes, Secret, StrictTable

DEFAULT_ACCEPT = ("153.16.0.0/12", "2001:db8::/32")
DEFAULT_TUNNEL_V4 = "10.255.0.0/16"
DEFAULT_TUNNEL_V6 = "fd00:255::/48"
DEFAULT_HOLD_TIME = 9
DEFAULT_REGISTER_INTERVAL = 5
DEFAULT_ALGORITHM: AuthAlgorithm = "hmac-sha256-128"
RouterDaemon = Literal["frr", "bird"]


def _pool(version: int, longest: int) -> Any:
    """A tunnel address pool: one /30 and one /64 per tunnel are taken from it in order."""

    def conv(value: Any) -> IPv4Network | IPv6Network:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {type(value).__name__}")
        try:
            net = ip_network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IP prefix: {exc}") from None
        if net.version != version:
            raise ValueError(f"{value!r} is not an IPv{version} prefix")
        if net.prefixlen > longest:
            raise ValueError(f"{value!r}: the pool is too small (at most /{longest})")
        return net

    return conv


TunnelPool4 = Annotated[IPv4Network, PlainValidator(_pool(4, 28)), WithJsonSchema({"type": "string"})]
TunnelPool6 = Annotated[IPv6Network, PlainValidator(_pool(6, 60)), WithJsonSchema({"type": "string"})]
Host = Annotated[StrictStr, Field(min_length=1)]


class LabSiteModel(StrictTable):
    """A Map-Server site of a node (the node's [[map_server.sites]])."""

    name: Name = Field(description="The site's name.")
    key: Secret = Field(description="Map-Register authentication key; an ETR of the site uses the same.")
    eid_prefixes: Prefixes = Field(min_length=1, description="What the site may register.")
    always_announce: StrictBool = Field(False, description="Announce the prefixes with no ETR registered.")
    algorithm: AuthAlgorithm = Field(DEFAULT_ALGORITHM, description="The site's HMAC algorithm.")


class AttachedEtrModel(StrictTable):
    """The node's own ETR, attached to the ALT ([etr] alt_attached, RFC 6836 §4)."""

    alt_attached: StrictBool = Field(
        description="Must be true: an MS-registered ETR is an [alt.etrs] host instead."
    )
    eids: Prefixes = Field(min_length=1, description="EID-prefixes the node announces and answers for.")
    rloc: Address | None = Field(None, description="The RLOC in its Map-Replies; default: the router_id.")


class AltNodeModel(StrictTable):
    """[alt.nodes.HOST]: a host running `alt-router run`."""

    asn: Asn = Field(description="The node's AS number.")
    router_id: IPv4 = Field(description="BGP router ID, an IPv4 address.")
    announce: Prefixes = Field((), description="EID prefixes the node originates; inside alt.accept.")
    map_resolver: StrictBool = Field(False, description="Run a Map-Resolver.")
    sites: tuple[LabSiteModel, ...] = Field((), description="Map-Server sites (the node is a Map-Server).")
    extra: StrictStr = Field("", description="Raw TOML appended to the generated node config.")
    aggregates: tuple[AggregateModel, ...] = Field(
        (), description="EID-prefix aggregates ([[eid.aggregates]], RFC 6836 §7.1); inside alt.accept."
    )
    etr: AttachedEtrModel | None = Field(None, description="An ALT-attached ETR run by the node.")
    bgp: BgpSpeaker = Field("exabgp", description="The node's BGP speaker: exabgp or its own frr.")


class RouterModel(StrictTable):
    """[alt.routers.HOST]: a reference BGP daemon peering with the ALT over GRE."""

    daemon: RouterDaemon = Field(description="frr or bird.")
    asn: Asn = Field(description="The router's AS number.")
    router_id: IPv4 = Field(description="BGP router ID, an IPv4 address.")
    announce: Prefixes = Field((), description="Prefixes the router originates.")
    families: Annotated[tuple[Family, ...], Field(min_length=1)] = Field(
        ("ipv4",), description="Address families of its sessions (ipv6: multiprotocol BGP, RFC 4760)."
    )
    max_prefix: StrictInt | None = Field(
        None, ge=1, le=10_000_000, description="What each ALT node accepts from it; default: the node's."
    )


class LabTunnelModel(StrictTable):
    """[[alt.tunnels]]: a GRE tunnel and the BGP session over it."""

    between: Annotated[tuple[Host, ...], Field(min_length=2, max_length=2)] = Field(
        description="The two hosts; at least one an ALT node. They must share a link or segment."
    )
    key: StrictInt | None = Field(None, ge=0, le=0xFFFFFFFF, description="GRE key; default: index + 1.")
    md5_password: Secret | None = Field(None, description="TCP-MD5 password of the session.")


class LabEtrModel(StrictTable):
    """[alt.etrs.HOST]: a host running `alt-router etr`, registering with a Map-Server node."""

    map_server: Host = Field(description="An ALT node with map-server sites.")
    key: Secret = Field(description="The key of one of its sites.")
    eids: Prefixes = Field(min_length=1, description="EID-prefixes to register.")
    register_interval: StrictInt = Field(
        DEFAULT_REGISTER_INTERVAL, ge=1, le=86400, description="Seconds between Map-Registers."
    )
    algorithm: AuthAlgorithm = Field(DEFAULT_ALGORITHM, description="Must be its site's algorithm.")
    register_port: StrictInt | None = Field(
        None, ge=0, le=65535, description="Send Map-Registers from this port (0: ephemeral, RFC 9301 §5.6)."
    )
    proxy_reply: StrictBool = Field(False, description="The P bit: the Map-Server answers for this ETR.")


class DemoModel(StrictTable):
    """[alt.demo]: what `alt-router lab demo` looks up."""

    eid: Address = Field(description="The EID to look up.")
    itr: Host = Field(description="The host that asks.")
    map_resolver: Host = Field(description="An ALT node with map_resolver = true.")


class AltModel(StrictTable):
    """[alt]: which hosts run an ALT node, how they peer, ETRs, ITRs, routers (docs/lab.md)."""

    accept: Prefixes = Field(
        tuple(ip_network(p) for p in DEFAULT_ACCEPT), description="The ALT's EID space."
    )
    hold_time: StrictInt = Field(DEFAULT_HOLD_TIME, ge=3, le=65535, description="BGP hold time, seconds.")
    tunnel_v4: TunnelPool4 = Field(
        IPv4Network(DEFAULT_TUNNEL_V4), description="Pool of the tunnels' inner IPv4 /30s (at most /28)."
    )
    tunnel_v6: TunnelPool6 = Field(
        IPv6Network(DEFAULT_TUNNEL_V6), description="Pool of the tunnels' inner IPv6 /64s (at most /60)."
    )
    nodes: Annotated[dict[str, AltNodeModel], Field(min_length=1)] = Field(
        description="The ALT nodes, by host."
    )
    tunnels: tuple[LabTunnelModel, ...] = Field((), description="GRE tunnels and their BGP sessions.")
    etrs: dict[str, LabEtrModel] = Field({}, description="MS-registered ETR hosts.")
    itrs: tuple[Host, ...] = Field((), description="Hosts that act as ITRs.")
    routers: dict[str, RouterModel] = Field({}, description="Reference BGP daemons (FRR, BIRD) by host.")
    demo: DemoModel | None = Field(None, description="What `alt-router lab demo` looks up.")


class LabFile(BaseModel):
    """An ALT lab file: a lab topology (docs/lab.md) and its [alt] table."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(description="The lab's name (network namespaces are named after it).")
    hosts: dict[str, dict[str, Any]] = Field(
        description="Hosts by name (keys: forwarding, sysctls, loopbacks, routes; docs/lab.md)."
    )
    links: list[dict[str, Any]] = Field([], description="Point-to-point links: a, b, mtu (docs/lab.md).")
    segments: list[dict[str, Any]] = Field([], description="Shared segments: name, members, mtu.")
    processes: list[dict[str, Any]] = Field([], description="Processes to start: host, name, argv.")
    alt: AltModel = Field(description="The ALT on this lab.")
