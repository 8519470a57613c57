"""When the forwarder may send an ICMP error, and how many: RFC 1812 §4.3.2.7-8, RFC 4443 §2.4(e)-(f).

Sans-IO: bytes of the offending packet in, a reason (or None) out; the rate
limiter takes ``now`` on every call and reads no clock.

Two rules keep a node from becoming an amplifier or a reflector for whoever
sends it garbage over a tunnel:

* *Never about what does not name one host* (:func:`forbidden`): no error about
  an ICMP error (RFC 1812 §4.3.2.7, RFC 4443 §2.4(e.1), and an ICMPv6 Redirect,
  (e.2)), about a non-first fragment (§4.3.2.7), about a packet sent to a
  multicast or broadcast address ((e.3); 255.255.255.255 and 224/4 for IPv4),
  nor to a source that is unspecified, loopback, multicast or broadcast
  ((e.6); RFC 1812 §4.3.2.7 and §5.3.7: 0/8, 127/8, 224/4, 240/4).  An IPv4
  header whose checksum is wrong fails RFC 1812 §5.2.2's validation and gets
  nothing either.  Subnet broadcasts are not known to the forwarder (the
  destination is an EID) and are not checked.
* *Never faster than configured* (:class:`IcmpRateLimiter`): a token bucket per
  destination inside one global bucket (RFC 4443 §2.4(f) recommends token
  buckets with settable parameters, as RFC 1812 §4.3.2.8 asks of IPv4 routers),
  so a flood with spoofed sources still gets at most ``rate`` errors a second.
"""

from __future__ import annotations

import contextlib
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

# Why an ICMP error was not sent (counter ``icmp-suppressed:<reason>`` in the forwarder).
RATE_LIMIT: Final = "rate-limit"
NON_UNICAST_SOURCE: Final = "non-unicast-source"
NON_UNICAST_DESTINATION: Final = "non-unicast-destination"
ABOUT_ICMP_ERROR: Final = "icmp-error"
FRAGMENT: Final = "fragment"
INVALID_HEADER: Final = "invalid-header"
NO_ROUTER_ADDRESS: Final = "no-router-address"
QUEUE_FULL: Final = "queue-full"
UNBUILDABLE: Final = "unbuildable"
SUPPRESS_REASONS: Final = (
    RATE_LIMIT, NON_UNICAST_SOURCE, NON_UNICAST_DESTINATION, ABOUT_ICMP_ERROR, FRAGMENT, INVALID_HEADER,
    NO_ROUTER_ADDRESS, QUEUE_FULL, UNBUILDABLE,
)

# Defaults, see docs/configuration.md [icmp].  Per destination, Linux's own choice
# (net.ipv4.icmp_ratelimit = 1000 ms with a burst of 6): enough for every probe of a
# `lig --trace` or a traceroute, too little to be worth reflecting.  Globally, 100 a
# second: about 60 KB/s of quoted packets at most, a negligible share of one core in
# CPython, and still every error a handful of misrouted ITRs could need at once.
DEFAULT_RATE: Final = 100.0
DEFAULT_BURST: Final = 50
DEFAULT_PER_DESTINATION_RATE: Final = 1.0
DEFAULT_PER_DESTINATION_BURST: Final = 6
# 4096 buckets are about 0.5 MB; beyond that the least recently used destination is forgotten.
DEFAULT_MAX_DESTINATIONS: Final = 4096

# ICMPv4 types that are not errors (RFC 792, RFC 950): echo, timestamp, information and
# address-mask requests and replies.  Any other type, known or not, is treated as an error.
_ICMP4_INFORMATIONAL: Final = frozenset((0, 8, 13, 14, 15, 16, 17, 18))
_ICMP6_REDIRECT: Final = 137
_V4_CHECKSUM_WORDS: Final = {n: struct.Struct(f"!{n}H").unpack_from for n in range(10, 31)}


@dataclass(frozen=True, slots=True)
class IcmpLimits:
    """How many ICMP errors the forwarder may send: overall, and to any one destination."""

    rate: float = DEFAULT_RATE
    burst: int = DEFAULT_BURST
    per_destination_rate: float = DEFAULT_PER_DESTINATION_RATE
    per_destination_burst: int = DEFAULT_PER_DESTINATION_BURST
    max_destinations: int = DEFAULT_MAX_DESTINATIONS

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.per_destination_rate > 0):
            raise ValueError("ICMP rates must be greater than 0")
        if self.burst < 1 or self.per_destination_burst < 1 or self.max_destinations < 1:
            raise ValueError("ICMP bursts and max_destinations must be at least 1")


