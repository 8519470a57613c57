"""IPv4, IPv6, UDP and ICMP headers: build and parse, sans-IO.

Shared by the LISP codec (the ECM carries an inner IP/UDP header), the GRE data
path and the ALT datagram forwarder.  Everything here is bytes in, objects or
bytes out; nothing touches a socket.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from alt_router.types import IPAddress

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_GRE = 47
PROTO_ICMPV6 = 58

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
UDP_HEADER_LEN = 8

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_LITTLE = sys.byteorder == "little"


class InetError(ValueError):
    """A malformed or impossible IP, UDP or ICMP header."""


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``, as a host integer."""
    if len(data) & 1:
        data += b"\x00"
    # Summing native-order 16-bit words and swapping once at the end is
    # equivalent to summing network-order words (RFC 1071 §2(B)), and it lets
    # array() do the loop in C.
    total = sum(array("H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    total = ~total & 0xFFFF
    if _LITTLE:
        total = ((total & 0xFF) << 8) | (total >> 8)
    return total


def _pseudo_header(src: IPAddress, dst: IPAddress, proto: int, length: int) -> bytes:
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, proto, length)
    return src.packed + dst.packed + struct.pack("!IxxxB", length, proto)


IPV4_DF = 0x4000


def ipv4_header(
    src: IPv4Address, dst: IPv4Address, proto: int, payload_len: int, *, ttl: int = 64, ident: int = 0,
    tos: int = 0, dont_fragment: bool = True,
) -> bytes:
    total = IPV4_HEADER_LEN + payload_len
    if total > 0xFFFF:
        raise InetError(f"IPv4 total length {total} exceeds 65535")
    if not 0 <= ttl <= 255:
        raise InetError(f"IPv4 TTL {ttl} out of range 0..255")
    if not 0 <= tos <= 255:
        raise InetError(f"IPv4 TOS {tos} out of range 0..255")
    flags = IPV4_DF if dont_fragment else 0
    hdr = _IPV4.pack(0x45, tos, total, ident & 0xFFFF, flags, ttl, proto, 0, src.packed, dst.packed)
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]


def ipv6_header(
    src: IPv6Address, dst: IPv6Address, next_header: int, payload_len: int, *, hop_limit: int = 64,
    traffic_class: int = 0, flow_label: int = 0,
) -> bytes:
    if payload_len > 0xFFFF:
        raise InetError(f"IPv6 payload length {payload_len} exceeds 65535 (no jumbograms)")
    if not 0 <= hop_limit <= 255:
        raise InetError(f"IPv6 hop limit {hop_limit} out of range 0..255")
    first = (6 << 28) | ((traffic_class & 0xFF) << 20) | (flow_label & 0xFFFFF)
    return _IPV6.pack(first, payload_len, next_header, hop_limit, src.packed, dst.packed)


def ip_header(
    src: IPAddress, dst: IPAddress, proto: int, payload_len: int, *, ttl: int = 64, tos: int = 0,
    ident: int = 0, dont_fragment: bool = True, flow_label: int = 0,
) -> bytes:
    """An IPv4 or IPv6 header; ``tos`` is the IPv6 traffic class, and ``ident``, ``dont_fragment``
    apply to IPv4 only, ``flow_label`` to IPv6 only."""
    if src.version != dst.version:
        raise InetError(f"source {src} and destination {dst} are of different address families")
    if isinstance(src, IPv4Address) and isinstance(dst, IPv4Address):
        return ipv4_header(
            src, dst, proto, payload_len, ttl=ttl, ident=ident, tos=tos, dont_fragment=dont_fragment,
        )
    assert isinstance(src, IPv6Address) and isinstance(dst, IPv6Address)
    return ipv6_header(src, dst, proto, payload_len, hop_limit=ttl, traffic_class=tos, flow_label=flow_label)


def udp_packet(
    src: IPAddress, dst: IPAddress, sport: int, dport: int, payload: bytes, *, ttl: int = 64, tos: int = 0,
    ident: int = 0, dont_fragment: bool = True, flow_label: int = 0,
) -> bytes:
    """A whole IP packet carrying one UDP datagram, both checksums filled in (see :func:`ip_header`)."""
    length = UDP_HEADER_LEN + len(payload)
    if length > 0xFFFF:
        raise InetError(f"UDP length {length} exceeds 65535")
    udp = _UDP.pack(sport, dport, length, 0) + payload
    csum = checksum(_pseudo_header(src, dst, PROTO_UDP, length) + udp)
    # RFC 768: a computed zero is sent as all ones (zero means "no checksum").
    udp = udp[:6] + struct.pack("!H", csum or 0xFFFF) + udp[8:]
    hdr = ip_header(
        src, dst, PROTO_UDP, length, ttl=ttl, tos=tos, ident=ident, dont_fragment=dont_fragment,
        flow_label=flow_label,
    )
    return hdr + udp


@dataclass(frozen=True, slots=True)
class IPPacket:
    version: int
    src: IPAddress
    dst: IPAddress
    proto: int
    ttl: int
    header_len: int
    payload: bytes
    tos: int = 0  # IPv4 TOS / IPv6 traffic class
    ident: int = 0  # IPv4 identification
    fragment: int = 0  # IPv4 flags and fragment offset, as on the wire (IPV4_DF is 0x4000)
    flow_label: int = 0  # IPv6


