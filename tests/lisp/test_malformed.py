"""Bad bytes give LispDecodeError (never another exception, never a partial object);
impossible objects give LispEncodeError at construction."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alt_router.inet import ipv4_header, udp_packet
from alt_router.lisp import (
    AfiList,
    EidRecord,
    EncapsulatedControlMessage,
    InstanceId,
    LispDecodeError,
    LispEncodeError,
    LispMessage,
    Locator,
    MapNotify,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    UnknownLcaf,
    decode,
)
from alt_router.lisp.address import decode_address

from . import strategies as s
from . import test_vectors as tv

V4 = IPv4Address("192.0.2.1")
V6 = IPv6Address("2001:db8::1")

VECTORS = {
    "map_request_v4": tv.MAP_REQUEST_V4,
    "map_request_v6": tv.MAP_REQUEST_V6,
    "map_request_lcaf": tv.MAP_REQUEST_LCAF,
    "map_reply": tv.MAP_REPLY,
    "negative_map_reply": tv.NEGATIVE_MAP_REPLY,
    "map_register": tv.MAP_REGISTER,
    "map_notify": b"\x48\x00\x00\x01" + tv.NOTIFY_BODY,
    "ecm_v4": tv.ecm_v4_bytes(),
}


def _shortest_valid_prefix(msg: LispMessage, wire: bytes) -> int:
    """Where a prefix of ``wire`` may still be a whole message.

    Only a Map-Reply with the S bit claims every trailing byte (as LISP-SEC
    data), so cutting into that data leaves a valid, shorter message.
    """
    if isinstance(msg, MapReply) and msg.security:
        return len(wire) - len(msg.security_data)
    return len(wire)


def _every_truncation_fails(wire: bytes) -> None:
    msg = decode(wire)
    limit = _shortest_valid_prefix(msg, wire)
    # A Map-Notify cut just before a peer's xTR-ID/site-ID is one whose reserved bit 4
    # is set with nothing after the records: valid, the bit ignored (RFC 9301 §5.7).
    notify_without_trailer = len(wire) - 24 if isinstance(msg, MapNotify) and msg.xtr_id is not None else -1
    for cut in range(len(wire)):
        if cut >= limit:
            assert decode(wire[:cut]).encode() == wire[:cut]
            continue
        if cut == notify_without_trailer:
            shorter = decode(wire[:cut])
            assert isinstance(shorter, MapNotify) and shorter.xtr_id is None
            continue
        with pytest.raises(LispDecodeError):
            decode(wire[:cut])


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_every_truncation_of_vectors(name: str) -> None:
    _every_truncation_fails(VECTORS[name])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s.messages())
def test_every_truncation_of_generated(msg: LispMessage) -> None:
    _every_truncation_fails(msg.encode())


def _decode_or_error(data: bytes) -> None:
    try:
        msg = decode(data)
    except LispDecodeError as exc:
        assert "offset" in str(exc) or "ECM" in str(exc)
        return
    # Whatever decodes is a whole object that encodes again.
    msg.encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s.messages(), st.data())
def test_random_mutations_decode_or_raise(msg: LispMessage, data: st.DataObject) -> None:
    wire = bytearray(msg.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    _decode_or_error(bytes(wire))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_decode_or_raise(data: bytes) -> None:
    _decode_or_error(data)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_every_single_byte_flip_of_vectors(name: str) -> None:
    wire = VECTORS[name]
    for i in range(len(wire)):
        for mask in (0x01, 0x80, 0xFF):
            mutated = bytearray(wire)
            mutated[i] ^= mask
            _decode_or_error(bytes(mutated))


# --- specific malformations --------------------------------------------------


def _raises(data: bytes, *words: str) -> str:
    with pytest.raises(LispDecodeError) as info:
        decode(data)
    text = str(info.value)
    for w in words:
        assert w in text, text
    return text


def test_empty() -> None:
    _raises(b"", "offset 0")


@pytest.mark.parametrize("msg_type", [0, 6, 7, 9, 15])
def test_unknown_or_unsupported_type(msg_type: int) -> None:
    _raises(bytes([msg_type << 4]) + bytes(15), f"type {msg_type}", "offset 0")


def test_irc_says_three_but_two_present() -> None:
    wire = bytearray(tv.MAP_REQUEST_V4)
    wire[2] = (wire[2] & 0xE0) | 2  # IRC = 2 -> three ITR-RLOCs
    # the third "RLOC" is read from the EID record and the record then runs off the end
    _raises(bytes(wire), "offset")
    # with the record gone too, the third RLOC itself is missing
    cut = bytes(wire[:12 + 6 + 6 + 6])
    _raises(cut, "ITR-RLOC", "offset 30")


def test_bad_afi() -> None:
    wire = bytearray(tv.MAP_REQUEST_V4)
    wire[12:14] = b"\x00\x06"  # AFI 6 (IEEE 802) is not supported
    _raises(bytes(wire), "AFI 6", "offset 12")


def test_lcaf_length_overrun() -> None:
    wire = bytearray(tv.MAP_REQUEST_LCAF)
    # the unknown LCAF at offset 12 says its body is 0x0400 bytes long
    wire[18:20] = b"\x04\x00"
    _raises(bytes(wire), "LCAF", "overruns", "offset 18")


def test_instance_id_length_disagrees_with_inner_address() -> None:
    data = bytes.fromhex("4003 0000 0200 000c 000000df 0001 0a010000 0000")
    with pytest.raises(LispDecodeError, match="does not match"):
        decode_address(data, 0, "EID")


def test_instance_id_mask_len_over_32() -> None:
    data = bytes.fromhex("4003 0000 0221 000a 000000df 0001 0a010000")
    with pytest.raises(LispDecodeError, match="IID mask-len 33"):
        decode_address(data, 0, "EID")


def test_lcaf_nesting_is_bounded() -> None:
    inner = bytes.fromhex("0000")
    for _ in range(50):
        inner = struct.pack("!HBBBBH", 16387, 0, 0, 1, 0, len(inner)) + inner
    with pytest.raises(LispDecodeError, match="nested"):
        decode_address(inner, 0, "EID")


def test_zero_records_in_map_request() -> None:
    wire = bytearray(tv.MAP_REQUEST_V4)
    wire[3] = 0
    _raises(bytes(wire[:30]), "Record Count 0", "offset 3")


def test_mask_longer_than_address_on_the_wire() -> None:
    wire = bytearray(tv.MAP_REQUEST_V4)
    wire[31] = 33  # /33 on an IPv4 EID
    _raises(bytes(wire), "mask-len 33", "offset 31")


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_trailing_garbage(name: str) -> None:
    _raises(VECTORS[name] + b"\x00", "offset")


def test_trailing_bytes_are_security_data_only_with_s_bit() -> None:
    secure = bytearray(tv.MAP_REPLY + b"\x01\x02")
    secure[0] |= 0x02  # S bit (bit 6)
    msg = decode(bytes(secure))
    assert isinstance(msg, MapReply) and msg.security_data == b"\x01\x02"


def test_auth_length_overrun() -> None:
    wire = bytearray(tv.MAP_REGISTER)
    wire[14:16] = b"\xff\xff"
    _raises(bytes(wire), "Authentication Data Length 65535", "offset 14")


def test_i_bit_without_xtr_id() -> None:
    _raises(tv.MAP_REGISTER[:-24], "xTR-ID", "offset")


def test_ecm_bad_inner_udp_checksum() -> None:
    wire = bytearray(tv.ecm_v4_bytes())
    wire[-1] ^= 0xFF  # inner payload changed, checksum no longer matches
    _raises(bytes(wire), "checksum")


def test_ecm_bad_inner_ip_checksum() -> None:
    wire = bytearray(tv.ecm_v4_bytes())
    wire[4 + 10] ^= 0xFF
    _raises(bytes(wire), "checksum", "offset")


def test_ecm_inside_ecm_is_refused() -> None:
    outer = EncapsulatedControlMessage(inner=decode(tv.MAP_REQUEST_V4), source=V4, destination=V4)  # type: ignore[arg-type]
    inner_ecm = tv.ecm_v4_bytes()
    wire = b"\x80\x00\x00\x00" + udp_packet(V4, V4, 4342, 4342, inner_ecm)
    _raises(wire, "type 8", "cannot be encapsulated")
    assert outer.encode()  # the legal one is fine


def test_ecm_inner_not_udp() -> None:
    wire = b"\x80\x00\x00\x00" + ipv4_header(V4, V4, 6, 0)
    _raises(wire, "ECM inner IP/UDP", "protocol")


def test_decode_accepts_bytearray_and_memoryview() -> None:
    assert decode(bytearray(tv.MAP_REPLY)) == decode(tv.MAP_REPLY)  # type: ignore[arg-type]
    assert decode(memoryview(tv.MAP_REPLY)) == decode(tv.MAP_REPLY)  # type: ignore[arg-type]


# --- encode-time refusals ----------------------------------------------------

REPLY = MapReply(1, ())
REQ: dict[str, Any] = {"nonce": 1, "source_eid": V4, "itr_rlocs": (V4,), "records": (EidRecord(V4, 32),)}


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: MapRequest(**{**REQ, "itr_rlocs": (V4,) * 33}), "33 ITR-RLOCs"),
        (lambda: MapRequest(**{**REQ, "itr_rlocs": ()}), "0 ITR-RLOCs"),
        (lambda: MapRequest(**{**REQ, "records": ()}), "0 EID records"),
        (lambda: MapRequest(**{**REQ, "records": (EidRecord(V4, 32),) * 256}), "256 EID records"),
        (lambda: MapRequest(**{**REQ, "nonce": 1 << 64}), "nonce"),
        (lambda: MapRequest(**{**REQ, "nonce": -1}), "nonce"),
        (lambda: MapRequest(**{**REQ, "itr_rlocs": ("192.0.2.1",)}), "not a LISP address"),
        (lambda: EidRecord(V4, 33), "mask-len 33"),
        (lambda: EidRecord(V6, 129), "mask-len 129"),
        (lambda: EidRecord(None, 1), "mask-len 1"),
        (lambda: EidRecord(InstanceId(1, V4), 33), "mask-len 33"),
        (lambda: MappingRecord(V4, 8, ttl=1 << 32), "TTL"),
        (lambda: MappingRecord(V4, 8, ttl=-1), "TTL"),
        (lambda: MappingRecord(V4, 8, map_version=4096), "map-version"),
        (lambda: MappingRecord(V4, 8, locators=(Locator(V4),) * 256), "256 locators"),
        (lambda: Locator(V4, priority=256), "priority"),
        (lambda: Locator(V4, weight=-1), "weight"),
        (lambda: Locator(V4, m_priority=300), "m_priority"),
        (lambda: Locator(V4, m_weight=1000), "m_weight"),
        (lambda: InstanceId(1 << 32, V4), "Instance ID"),
        (lambda: InstanceId(1, V4, iid_mask_len=33), "IID mask-len"),
        (lambda: UnknownLcaf(lcaf_type=2, body=b""), "understood"),
        (lambda: UnknownLcaf(lcaf_type=256, body=b""), "lcaf_type"),
        (lambda: AfiList(("x",)), "not a LISP address"),  # type: ignore[arg-type]
        (lambda: MapReply(nonce=1, records=(), security_data=b"x"), "S bit"),
        (lambda: MapReply(nonce=1, records=(MappingRecord(V4, 8),) * 256), "256 records"),
        (lambda: MapRegister(nonce=1, records=(), key_id=256), "key ID"),
        (lambda: MapRegister(nonce=1, records=(), algorithm_id=-1), "algorithm ID"),
        (lambda: MapRegister(nonce=1, records=(), auth_data=bytes(65536)), "65535"),
        (lambda: MapRegister(nonce=1, records=(), xtr_id=1), "go together"),
        (lambda: MapRegister(nonce=1, records=(), xtr_id=1 << 128, site_id=0), "xTR-ID"),
        (lambda: MapNotify(nonce=1, records=(), xtr_id=0, site_id=1 << 64), "site-ID"),
        (lambda: EncapsulatedControlMessage(inner=MapReply(1, ()), source=V4, destination=V6), "family"),
        (lambda: EncapsulatedControlMessage(inner=REPLY, source=V4, destination=V4, ttl=256), "TTL"),
        (
            lambda: EncapsulatedControlMessage(inner=REPLY, source=V4, destination=V4, source_port=1 << 16),
            "source_port",
        ),
        (
            lambda: EncapsulatedControlMessage(
                inner=EncapsulatedControlMessage(inner=MapReply(1, ()), source=V4, destination=V4),  # type: ignore[arg-type]
                source=V4,
                destination=V4,
            ),
            "cannot be encapsulated",
        ),
        (
            lambda: EncapsulatedControlMessage(inner=REPLY, source=V4, destination=V4, security_data=b"\x01"),
            "S bit",
        ),
        (  # RFC 9301 §5.8: a receiver reads a 4 or 6 after the header as the inner IP version
            lambda: EncapsulatedControlMessage(
                inner=REPLY, source=V4, destination=V4, security=True, security_data=b"\x45"
            ),
            "IP version",
        ),
        (lambda: EncapsulatedControlMessage(inner=REPLY, source=V6, destination=V6, ident=1), "IPv4 only"),
        (
            lambda: EncapsulatedControlMessage(inner=REPLY, source=V6, destination=V6, dont_fragment=False),
            "IPv4 only",
        ),
        (
            lambda: EncapsulatedControlMessage(inner=REPLY, source=V4, destination=V4, flow_label=1),
            "IPv6 only",
        ),
        (lambda: EncapsulatedControlMessage(inner=REPLY, source=V4, destination=V4, tos=256), "TOS"),
    ],
)
def test_impossible_objects_are_refused(build: Any, words: str) -> None:
    with pytest.raises(LispEncodeError, match=words):
        build()


def test_ecm_too_big_for_udp_is_refused_at_encode() -> None:
    big = MapRegister(nonce=1, records=(), auth_data=bytes(65535))
    ecm = EncapsulatedControlMessage(inner=big, source=V4, destination=V4)
    with pytest.raises(LispEncodeError, match="ECM inner packet"):
        ecm.encode()
