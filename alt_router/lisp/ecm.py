"""Encapsulated Control Message (type 8), RFC 9301 §5.8.

::

        0                   1                   2                   3
        0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
       +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
  LISP |Type=8 |S|D|E|M|            Reserved                           |
       +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
       ~   ECM Authentication Data (only with S, RFC 9303 §6.1)        ~
       +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
     / |                       IPv4 or IPv6 Header                     |
   IH  |                  (uses RLOC or EID addresses)                 |
     \\ |                                                               |
       +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
     / |       Source Port = xxxx      |       Dest Port = yyyy        |
   UDP +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
     \\ |           UDP Length          |        UDP Checksum           |
       +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
   LCM |                      LISP Control Message                     |
       +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

RFC 9301 §5.8 marks bits 6 and 7 reserved ("R"); the drafts that became it
(draft-ietf-lisp-rfc6833bis) named them E (to-ETR: a Map-Server forwards to an
authoritative ETR) and M (to-MS), and deployed Map-Servers still set them.  We
keep reading and writing them because the node dispatches on E; an RFC 9301
receiver ignores them.

With S, "the field following the 'Reserved' field" is the LISP-SEC ECM
Authentication Data (RFC 9301 §5.8, RFC 9303 §6.1): AD Type, Requested HMAC ID,
OTK-AD (length-prefixed) and EID-AD (length-prefixed).  LISP-SEC is not
implemented: the AD is kept opaque in ``security_data`` and re-encoded byte for
byte.  Where it ends is read from its two length fields (RFC 9303 leaves open
whether OTK Length counts its own 4-byte word, so both readings are tried), then,
for anything else, from the first offset where a whole inner IP/UDP packet
starts.  An S-bit ECM whose next byte already starts an IP header carries no AD.

The inner IP header's TTL/hop limit, TOS/traffic class, IPv4 identification and
DF bit, and IPv6 flow label survive decode and re-encode.  Inner checksums are
checked on decode and computed on encode.  A zero inner UDP checksum is accepted
(IPv4: RFC 768 "no checksum"; IPv6: the tunnel exception of RFC 6935/6936, for
ITRs that send it) and reported in ``inner_udp_checksum_zero``; we never send
one.  Bytes after the inner IP packet are always an error, an inner IPv4
fragment is refused, and an ECM inside an ECM is refused.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from alt_router.inet import IPV4_DF, PROTO_UDP, InetError, IPPacket, parse_ip, parse_udp, udp_packet
from alt_router.lisp._fast import maker
from alt_router.lisp.errors import LispDecodeError, LispEncodeError
from alt_router.lisp.map_register import MapNotify, MapRegister, decode_map_notify, decode_map_register
from alt_router.lisp.map_reply import MapReply, decode_map_reply
from alt_router.lisp.map_request import MapRequest, decode_map_request
from alt_router.lisp.message_type import MessageType

LISP_CONTROL_PORT = 4342

_WORD = struct.Struct("!I")
_U16 = struct.Struct("!H")
_S = 1 << 27
_D = 1 << 26
_E = 1 << 25  # reserved in RFC 9301 §5.8; draft "to-ETR"
_M = 1 << 24  # reserved in RFC 9301 §5.8; draft "to-MS"
# Beyond this many bytes of ECM Authentication Data we stop looking for the inner header.
MAX_SECURITY_DATA = 2048

InnerMessage = MapRequest | MapReply | MapRegister | MapNotify

# Keyed on MessageType; typed by int so the raw type nibble looks up without building an enum.
INNER_DECODERS: dict[int, Callable[[bytes], tuple[InnerMessage, int]]] = {
    MessageType.MAP_REQUEST: decode_map_request,
    MessageType.MAP_REPLY: decode_map_reply,
    MessageType.MAP_REGISTER: decode_map_register,
    MessageType.MAP_NOTIFY: decode_map_notify,
    MessageType.MAP_NOTIFY_ACK: decode_map_notify,
}


@dataclass(frozen=True, slots=True)
class EncapsulatedControlMessage:
    inner: InnerMessage
    source: IPv4Address | IPv6Address
    destination: IPv4Address | IPv6Address
    source_port: int = LISP_CONTROL_PORT
    destination_port: int = LISP_CONTROL_PORT
    security: bool = False  # S: LISP-SEC; ECM Authentication Data may follow the header
    ddt: bool = False  # D: sent by a LISP-DDT node (RFC 8111)
    to_etr: bool = False  # E (reserved in RFC 9301): the Map-Server forwards this to an authoritative ETR
    to_ms: bool = False  # M (reserved in RFC 9301): for the Map-Server of a co-located MR/MS
    ttl: int = 64  # inner IPv4 TTL / IPv6 hop limit
    security_data: bytes = b""  # RFC 9303 §6.1 ECM Authentication Data, opaque, AD Type first
    tos: int = 0  # inner IPv4 TOS / IPv6 traffic class
    ident: int = 0  # inner IPv4 identification
    dont_fragment: bool = True  # inner IPv4 DF
    flow_label: int = 0  # inner IPv6 flow label
    # Received with a zero inner UDP checksum (we always send a computed one, RFC 9301 §5.8).
    inner_udp_checksum_zero: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.inner, (MapRequest, MapReply, MapRegister, MapNotify)):
            raise LispEncodeError(f"ECM inner message {type(self.inner).__name__} cannot be encapsulated")
        if not isinstance(self.source, (IPv4Address, IPv6Address)) or not isinstance(
            self.destination, (IPv4Address, IPv6Address)
        ):
            raise LispEncodeError("ECM inner source and destination must be IP addresses")
        if self.source.version != self.destination.version:
            raise LispEncodeError(
                f"ECM inner source {self.source} and destination {self.destination} differ in family"
            )
        for name in ("source_port", "destination_port"):
            port = getattr(self, name)
            if not 0 <= port <= 0xFFFF:
                raise LispEncodeError(f"ECM inner {name} {port} out of range 0..65535")
        if not 0 <= self.ttl <= 255:
            raise LispEncodeError(f"ECM inner TTL {self.ttl} out of range 0..255")
        if not 0 <= self.tos <= 255:
            raise LispEncodeError(f"ECM inner TOS/traffic class {self.tos} out of range 0..255")
        if not 0 <= self.ident <= 0xFFFF:
            raise LispEncodeError(f"ECM inner IPv4 identification {self.ident} out of range 0..65535")
        if not 0 <= self.flow_label <= 0xFFFFF:
            raise LispEncodeError(f"ECM inner IPv6 flow label {self.flow_label} out of range 0..2^20-1")
        # A field the inner header's family cannot carry would be lost on the wire.
        if self.source.version == 6 and (self.ident or not self.dont_fragment):
            raise LispEncodeError("ECM inner IPv6 header has no identification or DF (IPv4 only)")
        if self.source.version == 4 and self.flow_label:
            raise LispEncodeError("ECM inner IPv4 header has no flow label (IPv6 only)")
        if not isinstance(self.security_data, bytes) or len(self.security_data) > MAX_SECURITY_DATA:
            raise LispEncodeError(f"ECM security_data must be bytes of at most {MAX_SECURITY_DATA}")
        if self.security_data and not self.security:
            raise LispEncodeError("ECM security_data needs the S bit (security=True)")
        if self.security_data and self.security_data[0] >> 4 in (4, 6):
            # A receiver takes a 4 or 6 in the first nibble for the inner IP header itself.
            raise LispEncodeError(
                f"ECM security_data AD Type {self.security_data[0]} would read as an IP version"
            )

    def encode(self) -> bytes:
        word = (
            (MessageType.ENCAPSULATED_CONTROL_MESSAGE << 28)
            | (_S if self.security else 0)
            | (_D if self.ddt else 0)
            | (_E if self.to_etr else 0)
            | (_M if self.to_ms else 0)
        )
        try:
            packet = udp_packet(
                self.source, self.destination, self.source_port, self.destination_port, self.inner.encode(),
                ttl=self.ttl, tos=self.tos, ident=self.ident, dont_fragment=self.dont_fragment,
                flow_label=self.flow_label,
            )
        except InetError as exc:
            raise LispEncodeError(f"ECM inner packet: {exc}") from None
        return _WORD.pack(word) + self.security_data + packet


_make = maker(EncapsulatedControlMessage)


def _inner_at(data: bytes, off: int) -> IPPacket | None:
    """The inner IP packet if one starts at ``off`` and ends exactly where ``data`` does."""
    left = len(data) - off
    if left < 28 or data[off] >> 4 not in (4, 6):
        return None
    # The length field must reach exactly to the end: a cheap test before a parse
    # (which copies), so a crafted S-bit ECM cannot make the scan quadratic.
    if data[off] >> 4 == 4:
        if _U16.unpack_from(data, off + 2)[0] != left:
            return None
    elif left < 48 or _U16.unpack_from(data, off + 4)[0] + 40 != left:
        return None
    try:
        packet = parse_ip(data[off:])
    except InetError:
        return None
    if packet.proto != PROTO_UDP or off + packet.header_len + len(packet.payload) != len(data):
        return None
    return packet


def _security_data_end(data: bytes) -> int:
    """Where the ECM Authentication Data after the 4-byte header ends (RFC 9303 §6.1)."""
    if len(data) > 4 and data[4] >> 4 in (4, 6) and _inner_at(data, 4) is not None:
        return 4  # S set but no AD
    candidates: list[int] = []
    if len(data) >= 10:
        (otk_len,) = _U16.unpack_from(data, 8)
        # OTK Length counting the OTK preamble and key only, or also its own 4-byte word.
        for otk_start in (12, 8):
            eid_ad = otk_start + otk_len
            if eid_ad + 2 <= len(data):
                (eid_len,) = _U16.unpack_from(data, eid_ad)
                candidates.append(eid_ad + eid_len)
    for end in candidates:
        if _inner_at(data, end) is not None:
            return end
    for end in range(5, min(len(data), 4 + MAX_SECURITY_DATA + 1)):
        if _inner_at(data, end) is not None:
            return end
    raise LispDecodeError(
        "ECM: S bit set but no inner IP header found after the Authentication Data at offset 4"
    )


def decode_ecm(data: bytes) -> tuple[EncapsulatedControlMessage, int]:
    if len(data) < 4:
        raise LispDecodeError(f"ECM: header truncated at offset {len(data)}, need 4 bytes")
    (word,) = _WORD.unpack_from(data)
    security = bool(word & _S)
    ip_off = _security_data_end(data) if security else 4
    try:
        packet = parse_ip(data[ip_off:])
        datagram = parse_udp(packet)
    except InetError as exc:
        raise LispDecodeError(f"ECM inner IP/UDP at offset {ip_off}: {exc}") from None
    ip_end = ip_off + packet.header_len + len(packet.payload)
    if ip_end != len(data):
        raise LispDecodeError(f"ECM: {len(data) - ip_end} bytes after the inner IP packet at offset {ip_end}")
    if packet.fragment & 0x3FFF:
        raise LispDecodeError(f"ECM: inner IPv4 packet at offset {ip_off} is a fragment")
    udp_off = ip_off + packet.header_len
    if 8 + len(datagram.payload) != len(packet.payload):
        raise LispDecodeError(
            f"ECM: inner UDP length at offset {udp_off + 4} is shorter than the inner IP payload"
        )
    # RFC 9301 §5.8 wants a non-zero checksum, but ITRs send IPv6 ECMs with 0 (the
    # RFC 6935/6936 tunnel exception): take it, and say so for the caller to count.
    if not datagram.checksum_ok and not datagram.checksum_zero:
        raise LispDecodeError(f"ECM: bad inner UDP checksum at offset {udp_off + 6}")
    inner_bytes = datagram.payload
    lisp_off = udp_off + 8
    if not inner_bytes:
        raise LispDecodeError(f"ECM: inner LISP message missing at offset {lisp_off}")
    inner_type = inner_bytes[0] >> 4
    decoder = INNER_DECODERS.get(inner_type)
    if decoder is None:
        raise LispDecodeError(
            f"ECM: inner message type {inner_type} at offset {lisp_off} cannot be encapsulated"
        )
    try:
        inner, end = decoder(inner_bytes)
    except LispDecodeError as exc:
        raise LispDecodeError(f"ECM inner message (starting at offset {lisp_off}): {exc}") from None
    if end != len(inner_bytes):
        raise LispDecodeError(
            f"ECM: {len(inner_bytes) - end} bytes after the inner message at offset {lisp_off + end}"
        )
    msg = _make(
        inner, packet.src, packet.dst, datagram.sport, datagram.dport, security,
        bool(word & _D), bool(word & _E), bool(word & _M), packet.ttl, bytes(data[4:ip_off]),
        packet.tos, packet.ident, bool(packet.fragment & IPV4_DF) if packet.version == 4 else True,
        packet.flow_label, datagram.checksum_zero,
    )
    return msg, len(data)