def parse_ip(data: bytes, *, verify_checksum: bool = True) -> IPPacket:
    """Parse an IPv4 or IPv6 header; ``payload`` is cut at the header's length."""
    if not data:
        raise InetError("IP packet: empty")
    version = data[0] >> 4
    if version == 4:
        if len(data) < IPV4_HEADER_LEN:
            raise InetError(f"IPv4 header: truncated at offset {len(data)}, need {IPV4_HEADER_LEN} bytes")
        vihl, tos, total, ident, frag, ttl, proto, _csum, src, dst = _IPV4.unpack_from(data)
        ihl = (vihl & 0x0F) * 4
        if ihl < IPV4_HEADER_LEN:
            raise InetError(f"IPv4 header: IHL {ihl // 4} at offset 0 is below 5")
        if total < ihl or total > len(data):
            raise InetError(f"IPv4 header: total length {total} at offset 2 does not fit {len(data)} bytes")
        if verify_checksum and checksum(data[:ihl]) != 0:
            raise InetError("IPv4 header: bad header checksum at offset 10")
        return IPPacket(
            4, IPv4Address(src), IPv4Address(dst), proto, ttl, ihl, bytes(data[ihl:total]), tos, ident, frag,
        )
    if version == 6:
        if len(data) < IPV6_HEADER_LEN:
            raise InetError(f"IPv6 header: truncated at offset {len(data)}, need {IPV6_HEADER_LEN} bytes")
        first, plen, nh, hlim, src, dst = _IPV6.unpack_from(data)
        if IPV6_HEADER_LEN + plen > len(data):
            raise InetError(f"IPv6 header: payload length {plen} at offset 4 exceeds {len(data) - 40} bytes")
        return IPPacket(
            6, IPv6Address(src), IPv6Address(dst), nh, hlim, IPV6_HEADER_LEN,
            bytes(data[IPV6_HEADER_LEN:IPV6_HEADER_LEN + plen]), (first >> 20) & 0xFF, 0, 0, first & 0xFFFFF,
        )
    raise InetError(f"IP packet: version {version} at offset 0 is neither 4 nor 6")


@dataclass(frozen=True, slots=True)
class UDPDatagram:
    sport: int
    dport: int
    payload: bytes
    checksum_ok: bool
    # The field was 0: "no checksum" over IPv4 (RFC 768), invalid over IPv6 (RFC 8200 §8.1).
    checksum_zero: bool = False


def parse_udp(packet: IPPacket) -> UDPDatagram:
    """Parse the UDP header of an already parsed IP packet and check its checksum.

    A zero checksum is ``checksum_ok`` over IPv4 (RFC 768: none computed) and not
    over IPv6 (RFC 8200 §8.1); ``checksum_zero`` tells the caller either way, so a
    tunnel endpoint can apply the RFC 6935/6936 exception itself.
    """
    if packet.proto != PROTO_UDP:
        raise InetError(f"UDP: IP protocol is {packet.proto}, not 17")
    data = packet.payload
    if len(data) < UDP_HEADER_LEN:
        raise InetError(f"UDP header: truncated at offset {packet.header_len + len(data)}")
    sport, dport, length, csum = _UDP.unpack_from(data)
    if length < UDP_HEADER_LEN or length > len(data):
        raise InetError(f"UDP header: length {length} at offset {packet.header_len + 4} does not fit")
    if csum == 0 and packet.version == 4:
        ok = True
    else:
        ok = checksum(_pseudo_header(packet.src, packet.dst, PROTO_UDP, length) + data[:length]) == 0
    return UDPDatagram(sport, dport, bytes(data[UDP_HEADER_LEN:length]), ok, csum == 0)


def icmp_error(
    router: IPAddress, original: bytes, *, kind: str, ttl: int = 64,
) -> bytes:
    """An ICMP/ICMPv6 error about ``original`` (the offending IP packet), sent from ``router``.

    ``kind`` is ``"time-exceeded"`` or ``"unreachable"`` (network/no route).  The
    quote is cut to fit a minimum MTU (576 for IPv4, 1280 for IPv6) as RFC 792 and
    RFC 4443 §2.4(c) require.
    """
    orig = parse_ip(original, verify_checksum=False)
    if orig.version != router.version:
        raise InetError("ICMP error: router and original packet are of different families")
    if orig.version == 4:
        icmp_type, code = {"time-exceeded": (11, 0), "unreachable": (3, 0)}[kind]
        quote = original[: 576 - IPV4_HEADER_LEN - 8]
        body = struct.pack("!BBHI", icmp_type, code, 0, 0) + quote
        body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
        return ip_header(router, orig.src, PROTO_ICMP, len(body), ttl=ttl) + body
    icmp_type, code = {"time-exceeded": (3, 0), "unreachable": (1, 0)}[kind]
    quote = original[: 1280 - IPV6_HEADER_LEN - 8]
    body = struct.pack("!BBHI", icmp_type, code, 0, 0) + quote
    csum = checksum(_pseudo_header(router, orig.src, PROTO_ICMPV6, len(body)) + body)
    body = body[:2] + struct.pack("!H", csum) + body[4:]
    return ip_header(router, orig.src, PROTO_ICMPV6, len(body), ttl=ttl) + body


def address(text: str | bytes | int) -> IPAddress:
    """Parse an address, raising InetError (not a bare ValueError) on nonsense."""
    try:
        return ip_address(text)
    except ValueError as exc:
        raise InetError(str(exc)) from None
