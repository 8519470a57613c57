"""Hand-written byte vectors from the RFC 9301 / RFC 8060 layouts.

Each vector has its bit layout above it (the RFC diagram, our values filled in).
The test decodes it, checks every field, and encodes the expected object back
to exactly the same bytes.  Checksums and MACs are computed here independently
of the codec (own RFC 1071 sum, hashlib/hmac).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

import pytest

from alt_router.lisp import (
    Action,
    AfiList,
    AuthKind,
    EidRecord,
    EncapsulatedControlMessage,
    InstanceId,
    LispDecodeError,
    LispMessage,
    Locator,
    MapNotify,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    MessageType,
    UnknownLcaf,
    Verified,
    authenticate,
    decode,
    message_type,
    sign,
    verify,
)


def h(text: str) -> bytes:
    """Hex with spaces, newlines and '#' comments."""
    return bytes.fromhex("".join(line.split("#")[0] for line in text.splitlines()))


def v4(s: str) -> IPv4Address:
    return IPv4Address(s)


def v6(s: str) -> IPv6Address:
    return IPv6Address(s)


def check(wire: bytes, expected: LispMessage) -> None:
    assert decode(wire) == expected
    assert expected.encode() == wire


# --- Map-Request, IPv4 -------------------------------------------------------
#  0                   1                   2                   3
#  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |Type=1 |A|M|P|S|p|s|R|R|  Rsvd   |L|D|   IRC   | Record Count  |
# |0 0 0 1|1|0|0|0|1|0|0|0|0 0 0 0 0|1|0|0 0 0 0 1|       1       |  18 80 41 01
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |                 Nonce = 0x0102030405060708                    |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# |      Source-EID-AFI = 1       |   Source EID = 10.0.0.1       |
# |      ITR-RLOC-AFI 1 = 1       |   ITR-RLOC 1 = 192.0.2.1      |
# |      ITR-RLOC-AFI 2 = 1       |   ITR-RLOC 2 = 192.0.2.2      |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
# | Reserved = 0  | mask-len = 24 |     EID-Prefix-AFI = 1        |
# |                   EID-Prefix = 10.1.2.0                       |
# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
MAP_REQUEST_V4 = h("""
18 80 41 01
01 02 03 04 05 06 07 08
0001 0a000001
0001 c0000201
0001 c0000202
00 18 0001 0a010200
""")


def test_map_request_ipv4() -> None:
    check(
        MAP_REQUEST_V4,
        MapRequest(
            nonce=0x0102030405060708,
            source_eid=v4("10.0.0.1"),
            itr_rlocs=(v4("192.0.2.1"), v4("192.0.2.2")),
            records=(EidRecord(v4("10.1.2.0"), 24),),
            authoritative=True,
            pitr=True,
            local_xtr=True,
        ),
    )


# --- Map-Request, IPv6 ITR-RLOC, no source EID, M bit with a Map-Reply record ---
# |Type=1 |A|M|P|S|p|s|R|R|  Rsvd   |L|D|   IRC   | Record Count  |
# |0 0 0 1|0|1|1|1|0|1|0|0|0 0 0 0 0|0|1|0 0 0 0 1|       1       |  17 40 21 01
# |                         Nonce = 0xffffffff00000001            |
# |      Source-EID-AFI = 0       |  (no address)
# |      ITR-RLOC-AFI 1 = 2       |   2001:db8::1 (16 bytes) ...
# |      ITR-RLOC-AFI 2 = 1       |   192.0.2.9
# | Reserved = 0  | mask-len = 48 |     EID-Prefix-AFI = 2        |
# |                   EID-Prefix = 2001:db8:1:: ...               |
# Map-Reply record:
# |                       Record TTL = 60                         |
# | Locator Count = 1 | EID mask-len = 48 | ACT=0 |A=1| Reserved  |  01 30 10 00
# | Rsvd  |  Map-Version Number = 7   |     EID-Prefix-AFI = 2    |  00 07 00 02
# |                   EID-Prefix = 2001:db8:1:: ...               |
# |  Priority = 1 |  Weight = 100 | M Priority=255| M Weight = 0  |
# |        Unused Flags     |L=1|p=0|R=1|      Loc-AFI = 1        |  00 05 00 01
# |                      Locator = 192.0.2.9                      |
MAP_REQUEST_V6 = h("""
17 40 21 01
ff ff ff ff 00 00 00 01
0000
0002 20010db8000000000000000000000001
0001 c0000209
00 30 0002 20010db8000100000000000000000000
0000003c 01 30 1000 0007 0002 20010db8000100000000000000000000
01 64 ff 00 0005 0001 c0000209
""")


def test_map_request_ipv6_with_map_reply_record() -> None:
    check(
        MAP_REQUEST_V6,
        MapRequest(
            nonce=0xFFFFFFFF00000001,
            source_eid=None,
            itr_rlocs=(v6("2001:db8::1"), v4("192.0.2.9")),
            records=(EidRecord(v6("2001:db8:1::"), 48),),
            probe=True,
            smr=True,
            smr_invoked=True,
            dont_map_reply=True,
            map_reply=MappingRecord(
                eid=v6("2001:db8:1::"),
                mask_len=48,
                ttl=60,
                locators=(Locator(v4("192.0.2.9"), priority=1, weight=100, local=True, reachable=True),),
                authoritative=True,
                map_version=7,
            ),
        ),
    )
    msg = decode(MAP_REQUEST_V6)
    assert isinstance(msg, MapRequest) and msg.map_reply is not None  # the M bit


# --- Map-Request with LCAF addresses -----------------------------------------
# Source EID: an unknown LCAF (type 14, JSON), kept opaque:
# |        AFI = 16387            |   Rsvd1 = 0   |   Flags = 0x80|  4003 00 80
# |   Type = 14   |   Rsvd2 = 3   |         Length = 4            |  0e 03 0004
# |                     body = "{}\n\0"                           |  7b 7d 0a 00
# ITR-RLOC 1: an AFI-List (RFC 8060 §4.16.1) of an IPv4 and an IPv6 address:
# |        AFI = 16387            |   Rsvd1 = 0   |   Flags = 0   |  4003 00 00
# |   Type = 1    |   Rsvd2 = 0   |         Length = 24           |  01 00 0018
# |           AFI = 1             |       192.0.2.1 ...           |
# |           AFI = 2             |       2001:db8::1 ...         |
# EID record: 10.1.0.0/16 in Instance-ID 223 (RFC 8060 §4.1):
# | Reserved = 0  | mask-len = 16 |        AFI = 16387            |  00 10 4003
# |   Rsvd1 = 0   |    Flags = 0  |   Type = 2    | IID mlen = 0  |  00 00 02 00
# |         Length = 10           |   Instance ID = 223 ...       |  000a 000000df
# |           AFI = 1             |       10.1.0.0                |
MAP_REQUEST_LCAF = h("""
10 00 00 01
00 00 00 00 00 00 00 2a
4003 00 80 0e 03 0004 7b7d0a00
4003 00 00 01 00 0018 0001 c0000201 0002 20010db8000000000000000000000001
00 10 4003 00 00 02 00 000a 000000df 0001 0a010000
""")


def test_map_request_lcaf_addresses() -> None:
    check(
        MAP_REQUEST_LCAF,
        MapRequest(
            nonce=42,
            source_eid=UnknownLcaf(lcaf_type=14, body=b"{}\n\x00", flags=0x80, rsvd2=3),
            itr_rlocs=(AfiList((v4("192.0.2.1"), v6("2001:db8::1"))),),
            records=(EidRecord(InstanceId(223, v4("10.1.0.0")), 16),),
        ),
    )


def test_instance_id_mask_len_and_nesting() -> None:
    # IID mask-len 24 in Rsvd2; inner address AFI 0 (the whole instance).
    wire = h("""
    10 00 00 01  0000000000000001
    0000  0001 c0000201
    00 00 4003 00 00 02 18 0006 00000100 0000
    """)
    check(
        wire,
        MapRequest(
            nonce=1,
            source_eid=None,
            itr_rlocs=(v4("192.0.2.1"),),
            records=(EidRecord(InstanceId(256, None, iid_mask_len=24), 0),),
        ),
    )


# --- Map-Reply, positive -----------------------------------------------------
# |Type=2 |P|E|S|          Reserved               | Record Count  |
# |0 0 1 0|1|1|0|0 0 0 ...                    0  |       1       |  2c 00 00 01
# |                       Nonce = 0x1122334455667788              |
# |                       Record TTL = 1440                       |  000005a0
# | Locator Count = 2 | EID mask-len = 24 | ACT=0 |A=1| Reserved  |  02 18 1000
# | Rsvd  |  Map-Version Number = 0xabc |     EID-Prefix-AFI = 1  |  0abc 0001
# |                   EID-Prefix = 10.1.2.0                       |
# |  Priority = 1 |  Weight = 50  | M Priority=255| M Weight = 0  |  01 32 ff 00
# |        Unused Flags     |L=1|p=1|R=1|      Loc-AFI = 1        |  0007 0001
# |                      Locator = 192.0.2.1                      |
# |  Priority = 2 |  Weight = 50  | M Priority= 1 | M Weight = 10 |  02 32 01 0a
# |        Unused Flags     |L=0|p=0|R=1|      Loc-AFI = 2        |  0001 0002
# |                      Locator = 2001:db8::1 ...                |
MAP_REPLY = h("""
2c 00 00 01  1122334455667788
000005a0 02 18 1000 0abc 0001 0a010200
01 32 ff 00 0007 0001 c0000201
02 32 01 0a 0001 0002 20010db8000000000000000000000001
""")


def test_map_reply() -> None:
    check(
        MAP_REPLY,
        MapReply(
            nonce=0x1122334455667788,
            probe=True,
            echo_nonce=True,
            records=(
                MappingRecord(
                    eid=v4("10.1.2.0"),
                    mask_len=24,
                    ttl=1440,
                    authoritative=True,
                    map_version=0xABC,
                    locators=(
                        Locator(v4("192.0.2.1"), 1, 50, 255, 0, local=True, probed=True, reachable=True),
                        Locator(v6("2001:db8::1"), 2, 50, 1, 10, reachable=True),
                    ),
                ),
            ),
        ),
    )


# --- Negative Map-Reply: two records, no locators -----------------------------
# |Type=2 |P|E|S|          Reserved               | Record Count=2|  20 00 00 02
# |                       Nonce = 7                               |
# Record 1: TTL 15, 0 locators, 0.0.0.0/0 Natively-Forward (ACT=1):
# | Locator Count = 0 | EID mask-len = 0 | ACT=001|A=0|  Reserved |  00 00 2000
# Record 2: TTL 1, 0 locators, 2001:db8::/32 Drop/Auth-Failure (ACT=5), A=1:
# | Locator Count = 0 | EID mask-len = 32| ACT=101|A=1|  Reserved |  00 20 b000
NEGATIVE_MAP_REPLY = h("""
20 00 00 02  0000000000000007
0000000f 00 00 2000 0000 0001 00000000
00000001 00 20 b000 0000 0002 20010db8000000000000000000000000
""")


def test_negative_map_reply() -> None:
    check(
        NEGATIVE_MAP_REPLY,
        MapReply(
            nonce=7,
            records=(
                MappingRecord(v4("0.0.0.0"), 0, ttl=15, action=Action.NATIVELY_FORWARD),
                MappingRecord(
                    v6("2001:db8::"), 32, ttl=1, action=Action.DROP_AUTH_FAILURE, authoritative=True
                ),
            ),
        ),
    )
    msg = decode(NEGATIVE_MAP_REPLY)
    assert isinstance(msg, MapReply)
    assert all(r.negative for r in msg.records)
    assert msg.records[1].action is Action.DROP_AUTH_FAILURE


@pytest.mark.parametrize("act", list(Action))
def test_every_action_code(act: Action) -> None:
    word = (act << 13) | 0x1000
    head = h("20 00 00 01 0000000000000000 00000005 00 08")
    wire = head + struct.pack("!H", word) + h("0000 0001 0a000000")
    msg = decode(wire)
    assert isinstance(msg, MapReply)
    assert msg.records[0].action == act and msg.records[0].authoritative
    assert msg.encode() == wire


# --- Map-Register with the I bit, HMAC-SHA-1-96 --------------------------------
# |Type=3 |P|S|I|        Reserved       |E|T|a|m|M| Record Count  |
# |0 0 1 1|1|0|1|0 0 0 0 0 0 0 0 0 0 0 0|0|1|0|0|1|       1       |  3a 00 09 01
# (RFC 9301 §5.6: E at bit 19, T bit 20, a bit 21, R (reserved) bit 22, M bit 23)
# |                       Nonce = 0x0000000000abcdef              |
# |  Key ID = 0   | Algorithm = 1 | Authentication Data Length=12 |  00 01 000c
# ~                     Authentication Data (12 bytes)            ~
# |                       Record TTL = 1440                       |
# | Locator Count = 1 | EID mask-len = 16 | ACT=0 |A=1| Reserved  |
# | Rsvd  |  Map-Version Number = 0   |     EID-Prefix-AFI = 1    |
# |                   EID-Prefix = 10.1.0.0                       |
# |  Priority = 1 |  Weight = 100 | M Priority=255| M Weight = 0  |
# |        Unused Flags     |L=1|p=0|R=1|      Loc-AFI = 1        |
# |                      Locator = 192.0.2.1                      |
# |                 xTR-ID (128 bits) = 0x0102...0f10             |
# |                 site-ID (64 bits) = 0x00000000000004d2        |
KEY = b"it's a secret"
REGISTER_ZEROED = h("""
3a 00 09 01  0000000000abcdef
00 01 000c  000000000000000000000000
000005a0 01 10 1000 0000 0001 0a010000
01 64 ff 00 0005 0001 c0000201
0102030405060708090a0b0c0d0e0f10
00000000000004d2
""")
# RFC 9301 §5.6 step 5: the MAC runs "through the end of the last RLOC-Record", not over the xTR-ID.
REGISTER_MAC = hmac.new(KEY, REGISTER_ZEROED[:-24], hashlib.sha1).digest()[:12]
MAP_REGISTER = REGISTER_ZEROED[:16] + REGISTER_MAC + REGISTER_ZEROED[28:]

REGISTER_OBJ = MapRegister(
    nonce=0xABCDEF,
    key_id=0,
    algorithm_id=1,
    auth_data=REGISTER_MAC,
    proxy_reply=True,
    use_ttl=True,
    want_map_notify=True,
    xtr_id=0x0102030405060708090A0B0C0D0E0F10,
    site_id=1234,
    records=(
        MappingRecord(
            v4("10.1.0.0"), 16, ttl=1440, authoritative=True,
            locators=(Locator(v4("192.0.2.1"), 1, 100, 255, 0, local=True, reachable=True),),
        ),
    ),
)


def test_map_register_with_xtr_id() -> None:
    check(MAP_REGISTER, REGISTER_OBJ)


def test_hmac_sha1_96_vector() -> None:
    assert verify(MAP_REGISTER, KEY)
    assert verify(REGISTER_OBJ, KEY)
    assert not verify(MAP_REGISTER, b"wrong key")
    tampered = bytearray(MAP_REGISTER)
    tampered[-25] ^= 1  # the last locator byte is covered by the MAC
    assert not verify(bytes(tampered), KEY)
    unsigned = replace(REGISTER_OBJ, auth_data=b"")
    assert sign(unsigned, KEY, algorithm_id=1, truncated=True) == REGISTER_OBJ
    assert authenticate(MAP_REGISTER, KEY) == Verified(AuthKind.SHA1_96, 1, 12, mac_over_xtr_id=False)


def test_xtr_id_is_outside_the_rfc_mac() -> None:
    # RFC 9301 §5.6 step 5 stops the MAC at the last RLOC-Record, so a changed
    # site-ID still verifies (the Map-Server must not treat the xTR-ID as authenticated).
    tampered = bytearray(MAP_REGISTER)
    tampered[-1] ^= 1
    found = authenticate(bytes(tampered), KEY)
    assert found is not None and not found.mac_over_xtr_id


def test_hmac_sha256_128_vector_and_full_length() -> None:
    # Map-Notify, HMAC-SHA-256-128 (16 bytes), key ID 7; then the full 32-byte
    # digest that deployed implementations send.
    # |Type=4 |I|        Reserved                           | Record Count=0 |  40 00 00 00
    # |                       Nonce = 1                                      |
    # |  Key ID = 7   | Algorithm = 2 | Authentication Data Length = 16      |  07 02 0010
    zeroed = h("40 00 00 00 0000000000000001 07 02 0010") + bytes(16)
    mac = hmac.new(KEY, zeroed, hashlib.sha256).digest()[:16]
    wire = zeroed[:16] + mac
    obj = MapNotify(nonce=1, records=(), key_id=7, algorithm_id=2, auth_data=mac)
    check(wire, obj)
    assert sign(MapNotify(nonce=1, records=(), key_id=7, algorithm_id=2), KEY, truncated=True) == obj
    assert verify(wire, KEY)

    full_zeroed = h("40 00 00 00 0000000000000001 07 02 0020") + bytes(32)
    full_mac = hmac.new(KEY, full_zeroed, hashlib.sha256).digest()
    full = full_zeroed[:16] + full_mac
    assert verify(full, KEY)
    signed = sign(MapNotify(nonce=1, records=(), key_id=7), KEY, algorithm_id=2)  # full by default
    assert signed.encode() == full


def test_verify_refuses_no_algorithm_and_odd_lengths() -> None:
    none = h("30 00 00 00 0000000000000001 00 00 0000")
    assert not verify(none, KEY)
    odd = h("30 00 00 00 0000000000000001 00 01 0005 0000000000")
    assert not verify(odd, KEY)
    unknown_alg = h("30 00 00 00 0000000000000001 00 09 0004 00000000")
    assert not verify(unknown_alg, KEY)


def test_rfc6833_sixteen_bit_key_id_maps_to_algorithm() -> None:
    # RFC 6833 §4.4: |Key ID (16 bits) = 2 (HMAC-SHA-256-128) | Auth Data Length|.
    # The same bytes read under RFC 9301 as Key ID 0, Algorithm ID 2.
    wire = h("30 00 00 00 0000000000000009 0002 0000")
    msg = decode(wire)
    assert isinstance(msg, MapRegister)
    assert (msg.key_id, msg.algorithm_id) == (0, 2)


# --- Map-Notify / Map-Notify-Ack with xTR-ID ---------------------------------
# |Type=4 |I|        Reserved                           | Record Count=1|  48 00 00 01
# |Type=5 |I|        Reserved                           | Record Count=1|  58 00 00 01
# |                       Nonce = 0xdead                          |
# |  Key ID = 1   | Algorithm = 0 | Authentication Data Length = 0|  01 00 0000
# record: TTL 10, no locators, 10.9.0.0/16, Send-Map-Request (ACT=2)
# xTR-ID = 1, site-ID = 2
NOTIFY_BODY = h("""
000000000000dead 01 00 0000
0000000a 00 10 4000 0000 0001 0a090000
00000000000000000000000000000001 0000000000000002
""")


@pytest.mark.parametrize(("first", "ack"), [(b"\x48\x00\x00\x01", False), (b"\x58\x00\x00\x01", True)])
def test_map_notify_and_ack(first: bytes, ack: bool) -> None:
    # What deployed Map-Servers send (bit 4 and the xTR-ID, not in RFC 9301 §5.7's figure): accepted.
    record = MappingRecord(v4("10.9.0.0"), 16, ttl=10, action=Action.SEND_MAP_REQUEST)
    msg = MapNotify(nonce=0xDEAD, records=(record,), key_id=1, xtr_id=1, site_id=2, ack=ack)
    check(first + NOTIFY_BODY, msg)
    assert message_type(msg) == (MessageType.MAP_NOTIFY_ACK if ack else MessageType.MAP_NOTIFY)


# --- ECM --------------------------------------------------------------------
def rfc1071(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# |Type=8 |S|D|E|M|            Reserved                           |
# |1 0 0 0|0|1|0|1|0 0 0 ...                                    0 |  85 00 00 00
# Inner IPv4 header (20 bytes): 45 00 len, id 0, DF, TTL 64, UDP, checksum, src, dst
# Inner UDP: sport 61000, dport 4342, length, checksum; then MAP_REQUEST_V4.
def ecm_v4_bytes() -> bytes:
    src, dst = v4("10.0.0.1").packed, v4("10.1.2.3").packed
    udp_len = 8 + len(MAP_REQUEST_V4)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", rfc1071(ip)) + ip[12:]
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", 61000, 4342, udp_len, 0) + MAP_REQUEST_V4
    udp = udp[:6] + struct.pack("!H", rfc1071(pseudo + udp) or 0xFFFF) + udp[8:]
    return h("85 00 00 00") + ip + udp


def test_ecm_ipv4_inner() -> None:
    wire = ecm_v4_bytes()
    msg = decode(wire)
    assert isinstance(msg, EncapsulatedControlMessage)
    assert (msg.source, msg.destination) == (v4("10.0.0.1"), v4("10.1.2.3"))
    assert (msg.source_port, msg.destination_port) == (61000, 4342)
    assert msg.ddt and msg.to_ms and not msg.security and not msg.to_etr
    assert msg.inner == decode(MAP_REQUEST_V4)
    expected = EncapsulatedControlMessage(
        inner=decode(MAP_REQUEST_V4),  # type: ignore[arg-type]
        source=v4("10.0.0.1"),
        destination=v4("10.1.2.3"),
        source_port=61000,
        destination_port=4342,
        ddt=True,
        to_ms=True,
    )
    check(wire, expected)


# |Type=8 |S|D|E|M|            Reserved                           |
# |1 0 0 0|1|0|1|0|0 0 0 ...                                    0 |  8a 00 00 00
# ECM Authentication Data (RFC 9303 §6.1), right after the header (RFC 9301 §5.8):
# |  ECM AD Type=1|  Unassigned   |   Requested HMAC ID = 2       |  01 00 0002
# |     OTK Length = 24           |  Key ID = 0   | OTK Wrap. ID=1|  0018 00 01
# |                  One-Time-Key Preamble = 0 (64 bits)          |
# ~                  One-Time Key (128 bits) = 0x11...            ~
# |     EID-AD Length = 4         |     KDF ID = 0                |  0004 0000
# Inner IPv6 header (40 bytes): version 6, traffic class 0xb8, flow label 0x12345,
# payload length, next header 17, hop limit 5; inner UDP 4342 -> 4342 carrying MAP_REQUEST_V6.
LISP_SEC_AD = h("01 00 0002  0018 00 01  0000000000000000") + b"\x11" * 16 + h("0004 0000")


def ipv6_udp(payload: bytes, *, zero_checksum: bool = False) -> bytes:
    src, dst = v6("2001:db8::a").packed, v6("2001:db8::b").packed
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack("!IxxxB", udp_len, 17)
    udp = struct.pack("!HHHH", 4342, 4342, udp_len, 0) + payload
    if not zero_checksum:
        udp = udp[:6] + struct.pack("!H", rfc1071(pseudo + udp) or 0xFFFF) + udp[8:]
    first = (6 << 28) | (0xB8 << 20) | 0x12345
    return struct.pack("!IHBB16s16s", first, udp_len, 17, 5, src, dst) + udp


ECM_V6 = EncapsulatedControlMessage(
    inner=decode(MAP_REQUEST_V6),  # type: ignore[arg-type]
    source=v6("2001:db8::a"),
    destination=v6("2001:db8::b"),
    to_etr=True,
    ttl=5,
    tos=0xB8,
    flow_label=0x12345,
)


def test_ecm_ipv6_inner_with_lisp_sec_authentication_data() -> None:
    # RFC 9301 §5.8 / RFC 9303 §6.1: with S, the AD sits between the ECM header and the inner IP header.
    wire = h("8a 00 00 00") + LISP_SEC_AD + ipv6_udp(MAP_REQUEST_V6)
    check(wire, replace(ECM_V6, security=True, security_data=LISP_SEC_AD))


def test_ecm_lisp_sec_otk_length_counting_its_own_word() -> None:
    # RFC 9303 §6.1 leaves open whether OTK Length counts its own 4-byte word; both readings decode.
    ad = LISP_SEC_AD[:4] + h("001c") + LISP_SEC_AD[6:]
    wire = h("8a 00 00 00") + ad + ipv6_udp(MAP_REQUEST_V6)
    check(wire, replace(ECM_V6, security=True, security_data=ad))


def test_ecm_s_bit_without_authentication_data() -> None:
    wire = h("8a 00 00 00") + ipv6_udp(MAP_REQUEST_V6)
    check(wire, replace(ECM_V6, security=True))


def test_ecm_ipv6_traffic_class_and_flow_label_survive() -> None:
    # RFC 9301 §5.8 IH: the inner header is the ITR's; decode -> encode keeps it byte for byte.
    wire = h("82 00 00 00") + ipv6_udp(MAP_REQUEST_V6)
    check(wire, ECM_V6)


def test_ecm_ipv6_zero_inner_udp_checksum_is_accepted() -> None:
    # An ITR that sends IPv6 ECMs with inner UDP checksum 0 (RFC 6935/6936 allow it for
    # tunnels; RFC 9301 §5.8 asks for non-zero).  Accepted and flagged; we re-send a real one.
    wire = h("82 00 00 00") + ipv6_udp(MAP_REQUEST_V6, zero_checksum=True)
    msg = decode(wire)
    assert isinstance(msg, EncapsulatedControlMessage)
    assert msg == ECM_V6 and msg.inner_udp_checksum_zero
    assert msg.encode() == h("82 00 00 00") + ipv6_udp(MAP_REQUEST_V6)
    assert not decode(msg.encode()).inner_udp_checksum_zero  # type: ignore[union-attr]


def test_ecm_ipv6_wrong_nonzero_inner_checksum_is_refused() -> None:
    wire = bytearray(h("82 00 00 00") + ipv6_udp(MAP_REQUEST_V6))
    wire[4 + 40 + 6] ^= 0x01
    with pytest.raises(LispDecodeError, match="bad inner UDP checksum"):
        decode(bytes(wire))


def ipv4_udp(payload: bytes, *, ident: int, frag: int, tos: int, zero_checksum: bool = False) -> bytes:
    """An inner IPv4/UDP packet as another implementation builds it (our own RFC 1071 sums)."""
    src, dst = v4("10.0.0.1").packed, v4("10.1.2.3").packed
    udp_len = 8 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + udp_len, ident, frag, 32, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", rfc1071(ip)) + ip[12:]
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", 61000, 4342, udp_len, 0) + payload
    if not zero_checksum:
        udp = udp[:6] + struct.pack("!H", rfc1071(pseudo + udp) or 0xFFFF) + udp[8:]
    return ip + udp


def test_ecm_ipv4_df_clear_ident_and_tos_survive() -> None:
    # RFC 9301 §5.8 IH: an ITR's inner header with DF clear, an identification and a TOS
    # comes back unchanged (it came back with DF set and ID 0 before).
    wire = h("80 00 00 00") + ipv4_udp(MAP_REQUEST_V4, ident=0xBEEF, frag=0, tos=0x10)
    msg = decode(wire)
    assert isinstance(msg, EncapsulatedControlMessage)
    assert (msg.dont_fragment, msg.ident, msg.tos, msg.ttl) == (False, 0xBEEF, 0x10, 32)
    assert msg.encode() == wire


def test_ecm_ipv4_zero_udp_checksum_means_none() -> None:
    # RFC 768: zero is "no checksum" over IPv4; flagged like the IPv6 case.
    msg = decode(h("80 00 00 00") + ipv4_udp(MAP_REQUEST_V4, ident=1, frag=0x4000, tos=0, zero_checksum=True))
    assert isinstance(msg, EncapsulatedControlMessage) and msg.inner_udp_checksum_zero and msg.dont_fragment


def test_ecm_inner_ipv4_fragment_is_refused() -> None:
    with pytest.raises(LispDecodeError, match="fragment"):
        decode(h("80 00 00 00") + ipv4_udp(MAP_REQUEST_V4, ident=1, frag=0x2000, tos=0))


def test_ecm_carrying_map_register() -> None:
    inner = REGISTER_OBJ
    ecm = EncapsulatedControlMessage(inner=inner, source=v4("192.0.2.1"), destination=v4("192.0.2.2"))
    msg = decode(ecm.encode())
    assert isinstance(msg, EncapsulatedControlMessage)
    assert msg.inner == inner and msg.inner.encode() == MAP_REGISTER
