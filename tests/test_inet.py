from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alt_router import inet


def test_checksum_rfc1071_example() -> None:
    # RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2 (before complement).
    assert inet.checksum(bytes.fromhex("0001f203f4f5f6f7")) == (~0xDDF2 & 0xFFFF)


def test_ipv4_udp_roundtrip_and_checksums() -> None:
    pkt = inet.udp_packet(IPv4Address("10.0.0.1"), IPv4Address("153.16.1.1"), 4342, 4342, b"hello", ttl=7)
    ip = inet.parse_ip(pkt)
    assert (ip.version, str(ip.src), str(ip.dst), ip.proto, ip.ttl) == (4, "10.0.0.1", "153.16.1.1", 17, 7)
    udp = inet.parse_udp(ip)
    assert (udp.sport, udp.dport, udp.payload, udp.checksum_ok) == (4342, 4342, b"hello", True)


def test_ipv6_udp_bad_checksum_detected() -> None:
    pkt = bytearray(inet.udp_packet(IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2"), 1, 2, b"x"))
    pkt[-1] ^= 0xFF
    assert inet.parse_udp(inet.parse_ip(bytes(pkt))).checksum_ok is False


def test_ipv4_bad_header_checksum() -> None:
    pkt = bytearray(inet.udp_packet(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), 1, 2, b""))
    pkt[8] ^= 1  # TTL changed without fixing the checksum
    with pytest.raises(inet.InetError, match="checksum"):
        inet.parse_ip(bytes(pkt))


def test_icmp_time_exceeded_quotes_original() -> None:
    orig = inet.udp_packet(IPv4Address("10.0.0.1"), IPv4Address("153.16.1.1"), 4342, 4342, b"q" * 1000)
    err = inet.parse_ip(inet.icmp_error(IPv4Address("10.9.9.9"), orig, kind="time-exceeded"))
    assert err.proto == inet.PROTO_ICMP and str(err.dst) == "10.0.0.1"
    assert err.payload[0] == 11 and inet.checksum(err.payload) == 0
    assert len(err.payload) + inet.IPV4_HEADER_LEN <= 576


@given(st.binary(max_size=80))
def test_parse_ip_raises_only_inet_error(data: bytes) -> None:
    try:
        ip = inet.parse_ip(data)
        if ip.proto == inet.PROTO_UDP:
            inet.parse_udp(ip)
    except inet.InetError:
        pass


def test_ipv4_header_fields_parse_and_build_df_clear() -> None:
    # RFC 791: identification, flags (DF 0x4000) and TOS are read back and built as given.
    pkt = inet.udp_packet(
        IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), 1, 2, b"x", tos=0x2E, ident=0x1234,
        dont_fragment=False,
    )
    assert pkt[1] == 0x2E and pkt[4:8] == bytes.fromhex("1234 0000")
    ip = inet.parse_ip(pkt)
    assert (ip.tos, ip.ident, ip.fragment) == (0x2E, 0x1234, 0)
    default = inet.udp_packet(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), 1, 2, b"")
    assert inet.parse_ip(default).fragment == inet.IPV4_DF


def test_ipv6_traffic_class_and_flow_label() -> None:
    # RFC 8200 §3: version 6, traffic class 8 bits, flow label 20 bits.
    pkt = inet.udp_packet(IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2"), 1, 2, b"x", tos=0xB8,
                          flow_label=0xABCDE)
    assert pkt[:4] == bytes.fromhex("6b 8a bc de")
    ip = inet.parse_ip(pkt)
    assert (ip.tos, ip.flow_label) == (0xB8, 0xABCDE)


@pytest.mark.parametrize(("src", "dst", "ok"), [
    (IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), True),  # RFC 768: zero means no checksum
    (IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2"), False),  # RFC 8200 §8.1: zero is invalid
])
def test_zero_udp_checksum_is_reported(src: inet.IPAddress, dst: inet.IPAddress, ok: bool) -> None:
    pkt = bytearray(inet.udp_packet(src, dst, 1, 2, b"x"))
    hdr = 20 if src.version == 4 else 40
    pkt[hdr + 6:hdr + 8] = b"\x00\x00"
    udp = inet.parse_udp(inet.parse_ip(bytes(pkt)))
    assert udp.checksum_zero and udp.checksum_ok is ok
