"""The ETR core: periodic authenticated Map-Registers, Map-Notify checks, Map-Replies (RFC 9301).

Peer behaviour is reproduced with hand-built byte vectors (struct + hashlib), not
with our own encoder, so a codec bug cannot hide an interoperability bug.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import struct
from ipaddress import IPv4Address, IPv6Address, ip_network

import pytest

from alt_router.lisp import (
    ECM,
    HMAC_SHA_1_96,
    HMAC_SHA_256_128,
    EidRecord,
    MapNotify,
    MapRegister,
    MapReply,
    MapRequest,
    decode,
    sign,
    verify,
)
from alt_router.mapping.actions import SendUdp
from alt_router.mapping.etr import Etr, EtrMappingConfig, EtrRloc, MapServerTarget, initial_nonce
from alt_router.mapping.map_server import MapServer, Site

from .util import ITR, ecm_request, map_request

MS = IPv4Address("198.51.100.1")
RLOC = IPv4Address("192.0.2.1")
_DIGEST = {HMAC_SHA_1_96: hashlib.sha1, HMAC_SHA_256_128: hashlib.sha256}


def etr(proxy: bool = False, *, alg: int = HMAC_SHA_256_128, truncated: bool = False,
        last_nonce: int = 999) -> Etr:
    mappings = [
        EtrMappingConfig(
            ip_network("10.1.0.0/16"),
            (EtrRloc(RLOC, 1, 100), EtrRloc(IPv4Address("192.0.2.2"), 2, 50, local=False)), ttl=30,
        ),
        EtrMappingConfig(ip_network("10.1.5.0/24"), (EtrRloc(RLOC, 1, 100),), ttl=5),
    ]
    target = MapServerTarget(MS, "k", alg, 4350, truncated_auth=truncated)
    return Etr(mappings, [target], register_interval=60, proxy_reply=proxy, port=4399, last_nonce=last_nonce)


# --- hand-built Map-Notify, as the two deployed Map-Servers send it ---------------------------

def _record_10_1() -> bytes:
    """One mapping record, 10.1.0.0/16 -> 192.0.2.1 (RFC 9301 §5.4 layout), built by hand."""
    head = struct.pack("!IBBHHH", 30, 1, 16, 0x1000, 0, 1) + IPv4Address("10.1.0.0").packed
    loc = struct.pack("!BBBBHH", 1, 100, 255, 0, 0x0005, 1) + RLOC.packed
    return head + loc


def notify_bytes(nonce: int, key: bytes, alg: int, length: int, *, xtr: bool = False,
                 mac_over_xtr: bool = False, msg_type: int = 4) -> bytes:
    """A Map-Notify (RFC 9301 §5.7): MAC over type..last record with the field zeroed (§5.6 step 5).

    ``xtr`` appends an xTR-ID/site-ID trailer with header bit 4 set, as one deployed
    Map-Server does; ``mac_over_xtr`` has the MAC cover that trailer too, as it also does.
    """
    flags = (1 << 27) if xtr else 0
    records = _record_10_1()
    trailer = struct.pack("!QQQ", 0x1111, 0x2222, 7) if xtr else b""
    head = struct.pack("!IQBBH", (msg_type << 28) | flags | 1, nonce, 0, alg, length)
    covered = head + bytes(length) + records + (trailer if mac_over_xtr else b"")
    mac = hmac.new(key, covered, _DIGEST[alg]).digest()[:length]
    return head + mac + records + trailer


def nonce_of(action: object) -> int:
    assert isinstance(action, SendUdp)
    msg = decode(action.payload)
    assert isinstance(msg, MapRegister)
    return msg.nonce


def notify_for(register: bytes, key: str) -> bytes:
    msg = decode(register)
    assert isinstance(msg, MapRegister)
    return sign(MapNotify(msg.nonce, msg.records, algorithm_id=HMAC_SHA_256_128), key).encode()


# --- registration ------------------------------------------------------------------------------

def test_registers_at_once_then_every_interval_with_increasing_nonces() -> None:
    e = etr(proxy=True)
    (first,) = e.tick(0.0)
    assert isinstance(first, SendUdp) and (first.dst, first.dport, first.sport) == (MS, 4350, 4399)
    msg = decode(first.payload)
    assert isinstance(msg, MapRegister)
    assert msg.want_map_notify and msg.proxy_reply and msg.algorithm_id == HMAC_SHA_256_128
    assert verify(first.payload, "k") and not verify(first.payload, "other")
    assert [(str(r.eid), r.mask_len, r.ttl) for r in msg.records] == [
        ("10.1.5.0", 24, 5), ("10.1.0.0", 16, 30)]
    assert [(loc.address, loc.priority, loc.weight) for loc in msg.records[1].locators] == [
        (RLOC, 1, 100), (IPv4Address("192.0.2.2"), 2, 50)]
    assert msg.nonce == 1000 and e.last_nonce == 1000
    e.handle(notify_for(first.payload, "k"), MS, 4350, 0.5)  # confirmed: next round is a full interval away
    assert e.tick(59.9) == []
    (again,) = e.tick(60.0)
    assert nonce_of(again) == 1001  # RFC 9301 §5.6: "incremented each time a Map-Register message is sent"
    assert e.next_deadline() == 61.0  # not confirmed yet: asked again in a second


@pytest.mark.parametrize(("alg", "truncated", "length"), [
    (HMAC_SHA_256_128, False, 32), (HMAC_SHA_1_96, False, 20),
    (HMAC_SHA_256_128, True, 16), (HMAC_SHA_1_96, True, 12),
])
def test_map_register_sends_the_full_digest_unless_truncated_is_configured(
    alg: int, truncated: bool, length: int
) -> None:
    """Issue 12 item 1: deployed Map-Servers read 20/32 bytes; RFC 9301 §5.6 step 5 says what is covered."""
    e = etr(alg=alg, truncated=truncated)
    (reg,) = e.tick(0.0)
    assert isinstance(reg, SendUdp)
    data = reg.payload
    alg_id, auth_len = struct.unpack_from("!BH", data, 13)
    assert (alg_id, auth_len) == (alg, length)
    # Recompute by hand: HMAC over the whole message (no xTR-ID here) with the field zeroed.
    zeroed = data[:16] + bytes(length) + data[16 + length:]
    assert data[16:16 + length] == hmac.new(b"k", zeroed, _DIGEST[alg]).digest()[:length]


def test_unconfirmed_registers_are_retried_with_backoff_until_a_map_notify() -> None:
    """RFC 9301 §5.7: retransmit after 1 s, doubling, at most the register interval here."""
    e = etr()
    sent = [0.0]
    (reg,) = e.tick(0.0)
    nonces = [nonce_of(reg)]
    now = 0.0
    while now < 40.0:
        now = e.next_deadline()
        out = e.tick(now)
        assert len(out) == 1
        reg = out[0]
        nonces.append(nonce_of(reg))
        sent.append(now)
    assert [b - a for a, b in itertools.pairwise(sent)][:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert all(b == a + 1 for a, b in itertools.pairwise(nonces))  # every retry is a fresh, higher nonce
    assert isinstance(reg, SendUdp)
    e.handle(notify_for(reg.payload, "k"), MS, 4350, now + 0.1)
    assert e.next_deadline() == now + 60.0
    (nxt,) = e.tick(now + 60.0)
    assert isinstance(nxt, SendUdp)
    e.handle(notify_for(nxt.payload, "k"), MS, 4350, now + 60.2)
    assert e.next_deadline() == now + 120.0  # the backoff was reset by the confirmation


def test_initial_nonce_keeps_increasing_across_restarts() -> None:
    """RFC 9301 §5.6: the ETR SHOULD store the last nonce sent, so it can continue incrementing."""
    wall = 1_800_000_000.0
    assert initial_nonce(None, wall) == int(wall) << 32  # no state: the clock alone
    assert initial_nonce((int(wall) << 32) + 5000, wall) == (int(wall) << 32) + 5000  # the saved one wins
    assert initial_nonce(7, wall) == int(wall) << 32  # a stale file cannot make it go backwards
    assert initial_nonce(None, wall + 1) > initial_nonce(None, wall) + 2**31
    e = etr(last_nonce=initial_nonce(None, wall))
    (reg,) = e.tick(0.0)
    assert nonce_of(reg) == (int(wall) << 32) + 1


def test_two_map_servers_each_get_their_own_increasing_nonce() -> None:
    mapping = EtrMappingConfig(ip_network("10.1.0.0/16"), (EtrRloc(RLOC),))
    servers = [MapServerTarget(MS, "k", HMAC_SHA_256_128),
               MapServerTarget(IPv4Address("198.51.100.2"), "j", HMAC_SHA_1_96)]
    e = Etr([mapping], servers, last_nonce=41)
    assert [nonce_of(a) for a in e.tick(0.0)] == [42, 43]
    assert e.last_nonce == 43


# --- Map-Notify --------------------------------------------------------------------------------

@pytest.mark.parametrize(("alg", "length", "kind"), [
    (HMAC_SHA_256_128, 32, "sha256-full"), (HMAC_SHA_256_128, 16, "sha256-128"),
    (HMAC_SHA_1_96, 20, "sha1-full"), (HMAC_SHA_1_96, 12, "sha1-96"),
])
@pytest.mark.parametrize(("xtr", "mac_over_xtr"), [(False, False), (True, False), (True, True)])
def test_map_notify_accepted_with_either_length_and_either_mac_coverage(
    alg: int, length: int, kind: str, xtr: bool, mac_over_xtr: bool
) -> None:
    """Issue 12 item 1 and RFC 9301 §5.7: "the receiver verifies the Authentication Data"."""
    e = etr(alg=alg)
    (reg,) = e.tick(0.0)
    data = notify_bytes(nonce_of(reg), b"k", alg, length, xtr=xtr, mac_over_xtr=mac_over_xtr)
    assert e.handle(data, MS, 4342, 0.5) == []
    assert e.counters["map-notify"] == 1, dict(e.counters)
    assert e.counters[f"map-notify-auth:{kind}"] == 1
    assert e.counters["map-notify-auth:mac-over-xtr-id"] == int(mac_over_xtr)
    assert e.last_notify == {MS: 0.5}


def test_map_notify_must_echo_an_outstanding_nonce_and_verify() -> None:
    """RFC 9301 §5.7: the Map-Notify copies the Map-Register's fields (nonce included)."""
    e = etr()
    (reg,) = e.tick(0.0)
    nonce = nonce_of(reg)
    assert e.handle(notify_bytes(nonce, b"wrong", HMAC_SHA_256_128, 32), MS, 4350, 1.0) == []
    assert e.counters["map-notify-bad-auth"] == 1 and e.last_notify == {}
    assert e.handle(notify_bytes(nonce + 1, b"k", HMAC_SHA_256_128, 32), MS, 4350, 1.5) == []
    assert e.counters["map-notify-unknown-nonce"] == 1  # a nonce we never sent
    e.handle(notify_bytes(nonce, b"k", HMAC_SHA_256_128, 32), MS, 4350, 2.0)
    assert e.counters["map-notify"] == 1 and e.last_notify == {MS: 2.0}
    e.handle(notify_bytes(nonce, b"k", HMAC_SHA_256_128, 32), MS, 4350, 3.0)  # replayed
    assert e.counters["map-notify-unknown-nonce"] == 2 and e.last_notify == {MS: 2.0}


