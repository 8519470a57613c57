from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alt_router.gre import header as gre
from alt_router.gre.header import GreError, GreHeader, decode, encode

headers = st.builds(
    GreHeader,
    protocol=st.sampled_from([gre.PROTO_IPV4, gre.PROTO_IPV6]),
    key=st.none() | st.integers(0, 0xFFFFFFFF),
    sequence=st.none() | st.integers(0, 0xFFFFFFFF),
    checksum=st.booleans(),
)
payloads = st.binary(max_size=200)


def ones_complement_sum(data: bytes) -> int:
    """An independent, slow RFC 1071 sum for checking the codec's checksums."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_minimal_header_is_four_bytes() -> None:
    assert encode(GreHeader(gre.PROTO_IPV4), b"IP") == b"\x00\x00\x08\x00IP"
    assert encode(GreHeader(gre.PROTO_IPV6), b"") == b"\x00\x00\x86\xdd"


def test_key_and_sequence_layout_rfc2890() -> None:
    wire = encode(GreHeader(gre.PROTO_IPV4, key=0x01020304, sequence=7), b"x")
    assert wire == b"\x30\x00\x08\x00\x01\x02\x03\x04\x00\x00\x00\x07x"


def test_checksum_covers_header_and_payload() -> None:
    payload = b"\x45\x00\x00\x14" + bytes(range(16))
    wire = encode(GreHeader(gre.PROTO_IPV4, key=9, checksum=True), payload)
    assert wire[:2] == b"\xa0\x00"
    assert wire[6:8] == b"\x00\x00"  # Reserved1
    assert wire[8:12] == b"\x00\x00\x00\x09"  # key follows the checksum word
    assert ones_complement_sum(wire) == 0xFFFF
    assert decode(wire) == (GreHeader(gre.PROTO_IPV4, key=9, checksum=True), payload)


@given(headers, payloads)
@settings(max_examples=200)
def test_round_trip(hdr: GreHeader, payload: bytes) -> None:
    wire = encode(hdr, payload)
    assert len(wire) == hdr.length + len(payload)
    assert decode(wire) == (hdr, payload)


@given(headers, payloads, st.data())
@settings(max_examples=200)
def test_truncated_header_is_reported(hdr: GreHeader, payload: bytes, data: st.DataObject) -> None:
    wire = encode(hdr, payload)
    cut = data.draw(st.integers(0, hdr.length - 1))
    with pytest.raises(GreError) as err:
        decode(wire[:cut])
    assert err.value.reason == gre.TRUNCATED


@given(headers.filter(lambda h: h.checksum), payloads, st.data())
@settings(max_examples=200)
def test_checksum_catches_any_flipped_bit_after_the_flags(
    hdr: GreHeader, payload: bytes, data: st.DataObject
) -> None:
    wire = bytearray(encode(hdr, payload))
    bit = data.draw(st.integers(16, len(wire) * 8 - 1))
    wire[bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises(GreError) as err:
        decode(bytes(wire))
    assert err.value.reason == gre.BAD_CHECKSUM


@given(st.binary(max_size=64))
@settings(max_examples=300)
def test_arbitrary_bytes_decode_or_raise_gre_error(data: bytes) -> None:
    try:
        hdr, payload = decode(data)
    except GreError as exc:
        assert isinstance(exc, ValueError)
        assert exc.reason in {
            gre.BAD_VERSION, gre.ROUTING_BIT, gre.UNKNOWN_FLAGS, gre.TRUNCATED, gre.BAD_CHECKSUM,
            gre.UNKNOWN_PROTOCOL,
        }
    else:
        assert hdr.length + len(payload) == len(data)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x00\x01\x08\x00", gre.BAD_VERSION),  # version 1 is PPTP's enhanced GRE
        (b"\x00\x07\x08\x00", gre.BAD_VERSION),
        (b"\x40\x00\x08\x00\x00\x00\x00\x00", gre.ROUTING_BIT),
        (b"\x08\x00\x08\x00", gre.UNKNOWN_FLAGS),  # strict source route
        (b"\x04\x00\x08\x00", gre.UNKNOWN_FLAGS),  # recursion control
        (b"\x00\x00\x08", gre.TRUNCATED),
        (b"", gre.TRUNCATED),
        (b"\x20\x00\x08\x00\x00\x00", gre.TRUNCATED),  # K set, key cut short
        (b"\x80\x00\x08\x00\x12\x34\x00\x00", gre.BAD_CHECKSUM),
        (b"\x00\x00\x88\x47", gre.UNKNOWN_PROTOCOL),  # MPLS
        (b"\x00\x00\x65\x58", gre.UNKNOWN_PROTOCOL),  # transparent Ethernet bridging
    ],
)
def test_bad_headers_name_the_reason(wire: bytes, reason: str) -> None:
    with pytest.raises(GreError) as err:
        decode(wire)
    assert err.value.reason == reason
    assert reason in str(err.value)


def test_reserved_bits_6_to_12_are_ignored_on_receipt() -> None:
    # RFC 2784 §2.3: sent as zero, but MUST be ignored on receipt.
    assert decode(b"\x03\xf8\x08\x00\x45") == (GreHeader(gre.PROTO_IPV4), b"\x45")


def test_protocol_for_inner_packet() -> None:
    assert gre.protocol_for(b"\x45") == gre.PROTO_IPV4
    assert gre.protocol_for(b"\x60") == gre.PROTO_IPV6
    with pytest.raises(GreError, match="unknown-protocol"):
        gre.protocol_for(b"\x50")
    with pytest.raises(GreError, match="truncated"):
        gre.protocol_for(b"")


def test_header_rejects_impossible_fields() -> None:
    with pytest.raises(GreError):
        GreHeader(0x0806)
    with pytest.raises(GreError):
        GreHeader(gre.PROTO_IPV4, key=1 << 32)
    with pytest.raises(GreError):
        GreHeader(gre.PROTO_IPV4, sequence=-1)


@pytest.mark.parametrize(
    ("version", "key", "csum", "seq", "expected"),
    [(4, False, False, False, 24), (4, True, False, False, 28), (4, True, True, True, 36),
     (6, False, False, False, 44), (6, True, True, False, 52)],
)
def test_overhead(version: int, key: bool, csum: bool, seq: bool, expected: int) -> None:
    assert gre.overhead(version, key=key, csum=csum, seq=seq) == expected
