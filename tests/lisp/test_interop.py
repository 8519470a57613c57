"""What the deployed LISP implementations send, byte for byte, and how we take it.

Each vector is built here with ``struct``/``hmac`` as the peer builds it, not with
the codec: full-length MACs, an xTR-ID/site-ID inside the MAC, the Map-Notify I
bit, the reserved Map-Register bit 22, LISP-SEC ECM Authentication Data.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from ipaddress import IPv4Address, IPv6Address

import pytest

from alt_router.lisp import (
    HMAC_SHA_1_96,
    HMAC_SHA_256_128,
    AuthKind,
    EidRecord,
    EncapsulatedControlMessage,
    LispEncodeError,
    Locator,
    MapNotify,
    MappingRecord,
    MapRegister,
    MapRequest,
    auth_length,
    authenticate,
    decode,
    sign,
    sign_like,
    sorted_locators,
    verify,
    with_sorted_locators,
)

KEY = b"interop-key"
# One mapping record: TTL 1440, 1 locator, 10.2.0.0/16, A bit; locator 192.0.2.9 p1 w100, L and R.
RECORD = bytes.fromhex("000005a0 01 10 1000 0000 0001 0a020000 01 64 ff 00 0005 0001 c0000209")
XTR_TRAILER = bytes.fromhex("000102030405060708090a0b0c0d0e0f" "0000000000000063")


def register_bytes(
    alg: int, length: int, *, flags: int = 0x000100, xtr: bool = False, mac_over_xtr: bool = False,
    key: bytes = KEY, msg_type: int = 3,
) -> bytes:
    """A Map-Register (or, with ``msg_type``, Map-Notify) as a peer signs it."""
    word = (msg_type << 28) | flags | (0x02000000 if xtr and msg_type == 3 else 0) | 1
    head = struct.pack("!IQBBH", word, 0x1122334455667788, 0, alg, length)
    zeroed = head + bytes(length) + RECORD + (XTR_TRAILER if xtr else b"")
    covered = zeroed if mac_over_xtr or not xtr else zeroed[: -len(XTR_TRAILER)]
    digest = hashlib.sha1 if alg == HMAC_SHA_1_96 else hashlib.sha256
    mac = hmac.new(key, covered, digest).digest()[:length]
    return head + mac + zeroed[len(head) + length:]


@pytest.mark.parametrize(
    ("alg", "length", "kind"),
    [
        (HMAC_SHA_1_96, 20, AuthKind.SHA1_FULL),
        (HMAC_SHA_256_128, 32, AuthKind.SHA256_FULL),
        (HMAC_SHA_1_96, 12, AuthKind.SHA1_96),
        (HMAC_SHA_256_128, 16, AuthKind.SHA256_128),
    ],
)
def test_every_length_a_peer_sends_verifies_and_is_named(alg: int, length: int, kind: AuthKind) -> None:
    # RFC 9301 §5.6 "Authentication Data Length ... allows a device that doesn't know
    # the MAC algorithm to correctly parse the packet": the records after a 20- or
    # 32-byte MAC decode, and the MAC verifies at the length the peer chose.
    wire = register_bytes(alg, length)
    msg = decode(wire)
    assert isinstance(msg, MapRegister) and len(msg.auth_data) == length
    assert msg.records[0].locators[0].address == IPv4Address("192.0.2.9")
    found = authenticate(wire, KEY)
    assert found is not None and found.kind == kind and str(found.kind) == kind.value
    assert found.truncated == (length in (12, 16))
    assert authenticate(wire, b"other key") is None


def test_other_lengths_do_not_verify() -> None:
    # A SHA-256 MAC cut to 20 bytes is no length the algorithm produces.
    wire = register_bytes(HMAC_SHA_256_128, 20)
    assert authenticate(wire, KEY) is None


def test_sign_writes_the_full_digest_by_default() -> None:
    # Both deployed peers expect the whole digest; one refuses shorter
    # ("Invalid sha2-256 authentication length").
    msg = MapRegister(0x1122334455667788, (decode_record(),), want_map_notify=True)
    assert len(sign(msg, KEY, algorithm_id=HMAC_SHA_256_128).auth_data) == 32
    assert len(sign(msg, KEY, algorithm_id=HMAC_SHA_1_96).auth_data) == 20
    assert len(sign(msg, KEY, algorithm_id=HMAC_SHA_256_128, truncated=True).auth_data) == 16
    assert len(sign(msg, KEY, algorithm_id=HMAC_SHA_1_96, truncated=True).auth_data) == 12
    assert sign(msg, KEY, algorithm_id=HMAC_SHA_1_96).encode() == register_bytes(HMAC_SHA_1_96, 20)
    assert (auth_length(HMAC_SHA_256_128), auth_length(HMAC_SHA_256_128, truncated=True)) == (32, 16)
    with pytest.raises(LispEncodeError, match="length 20"):
        sign(msg, KEY, algorithm_id=HMAC_SHA_256_128, length=20)


def decode_record() -> MappingRecord:
    msg = decode(register_bytes(HMAC_SHA_1_96, 20))
    assert isinstance(msg, MapRegister)
    return msg.records[0]


@pytest.mark.parametrize(("alg", "length"), [(1, 12), (1, 20), (2, 16), (2, 32)])
def test_map_notify_mac_as_long_as_the_map_register(alg: int, length: int) -> None:
    # RFC 9301 §5.7: "The fields of the Map-Notify are copied from the corresponding Map-Register".
    register = register_bytes(alg, length)
    reg = decode(register)
    assert isinstance(reg, MapRegister)
    notify = sign_like(MapNotify(reg.nonce, reg.records), KEY, register)
    assert (notify.algorithm_id, len(notify.auth_data)) == (alg, length)
    assert verify(notify.encode(), KEY)
    assert sign_like(MapNotify(reg.nonce, reg.records), KEY, reg) == notify


def test_i_bit_registration_with_the_mac_over_the_xtr_id() -> None:
    # One deployed peer computes the MAC over the whole message, xTR-ID/site-ID included;
    # RFC 9301 §5.6 step 5 stops at the last RLOC-Record.  Both verify; the result says which.
    theirs = register_bytes(HMAC_SHA_256_128, 32, xtr=True, mac_over_xtr=True)
    rfc = register_bytes(HMAC_SHA_256_128, 32, xtr=True)
    assert theirs != rfc
    found_theirs, found_rfc = authenticate(theirs, KEY), authenticate(rfc, KEY)
    assert found_theirs is not None and found_theirs.mac_over_xtr_id
    assert found_rfc is not None and not found_rfc.mac_over_xtr_id
    msg = decode(rfc)
    assert isinstance(msg, MapRegister)
    assert (msg.xtr_id, msg.site_id) == (0x000102030405060708090A0B0C0D0E0F, 0x63)
    # We sign the RFC form, and the other one when asked.
    unsigned = MapRegister(msg.nonce, msg.records, algorithm_id=2, want_map_notify=True,
                           xtr_id=msg.xtr_id, site_id=msg.site_id)
    assert sign(unsigned, KEY).encode() == rfc
    assert sign(unsigned, KEY, mac_over_xtr_id=True).encode() == theirs


def test_map_register_bit_22_is_reserved() -> None:
    # RFC 9301 §5.6: "R: This reserved and unassigned bit MUST be set to 0 on transmit and
    # MUST be ignored on receipt" (bit 22; older drafts called it m, mobile node).
    wire = register_bytes(HMAC_SHA_1_96, 20, flags=0x000300)  # M and bit 22
    msg = decode(wire)
    assert isinstance(msg, MapRegister) and msg.want_map_notify
    assert not hasattr(msg, "mobile_node")
    assert msg.encode()[:4] == bytes.fromhex("30 00 01 01")  # sent as 0
    assert verify(wire, KEY)  # the received bytes, bit 22 and all


@pytest.mark.parametrize(
    ("flag", "field", "word"),
    [  # RFC 9301 §5.6 figure: |Type=3 |P|S|I| Reserved |E|T|a|R|M| Record Count |
        ("proxy_reply", "P", 0x38000000),
        ("security", "S", 0x34000000),
        ("eid_notify", "E", 0x30001000),
        ("use_ttl", "T", 0x30000800),
        ("merge", "a", 0x30000400),
        ("want_map_notify", "M", 0x30000100),
    ],
)
def test_map_register_flag_positions(flag: str, field: str, word: int) -> None:
    msg = MapRegister(1, (), **{flag: True})  # type: ignore[arg-type]
    assert msg.encode()[:4] == struct.pack("!I", word), field
    assert decode(msg.encode()) == msg
    with_i = MapRegister(1, (), xtr_id=1, site_id=2)
    assert with_i.encode()[:4] == bytes.fromhex("32 00 00 00")  # I, bit 6


def test_map_notify_we_send_has_no_i_bit_and_no_xtr_id() -> None:
    # RFC 9301 §5.7 figure: |Type=4/5| Reserved | Record Count |, no xTR-ID.
    reg = register_bytes(HMAC_SHA_256_128, 32, xtr=True)
    msg = decode(reg)
    assert isinstance(msg, MapRegister)
    notify = sign_like(MapNotify(msg.nonce, msg.records), KEY, reg).encode()
    assert notify[:4] == bytes.fromhex("40 00 00 01")
    assert len(notify) == 16 + 32 + len(RECORD)
    ack = sign_like(MapNotify(msg.nonce, msg.records, ack=True), KEY, reg).encode()
    assert ack[:4] == bytes.fromhex("50 00 00 01")


def test_map_notify_from_a_peer_with_i_bit_and_trailer() -> None:
    # Deployed Map-Servers copy I and the xTR-ID/site-ID into the Map-Notify, MAC over all of it.
    wire = register_bytes(HMAC_SHA_1_96, 20, flags=0x08000000, xtr=True, mac_over_xtr=True, msg_type=4)
    msg = decode(wire)
    assert isinstance(msg, MapNotify) and not msg.ack
    assert (msg.xtr_id, msg.site_id) == (0x000102030405060708090A0B0C0D0E0F, 0x63)
    found = authenticate(wire, KEY)
    assert found is not None and found.kind == AuthKind.SHA1_FULL and found.mac_over_xtr_id


def test_map_notify_bit_4_without_trailer_is_ignored() -> None:
    # RFC 9301 §5.7: the bit is reserved; with nothing after the records it is no I bit.
    wire = register_bytes(HMAC_SHA_256_128, 32, flags=0x08000000, msg_type=4)
    msg = decode(wire)
    assert isinstance(msg, MapNotify) and msg.xtr_id is None
    assert verify(wire, KEY)


def test_sorted_locators_rfc9301_5_5() -> None:
    # RFC 9301 §5.5: "sorted in order of ascending IP address where an IPv4 Routing
    # Locator Address is considered numerically 'less than' an IPv6" one.
    locs = tuple(Locator(a) for a in (
        IPv6Address("2001:db8::1"), IPv4Address("192.0.2.10"), IPv4Address("10.0.0.1"),
        IPv6Address("2001:db8::"), IPv4Address("192.0.2.9"),
    ))
    assert [str(loc.address) for loc in sorted_locators(locs)] == [
        "10.0.0.1", "192.0.2.9", "192.0.2.10", "2001:db8::", "2001:db8::1",
    ]
    record = MappingRecord(IPv4Address("10.0.0.0"), 8, locators=locs)
    assert with_sorted_locators(record).locators == sorted_locators(locs)
    # The codec keeps the order it is given: sorting is the Map-Reply sender's job.
    assert decode_record_order(record) == locs


def decode_record_order(record: MappingRecord) -> tuple[Locator, ...]:
    msg = decode(MapRegister(1, (record,)).encode())
    assert isinstance(msg, MapRegister)
    return msg.records[0].locators


def test_ecm_with_opaque_authentication_data_is_found_by_the_inner_header() -> None:
    # RFC 9301 §5.8: with S, the AD follows the header; an AD whose lengths we cannot read
    # (an unknown AD Type) still decodes, by where a whole inner IP/UDP packet starts.
    inner = MapRequest(7, None, (IPv4Address("192.0.2.1"),), (EidRecord(IPv4Address("10.0.0.1"), 32),))
    ecm = EncapsulatedControlMessage(inner, IPv4Address("192.0.2.1"), IPv4Address("10.0.0.1"),
                                     security=True, security_data=b"\x07" + bytes(30))
    wire = ecm.encode()
    assert wire[4:35] == b"\x07" + bytes(30) and wire[35] == 0x45
    assert decode(wire) == ecm


@pytest.mark.parametrize(
    ("flags", "first_byte"),
    [  # RFC 9301 §5.8 figure: |Type=8 |S|D|R|R| Reserved |; bits 6-7 are the drafts' E and M
        ({"security": True}, 0x88),
        ({"ddt": True}, 0x84),
        ({"to_etr": True}, 0x82),
        ({"to_ms": True}, 0x81),
    ],
)
def test_ecm_flag_positions(flags: dict[str, bool], first_byte: int) -> None:
    inner = MapRequest(7, None, (IPv4Address("192.0.2.1"),), (EidRecord(IPv4Address("10.0.0.1"), 32),))
    ecm = EncapsulatedControlMessage(inner, IPv4Address("192.0.2.1"), IPv4Address("10.0.0.1"), **flags)  # type: ignore[arg-type]
    wire = ecm.encode()
    assert wire[:4] == bytes((first_byte, 0, 0, 0))
    assert decode(wire) == ecm