def test_a_map_notify_ack_is_not_a_map_notify() -> None:
    e = etr()
    (reg,) = e.tick(0.0)
    e.handle(notify_bytes(nonce_of(reg), b"k", HMAC_SHA_256_128, 32, msg_type=5), MS, 4342, 0.5)
    assert e.counters["map-notify"] == 0 and e.counters["unexpected"] == 1


# --- Map-Reply ---------------------------------------------------------------------------------

def test_plain_map_request_answered_from_the_longest_prefix() -> None:
    e = etr()
    (out,) = e.handle(map_request("10.1.5.9", nonce=5).encode(), IPv4Address("203.0.113.5"), 40001, 0.0)
    # RFC 9301 §5.5: to an ITR-RLOC, at the request's source port.
    assert isinstance(out, SendUdp) and (out.dst, out.dport, out.sport) == (ITR, 40001, 4399)
    reply = decode(out.payload)
    assert isinstance(reply, MapReply) and reply.nonce == 5
    (rec,) = reply.records
    assert (str(rec.eid), rec.mask_len, rec.ttl, rec.authoritative) == ("10.1.5.0", 24, 5, True)


def test_ecm_map_request_from_the_map_server_replies_to_the_inner_source_port() -> None:
    """RFC 9301 §8.3: the ETR answers the ITR-RLOC in the forwarded request, not the Map-Server."""
    e = etr()
    (out,) = e.handle(ecm_request("10.1.9.9", nonce=6, sport=50555), MS, 4342, 0.0)
    assert isinstance(out, SendUdp) and (out.dst, out.dport) == (ITR, 50555)
    reply = decode(out.payload)
    assert isinstance(reply, MapReply) and reply.records[0].mask_len == 16


