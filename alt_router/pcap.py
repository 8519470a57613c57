"""Packet capture files: write classic pcap, read pcap and pcapng, unwrap link layers to IP.

Reading is pure (bytes in, packets out) so the same code serves files, stdin
and tests; ``read_file``/``write_file`` are the only functions that touch the
filesystem.

Formats read: classic pcap in either byte order with microsecond or nanosecond
timestamps, and pcapng (Section Header, Interface Description, Enhanced,
Simple and the obsolete Packet block; several sections and interfaces, each
with its own link type and ``if_tsresol``/``if_tsoffset``).  Link types
unwrapped to IP: null/loopback (0), Ethernet (1, with up to two 802.1Q/802.1ad
tags), raw IP (12, 14, 101, 228, 229), Linux cooked SLL (113) and SLL2 (276).

Damage policy: a capture that ends inside a record (the usual result of a
capture tool being killed) yields every complete packet before the damage and
then raises ``PcapError`` naming the byte offset of the cut record, so callers
show what was readable and still report the file as damaged.  Frames that are
not IPv4/IPv6 (ARP, LLDP, unknown link types) are not errors: ``ip_packets``
skips them and the caller may count them via ``Frame.ip is None``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_BSD = 12
LINKTYPE_RAW_OPENBSD = 14
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
_ETHERTYPE_VLAN = frozenset({0x8100, 0x88A8, 0x9100})

_PCAP_MAGIC_US = 0xA1B2C3D4
_PCAP_MAGIC_NS = 0xA1B23C4D
_PCAP_HEADER_LEN = 24
_PCAP_RECORD_LEN = 16

_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_IDB = 0x00000001
_PCAPNG_PB = 0x00000002
_PCAPNG_SPB = 0x00000003
_PCAPNG_EPB = 0x00000006
_PCAPNG_BOM = 0x1A2B3C4D
_OPT_ENDOFOPT = 0
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14

# The address family values loopback captures put in their 4-byte header:
# AF_INET is 2 everywhere, AF_INET6 differs per OS (Linux 10, BSDs 24/28/30).
_NULL_AF_INET = frozenset({2})
_NULL_AF_INET6 = frozenset({10, 24, 28, 30})

_NS_PER_S = 1_000_000_000


class PcapError(ValueError):
    """A capture file that cannot be read: bad magic, damaged or truncated record."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame.

    ``number`` counts every frame from 1 (as Wireshark does), ``ts_ns`` is
    nanoseconds since the epoch (an int, because a float cannot hold today's
    epoch at nanosecond precision), ``data`` is the captured link-layer frame
    and ``ip`` the IPv4/IPv6 packet inside it, or ``None`` when the frame does
    not carry IP.
    """

    number: int
    ts_ns: int
    linktype: int
    interface: int
    data: bytes
    ip: bytes | None

    @property
    def timestamp(self) -> float:
        return self.ts_ns / _NS_PER_S


def link_payload(linktype: int, frame: bytes) -> bytes | None:
    """The IPv4 or IPv6 packet a link-layer frame carries, or ``None`` if it carries something else."""
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_BSD, LINKTYPE_RAW_OPENBSD, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return frame if frame and frame[0] >> 4 in (4, 6) else None
    if linktype == LINKTYPE_ETHERNET:
        offset = 12
        for _ in range(3):  # the ethertype, then at most two VLAN tags
            if len(frame) < offset + 2:
                return None
            ethertype = int.from_bytes(frame[offset:offset + 2], "big")
            if ethertype not in _ETHERTYPE_VLAN:
                return _by_ethertype(ethertype, frame[offset + 2:])
            offset += 4
        return None
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return None
        return _by_ethertype(int.from_bytes(frame[14:16], "big"), frame[16:])
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return None
        return _by_ethertype(int.from_bytes(frame[0:2], "big"), frame[20:])
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(frame) < 4:
            return None
        # LINKTYPE_NULL's family is in the capturing host's byte order, which
        # the file does not record; the two readings never collide.
        families = (
            {int.from_bytes(frame[:4], "big")}
            if linktype == LINKTYPE_LOOP
            else {int.from_bytes(frame[:4], "big"), int.from_bytes(frame[:4], "little")}
        )
        if families & _NULL_AF_INET:
            return _versioned(frame[4:], 4)
        if families & _NULL_AF_INET6:
            return _versioned(frame[4:], 6)
        return None
    return None


def _by_ethertype(ethertype: int, payload: bytes) -> bytes | None:
    if ethertype == ETHERTYPE_IPV4:
        return _versioned(payload, 4)
    if ethertype == ETHERTYPE_IPV6:
        return _versioned(payload, 6)
    return None


def _versioned(payload: bytes, version: int) -> bytes | None:
    return payload if payload and payload[0] >> 4 == version else None


def read_frames(data: bytes) -> Iterator[Frame]:
    """Every frame of a pcap or pcapng capture held in ``data``; see the module doc for damage."""
    if len(data) < 4:
        raise PcapError(f"capture: {len(data)} bytes is too short for a pcap or pcapng header")
    if int.from_bytes(data[:4], "little") == _PCAPNG_SHB:
        return _read_pcapng(data)
    return _read_pcap(data)


def ip_packets(data: bytes) -> Iterator[Frame]:
    """The frames of a capture that carry IPv4 or IPv6 (``frame.ip`` is then never ``None``)."""
    return (frame for frame in read_frames(data) if frame.ip is not None)


def read_file(path: str | Path) -> Iterator[Frame]:
    """Every frame of the capture file at ``path``; ``OSError`` if it cannot be opened."""
    return read_frames(Path(path).read_bytes())


def _read_pcap(data: bytes) -> Iterator[Frame]:
    if len(data) < _PCAP_HEADER_LEN:
        raise PcapError(f"pcap: global header truncated at offset {len(data)}, need {_PCAP_HEADER_LEN} bytes")
    for order in ("<", ">"):
        magic = struct.unpack_from(order + "I", data)[0]
        if magic in (_PCAP_MAGIC_US, _PCAP_MAGIC_NS):
            break
    else:
        raise PcapError(f"capture: unknown magic 0x{data[:4].hex()} at offset 0 (neither pcap nor pcapng)")
    scale = 1 if magic == _PCAP_MAGIC_NS else 1000
    major, _minor, _zone, _sigfigs, _snaplen, network = struct.unpack_from(order + "HHiIII", data, 4)
    if major != 2:
        raise PcapError(f"pcap: version {major} at offset 4 is not 2")
    # The upper bits of the link-type field carry FCS flags (pcap-linktype(7)).
    linktype = network & 0x0FFFFFFF
    record = struct.Struct(order + "IIII")
    return _pcap_records(data, record, scale, linktype)


def _pcap_records(data: bytes, record: struct.Struct, scale: int, linktype: int) -> Iterator[Frame]:
    offset = _PCAP_HEADER_LEN
    number = 0
    while offset < len(data):
        if len(data) - offset < _PCAP_RECORD_LEN:
            raise PcapError(
                f"pcap: record header at offset {offset} truncated "
                f"({len(data) - offset} of {_PCAP_RECORD_LEN} bytes)"
            )
        sec, frac, caplen, _origlen = record.unpack_from(data, offset)
        start = offset + _PCAP_RECORD_LEN
        if start + caplen > len(data):
            raise PcapError(
                f"pcap: packet {number + 1} at offset {offset} truncated "
                f"({len(data) - start} of {caplen} captured bytes present)"
            )
        number += 1
        frame = data[start:start + caplen]
        yield Frame(number, sec * _NS_PER_S + frac * scale, linktype, 0, frame, link_payload(linktype, frame))
        offset = start + caplen


@dataclass(frozen=True, slots=True)
class _Interface:
    linktype: int
    snaplen: int
    units_per_s: int
    offset_s: int


def _read_pcapng(data: bytes) -> Iterator[Frame]:
    offset = 0
    number = 0
    order = "<"
    interfaces: list[_Interface] = []
    while offset < len(data):
        if len(data) - offset < 12:
            raise PcapError(f"pcapng: block at offset {offset} truncated ({len(data) - offset} bytes left)")
        # The section header's type reads the same in both byte orders, so it
        # can be recognised before its byte-order magic is known.
        if data[offset:offset + 4] == b"\x0a\x0d\x0d\x0a":
            order = _section_order(data, offset)
            interfaces = []
        block_type, length = struct.unpack_from(order + "II", data, offset)
        if length < 12 or length % 4:
            raise PcapError(f"pcapng: block at offset {offset} has impossible length {length}")
        if offset + length > len(data):
            raise PcapError(
                f"pcapng: block type {block_type} at offset {offset} truncated "
                f"({len(data) - offset} of {length} bytes present)"
            )
        (trailer,) = struct.unpack_from(order + "I", data, offset + length - 4)
        if trailer != length:
            raise PcapError(f"pcapng: block at offset {offset} has length {length} but trailer {trailer}")
        body = data[offset + 8:offset + length - 4]
        if block_type == _PCAPNG_IDB:
            interfaces.append(_interface(body, order, offset))
        elif block_type in (_PCAPNG_EPB, _PCAPNG_PB, _PCAPNG_SPB):
            number += 1
            yield _packet_block(block_type, body, order, offset, number=number, interfaces=interfaces)
        offset += length


def _section_order(data: bytes, offset: int) -> str:
    if len(data) - offset < 12:
        raise PcapError(f"pcapng: section header at offset {offset} truncated")
    for order in ("<", ">"):
        if struct.unpack_from(order + "I", data, offset + 8)[0] == _PCAPNG_BOM:
            return order
    magic = data[offset + 8:offset + 12].hex()
    raise PcapError(f"pcapng: bad byte-order magic 0x{magic} at offset {offset + 8}")


def _interface(body: bytes, order: str, offset: int) -> _Interface:
    if len(body) < 8:
        raise PcapError(f"pcapng: interface description at offset {offset} too short")
    linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", body)
    units_per_s = 1_000_000
    offset_s = 0
    for code, value in _options(body, 8, order, offset):
        if code == _OPT_IF_TSRESOL and len(value) >= 1:
            exponent = value[0] & 0x7F
            units_per_s = 2**exponent if value[0] & 0x80 else 10**exponent
        elif code == _OPT_IF_TSOFFSET and len(value) >= 8:
            (offset_s,) = struct.unpack_from(order + "q", value)
    return _Interface(linktype, snaplen, units_per_s, offset_s)


def _options(body: bytes, pos: int, order: str, offset: int) -> Iterator[tuple[int, bytes]]:
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(order + "HH", body, pos)
        if code == _OPT_ENDOFOPT:
            return
        value = body[pos + 4:pos + 4 + length]
        if len(value) < length:
            raise PcapError(f"pcapng: option {code} in block at offset {offset} overruns the block")
        yield code, value
        pos += 4 + (length + 3) // 4 * 4


def _packet_block(
    block_type: int, body: bytes, order: str, offset: int, *, number: int, interfaces: list[_Interface],
) -> Frame:
    if block_type == _PCAPNG_SPB:
        if len(body) < 4:
            raise PcapError(f"pcapng: simple packet block at offset {offset} too short")
        if not interfaces:
            raise PcapError(f"pcapng: simple packet block at offset {offset} before any interface")
        (origlen,) = struct.unpack_from(order + "I", body)
        iface_id = 0
        caplen = min(origlen, interfaces[0].snaplen or origlen, len(body) - 4)
        ts_units = 0
        start = 4
    else:
        if len(body) < 20:
            raise PcapError(f"pcapng: packet block at offset {offset} too short")
        if block_type == _PCAPNG_EPB:
            iface_id, ts_high, ts_low, caplen, _origlen = struct.unpack_from(order + "IIIII", body)
        else:
            iface_id, _drops, ts_high, ts_low, caplen, _origlen = struct.unpack_from(order + "HHIIII", body)
        ts_units = (ts_high << 32) | ts_low
        start = 20
    if iface_id >= len(interfaces):
        raise PcapError(f"pcapng: packet block at offset {offset} names undeclared interface {iface_id}")
    if start + caplen > len(body):
        raise PcapError(f"pcapng: packet block at offset {offset} claims {caplen} bytes beyond its block")
    iface = interfaces[iface_id]
    ts_ns = iface.offset_s * _NS_PER_S + ts_units * _NS_PER_S // iface.units_per_s
    frame = body[start:start + caplen]
    return Frame(number, ts_ns, iface.linktype, iface_id, frame, link_payload(iface.linktype, frame))


# -- writing -----------------------------------------------------------------------------------------------


def ethernet_frame(
    ip: bytes, *, vlan: int | None = None, src_mac: bytes = b"\x02\x00\x00\x00\x00\x01",
    dst_mac: bytes = b"\x02\x00\x00\x00\x00\x02",
) -> bytes:
    """Wrap an IP packet in an Ethernet II header, optionally with one 802.1Q tag."""
    if not ip or ip[0] >> 4 not in (4, 6):
        raise PcapError("ethernet_frame: payload is not an IPv4 or IPv6 packet")
    ethertype = ETHERTYPE_IPV4 if ip[0] >> 4 == 4 else ETHERTYPE_IPV6
    tag = b"" if vlan is None else struct.pack("!HH", 0x8100, vlan & 0x0FFF)
    return dst_mac + src_mac + tag + struct.pack("!H", ethertype) + ip


Timestamp = float | int | Decimal


def _to_ns(ts: Timestamp) -> int:
    # Decimal keeps nanoseconds that a float near today's epoch cannot hold.
    return round(Decimal(ts) * _NS_PER_S)


def write_pcap(
    packets: Iterable[tuple[Timestamp, bytes]], *, linktype: int = LINKTYPE_RAW, nanosecond: bool = False,
    snaplen: int = 262144,
) -> bytes:
    """A little-endian classic pcap of ``(timestamp, frame)`` pairs.

    Timestamps are seconds since the epoch; pass a ``Decimal`` for nanoseconds.
    ``frame`` must already be in ``linktype``'s framing (see ``ethernet_frame``).
    """
    magic = _PCAP_MAGIC_NS if nanosecond else _PCAP_MAGIC_US
    out = [struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, frame in packets:
        sec, ns = divmod(_to_ns(ts), _NS_PER_S)
        frac = ns if nanosecond else ns // 1000
        out.append(struct.pack("<IIII", sec, frac, len(frame), len(frame)))
        out.append(bytes(frame))
    return b"".join(out)


def write_pcapng(
    packets: Iterable[tuple[Timestamp, bytes]], *, linktype: int = LINKTYPE_RAW,
    extra_interfaces: Iterable[int] = (), interface_of: Iterable[int] | None = None,
) -> bytes:
    """A little-endian pcapng (one section, nanosecond ``if_tsresol``) of ``(timestamp, frame)`` pairs.

    Interface 0 has ``linktype``; ``extra_interfaces`` adds more link types
    (interfaces 1, 2, ...) and ``interface_of`` gives each packet's interface
    (default all 0).  Mostly for tests: real tools write pcapng.
    """

    def block(block_type: int, body: bytes) -> bytes:
        body += b"\x00" * (-len(body) % 4)
        length = len(body) + 12
        return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)

    tsresol = struct.pack("<HHB3x", _OPT_IF_TSRESOL, 1, 9) + struct.pack("<HH", _OPT_ENDOFOPT, 0)
    out = [block(_PCAPNG_SHB, struct.pack("<IHHq", _PCAPNG_BOM, 1, 0, -1))]
    for lt in (linktype, *extra_interfaces):
        out.append(block(_PCAPNG_IDB, struct.pack("<HHI", lt, 0, 262144) + tsresol))
    ifaces = iter(interface_of) if interface_of is not None else None
    for ts, frame in packets:
        iface = next(ifaces) if ifaces is not None else 0
        ts_ns = _to_ns(ts)
        header = struct.pack("<IIIII", iface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(frame), len(frame))
        out.append(block(_PCAPNG_EPB, header + bytes(frame)))
    return b"".join(out)


def write_file(
    path: str | Path, packets: Iterable[tuple[Timestamp, bytes]], *, linktype: int = LINKTYPE_RAW,
) -> None:
    """Write a classic microsecond pcap file (what every tool reads)."""
    Path(path).write_bytes(write_pcap(packets, linktype=linktype))
