"""Text in and out of the reference BGP daemons: config rendering and output parsing (pure).

FRR bgpd, BIRD 2 and ExaBGP are the interop partners of the lab.  Rendering and
parsing live here, apart from the process handling in ``daemons.py``, so they
can be unit-tested without root or the daemons installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from typing import Any


class DaemonOutputError(ValueError):
    """A daemon's output is not in the shape we expect."""


@dataclass(frozen=True, slots=True)
class BgpPeer:
    """One BGP neighbor as seen from the daemon being configured.

    ``families`` ("ipv4", "ipv6") are the address families the session carries; None keeps each
    daemon's own default (FRR: both, BIRD: the session's).  An IPv6 family on an IPv4 session
    (multiprotocol BGP, RFC 4760) needs ``ipv6_next_hop``: the daemon's IPv6 address to announce
    as next hop, since it has no IPv6 address of the session to take it from (RFC 2545 §3).
    """

    address: str
    remote_as: int
    local_address: str | None = None
    password: str | None = None
    passive: bool = False
    families: tuple[str, ...] | None = None
    ipv6_next_hop: str | None = None

    def __post_init__(self) -> None:
        ip_address(self.address)  # fail on a typo now, not as a daemon's parse error later
        if self.local_address is not None:
            ip_address(self.local_address)
        if not 1 <= self.remote_as <= 0xFFFFFFFF:
            raise ValueError(f"remote AS {self.remote_as} out of range")
        for family in self.families or ():
            if family not in ("ipv4", "ipv6"):
                raise ValueError(f"address family {family!r} is not ipv4 or ipv6")
        if self.ipv6_next_hop is not None and ip_address(self.ipv6_next_hop).version != 6:
            raise ValueError(f"IPv6 next hop {self.ipv6_next_hop} is not an IPv6 address")

    @property
    def version(self) -> int:
        return ip_address(self.address).version

    def carries(self, family: str) -> bool:
        """Does the session carry ``family``, where the daemon's default is both families?"""
        return self.families is None or family in self.families

    def needs_ipv6_next_hop(self) -> bool:
        """IPv6 routes over an IPv4 session: the next hop must be given (RFC 2545 §3)."""
        return self.version == 4 and self.families is not None and "ipv6" in self.families


def _split_by_family(prefixes: Iterable[str]) -> tuple[list[str], list[str]]:
    v4: list[str] = []
    v6: list[str] = []
    for prefix in prefixes:
        net = ip_network(prefix)
        (v4 if net.version == 4 else v6).append(net.with_prefixlen)
    return v4, v6


def _check_router_id(router_id: str) -> None:
    if ip_address(router_id).version != 4:
        raise ValueError(f"router-id {router_id} must be an IPv4 address")


# --- FRR ---------------------------------------------------------------------------------------------------


def render_frr_bgpd(
    asn: int,
    router_id: str,
    peers: Sequence[BgpPeer],
    networks: Iterable[str] = (),
    *,
    hostname: str = "bgpd",
) -> str:
    """A bgpd.conf that peers with ``peers`` over both families and originates ``networks``."""
    _check_router_id(router_id)
    v4, v6 = _split_by_family(networks)
    lines = [
        f"hostname {hostname}",
        "!",
        f"router bgp {asn}",
        f" bgp router-id {router_id}",
        # FRR 8 refuses to send or accept eBGP routes without a policy (RFC 8212); the lab has none.
        " no bgp ebgp-requires-policy",
        # With -Z (no zebra) bgpd cannot see the RIB, so 'network' would never pass the import check.
        " no bgp network import-check",
        " no bgp default ipv4-unicast",
    ]
    for peer in peers:
        lines.append(f" neighbor {peer.address} remote-as {peer.remote_as}")
        # Lab sessions should come up fast; the default 120 s connect retry makes a missed first SYN costly.
        lines.append(f" neighbor {peer.address} timers connect 1")
        # Without zebra bgpd does not know which subnets are connected and would refuse single-hop eBGP.
        lines.append(f" neighbor {peer.address} disable-connected-check")
        if peer.local_address:
            lines.append(f" neighbor {peer.address} update-source {peer.local_address}")
        if peer.password:
            lines.append(f" neighbor {peer.address} password {peer.password}")
        if peer.passive:
            lines.append(f" neighbor {peer.address} passive")
    route_maps: list[str] = []
    for family, nets in (("ipv4", v4), ("ipv6", v6)):
        lines.append(f" address-family {family} unicast")
        lines += [f"  network {net}" for net in nets]
        for i, p in enumerate(peers):
            if not p.carries(family):
                continue
            lines.append(f"  neighbor {p.address} activate")
            if family == "ipv6" and p.needs_ipv6_next_hop():
                # Without it bgpd announces an IPv4-mapped next hop the peer cannot reach.
                name = f"v6nh-{i + 1}"
                lines.append(f"  neighbor {p.address} route-map {name} out")
                route_maps += ["!", f"route-map {name} permit 10", f" set ipv6 next-hop global {_v6_hop(p)}"]
        lines.append(" exit-address-family")
    lines += [*route_maps, "!", "line vty", "!", ""]
    return "\n".join(lines)