def test_locators_sorted_ascending_ipv4_first_and_l_bit_only_on_own_rlocs() -> None:
    """RFC 9301 §5.5 (sorted, IPv4 "less than" IPv6) and §5.4 (L: local to the replying ETR)."""
    rlocs = (EtrRloc(IPv6Address("2001:db8::1")), EtrRloc(IPv4Address("192.0.2.200"), local=False),
             EtrRloc(IPv4Address("192.0.2.3")), EtrRloc(IPv4Address("10.0.0.1"), local=False))
    e = Etr([EtrMappingConfig(ip_network("10.9.0.0/16"), rlocs)], [])
    (out,) = e.handle(map_request("10.9.1.1").encode(), ITR, 40000, 0.0)
    assert isinstance(out, SendUdp)
    reply = decode(out.payload)
    assert isinstance(reply, MapReply)
    locs = reply.records[0].locators
    assert [str(loc.address) for loc in locs] == ["10.0.0.1", "192.0.2.3", "192.0.2.200", "2001:db8::1"]
    assert [loc.local for loc in locs] == [False, True, False, True]
    assert all(loc.reachable for loc in locs) and reply.records[0].authoritative


def test_d_bit_request_gets_no_map_reply() -> None:
    """RFC 9301 §5.2: "When this bit is set, the receiver of the Map-Request does not return a Map-Reply"."""
    e = etr()
    # Hand-built: an SMR (S bit) with D set, as an xTR that updated its mappings sends it.
    word = (1 << 28) | (1 << 24) | (1 << 13) | 1
    data = (struct.pack("!IQ", word, 77) + struct.pack("!H", 0) + struct.pack("!H", 1) + ITR.packed
            + struct.pack("!BBH", 0, 32, 1) + IPv4Address("10.1.5.9").packed)
    request = decode(data)
    assert isinstance(request, MapRequest) and request.dont_map_reply and request.smr
    assert e.handle(data, ITR, 40000, 0.0) == []
    assert e.counters["dont-map-reply"] == 1 and e.counters["map-reply"] == 0


