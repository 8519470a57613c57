"""The Map-Resolver (RFC 6833 §4.3, RFC 9301 §8.1, over the ALT of RFC 6836 §3.3), sans-IO.

An ITR (or lig) sends an ECM-wrapped Map-Request to UDP 4342.  The resolver
decapsulates it and, as RFC 6836 has it, forwards the *inner* packet onto the
ALT: source = the ITR's address from the inner IP header, destination = the
EID, UDP source port = the ITR's inner source port (where the Map-Reply must
go), destination port 4342.  The inner TTL is honoured like a router's: a
request arriving with TTL <= 1 is answered with ICMP Time Exceeded from this
node, otherwise it enters the ALT with TTL - 1.  That is what makes
``lig --trace`` work (docs/mapping.md).

An EID the ALT has no route for gets a negative Map-Reply, action
Natively-Forward, TTL 15 minutes, for the least specific prefix that contains
the EID and no routed prefix (see ``negative.py``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv6Address

from alt_router.alt.forwarder import AltForwarder
from alt_router.inet import InetError, icmp_error, udp_packet
from alt_router.lisp import (
    LISP_CONTROL_PORT,
    Action,
    EncapsulatedControlMessage,
    LispDecodeError,
    MappingRecord,
    MapReply,
    MapRequest,
    decode,
)
from alt_router.mapping.actions import Action as Out
from alt_router.mapping.actions import IPAddress, Prefix, SendAlt, SendIp, SendUdp
from alt_router.mapping.negative import PrefixIndex
from alt_router.mapping.ratelimit import RateLimiter

log = logging.getLogger(__name__)

NEGATIVE_TTL = 15  # minutes, RFC 6833 §4.3


def first_ip(addresses: Iterable[object], prefer: int | None = None) -> IPAddress | None:
    """The first plain IPv4/IPv6 address (of family ``prefer`` if there is one)."""
    ips = [a for a in addresses if isinstance(a, IPv4Address | IPv6Address)]
    if prefer is not None:
        for a in ips:
            if a.version == prefer:
                return a
    return ips[0] if ips else None


def inner_payload(ecm_bytes: bytes) -> bytes:
    """The inner UDP payload of an already validated ECM, byte for byte as the ITR sent it."""
    first = ecm_bytes[4]
    ihl = (first & 0x0F) * 4 if first >> 4 == 4 else 40
    return ecm_bytes[4 + ihl + 8:]


class MapResolver:
    """Turns ECM Map-Requests into ALT datagrams or negative Map-Replies.

    ``prefixes`` lists the ALT's routed EID prefixes (``lambda: (p.prefix for p
    in rib.routes())``); it is read again only when ``forwarder.generation``
    changes (every time when that is None).
    """

    def __init__(
        self,
        forwarder: AltForwarder,
        prefixes: Callable[[], Iterable[Prefix]],
        *,
        rate: float = 100.0,
        burst: float = 200.0,
        negative_ttl: int = NEGATIVE_TTL,
        port: int = LISP_CONTROL_PORT,
    ) -> None:
        self.forwarder = forwarder
        self._prefixes = prefixes
        self.limiter = RateLimiter(rate, burst)
        self.negative_ttl = negative_ttl
        self.port = port
        self.counters: Counter[str] = Counter()
        self._index: PrefixIndex | None = None
        self._index_gen: object = None

    def handle(self, data: bytes, src: IPAddress, sport: int, now: float) -> list[Out]:
        """A datagram received on the resolver's UDP socket from ``src``:``sport``."""
        self.counters["received"] += 1
        if not self.limiter.allow(src, now):
            self.counters["rate-limited"] += 1
            return []
        try:
            msg = decode(data)
        except LispDecodeError as exc:
            self.counters["malformed"] += 1
            log.debug("malformed message from %s:%d: %s", src, sport, exc)
            return []
        if not isinstance(msg, EncapsulatedControlMessage):
            self.counters["not-ecm"] += 1
            return []
        request = msg.inner
        if not isinstance(request, MapRequest):
            self.counters["not-map-request"] += 1
            return []
        eid = request.records[0].eid
        if not isinstance(eid, IPv4Address | IPv6Address):
            # The ALT routes plain IPv4/IPv6 EID prefixes; an Instance-ID has no route there.
            self.counters["unsupported-eid"] += 1
            return []
        target = self.forwarder.route(eid)
        if target is None:
            return self._negative(msg, request, eid)
        return self._into_alt(data, msg, eid)

    def _into_alt(self, data: bytes, ecm: EncapsulatedControlMessage, eid: IPAddress) -> list[Out]:
        router = self.forwarder.router_v4 if eid.version == 4 else self.forwarder.router_v6
        if ecm.ttl <= 1:
            self.counters["ttl-expired"] += 1
            if router is None or router.version != ecm.source.version or ecm.source.is_unspecified:
                return []
            return [SendIp(icmp_error(router, data[4:], kind="time-exceeded"))]
        source: IPAddress | None = ecm.source
        if ecm.source.version != eid.version or ecm.source.is_unspecified:
            # An IPv6 EID asked for by an IPv4-only ITR: the datagram needs a source of the EID's family.
            source = router
        if source is None:
            self.counters["family-mismatch"] += 1
            return []
        try:
            packet = udp_packet(
                source, eid, ecm.source_port, LISP_CONTROL_PORT, inner_payload(data), ttl=ecm.ttl - 1
            )
        except InetError:
            self.counters["too-big"] += 1
            return []
        self.counters["forwarded"] += 1
        return [SendAlt(packet)]

    def _negative(self, ecm: EncapsulatedControlMessage, request: MapRequest, eid: IPAddress) -> list[Out]:
        itr = first_ip(request.itr_rlocs, ecm.source.version)
        if itr is None:
            self.counters["no-itr-rloc"] += 1
            return []
        prefix = self.negative_prefix(eid)
        record = MappingRecord(
            prefix.network_address, prefix.prefixlen, ttl=self.negative_ttl, action=Action.NATIVELY_FORWARD
        )
        reply = MapReply(request.nonce, (record,))
        self.counters["negative-reply"] += 1
        return [SendUdp(itr, ecm.source_port, reply.encode(), sport=self.port)]

    def negative_prefix(self, eid: IPAddress) -> Prefix:
        gen = self.forwarder.generation
        if self._index is None or gen is None or gen != self._index_gen:
            known = list(self._prefixes()) + self.forwarder.local_prefixes()
            self._index = PrefixIndex(known)
            self._index_gen = gen
        return self._index.uncovered(eid)