def _v6_hop(peer: BgpPeer) -> str:
    if peer.ipv6_next_hop is None:
        raise ValueError(f"peer {peer.address}: IPv6 routes over an IPv4 session need ipv6_next_hop")
    return peer.ipv6_next_hop


def frr_peer_states(summary: Mapping[str, Any]) -> dict[str, str]:
    """``show bgp summary json`` → {peer address: state}, across address families."""
    states: dict[str, str] = {}
    for family, body in summary.items():
        if not isinstance(body, Mapping):
            continue
        peers = body.get("peers", {})
        if not isinstance(peers, Mapping):
            raise DaemonOutputError(f"FRR summary: {family}.peers is not an object")
        for address, info in peers.items():
            if isinstance(info, Mapping) and isinstance(info.get("state"), str):
                states[address] = info["state"]
    return states


def frr_prefixes(table: Mapping[str, Any]) -> set[str]:
    """``show bgp ipv4|ipv6 unicast json`` → the set of prefixes in the table."""
    routes = table.get("routes", {})
    if not isinstance(routes, Mapping):
        raise DaemonOutputError("FRR table: 'routes' is not an object")
    return set(routes)


# --- BIRD 2 ------------------------------------------------------------------------------------------------


def render_bird(
    asn: int,
    router_id: str,
    peers: Sequence[BgpPeer],
    networks: Iterable[str] = (),
    *,
    kernel: bool = False,
) -> str:
    """A bird.conf: static blackhole routes for ``networks``, exported to every peer with next hop self.

    ``kernel`` exports every route into the kernel table too, so BIRD's host forwards by them.
    """
    _check_router_id(router_id)
    v4, v6 = _split_by_family(networks)
    lines = [f"router id {router_id};", "protocol device {}"]
    if kernel:
        lines += [f"protocol kernel kernel_{f} {{ {f} {{ export all; }}; }}" for f in ("ipv4", "ipv6")]
    for family, nets in (("ipv4", v4), ("ipv6", v6)):
        if nets:
            lines.append(f"protocol static static_{family} {{")
            lines.append(f"  {family};")
            lines += [f"  route {net} blackhole;" for net in nets]
            lines.append("}")
    for i, peer in enumerate(peers):
        lines.append(f"protocol bgp {bird_protocol_name(i)} {{")
        local = f"{peer.local_address} " if peer.local_address else ""
        lines.append(f"  local {local}as {asn};")
        lines.append(f"  neighbor {peer.address} as {peer.remote_as};")
        lines.append("  connect delay time 1;")
        lines.append("  connect retry time 2;")
        lines.append("  error wait time 1, 5;")
        if peer.password:
            lines.append(f'  password "{peer.password}";')
        if peer.passive:
            lines.append("  passive on;")
        for family in peer.families or (f"ipv{peer.version}",):
            v6_over_v4 = family == "ipv6" and peer.version == 4
            hop = f"next hop address {_v6_hop(peer)}" if v6_over_v4 else "next hop self"
            lines.append(f"  {family} {{ import all; export all; {hop}; }};")
        lines.append("}")
    lines.append("")
    return "\n".join(lines)


def bird_protocol_name(index: int) -> str:
    return f"peer{index + 1}"


@dataclass(frozen=True, slots=True)
class BirdProtocol:
    name: str
    proto: str
    table: str
    state: str
    info: str


def bird_protocols(text: str) -> dict[str, BirdProtocol]:
    """``birdc show protocols`` → {name: protocol}; ``info`` holds e.g. 'Established' for BGP."""
    result: dict[str, BirdProtocol] = {}
    in_table = False
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "Name" and "Proto" in fields:
            in_table = True
            continue
        if not in_table or len(fields) < 4:
            continue
        # Columns: Name Proto Table State Since [Info...]; Since is one token ("12:00:01.123")
        # or two ("2026-11-24 12:00:01") depending on BIRD's timeformat.
        rest = fields[5:]
        if rest and _looks_like_time(rest[0]):
            rest = rest[1:]
        result[fields[0]] = BirdProtocol(
            name=fields[0], proto=fields[1], table=fields[2], state=fields[3], info=" ".join(rest)
        )
    return result


