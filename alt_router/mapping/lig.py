"""lig, the LISP Internet Groper (RFC 6835), sans-IO: request building, reply matching, trace.

Every attempt carries a fresh random 64-bit nonce; only a Map-Reply echoing the
nonce of the attempt in flight is accepted, anything else is counted and
ignored.  A trace sends the request with inner TTL 1, 2, 3 ...: the
Map-Resolver and each ALT hop decrement it, and the node where it runs out
sends ICMP Time Exceeded to the request's source, i.e. to lig, which finds its
nonce in the quoted packet (docs/mapping.md).

The Map-Request's Source-EID is AFI 0 (empty) unless a source EID is given:
RFC 9301 §5.2/§5.3 reserve that field for the EID of the host whose packet
caused the request, and lig has none (its own address is an RLOC).
"""

from __future__ import annotations

import secrets
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from alt_router.lisp import (
    LISP_CONTROL_PORT,
    EidRecord,
    EncapsulatedControlMessage,
    LispDecodeError,
    MappingRecord,
    MapReply,
    MapRequest,
    decode,
)
from alt_router.types import IPAddress

_ICMP_KIND = {4: {11: "time-exceeded", 3: "unreachable"}, 6: {3: "time-exceeded", 1: "unreachable"}}
_NONCE = struct.Struct("!Q")


@dataclass(frozen=True, slots=True)
class Attempt:
    nonce: int
    sent_at: float
    ttl: int


@dataclass(frozen=True, slots=True)
class LigReply:
    nonce: int
    source: IPAddress
    rtt: float  # seconds
    reply: MapReply

    @property
    def positive(self) -> bool:
        return any(r.locators for r in self.reply.records)


@dataclass(frozen=True, slots=True)
class TraceHop:
    ttl: int
    router: IPAddress
    kind: str  # "time-exceeded" or "unreachable"
    rtt: float


def _random_nonce() -> int:
    return secrets.randbits(64)


class Lig:
    """One lig run: ``request`` for each attempt, then feed it what arrives."""

    def __init__(
        self,
        eid: IPAddress,
        source: IPAddress,
        map_resolver: IPAddress,
        *,
        port: int,
        source_eid: IPAddress | None = None,
        nonce: Callable[[], int] = _random_nonce,
    ) -> None:
        self.eid = eid
        self.source = source
        self.source_eid = source_eid
        self.map_resolver = map_resolver
        self.port = port
        self._nonce = nonce
        self.current: Attempt | None = None
        self.used: set[int] = set()
        self.counters: Counter[str] = Counter()

    def request(self, now: float, ttl: int = 64) -> bytes:
        """The ECM (UDP payload for the Map-Resolver) of a new attempt, with a nonce never used before."""
        nonce = self._nonce()
        while nonce in self.used:
            nonce = self._nonce()
        self.used.add(nonce)
        mask = 32 if self.eid.version == 4 else 128
        # RFC 9301 §5.2: with no source EID the Source-EID-AFI is 0 and the address is empty.
        request = MapRequest(nonce, self.source_eid, (self.source,), (EidRecord(self.eid, mask),))
        inner_src: IPAddress = self.source
        if self.source.version != self.eid.version:
            # The inner header must be of the EID's family; the resolver substitutes its own address.
            inner_src = IPv4Address(0) if self.eid.version == 4 else IPv6Address(0)
        ecm = EncapsulatedControlMessage(
            request, inner_src, self.eid, source_port=self.port, destination_port=LISP_CONTROL_PORT, ttl=ttl
        )
        self.current = Attempt(nonce, now, ttl)
        self.counters["sent"] += 1
        return ecm.encode()

    def receive(self, data: bytes, source: IPAddress, now: float) -> LigReply | None:
        """A datagram on lig's UDP socket: the reply of the attempt in flight, or None."""
        try:
            msg = decode(data)
        except LispDecodeError:
            self.counters["malformed"] += 1
            return None
        if not isinstance(msg, MapReply):
            self.counters["not-map-reply"] += 1
            return None
        attempt = self.current
        if attempt is None or msg.nonce != attempt.nonce:
            self.counters["unmatched-nonce"] += 1
            return None
        self.current = None
        self.counters["replies"] += 1
        return LigReply(msg.nonce, source, max(0.0, now - attempt.sent_at), msg)

    def receive_icmp(self, message: bytes, router: IPAddress, now: float) -> TraceHop | None:
        """An ICMP/ICMPv6 message (no outer IP header) from ``router`` about one of our requests."""
        attempt = self.current
        if attempt is None or len(message) < 8:
            self.counters["icmp-ignored"] += 1
            return None
        kind = _ICMP_KIND[router.version].get(message[0])
        quote = message[8:]
        if kind is None or not quote:
            self.counters["icmp-ignored"] += 1
            return None
        version = quote[0] >> 4
        if version == 4:
            hlen, proto = (quote[0] & 0x0F) * 4, quote[9] if len(quote) > 9 else -1
        elif version == 6:
            hlen, proto = 40, quote[6] if len(quote) > 6 else -1
        else:
            self.counters["icmp-ignored"] += 1
            return None
        nonce_at = hlen + 8 + 4
        if proto != 17 or len(quote) < nonce_at + 8:
            self.counters["icmp-ignored"] += 1
            return None
        (nonce,) = _NONCE.unpack_from(quote, nonce_at)
        if nonce != attempt.nonce:
            self.counters["unmatched-nonce"] += 1
            return None
        self.current = None
        self.counters["icmp"] += 1
        return TraceHop(attempt.ttl, router, kind, max(0.0, now - attempt.sent_at))


# --- presentation -----------------------------------------------------------------------------

def record_prefix_text(record: MappingRecord) -> str:
    return f"{record.eid}/{record.mask_len}"


def action_text(record: MappingRecord) -> str:
    return record.action.name.lower().replace("_", "-")


def reply_to_dict(reply: LigReply) -> dict[str, object]:
    return {
        "nonce": f"0x{reply.nonce:016x}",
        "from": str(reply.source),
        "rtt_ms": round(reply.rtt * 1000, 3),
        "records": [
            {
                "eid_prefix": record_prefix_text(rec),
                "ttl_minutes": rec.ttl,
                "action": action_text(rec),
                "authoritative": rec.authoritative,
                "locators": [
                    {
                        "address": str(loc.address), "priority": loc.priority, "weight": loc.weight,
                        "state": "up" if loc.reachable else "down", "local": loc.local,
                    }
                    for loc in rec.locators
                ],
            }
            for rec in reply.reply.records
        ],
    }


def format_reply(reply: LigReply) -> str:
    lines = [
        f"Mapping from {reply.source}, RTT {reply.rtt * 1000:.3f} ms, nonce 0x{reply.nonce:016x}",
    ]
    for rec in reply.reply.records:
        lines.append(
            f"  EID-prefix {record_prefix_text(rec)}  TTL {rec.ttl} min  action {action_text(rec)}  "
            f"authoritative {'yes' if rec.authoritative else 'no'}"
        )
        if not rec.locators:
            lines.append("    (negative mapping: no locators)")
        for loc in rec.locators:
            state = "up" if loc.reachable else "down"
            lines.append(
                f"    {loc.address!s:<40} priority {loc.priority:>3}  weight {loc.weight:>3}  {state}"
            )
    return "\n".join(lines)


def format_hop(hop: TraceHop | None, ttl: int) -> str:
    if hop is None:
        return f"{ttl:>3}  *"
    note = "" if hop.kind == "time-exceeded" else " (no route)"
    return f"{ttl:>3}  {hop.router}  {hop.rtt * 1000:.3f} ms{note}"
