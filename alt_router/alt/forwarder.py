"""The ALT datagram forwarder (RFC 6836 §3.3, §6), sans-IO.

An *ALT datagram* is an IPv4/IPv6 UDP packet to port 4342 whose destination
address is the EID being looked up (a Map-Request that a Map-Resolver or ITR
put on the ALT).  Each ALT node routes it on the longest match among the EID
prefixes its BGP sessions learned, decrementing the TTL, until it reaches the
node whose Map-Server (or ETR) holds the EID, which takes it locally.

The decision is made on header bytes at fixed offsets, with a per-destination
cache of the route decision that is dropped whenever the RIB changes (its event
sequence number moves) or the local prefixes change: the LISP payload is never
decoded here.  IPv6 extension headers are not walked: an ALT datagram carries
none, and anything else is left to the kernel.

Every decision is a verdict that says what happened (``alt_router.gre.dataplane``):
``Forward(tunnel, packet)``, ``Local(tunnel, packet)`` for this node's Map-Server or ETR,
``Deliver`` (not an ALT datagram: the kernel's), or ``Drop(reason, icmp=...)``.  The ICMP
error (Time Exceeded, Destination Unreachable) travels in the Drop, for the edge to send
over the *underlay*: the datagram's source is the ITR or lig
host's RLOC, which the ALT does not route (it carries EID prefixes only) but
which every ETR must reach anyway to send its Map-Reply.  Whether an error may
be sent at all, and how many, is ``alt_router.alt.icmp``'s call (RFC 1812
§4.3.2.7, RFC 4443 §2.4): each one it refuses is counted under
``icmp-suppressed`` and ``icmp-suppressed:<reason>``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Address, IPv6Address
from typing import Final, Protocol

from alt_router.alt import icmp
from alt_router.alt.icmp import IcmpLimits, IcmpRateLimiter
from alt_router.gre.config import TunnelConfig
from alt_router.gre.dataplane import DELIVER, Drop, Forward, Local, Verdict
from alt_router.inet import InetError, icmp_error
from alt_router.rib.paths import Path
from alt_router.rib.rib import Rib
from alt_router.rib.table import DualTable
from alt_router.types import IPAddress, Prefix

LOCAL: Final = "<local>"
"""The route decision for a destination inside a local (Map-Server or ETR) prefix."""
_DISCARD: Final = "<discard>"
# The route decision for a hole in one of our active aggregates: counted, then treated as no route.

_CACHE_MAX = 65536
_MISS: Final = object()
# fast_forward's views of an IPv4 header (version/IHL, total length, flags and fragment offset,
# TTL, protocol, checksum, destination, UDP destination port) and of an IPv6 one (first byte,
# next header, hop limit, destination, UDP destination port).
_V4_FIELDS: Final = struct.Struct("!BxHxxHBBH4x4s2xH").unpack_from
_V6_FIELDS: Final = struct.Struct("!B5xBB16x16s2xH").unpack_from
_TTL_PROTO_CSUM: Final = struct.Struct("!BBH").pack

# Drop reasons (also counter names).
NO_ROUTE: Final = "no-route"
TTL_EXPIRED: Final = "ttl-expired"
LOOP: Final = "loop"
MALFORMED: Final = "malformed"
NO_TUNNEL: Final = "no-tunnel"
NO_ROUTE_AGGREGATE: Final = "no-route:aggregate"

_DROP_NO_ROUTE: Final = Drop(NO_ROUTE)
_DROP_TTL: Final = Drop(TTL_EXPIRED)
_DROP_LOOP: Final = Drop(LOOP)
_DROP_MALFORMED: Final = Drop(MALFORMED)

COUNTERS: Final = (
    "forwarded", "local", "not-alt", NO_ROUTE, NO_ROUTE_AGGREGATE, TTL_EXPIRED, LOOP,
    MALFORMED, NO_TUNNEL,
    "icmp-queued", "icmp-suppressed", *(f"icmp-suppressed:{reason}" for reason in icmp.SUPPRESS_REASONS),
)


class RouteSource(Protocol):
    """Where the forwarder finds routes: ``alt_router.rib.Rib`` is one."""

    def lookup(self, address: IPAddress) -> Path | None: ...


class AltForwarder:
    """Decides, for each inner packet off a tunnel (or from the local Map-Resolver), where it goes.

    ``tunnels`` maps a BGP peer name (``Path.next_hop_peer``) to the name of the
    GRE tunnel that reaches it.  ``generation`` returns a number that changes
    whenever ``routes`` changes (``Rib.stream.last_seq``); without it nothing is
    cached.  ``router_v4``/``router_v6`` source ICMP errors; a
    family without one sends none.  ``icmp_limits`` bounds how many, in time
    read from ``clock`` (the edge's monotonic clock, passed in): without a clock
    time stands still, and no more than the bursts are ever sent.
    """

    def __init__(
        self,
        routes: RouteSource,
        tunnels: Mapping[str, str],
        *,
        local_prefixes: Iterable[Prefix] = (),
        router_v4: IPv4Address | None = None,
        router_v6: IPv6Address | None = None,
        generation: Callable[[], int] | None = None,
        icmp_limits: IcmpLimits | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.routes = routes
        self.tunnels = dict(tunnels)
        self.router_v4 = router_v4
        self.router_v6 = router_v6
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._local: DualTable[bool] = DualTable()
        self._served: DualTable[bool] = DualTable()
        self._discard: DualTable[bool] = DualTable()
        for prefix in local_prefixes:
            self._local.insert(prefix, True)
        self._generation = generation
        self._gen = generation() if generation is not None else 0
        self._local_gen = 0
        self._cache: dict[bytes, str | None] = {}
        self._clock = clock
        self.icmp_limiter = IcmpRateLimiter(icmp_limits, clock() if clock is not None else 0.0)

    @classmethod
    def for_rib(
        cls,
        rib: Rib,
        tunnels: Mapping[str, str],
        *,
        router_v4: IPv4Address | None = None,
        router_v6: IPv6Address | None = None,
        icmp_limits: IcmpLimits | None = None,
        clock: Callable[[], float] | None = None,
    ) -> AltForwarder:
        """A forwarder over an ``alt_router.rib.Rib``, caching until its event stream moves."""
        stream = rib.stream
        return cls(
            rib, tunnels, router_v4=router_v4, router_v6=router_v6,
            generation=lambda: stream.last_seq, icmp_limits=icmp_limits, clock=clock,
        )

    def set_tunnels(self, tunnels: Mapping[str, str]) -> None:
        """A new peer-to-tunnel map (peers added or removed by a config reload)."""
        self.tunnels = dict(tunnels)
        self._cache.clear()

    # --- local prefixes --------------------------------------------------------------------

    def add_local(self, prefix: Prefix) -> None:
        self._local.insert(prefix, True)
        self._local_gen += 1
        self._cache.clear()

    def remove_local(self, prefix: Prefix) -> None:
        self._local.delete(prefix)
        self._local_gen += 1
        self._cache.clear()

    @property
    def generation(self) -> tuple[int, int] | None:
        """Changes whenever a route or local prefix does; None when routes are not versioned."""
        if self._generation is None:
            return None
        return self._generation(), self._local_gen

    def local_prefixes(self) -> list[Prefix]:
        return [p for p, _ in self._local]

    def set_served(self, prefixes: Iterable[Prefix]) -> None:
        """Prefixes whose ALT datagrams are local even when not announced by a Map-Server site.

        A Map-Server node serves its ``[eid].announce`` aggregates and every configured site
        prefix, registered or not, so that it can answer with a negative Map-Reply (RFC 9301
        §8.3) instead of dropping the request as unroutable.
        """
        self._served = DualTable()
        for prefix in prefixes:
            self._served.insert(prefix, True)
        self._local_gen += 1
        self._cache.clear()

    def served_prefixes(self) -> list[Prefix]:
        return [p for p, _ in self._served]

    def set_discard(self, prefixes: Iterable[Prefix]) -> None:
        """The node's active aggregates (``[[eid.aggregates]]``): holes in them are not routed on.

        RFC 6836 §7.1: an aggregating node covers more-specifics that do not all exist.  A
        datagram under an aggregate whose best RIB match is not more specific than it (no
        contributing route covers the EID) would otherwise follow a shorter route, possibly
        the default or a peer's wider aggregate, back toward where the aggregate was sent:
        it is dropped as no route instead (ICMP unreachable, ``no-route:aggregate``).
        """
        self._discard = DualTable()
        for prefix in prefixes:
            self._discard.insert(prefix, True)
        self._local_gen += 1
        self._cache.clear()

    def discard_prefixes(self) -> list[Prefix]:
        return [p for p, _ in self._discard]

    # --- decisions -------------------------------------------------------------------------

    def route(self, address: IPAddress) -> str | None:
        """The tunnel an ALT datagram to ``address`` leaves by, ``LOCAL``, or None (no route).

        The Map-Resolver's one lookup for a datagram it builds (``SendAlt.route``): the edge sends
        the datagram where this said, without asking again.  It reads and never writes (any
        thread may ask), so it bypasses the data-plane thread's cache and counts nothing.
        """
        target = self._route(address, count=False)
        return None if target is _DISCARD else target

    def _route(self, address: IPAddress, *, count: bool = True) -> str | None:
        local = -1
        for table in (self._local, self._served):
            hit = table.lookup(address)
            if hit is not None:
                local = max(local, hit[0].prefixlen)
        path = self.routes.lookup(address)
        # Longest match between our own prefixes and the RIB: a more-specific route a peer
        # learned inside one of our aggregates or sites still wins.
        if local >= 0 and (path is None or path.prefix.prefixlen <= local):
            return LOCAL
        if len(self._discard):
            hole = self._discard.lookup(address)
            # Only a route strictly inside our aggregate (a contributor) may carry the datagram; an
            # equal one is a peer's copy of the same aggregate, a shorter one leads back out.
            if hole is not None and (path is None or path.prefix.prefixlen <= hole[0].prefixlen):
                return _DISCARD
        if path is None:
            return None
        tunnel = self.tunnels.get(path.next_hop_peer or path.peer)
        if tunnel is None and count:
            self.counters[NO_TUNNEL] += 1
        return tunnel

    def hook(self, tunnel: TunnelConfig, packet: bytes) -> Verdict:
        """The GRE data plane's inner-packet hook (``Dataplane(..., hook=forwarder.hook)``)."""
        return self.forward(packet, tunnel.name)

    def forward(self, packet: bytes, from_tunnel: str) -> Verdict:
        """An inner packet that arrived on tunnel ``from_tunnel``: one route lookup (cached)."""
        counters = self.counters
        n = len(packet)
        if n == 0:
            counters[MALFORMED] += 1
            return _DROP_MALFORMED
        b0 = packet[0]
        version = b0 >> 4
        if version == 4:
            ihl = (b0 & 0x0F) << 2
            if ihl < 20 or n < ihl or ((packet[2] << 8) | packet[3]) > n:
                counters[MALFORMED] += 1
                return _DROP_MALFORMED
            # Not UDP, a fragment (MF or offset: the UDP header may be missing) or not to 4342.
            if (
                packet[9] != 17 or (packet[6] & 0x3F) or packet[7] or n < ihl + 8
                or packet[ihl + 2] != 0x10 or packet[ihl + 3] != 0xF6
            ):
                counters["not-alt"] += 1
                return DELIVER
            dst = packet[16:20]
            ttl = packet[8]
        elif version == 6:
            if n < 40:
                counters[MALFORMED] += 1
                return _DROP_MALFORMED
            if packet[6] != 17 or n < 48 or packet[42] != 0x10 or packet[43] != 0xF6:
                counters["not-alt"] += 1
                return DELIVER
            dst = packet[24:40]
            ttl = packet[7]
        else:
            counters[MALFORMED] += 1
            return _DROP_MALFORMED

        if self._generation is not None:
            gen = self._generation()
            if gen != self._gen:
                self._cache.clear()
                self._gen = gen
            target = self._cache.get(dst, _MISS)
            if target is _MISS:
                if len(self._cache) >= _CACHE_MAX:
                    self._cache.clear()
                target = self._cache[dst] = self._route_raw(dst)
        else:
            target = self._route_raw(dst)

        if target is LOCAL:
            counters["local"] += 1
            return Local(from_tunnel, packet)
        if target is None or target is _DISCARD:
            counters[NO_ROUTE] += 1
            if target is _DISCARD:
                counters[NO_ROUTE_AGGREGATE] += 1
            error = self.icmp_error(packet, "unreachable")
            return _DROP_NO_ROUTE if error is None else Drop(NO_ROUTE, error)
        if target == from_tunnel:
            # The best path points back where the datagram came from: the two RIBs
            # disagree for a moment (convergence).  TTL would end it; dropping now is kinder.
            counters[LOOP] += 1
            return _DROP_LOOP
        if ttl <= 1:
            counters[TTL_EXPIRED] += 1
            error = self.icmp_error(packet, "time-exceeded") if ttl else None
            return _DROP_TTL if error is None else Drop(TTL_EXPIRED, error)
        counters["forwarded"] += 1
        if version == 4:
            # RFC 1624 eqn. 3 with m' = m - 0x0100: HC' = ~(~HC + 0xFEFF).
            s = (~((packet[10] << 8) | packet[11]) & 0xFFFF) + 0xFEFF
            s = ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF
            out = packet[:8] + bytes((ttl - 1, packet[9], s >> 8, s & 0xFF)) + packet[12:]
        else:
            out = packet[:7] + bytes((ttl - 1,)) + packet[8:]
        return Forward(target, out)  # type: ignore[arg-type]

    def fast_forward(self, packet: bytes, offset: int, from_tunnel: str) -> tuple[str, bytes] | None:
        """The common case of ``forward(packet[offset:], from_tunnel)``, without a verdict object.

        Returns ``(tunnel, rewritten packet)`` and counts it exactly when ``forward`` would
        return ``Forward`` with a cached route; anything else (not an ALT datagram, an IPv4
        header with options, a cache miss, local, no route, a loop, TTL 1) returns None having
        counted nothing, and the caller asks ``forward``.  ``offset`` is where the inner packet
        starts, so the GRE data path need not copy it out of the outer one first.
        """
        n = len(packet) - offset
        if n < 28 or self._generation is None:
            return None
        # One struct call reads every field the decision needs: cheaper than a dozen indexings.
        b0 = packet[offset]
        if b0 == 0x45:
            _, total, frag, ttl, proto, csum, dst, dport = _V4_FIELDS(packet, offset)
            if proto != 17 or frag & 0x3FFF or dport != 4342 or total > n:
                return None
        elif b0 >> 4 == 6 and n >= 48:
            _, proto, ttl, dst, dport = _V6_FIELDS(packet, offset)
            if proto != 17 or dport != 4342:
                return None
        else:
            return None
        if ttl <= 1:
            return None
        gen = self._generation()
        if gen != self._gen:
            self._cache.clear()
            self._gen = gen
        # A miss goes the long way, which fills the cache (and counts no-tunnel once).
        target = self._cache.get(dst)
        if target is None or target is LOCAL or target is _DISCARD or target == from_tunnel:
            return None
        self.counters["forwarded"] += 1
        if b0 == 0x45:
            # RFC 1624 eqn. 3, as in _decide.
            s = (~csum & 0xFFFF) + 0xFEFF
            s = ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF
            return target, packet[offset:offset + 8] + _TTL_PROTO_CSUM(ttl - 1, 17, s) + packet[offset + 12:]
        return target, packet[offset:offset + 7] + bytes((ttl - 1,)) + packet[offset + 8:]

    def _route_raw(self, dst: bytes) -> str | None:
        return self._route(IPv4Address(dst) if len(dst) == 4 else IPv6Address(dst))

    # --- ICMP ------------------------------------------------------------------------------

    def icmp_error(self, packet: bytes, kind: str) -> bytes | None:
        """The ``kind`` ICMP error about ``packet`` if the rules and the limits allow it, else None.

        The checks run cheapest first, and the error is only built once all have passed,
        so a flood costs a few comparisons per packet.  The error travels in the ``Drop``
        verdict; the edge sends it (counted there if it cannot).
        """
        reason = icmp.forbidden(packet)
        router = self.router_v4 if packet[0] >> 4 == 4 else self.router_v6
        if reason is None and router is None:
            reason = icmp.NO_ROUTER_ADDRESS
        if reason is None:
            now = self._clock() if self._clock is not None else 0.0
            if not self.icmp_limiter.allow(icmp.destination_key(packet), now):
                reason = icmp.RATE_LIMIT
        error = None
        if reason is None:
            assert router is not None
            try:
                error = icmp_error(router, packet, kind=kind)
            except InetError:
                reason = icmp.UNBUILDABLE
        if error is None:
            self.counters["icmp-suppressed"] += 1
            self.counters[f"icmp-suppressed:{reason}"] += 1
            return None
        self.counters["icmp-queued"] += 1
        return error

    def stats(self) -> dict[str, object]:
        return {"counters": dict(self.counters), "cache": len(self._cache), "local": len(self._local),
                "discard": len(self._discard),
                "icmp_destinations": len(self.icmp_limiter)}
