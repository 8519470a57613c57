"""Encapsulated Control Message (type 8), RFC 9301 §5.8.

::

        0                   1                   2                   3
        0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
       +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
  LCM  |Type=8 |S|D|E|M|            Reserved                           |
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

The inner IP and UDP checksums are checked on decode and computed on encode.
With S set, LISP-SEC (RFC 9303 §6.1) appends ECM authentication data after the
inner LISP message inside the inner UDP payload; it is kept opaque in
``security_data``.  Bytes after the inner IP packet are always an error, and an
ECM inside an ECM is refused.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from alt_router.inet import InetError, parse_ip, parse_udp, udp_packet
from alt_router.lisp._fast import maker
from alt_router.lisp.errors import LispDecodeError, LispEncodeError
from alt_router.lisp.map_register import (
    MapNotify,
    MapNotifyAck,
    MapRegister,
    decode_map_notify,
    decode_map_register,
)
from alt_router.lisp.map_reply import MapReply, decode_map_reply
from alt_router.lisp.map_request import MapRequest, decode_map_request

LISP_CONTROL_PORT = 4342

_WORD = struct.Struct("!I")
_S = 1 << 27
_D = 1 << 26
_E = 1 << 25
_M = 1 << 24

InnerMessage = MapRequest | MapReply | MapRegister | MapNotify | MapNotifyAck

INNER_DECODERS: dict[int, Callable[[bytes], tuple[InnerMessage, int]]] = {
    1: decode_map_request,
    2: decode_map_reply,
    3: decode_map_register,
    4: decode_map_notify,
    5: decode_map_notify,
}


@dataclass(frozen=True, slots=True)
class EncapsulatedControlMessage:
    inner: InnerMessage
    source: IPv4Address | IPv6Address
    destination: IPv4Address | IPv6Address
    source_port: int = LISP_CONTROL_PORT
    destination_port: int = LISP_CONTROL_PORT
    security: bool = False  # S: LISP-SEC authentication data follows the inner message
    ddt: bool = False  # D: sent by a LISP-DDT node (RFC 8111)
    to_etr: bool = False  # E: the Map-Server forwards this to an authoritative ETR
    to_ms: bool = False  # M: for the Map-Server of a co-located MR/MS
    ttl: int = 64  # inner IPv4 TTL / IPv6 hop limit
    security_data: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.inner, (MapRequest, MapReply, MapRegister, MapNotify, MapNotifyAck)):
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
        if self.security_data and not self.security:
            raise LispEncodeError("ECM security_data needs the S bit (security=True)")
        if self.security_data and isinstance(self.inner, MapReply) and self.inner.security:
            # A Map-Reply with S claims every byte after its records, so the ECM's
            # own trailer could not be told apart from it on decode.
            raise LispEncodeError("ECM security_data cannot follow an inner Map-Reply that has the S bit")

    def encode(self) -> bytes:
        word = (
            (8 << 28)
            | (_S if self.security else 0)
            | (_D if self.ddt else 0)
            | (_E if self.to_etr else 0)
            | (_M if self.to_ms else 0)
        )
        payload = self.inner.encode() + self.security_data
        try:
            packet = udp_packet(
                self.source, self.destination, self.source_port, self.destination_port, payload, ttl=self.ttl
            )
        except InetError as exc:
            raise LispEncodeError(f"ECM inner packet: {exc}") from None
        return _WORD.pack(word) + packet


_make = maker(EncapsulatedControlMessage)


def decode_ecm(data: bytes) -> tuple[EncapsulatedControlMessage, int]:
    if len(data) < 4:
        raise LispDecodeError(f"ECM: header truncated at offset {len(data)}, need 4 bytes")
    (word,) = _WORD.unpack_from(data)
    try:
        packet = parse_ip(data[4:])
        datagram = parse_udp(packet)
    except InetError as exc:
        raise LispDecodeError(f"ECM inner IP/UDP at offset 4: {exc}") from None
    ip_end = 4 + packet.header_len + len(packet.payload)
    if ip_end != len(data):
        raise LispDecodeError(f"ECM: {len(data) - ip_end} bytes after the inner IP packet at offset {ip_end}")
    udp_off = 4 + packet.header_len
    if 8 + len(datagram.payload) != len(packet.payload):
        raise LispDecodeError(
            f"ECM: inner UDP length at offset {udp_off + 4} is shorter than the inner IP payload"
        )
    if not datagram.checksum_ok:
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
    security = bool(word & _S)
    extra = b""
    if end != len(inner_bytes):
        if not security:
            raise LispDecodeError(
                f"ECM: {len(inner_bytes) - end} bytes after the inner message at offset {lisp_off + end}"
            )
        extra = bytes(inner_bytes[end:])
    msg = _make(
        inner, packet.src, packet.dst, datagram.sport, datagram.dport, security,
        bool(word & _D), bool(word & _E), bool(word & _M), packet.ttl, extra,
    )
    return msg, len(data)