class IcmpRateLimiter:
    """A global token bucket and one per destination, with at most ``max_destinations`` of those.

    ``allow(destination, now)`` spends a token from both buckets, or from neither:
    a destination refused by the global bucket keeps its own tokens.  When the
    table is full, the destination seen least recently is forgotten; a flood of
    spoofed destinations can only make a real one start again from a full
    bucket, and the global bucket still caps the total.
    """

    __slots__ = ("_stamp", "_tokens", "buckets", "evicted", "limits")

    def __init__(self, limits: IcmpLimits | None = None, now: float = 0.0) -> None:
        self.limits = limits or IcmpLimits()
        self._tokens = float(self.limits.burst)
        self._stamp = now
        # destination -> [tokens, stamp]
        self.buckets: OrderedDict[bytes, list[float]] = OrderedDict()
        self.evicted = 0

    def allow(self, destination: bytes, now: float) -> bool:
        limits = self.limits
        # A clock that steps backwards (a test, an NTP slew) must not mint tokens.
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(float(limits.burst), self._tokens + elapsed * limits.rate)
            self._stamp = now
        # pop and re-insert (not get and move_to_end): each step is one atomic dict operation,
        # so a second thread (the data-plane thread and the event loop both forward) cannot
        # make it raise; the worst a race does is miscount a token.
        buckets = self.buckets
        bucket = buckets.pop(destination, None)
        known = bucket is not None
        if bucket is None:
            bucket = [float(limits.per_destination_burst), now]
        else:
            elapsed = now - bucket[1]
            if elapsed > 0:
                refill = bucket[0] + elapsed * limits.per_destination_rate
                bucket[0] = min(float(limits.per_destination_burst), refill)
                bucket[1] = now
        allowed = bucket[0] >= 1.0 and self._tokens >= 1.0
        if allowed:
            bucket[0] -= 1.0
            self._tokens -= 1.0
        # Only destinations that were sent something take a slot: refusals cost no memory.
        if allowed or known:
            if not known and len(buckets) >= limits.max_destinations:
                with contextlib.suppress(KeyError):
                    buckets.popitem(last=False)
                    self.evicted += 1
            buckets[destination] = bucket
        return allowed

    def __len__(self) -> int:
        return len(self.buckets)


def destination_key(packet: bytes) -> bytes:
    """Whom an ICMP error about ``packet`` goes to, as a rate-limit key: its source address.

    IPv6 sources count per /64: one host owns a whole /64 (RFC 7421) and could otherwise
    rotate through it to get a fresh bucket for every packet.
    """
    return packet[12:16] if packet[0] >> 4 == 4 else packet[8:16]


def forbidden(packet: bytes) -> str | None:
    """Why no ICMP error may be sent about ``packet`` (an IPv4 or IPv6 packet), or None if one may.

    The packet is one the forwarder has already parsed far enough to drop: at least
    a fixed IP header of its version.
    """
    version = packet[0] >> 4
    if version == 4:
        return _forbidden_v4(packet)
    if version == 6:
        return _forbidden_v6(packet)
    return INVALID_HEADER


def _forbidden_v4(packet: bytes) -> str | None:
    ihl = (packet[0] & 0x0F) << 2
    if ihl < 20 or len(packet) < ihl:
        return INVALID_HEADER
    # RFC 1812 §5.2.2: a bad header checksum fails validation.
    total = sum(_V4_CHECKSUM_WORDS[ihl >> 1](packet))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    if total != 0xFFFF:
        return INVALID_HEADER
    src0, dst0 = packet[12], packet[16]
    # 0/8 ("this network"), 127/8 (loopback), 224/4 (multicast), 240/4 (reserved, and
    # 255.255.255.255, the limited broadcast).
    if src0 == 0 or src0 == 127 or src0 >= 224:  # noqa: PLR1714
        return NON_UNICAST_SOURCE
    if dst0 >= 224 and (dst0 < 240 or packet[16:20] == b"\xff\xff\xff\xff"):
        return NON_UNICAST_DESTINATION
    if ((packet[6] << 8) | packet[7]) & 0x1FFF:
        return FRAGMENT
    if packet[9] == 1 and (len(packet) <= ihl or packet[ihl] not in _ICMP4_INFORMATIONAL):
        return ABOUT_ICMP_ERROR
    return None


_V6_UNSPECIFIED: Final = bytes(16)
_V6_LOOPBACK: Final = bytes(15) + b"\x01"


def _forbidden_v6(packet: bytes) -> str | None:
    if len(packet) < 40:
        return INVALID_HEADER
    src = packet[8:24]
    if src[0] == 0xFF or src in (_V6_UNSPECIFIED, _V6_LOOPBACK):
        return NON_UNICAST_SOURCE
    if packet[24] == 0xFF:
        return NON_UNICAST_DESTINATION
    next_header, at = packet[6], 40
    if next_header == 44:  # a Fragment header right after the fixed header
        if len(packet) < 48:
            return INVALID_HEADER
        if ((packet[42] << 8) | packet[43]) & 0xFFF8:
            return FRAGMENT
        next_header, at = packet[40], 48
    if next_header == 58 and (len(packet) <= at or packet[at] < 128 or packet[at] == _ICMP6_REDIRECT):
        return ABOUT_ICMP_ERROR
    return None
