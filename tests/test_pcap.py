"""Capture file reading and writing (alt_router.pcap)."""

from __future__ import annotations

import contextlib
import struct
import subprocess
from decimal import Decimal
from ipaddress import ip_address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alt_router import inet, pcap
from alt_router.pcap import PcapError
from tests.conftest import require_tool

P4 = inet.udp_packet(ip_address("192.0.2.1"), ip_address("192.0.2.2"), 40000, 4342, b"v4 payload")
P6 = inet.udp_packet(ip_address("2001:db8::1"), ip_address("2001:db8::2"), 40001, 4342, b"v6 payload")


def frames(data: bytes) -> list[pcap.Frame]:
    return list(pcap.read_frames(data))


def _pcap_be(records: list[tuple[int, int, bytes]], *, linktype: int, ns: bool = False) -> bytes:
    magic = 0xA1B23C4D if ns else 0xA1B2C3D4
    out = struct.pack(">IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for sec, frac, data in records:
        out += struct.pack(">IIII", sec, frac, len(data), len(data)) + data
    return out


def _block(order: str, block_type: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = struct.pack(order + "I", len(body) + 12)
    return struct.pack(order + "I", block_type) + length + body + length


def _shb(order: str) -> bytes:
    return _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def _idb(order: str, linktype: int, options: bytes = b"", snaplen: int = 0) -> bytes:
    return _block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + options)


def _epb(order: str, iface: int, ts: int, data: bytes) -> bytes:
    header = struct.pack(order + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
    return _block(order, 6, header + data)


# -- classic pcap ------------------------------------------------------------------------------------------


def test_raw_ip_round_trip_keeps_order_timestamps_and_bytes() -> None:
    data = pcap.write_pcap([(1.5, P4), (Decimal("2.000001"), P6)])
    got = frames(data)
    assert [(f.number, f.ts_ns, f.linktype, f.data, f.ip) for f in got] == [
        (1, 1_500_000_000, 101, P4, P4),
        (2, 2_000_001_000, 101, P6, P6),
    ]
    assert got[0].timestamp == 1.5


def test_nanosecond_pcap_keeps_nanoseconds() -> None:
    ts = Decimal("1700000000.123456789")
    (frame,) = frames(pcap.write_pcap([(ts, P4)], nanosecond=True))
    assert frame.ts_ns == 1_700_000_000_123_456_789


def test_microsecond_pcap_truncates_to_microseconds() -> None:
    (frame,) = frames(pcap.write_pcap([(Decimal("10.123456789"), P4)]))
    assert frame.ts_ns == 10_123_456_000


@pytest.mark.parametrize("ns", [False, True])
def test_big_endian_pcap(ns: bool) -> None:
    data = _pcap_be([(7, 5, P4), (8, 0, P6)], linktype=101, ns=ns)
    first = 7_000_000_000 + (5 if ns else 5000)
    assert [(f.ts_ns, f.ip) for f in frames(data)] == [(first, P4), (8_000_000_000, P6)]


def test_ethernet_with_and_without_vlan_tag() -> None:
    packets = [(0, pcap.ethernet_frame(P4, vlan=100)), (0, pcap.ethernet_frame(P6))]
    data = pcap.write_pcap(packets, linktype=pcap.LINKTYPE_ETHERNET)
    got = frames(data)
    assert [f.ip for f in got] == [P4, P6]
    assert got[0].data[12:16] == b"\x81\x00\x00\x64"


def test_ethernet_qinq_and_non_ip_ethertypes() -> None:
    qinq = b"\x00" * 12 + b"\x88\xa8\x00\x01\x81\x00\x00\x02\x08\x00" + P4
    arp = b"\x00" * 12 + b"\x08\x06" + b"\x00" * 28
    mislabelled = b"\x00" * 12 + b"\x08\x00" + P6  # IPv4 ethertype, IPv6 packet
    runt = b"\x00" * 10
    assert [pcap.link_payload(1, f) for f in (qinq, arp, mislabelled, runt)] == [P4, None, None, None]


@pytest.mark.parametrize(
    ("linktype", "frame", "expected"),
    [
        (pcap.LINKTYPE_NULL, struct.pack("<I", 2) + P4, P4),
        (pcap.LINKTYPE_NULL, struct.pack(">I", 2) + P4, P4),
        (pcap.LINKTYPE_NULL, struct.pack("<I", 10) + P6, P6),  # Linux AF_INET6
        (pcap.LINKTYPE_NULL, struct.pack(">I", 30) + P6, P6),  # macOS AF_INET6
        (pcap.LINKTYPE_NULL, struct.pack("<I", 7) + P4, None),
        (pcap.LINKTYPE_LOOP, struct.pack(">I", 2) + P4, P4),
        (pcap.LINKTYPE_RAW_BSD, P4, P4),
        (pcap.LINKTYPE_RAW_OPENBSD, P6, P6),
        (pcap.LINKTYPE_IPV6, P6, P6),
        (pcap.LINKTYPE_RAW, b"\x20junk", None),
        (pcap.LINKTYPE_LINUX_SLL, b"\x00\x00\x00\x01\x00\x06" + b"\x02" * 8 + b"\x08\x00" + P4, P4),
        (pcap.LINKTYPE_LINUX_SLL, b"\x00" * 14 + b"\x86\xdd" + P6, P6),
        (pcap.LINKTYPE_LINUX_SLL, b"\x00" * 14 + b"\x08\x06" + b"\x00" * 28, None),
        (pcap.LINKTYPE_LINUX_SLL2, b"\x86\xdd\x00\x00" + b"\x00" * 16 + P6, P6),
        (pcap.LINKTYPE_LINUX_SLL2, b"\x08\x00\x00\x00" + b"\x00" * 16 + P4, P4),
        (pcap.LINKTYPE_LINUX_SLL2, b"\x08\x00", None),
        (147, P4, None),  # a user link type we know nothing about
    ],
)
def test_link_layers(linktype: int, frame: bytes, expected: bytes | None) -> None:
    (got,) = frames(pcap.write_pcap([(0, frame)], linktype=linktype))
    assert got.linktype == linktype
    assert got.ip == expected


def test_ip_packets_skips_non_ip_frames_but_keeps_frame_numbers() -> None:
    arp = b"\x00" * 12 + b"\x08\x06" + b"\x00" * 28
    data = pcap.write_pcap([(0, arp), (1, pcap.ethernet_frame(P4))], linktype=1)
    assert [(f.number, f.ip) for f in pcap.ip_packets(data)] == [(2, P4)]


def test_fcs_flag_bits_in_link_type_are_ignored() -> None:
    data = bytearray(pcap.write_pcap([(0, P4)]))
    data[20:24] = struct.pack("<I", 101 | 0x10000000)
    assert frames(bytes(data))[0].ip == P4


# -- pcapng ------------------------------------------------------------------------------------------------


def test_pcapng_round_trip_with_two_interfaces() -> None:
    data = pcap.write_pcapng(
        [(Decimal("1700000000.123456789"), P4), (2.5, pcap.ethernet_frame(P6, vlan=5))],
        extra_interfaces=[pcap.LINKTYPE_ETHERNET],
        interface_of=[0, 1],
    )
    got = frames(data)
    assert [(f.number, f.ts_ns, f.linktype, f.interface, f.ip) for f in got] == [
        (1, 1_700_000_000_123_456_789, 101, 0, P4),
        (2, 2_500_000_000, 1, 1, P6),
    ]


def test_pcapng_big_endian_section_then_little_endian_section() -> None:
    # Default resolution (microseconds), then a 2^-10 resolution with an offset.
    tsresol = struct.pack("<HHB3x", 9, 1, 0x80 | 10) + struct.pack("<HHq", 14, 8, 100) + b"\x00" * 4
    data = (
        _shb(">") + _idb(">", 101) + _epb(">", 0, 3_000_001, P4)
        + _shb("<") + _idb("<", 1, tsresol) + _epb("<", 0, 1536, pcap.ethernet_frame(P6))
    )
    got = frames(data)
    assert [(f.ts_ns, f.linktype, f.ip) for f in got] == [
        (3_000_001_000, 101, P4),
        (101_500_000_000, 1, P6),
    ]


def test_pcapng_simple_and_obsolete_packet_blocks_and_unknown_blocks() -> None:
    spb = _block("<", 3, struct.pack("<I", len(P4)) + P4)
    pb = _block("<", 2, struct.pack("<HHIIII", 0, 0, 0, 42, len(P6), len(P6)) + P6)
    name_resolution = _block("<", 4, b"\x00" * 4)
    data = _shb("<") + _idb("<", 101) + name_resolution + spb + pb
    got = frames(data)
    assert [(f.number, f.ts_ns, f.ip) for f in got] == [(1, 0, P4), (2, 42_000, P6)]


def test_pcapng_simple_packet_block_respects_snaplen() -> None:
    spb = _block("<", 3, struct.pack("<I", len(P4)) + P4)
    (frame,) = frames(_shb("<") + _idb("<", 101, snaplen=20) + spb)
    assert frame.data == P4[:20]


def test_wireshark_written_pcapng_reads_the_same(tmp_path: Path) -> None:
    editcap = require_tool("editcap")
    src = tmp_path / "in.pcap"
    dst = tmp_path / "out.pcapng"
    packets: list[tuple[pcap.Timestamp, bytes]] = [
        (Decimal("5.000007"), pcap.ethernet_frame(P4)), (6, pcap.ethernet_frame(P6)),
    ]
    src.write_bytes(pcap.write_pcap(packets, linktype=1))
    subprocess.run([editcap, "-F", "pcapng", str(src), str(dst)], check=True, capture_output=True, timeout=30)
    assert dst.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert [(f.ts_ns, f.ip) for f in pcap.read_file(dst)] == [(5_000_007_000, P4), (6_000_000_000, P6)]


# -- damage ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (b"\x00\x01\x02\x03" + b"\x00" * 20, "unknown magic 0x00010203 at offset 0"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "global header truncated"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 3, 0, 0, 0, 0, 101), "version 3"),
        (_shb("<")[:10], "block at offset 0 truncated"),
        (_shb("<") + _epb("<", 0, 0, P4), "undeclared interface 0"),
        (_shb("<") + _idb("<", 101)[:-4] + b"\x00\x00\x00\x00", "trailer"),
        (_shb("<") + struct.pack("<II", 1, 13) + b"\x00" * 8, "impossible length 13"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\xde\xad\xbe\xef" + b"\x00" * 16, "bad byte-order magic"),
    ],
)
def test_damaged_headers_raise_pcap_error(data: bytes, message: str) -> None:
    with pytest.raises(PcapError, match=message):
        frames(data)


def test_truncated_last_packet_yields_the_good_ones_then_names_the_offset() -> None:
    data = pcap.write_pcap([(0, P4), (1, P6)])
    cut = data[:-5]
    reader = pcap.read_frames(cut)
    assert next(reader).ip == P4
    second_record = 24 + 16 + len(P4)
    with pytest.raises(PcapError, match=f"packet 2 at offset {second_record} truncated"):
        next(reader)


def test_truncated_record_header() -> None:
    data = pcap.write_pcap([(0, P4)]) + b"\x00" * 7
    with pytest.raises(PcapError, match=f"record header at offset {24 + 16 + len(P4)} truncated"):
        frames(data)


def test_truncated_pcapng_block_names_offset() -> None:
    data = pcap.write_pcapng([(0, P4), (1, P6)])
    with pytest.raises(PcapError, match=r"block type 6 at offset \d+ truncated"):
        frames(data[:-3])


def test_epb_claiming_more_bytes_than_its_block() -> None:
    bad = _block("<", 6, struct.pack("<IIIII", 0, 0, 0, 500, 500) + P4)
    with pytest.raises(PcapError, match="beyond its block"):
        frames(_shb("<") + _idb("<", 101) + bad)


def test_ethernet_frame_refuses_non_ip() -> None:
    with pytest.raises(PcapError):
        pcap.ethernet_frame(b"\x00abc")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["pcap", "pcapng"]))
def test_garbage_after_a_valid_header_only_ever_raises_pcap_error(tail: bytes, kind: str) -> None:
    head = pcap.write_pcap([]) if kind == "pcap" else _shb("<") + _idb("<", 1)
    with contextlib.suppress(PcapError):
        frames(head + tail)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_corrupted_captures_only_ever_raise_pcap_error(noise: bytes) -> None:
    base = bytearray(pcap.write_pcapng([(0, P4)], extra_interfaces=[0]))
    for i, b in enumerate(noise[: len(base)]):
        base[(i * 7) % len(base)] ^= b
    with contextlib.suppress(PcapError):
        frames(bytes(base))