def test_rloc_probe_is_answered_with_the_p_bit_and_authoritative_records() -> None:
    """RFC 9301 §5.2 (the receiver MUST respond with the probe-bit set) and §5.4 (A bit on every record)."""
    e = etr()
    probe = MapRequest(9, None, (ITR,), (EidRecord(IPv4Address("10.1.0.0"), 16),), probe=True)
    (out,) = e.handle(probe.encode(), ITR, 4342, 0.0)
    assert isinstance(out, SendUdp)
    reply = decode(out.payload)
    assert isinstance(reply, MapReply) and reply.probe and reply.nonce == 9
    assert all(r.authoritative for r in reply.records)
    assert e.counters["rloc-probe-reply"] == 1


def test_not_ours_malformed_and_unexpected() -> None:
    e = etr()
    assert e.handle(map_request("10.2.0.1").encode(), ITR, 1, 0.0) == []
    assert e.handle(b"\x10", ITR, 1, 0.0) == []
    assert e.handle(MapReply(1, ()).encode(), ITR, 1, 0.0) == []
    assert e.handle(ECM(MapReply(1, ()), ITR, IPv4Address("10.1.0.1")).encode(), ITR, 1, 0.0) == []
    assert e.counters["not-authoritative"] == 1
    assert e.counters["malformed"] == 1
    assert e.counters["unexpected"] == 2


def test_etr_and_map_server_agree() -> None:
    """Full-digest Map-Register from an ephemeral port; the Map-Notify comes back and is accepted."""
    e = etr()
    site = Site("s", "k", HMAC_SHA_256_128, (ip_network("10.1.0.0/16"),), accept_more_specifics=True)
    ms = MapServer([site])
    (reg,) = e.tick(0.0)
    assert isinstance(reg, SendUdp)
    out = ms.handle_register(reg.payload, RLOC, 4399, 0.0)
    notify = out[-1]
    assert isinstance(notify, SendUdp)
    assert struct.unpack_from("!H", notify.payload, 14) == (32,)  # same length as the Map-Register's
    e.handle(notify.payload, MS, 4342, 0.1)
    assert e.counters["map-notify"] == 1
    assert len(ms.registrations()) == 2
