"""The Map-Resolver (RFC 6833 §4.3, RFC 9301 §8.1/§8.4, over the ALT of RFC 6836 §3.3), sans-IO.

An ITR (or lig) sends an ECM-wrapped Map-Request to UDP 4342.  The resolver
decapsulates it and, as RFC 6836 has it, forwards the *inner* packet onto the
ALT: source = the address in the inner IP header, destination = the EID, UDP
source port = the inner source port (where the Map-Reply must go), destination
port 4342.  The inner TTL is honoured like a router's: a request arriving with
TTL <= 1 is answered with ICMP Time Exceeded from this node, otherwise it
enters the ALT with TTL - 1.  That is what makes ``lig --trace`` work
(docs/mapping.md).

An EID the ALT has no route for gets a negative Map-Reply, action
Natively-Forward, for the least specific prefix that contains the EID and no
routed prefix (see ``negative.py``).  Its TTL depends on where the EID is: an
EID outside the node's EID space (``[eid].accept``) does not exist, 15 minutes
(RFC 9301 §8.4); an EID inside it has no route only because part of the ALT is
unreachable (a flap, an outage), so the ITR is told to ask again soon
(``outage_negative_ttl``, 1 minute like RFC 9301 §8.1's "delegated but
unregistered" case).

Admission: every request is charged to its source's /24 (IPv4) or /64 (IPv6)
and then to a global bucket, and every answer that goes to an address taken
from inside the request (our negative reply or ICMP error, the ETR's Map-Reply
to a forwarded request) is charged to that address's prefix too
(``ratelimit.SourceLimits``).  Refusals are counted per reason and logged as a
summary (``LogSummary``), never once per packet.

Interoperability (docs/mapping.md, "Interoperability"): an IPv6 ECM whose
inner UDP checksum is zero is accepted and counted; so is an ECM whose inner
source is not one of its ITR-RLOCs (replies go to the ITR-RLOCs); an ECM with
the S bit (LISP-SEC, RFC 9303) is forwarded with its Map-Request unchanged and
counted; a Map-Request with the P (probe) bit is dropped (RFC 9301 §5.2).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

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
from alt_router.logsummary import LogSummary
from alt_router.mapping.actions import Action as Out
from alt_router.mapping.actions import SendAlt, SendIp, SendUdp
from alt_router.mapping.negative import PrefixIndex
from alt_router.mapping.ratelimit import DEFAULT_MAX_PREFIXES, SourceLimits
from alt_router.types import IPAddress, Prefix

log = logging.getLogger(__name__)

NEGATIVE_TTL = 15  # minutes, RFC 9301 §8.4: the EID is not in the mapping database
OUTAGE_NEGATIVE_TTL = 1  # minutes: inside the EID space but no ALT route (RFC 9301 §8.1, 1-minute case)
DEFAULT_RATE = 100.0
DEFAULT_GLOBAL_RATE = 1000.0


class AltRoutes(Protocol):
    """What the resolver needs of the ALT forwarder (``alt.forwarder.AltForwarder`` is one).

    A protocol rather than an import, so ``mapping`` does not depend on ``alt``
    (``alt`` already uses ``mapping.actions``; issue 13 wants no package cycle).
    """

    router_v4: IPv4Address | None
    router_v6: IPv6Address | None

    @property
    def generation(self) -> object: ...

    def route(self, address: IPAddress) -> str | None: ...

    def local_prefixes(self) -> list[Prefix]: ...


def first_ip(addresses: Iterable[object], prefer: int | None = None) -> IPAddress | None:
    """The first plain IPv4/IPv6 address (of family ``prefer`` if there is one)."""
    ips = [a for a in addresses if isinstance(a, IPv4Address | IPv6Address)]
    if prefer is not None:
        for a in ips:
            if a.version == prefer:
                return a
    return ips[0] if ips else None


def inner_payload(ecm_bytes: bytes, offset: int = 4) -> bytes:
    """The inner UDP payload of an already validated ECM, byte for byte as the ITR sent it.

    ``offset`` is where the inner IP header starts: 4, plus the LISP-SEC ECM
    Authentication Data when the S bit is set (RFC 9301 §5.8).
    """
    first = ecm_bytes[offset]
    ihl = (first & 0x0F) * 4 if first >> 4 == 4 else 40
    return ecm_bytes[offset + ihl + 8:]


class MapResolver:
    """Turns ECM Map-Requests into ALT datagrams or negative Map-Replies.

    ``prefixes`` lists the ALT's routed EID prefixes (``lambda: (p.prefix for p
    in rib.routes())``); it is read again only when ``forwarder.generation``
    changes (every time when that is None).  ``eid_space`` is the node's
    ``[eid].accept``: EIDs inside it get the short outage TTL when unrouted.
    """

    def __init__(
        self,
        forwarder: AltRoutes,
        prefixes: Callable[[], Iterable[Prefix]],
        *,
        rate: float = DEFAULT_RATE,
        burst: float = 2 * DEFAULT_RATE,
        global_rate: float = DEFAULT_GLOBAL_RATE,
        global_burst: float | None = None,
        max_prefixes: int = DEFAULT_MAX_PREFIXES,
        negative_ttl: int = NEGATIVE_TTL,
        outage_negative_ttl: int = OUTAGE_NEGATIVE_TTL,
        eid_space: Iterable[Prefix] = (),
        port: int = LISP_CONTROL_PORT,
        log_interval: float = 10.0,
    ) -> None:
        self.forwarder = forwarder
        self._prefixes = prefixes
        self.limits = SourceLimits(
            rate=rate, burst=burst, global_rate=global_rate,
            global_burst=global_burst if global_burst is not None else 2 * global_rate,
            max_prefixes=max_prefixes,
        )
        self.negative_ttl = negative_ttl
        self.outage_negative_ttl = outage_negative_ttl
        self.eid_space = tuple(eid_space)
        self.port = port
        self.counters: Counter[str] = Counter()
        self.log_summary = LogSummary(interval=log_interval)
        self._summary_since: float | None = None
        self._index: PrefixIndex | None = None
        self._outside_index: PrefixIndex | None = None
        self._index_gen: object = None

    # --- receive -----------------------------------------------------------------------------

    def handle(self, data: bytes, src: IPAddress, sport: int, now: float) -> list[Out]:
        """A datagram received on the resolver's UDP socket from ``src``:``sport``."""
        self.counters["received"] += 1
        if self.log_summary.due(now):
            self.tick(now)
        refused = self.limits.admit(src, now)
        if refused is not None:
            self._refuse(f"rate-limited:{refused}", src, now)
            return []
        msg = self._decode(data, src, sport)
        if msg is None:
            return []
        if not isinstance(msg, EncapsulatedControlMessage):
            self.counters["not-ecm"] += 1
            return []
        request = msg.inner
        if not isinstance(request, MapRequest):
            self.counters["not-map-request"] += 1
            return []
        if request.probe:
            # RFC 9301 §5.2: an RLOC-probe must not reach the mapping system; "If a
            # Map-Resolver or Map-Server receives a Map-Request with the probe-bit set,
            # it MUST drop the message."
            self.counters["dropped:probe"] += 1
            return []
        if msg.security:
            # LISP-SEC (RFC 9303) is not implemented: the Map-Request goes on unchanged
            # (the ETR or Map-Server answers without LISP-SEC protection).
            self.counters["accepted:lisp-sec-unverified"] += 1
        if msg.source not in request.itr_rlocs:
            # Some ITRs put the source EID (not their RLOC) in the inner header; replies go to
            # the ITR-RLOCs in any case (RFC 9301 §5.5), never to the inner source.
            self.counters["accepted:inner-source-not-itr-rloc"] += 1
        eid = request.records[0].eid
        if not isinstance(eid, IPv4Address | IPv6Address):
            # The ALT routes plain IPv4/IPv6 EID prefixes; an Instance-ID has no route there.
            self.counters["unsupported-eid"] += 1
            return []
        target = self.forwarder.route(eid)
        if target is None:
            return self._negative(msg, request, eid, src, now)
        return self._into_alt(data, msg, eid, src, now, route=target)

    def _decode(self, data: bytes, src: IPAddress, sport: int) -> object | None:
        try:
            msg = decode(data)
        except LispDecodeError as exc:
            self.counters["malformed"] += 1
            log.debug("malformed message from %s:%d: %s", src, sport, exc)
            return None
        if isinstance(msg, EncapsulatedControlMessage) and msg.inner_udp_checksum_zero \
                and msg.source.version == 6:
            # RFC 9301 §5.8 says MUST be non-zero, deployed ITRs send 0 (RFC 6935/6936 allow it
            # for tunnels): accepted, and visible under its own name.
            self.counters["accepted:ipv6-zero-udp-checksum"] += 1
        return msg

    def _refuse(self, reason: str, src: IPAddress, now: float) -> None:
        self.counters[reason] += 1
        if self._summary_since is None:
            self._summary_since = now
        if self.log_summary.note(reason, self._prefix_text(src), now):
            log.warning("Map-Resolver: %s from %s (repeats are summarised every %.0f s)",
                        reason, src, self.log_summary.interval)

    def _prefix_text(self, addr: IPAddress) -> str:
        # Runs once per refused datagram during a flood: integer masking, not ip_network().
        plen, bits = (self.limits.v4_len, 32) if addr.version == 4 else (self.limits.v6_len, 128)
        shift = bits - plen
        return f"{type(addr)(int(addr) >> shift << shift)}/{plen}"

    # --- timers ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``tick`` has a log summary to write (None: nothing held)."""
        since = self._summary_since
        return None if since is None else since + self.log_summary.interval

    def tick(self, now: float) -> list[Out]:
        """Write the summary of refusals held since the last one (the resolver has no other timer)."""
        if self.log_summary.due(now):
            self._summary_since = None
            for line in self.log_summary.flush(now):
                log.warning("Map-Resolver: %s", line)
        return []

    # --- answers -----------------------------------------------------------------------------

    def _into_alt(
        self, data: bytes, ecm: EncapsulatedControlMessage, eid: IPAddress, src: IPAddress, now: float,
        *, route: str,
    ) -> list[Out]:
        router = self.forwarder.router_v4 if eid.version == 4 else self.forwarder.router_v6
        if ecm.ttl <= 1:
            self.counters["ttl-expired"] += 1
            if router is None or router.version != ecm.source.version or ecm.source.is_unspecified:
                return []
            if not self.limits.admit_reply(ecm.source, src, now):
                self._refuse("rate-limited:reply", ecm.source, now)
                return []
            offset = 4 + len(ecm.security_data)
            return [SendIp(icmp_error(router, data[offset:], kind="time-exceeded"))]
        source: IPAddress | None = ecm.source
        if ecm.source.version != eid.version or ecm.source.is_unspecified:
            # An IPv6 EID asked for by an IPv4-only ITR: the datagram needs a source of the EID's family.
            source = router
        if source is None:
            self.counters["family-mismatch"] += 1
            return []
        itr = first_ip(ecm.inner.itr_rlocs, src.version) if isinstance(ecm.inner, MapRequest) else None
        if itr is not None and not self.limits.admit_reply(itr, src, now):
            # The ETR's (or proxy) Map-Reply will go to this ITR-RLOC: the same reflection as a
            # negative reply, only sent from further away.
            self._refuse("rate-limited:reply", itr, now)
            return []
        same = source is ecm.source
        try:
            # RFC 6836 §3.3: the inner packet itself goes on, so its header fields do too.
            packet = udp_packet(
                source, eid, ecm.source_port, LISP_CONTROL_PORT,
                inner_payload(data, 4 + len(ecm.security_data)), ttl=ecm.ttl - 1, tos=ecm.tos,
                ident=ecm.ident if same else 0, dont_fragment=ecm.dont_fragment if same else True,
                flow_label=ecm.flow_label if same else 0,
            )
        except InetError:
            self.counters["too-big"] += 1
            return []
        self.counters["forwarded"] += 1
        return [SendAlt(packet, route)]

    def _negative(
        self, ecm: EncapsulatedControlMessage, request: MapRequest, eid: IPAddress, src: IPAddress, now: float
    ) -> list[Out]:
        # The family the ITR reached us over first: its inner source may be an EID (see handle).
        itr = first_ip(request.itr_rlocs, src.version)
        if itr is None:
            self.counters["no-itr-rloc"] += 1
            return []
        if not self.limits.admit_reply(itr, src, now):
            self._refuse("rate-limited:reply", itr, now)
            return []
        inside = self.in_eid_space(eid)
        prefix = self.negative_prefix(eid)
        ttl = self.outage_negative_ttl if inside else self.negative_ttl
        record = MappingRecord(
            prefix.network_address, prefix.prefixlen, ttl=ttl, action=Action.NATIVELY_FORWARD
        )
        reply = MapReply(request.nonce, (record,))
        self.counters["negative-reply"] += 1
        if inside:
            self.counters["negative-reply:eid-space-unrouted"] += 1
        return [SendUdp(itr, ecm.source_port, reply.encode(), sport=self.port)]

    def set_eid_space(self, eid_space: Iterable[Prefix]) -> None:
        """``[eid].accept`` changed by a config reload: negative replies follow at once (the
        negative-prefix indexes hold the old space until rebuilt)."""
        self.eid_space = tuple(eid_space)
        self._index = self._outside_index = None

    def in_eid_space(self, eid: IPAddress) -> bool:
        return any(eid.version == p.version and eid in p for p in self.eid_space)

    def negative_prefix(self, eid: IPAddress) -> Prefix:
        """The negative Map-Reply's prefix: the least specific one around ``eid`` that hides no EID prefix.

        Outside the EID space the configured EID space counts as routed, so a
        15-minute negative entry never covers any of it (during an outage the
        routed prefixes alone could leave 0.0.0.0/0 "free").  Inside it, the
        answer is kept within the EID-space prefix that holds the EID.
        """
        gen = self.forwarder.generation
        if self._index is None or self._outside_index is None or gen is None or gen != self._index_gen:
            known = list(self._prefixes()) + self.forwarder.local_prefixes()
            self._index = PrefixIndex(known)
            self._outside_index = PrefixIndex(known + list(self.eid_space))
            self._index_gen = gen
        holders = [p for p in self.eid_space if p.version == eid.version and eid in p]
        if not holders:
            return self._outside_index.uncovered(eid)
        free = self._index.uncovered(eid)
        space = max(holders, key=lambda p: p.prefixlen)
        # Both contain the EID, so one contains the other: the longer is the answer.
        return free if free.prefixlen >= space.prefixlen else space
