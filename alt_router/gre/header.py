"""The GRE header (RFC 2784, with the key and sequence number of RFC 2890), sans-IO.

Wire layout, optional words in this order when their flag is set::

    |C| |K|S| Reserved0 (9) | Ver |  Protocol Type  |
    |   Checksum (C)        |   Reserved1 (C)       |
    |              Key (K)                          |
    |        Sequence Number (S)                    |
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from alt_router.inet import IPV4_HEADER_LEN, IPV6_HEADER_LEN, checksum

PROTO_IPV4: Final = 0x0800
PROTO_IPV6: Final = 0x86DD
PROTOCOLS: Final = frozenset({PROTO_IPV4, PROTO_IPV6})

FLAG_CSUM: Final = 0x8000
FLAG_ROUTING: Final = 0x4000
FLAG_KEY: Final = 0x2000
FLAG_SEQ: Final = 0x1000
# RFC 2784 §2.3: bits 1-5 non-zero means RFC 1701 features we do not implement
# (bit 1 is the routing bit, reported on its own); bits 6-12 MUST be ignored on
# receipt, so they are not checked.
FLAGS_RFC1701: Final = 0x0C00
VERSION_MASK: Final = 0x0007

BASE_LEN: Final = 4
_BASE = struct.Struct("!HH")

# Drop reasons, shared with the data path's counters.
BAD_VERSION: Final = "bad-version"
ROUTING_BIT: Final = "routing-bit"
UNKNOWN_FLAGS: Final = "unknown-flags"
TRUNCATED: Final = "truncated"
BAD_CHECKSUM: Final = "bad-checksum"
UNKNOWN_PROTOCOL: Final = "unknown-protocol"
INVALID: Final = "invalid"  # only raised when building a header, never on receipt


class GreError(ValueError):
    """A GRE header this implementation must discard; ``reason`` is one of the drop reasons above."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"GRE {reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class GreHeader:
    protocol: int
    key: int | None = None
    sequence: int | None = None
    checksum: bool = False

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise GreError(UNKNOWN_PROTOCOL, f"protocol type 0x{self.protocol:04x} is neither IPv4 nor IPv6")
        if self.key is not None and not 0 <= self.key <= 0xFFFFFFFF:
            raise GreError(INVALID, f"key {self.key} does not fit 32 bits")
        if self.sequence is not None and not 0 <= self.sequence <= 0xFFFFFFFF:
            raise GreError(INVALID, f"sequence number {self.sequence} does not fit 32 bits")

    @property
    def length(self) -> int:
        return header_length(key=self.key is not None, csum=self.checksum, seq=self.sequence is not None)


def header_length(*, key: bool, csum: bool, seq: bool) -> int:
    return BASE_LEN + 4 * (int(key) + int(csum) + int(seq))


def overhead(version: int, *, key: bool, csum: bool, seq: bool) -> int:
    """Bytes an outer IPv4/IPv6 header plus this GRE header add to every inner packet."""
    outer = IPV4_HEADER_LEN if version == 4 else IPV6_HEADER_LEN
    return outer + header_length(key=key, csum=csum, seq=seq)


def protocol_for(inner: bytes) -> int:
    """The protocol type for an inner IP packet, from its version nibble."""
    if inner:
        version = inner[0] >> 4
        if version == 4:
            return PROTO_IPV4
        if version == 6:
            return PROTO_IPV6
        raise GreError(UNKNOWN_PROTOCOL, f"inner packet has IP version {version}")
    raise GreError(TRUNCATED, "empty inner packet")


def encode(header: GreHeader, payload: bytes) -> bytes:
    flags = 0
    tail = b""
    if header.key is not None:
        flags |= FLAG_KEY
        tail += struct.pack("!I", header.key)
    if header.sequence is not None:
        flags |= FLAG_SEQ
        tail += struct.pack("!I", header.sequence)
    if not header.checksum:
        return _BASE.pack(flags, header.protocol) + tail + payload
    flags |= FLAG_CSUM
    unsummed = _BASE.pack(flags, header.protocol) + b"\x00\x00\x00\x00" + tail + payload
    csum = checksum(unsummed)
    return unsummed[:4] + struct.pack("!H", csum) + unsummed[6:]


def decode(data: bytes) -> tuple[GreHeader, bytes]:
    """Parse a GRE packet (no outer IP header) into its header and payload."""
    if len(data) < BASE_LEN:
        raise GreError(TRUNCATED, f"{len(data)} bytes, need {BASE_LEN} for the base header")
    flags, protocol = _BASE.unpack_from(data)
    if flags & VERSION_MASK:
        raise GreError(BAD_VERSION, f"version {flags & VERSION_MASK}, only 0 is GRE (1 is PPTP)")
    if flags & FLAG_ROUTING:
        raise GreError(ROUTING_BIT, "routing present bit set (RFC 1701 source routing is not supported)")
    if flags & FLAGS_RFC1701:
        raise GreError(UNKNOWN_FLAGS, f"RFC 1701 flag bits 0x{flags & FLAGS_RFC1701:04x} set")
    has_csum = bool(flags & FLAG_CSUM)
    has_key = bool(flags & FLAG_KEY)
    has_seq = bool(flags & FLAG_SEQ)
    hlen = header_length(key=has_key, csum=has_csum, seq=has_seq)
    if len(data) < hlen:
        raise GreError(TRUNCATED, f"{len(data)} bytes, flags 0x{flags:04x} need a {hlen}-byte header")
    # The checksum covers header and payload with the checksum field itself
    # included, so a correct packet sums to zero.
    if has_csum and checksum(data) != 0:
        raise GreError(BAD_CHECKSUM, f"checksum 0x{struct.unpack_from('!H', data, 4)[0]:04x} does not verify")
    if protocol not in PROTOCOLS:
        raise GreError(UNKNOWN_PROTOCOL, f"protocol type 0x{protocol:04x} is neither IPv4 nor IPv6")
    offset = BASE_LEN + 4 * has_csum
    key = None
    sequence = None
    if has_key:
        (key,) = struct.unpack_from("!I", data, offset)
        offset += 4
    if has_seq:
        (sequence,) = struct.unpack_from("!I", data, offset)
        offset += 4
    return GreHeader(protocol, key, sequence, has_csum), bytes(data[offset:])