def _looks_like_time(token: str) -> bool:
    return token.count(":") == 2 and token.replace(":", "").replace(".", "").isdigit()


def bird_route_prefixes(text: str) -> set[str]:
    """``birdc show route`` → the set of prefixes listed."""
    prefixes: set[str] = set()
    for line in text.splitlines():
        if not line or line[0].isspace():
            continue
        token = line.split()[0]
        try:
            prefixes.add(ip_network(token).with_prefixlen)
        except ValueError:
            continue
    return prefixes


# --- ExaBGP ------------------------------------------------------------------------------------------------


def render_exabgp(
    asn: int,
    router_id: str,
    peers: Sequence[BgpPeer],
    routes: Iterable[str] = (),
    *,
    api_run: str | None = None,
) -> str:
    """An ExaBGP 5 config; ``api_run`` is the command of a JSON API process that sees every update.

    Each route is announced to the peers of its own address family, with next-hop self.
    """
    _check_router_id(router_id)
    lines: list[str] = []
    if api_run is not None:
        lines += ["process api-log {", f"  run {api_run};", "  encoder json;", "}"]
    v4, v6 = _split_by_family(routes)
    for peer in peers:
        lines.append(f"neighbor {peer.address} {{")
        lines.append(f"  router-id {router_id};")
        if peer.local_address:
            lines.append(f"  local-address {peer.local_address};")
        lines.append(f"  local-as {asn};")
        lines.append(f"  peer-as {peer.remote_as};")
        if peer.password:
            lines.append(f"  md5-password '{peer.password}';")
        if peer.passive:
            lines.append("  passive;")
        lines.append("  family { ipv4 unicast; ipv6 unicast; }")
        if api_run is not None:
            lines.append("  api {")
            lines.append("    processes [ api-log ];")
            lines.append("    receive { parsed; update; }")
            lines.append("    neighbor-changes;")
            lines.append("  }")
        # "next-hop self" only works within the session's own family, so each route goes to the
        # peers of its family (an IPv6 route over an IPv4 session would need an explicit next hop).
        same_family = v4 if peer.version == 4 else v6
        if same_family and peer.local_address is None:
            # ExaBGP resolves "self" from local-address; without it the config fails to load.
            raise ValueError(f"ExaBGP peer {peer.address}: announcing routes needs local_address")
        if same_family:
            lines.append("  static {")
            lines += [f"    route {net} next-hop self;" for net in same_family]
            lines.append("  }")
        lines.append("}")
    lines.append("")
    return "\n".join(lines)


def parse_json_lines(text: str) -> tuple[list[dict[str, Any]], int]:
    """JSON objects, one a line, as ExaBGP's API writes them; returns (objects, lines skipped)."""
    objects: list[dict[str, Any]] = []
    skipped = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(value, dict):
            objects.append(value)
        else:
            skipped += 1
    return objects, skipped


def _peer_of(message: Mapping[str, Any]) -> str | None:
    neighbor = message.get("neighbor")
    if not isinstance(neighbor, Mapping):
        return None
    address = neighbor.get("address")
    if isinstance(address, Mapping) and isinstance(address.get("peer"), str):
        return str(address["peer"])
    return None


def exabgp_peer_states(messages: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The last ``state`` ExaBGP reported per peer ('connected', 'up', 'down')."""
    states: dict[str, str] = {}
    for msg in messages:
        if msg.get("type") != "state":
            continue
        peer = _peer_of(msg)
        state = msg.get("neighbor", {}).get("state")
        if peer is not None and isinstance(state, str):
            states[peer] = state
    return states


def exabgp_received_prefixes(messages: Iterable[Mapping[str, Any]], peer: str | None = None) -> set[str]:
    """Prefixes announced and not since withdrawn, replaying ``update`` messages in order."""
    current: set[str] = set()
    for msg in messages:
        if msg.get("type") != "update" or (peer is not None and _peer_of(msg) != peer):
            continue
        update = msg.get("neighbor", {}).get("message", {}).get("update", {})
        if not isinstance(update, Mapping):
            continue
        for family in update.get("withdraw", {}).values():
            for entry in family if isinstance(family, list) else []:
                if isinstance(entry, Mapping) and "nlri" in entry:
                    current.discard(str(entry["nlri"]))
        for family in update.get("announce", {}).values():
            if not isinstance(family, Mapping):
                continue
            for entries in family.values():
                for entry in entries if isinstance(entries, list) else []:
                    if isinstance(entry, Mapping) and "nlri" in entry:
                        current.add(str(entry["nlri"]))
    return current
