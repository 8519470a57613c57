"""The Map-Server: registrations (auth, site checks, expiry, Map-Notify) and Map-Requests off the ALT."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, ip_address, ip_network

import pytest

from alt_router.inet import checksum, udp_packet
from alt_router.lisp import (
    ECM,
    HMAC_SHA_1_96,
    HMAC_SHA_256_128,
    Action,
    InstanceId,
    Locator,
    MapNotify,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    decode,
    sign,
    verify,
)
from alt_router.mapping.actions import Announce, SendUdp, Withdraw
from alt_router.mapping.map_server import MapServer, Site

from .util import ITR, map_request

ETR1 = IPv4Address("198.51.100.11")
ETR2 = IPv4Address("198.51.100.12")
SITE = Site("site-1", "secret-1", HMAC_SHA_256_128, (ip_network("153.16.1.0/24"),))
SITE_MORE = Site("site-2", "secret-2", HMAC_SHA_1_96, (ip_network("153.16.2.0/24"),),
                 accept_more_specifics=True)
SITE_ALWAYS = Site("site-3", "secret-3", HMAC_SHA_256_128, (ip_network("153.16.3.0/24"),),
                   always_announce=True)
AGGREGATE = ip_network("153.16.0.0/16")


def record(prefix: str, rloc: IPv4Address = ETR1, ttl: int = 1440, eid: object = None,
           *locators: Locator) -> MappingRecord:
    net = ip_network(prefix)
    return MappingRecord(eid or net.network_address, net.prefixlen, ttl=ttl,  # type: ignore[arg-type]
                         locators=locators or (Locator(rloc, 1, 50),), authoritative=True)


def register(*records: MappingRecord, key: str = "secret-1", alg: int = HMAC_SHA_256_128, nonce: int = 42,
             notify: bool = True, proxy: bool = False, key_id: int = 0, use_ttl: bool = False,
             xtr_id: int | None = None) -> bytes:
    msg = MapRegister(nonce, records, key_id=key_id, algorithm_id=alg, want_map_notify=notify,
                      proxy_reply=proxy, use_ttl=use_ttl, xtr_id=xtr_id,
                      site_id=0 if xtr_id is not None else None)
    return sign(msg, key, algorithm_id=alg).encode()


def server(**kwargs: object) -> MapServer:
    return MapServer([SITE, SITE_MORE, SITE_ALWAYS], aggregates=[AGGREGATE], **kwargs)  # type: ignore[arg-type]


def alt_datagram(eid: str, nonce: int = 9, sport: int = 50000, ttl: int = 60, *,
                 probe: bool = False) -> bytes:
    request = map_request(eid, nonce)
    if probe:
        request = dataclasses.replace(request, probe=True)
    return udp_packet(ITR, ip_address(eid), sport, 4342, request.encode(), ttl=ttl)


def test_good_register_announces_and_notifies_port_4342() -> None:
    ms = server()
    out = ms.handle_register(register(record("153.16.1.0/24"), nonce=4242), ETR1, 61000, now=0.0)
    assert out[0] == Announce(ip_network("153.16.1.0/24"))
    notify = out[1]
    assert isinstance(notify, SendUdp)
    # RFC 9301 §8.2: "the Map-Notify message is sent to UDP destination port 4342, not to the
    # source port specified in the original Map-Register message"; §5.7: from 4342 too.
    assert (notify.dst, notify.dport, notify.sport) == (ETR1, 4342, 4342)
    msg = decode(notify.payload)
    assert isinstance(msg, MapNotify) and msg.nonce == 4242 and not msg.ack
    assert msg.records == (record("153.16.1.0/24"),)
    # RFC 9301 §5.7: no I bit and no xTR-ID trailer in a Map-Notify.
    assert msg.xtr_id is None and not notify.payload[0] & 0x08
    assert verify(notify.payload, "secret-1")
    assert [r.prefix for r in ms.registrations()] == [ip_network("153.16.1.0/24")]
    # A refresh announces nothing new; without the M bit there is no Map-Notify.
    assert ms.handle_register(register(record("153.16.1.0/24"), notify=False, nonce=4243), ETR1, 61000,
                              10.0) == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (register(record("153.16.1.0/24"), key="wrong"), "auth-mismatch"),
        (register(record("153.16.9.0/24")), "unknown-site"),
        (register(record("153.16.1.0/24"), key_id=1), "bad-key-id"),
        (register(record("153.16.1.0/24"), alg=HMAC_SHA_1_96), "bad-key-id"),
        (register(record("153.16.1.0/24"), record("153.16.7.0/24")), "prefix-outside-site"),
        (register(record("153.16.1.128/25")), "prefix-outside-site"),
        (register(record("153.16.1.0/24", eid=InstanceId(7, IPv4Address("153.16.1.0")))),
         "instance-id-mismatch"),
    ],
    ids=["wrong-key", "no-site", "key-id", "algorithm", "one-record-outside", "more-specific", "iid"],
)
def test_refused_registers_change_nothing(data: bytes, reason: str) -> None:
    """RFC 9301 §8.2: a Map-Server accepts only the EID-Prefixes configured for that ETR."""
    ms = server()
    assert ms.handle_register(data, ETR1, 4342, 0.0) == []
    assert ms.counters[f"refused:{reason}"] == 1
    assert ms.registrations() == [] and ms.stats()["nonces"] == 0
    assert ms.handle_alt(alt_datagram("153.16.1.5"), 1.0)[0].dport == 50000  # type: ignore[union-attr]
    assert ms.counters["not-registered"] == 1


def test_tampered_register_is_refused() -> None:
    data = bytearray(register(record("153.16.1.0/24")))
    data[-1] ^= 1  # the last locator byte
    ms = server()
    assert ms.handle_register(bytes(data), ETR1, 4342, 0.0) == []
    assert ms.counters["refused:auth-mismatch"] == 1


def test_malformed_register_is_counted() -> None:
    ms = server()
    assert ms.handle_register(b"\x30\x00", ETR1, 4342, 0.0) == []
    assert ms.handle_register(map_request("1.2.3.4").encode(), ETR1, 4342, 0.0) == []
    assert ms.counters["malformed"] == 1 and ms.counters["unexpected"] == 1


def test_more_specifics_only_where_the_site_accepts_them() -> None:
    ms = server()
    data = register(record("153.16.2.64/26"), key="secret-2", alg=HMAC_SHA_1_96)
    out = ms.handle_register(data, ETR1, 1, 0.0)
    assert Announce(ip_network("153.16.2.0/24")) in out
    assert ms.lookup(IPv4Address("153.16.2.70"), 1.0)[0].prefix == ip_network("153.16.2.64/26")


def test_registrations_expire_after_three_minutes_and_the_site_is_withdrawn() -> None:
    """RFC 9301 §8.2: time out a registration with no valid Map-Register in three minutes."""
    ms = server()
    ms.handle_register(register(record("153.16.1.0/24")), ETR1, 4342, 100.0)
    assert ms.next_expiry() == 280.0
    assert ms.tick(279.0) == []
    assert ms.lookup(IPv4Address("153.16.1.1"), 279.0)
    assert ms.lookup(IPv4Address("153.16.1.1"), 280.0) == []  # expired even before tick runs
    assert ms.tick(280.0) == [Withdraw(ip_network("153.16.1.0/24"))]
    assert ms.registrations() == [] and ms.counters["expired"] == 1
    assert ms.next_expiry() is None


def test_a_refresh_moves_the_expiry_and_the_stale_heap_entry_is_skipped() -> None:
    ms = server()
    ms.handle_register(register(record("153.16.1.0/24"), nonce=1), ETR1, 4342, 0.0)
    ms.handle_register(register(record("153.16.1.0/24"), nonce=2), ETR1, 4342, 60.0)
    assert ms.next_expiry() == 240.0  # the 180.0 entry was stale
    assert ms.tick(200.0) == [] and len(ms) == 1
    assert ms.tick(240.0) == [Withdraw(ip_network("153.16.1.0/24"))]


def test_t_bit_uses_the_record_ttl_and_ttl_zero_deregisters() -> None:
    """RFC 9301 §5.6 (T bit): time out by the Record TTL; a TTL of 0 withdraws."""
    ms = server()
    ms.handle_register(register(record("153.16.1.0/24", ttl=10), use_ttl=True), ETR1, 4342, 0.0)
    assert ms.next_expiry() == 600.0
    withdraw = register(record("153.16.1.0/24", ttl=0), notify=False, nonce=43)
    out = ms.handle_register(withdraw, ETR1, 4342, 5.0)
    assert out == [Withdraw(ip_network("153.16.1.0/24"))]
    assert ms.registrations() == []


def test_always_announce_sites() -> None:
    ms = server()
    assert ms.start() == [Announce(ip_network("153.16.3.0/24"))]
    ms.handle_register(register(record("153.16.3.0/24"), key="secret-3"), ETR1, 4342, 0.0)
    assert ms.tick(1000.0) == []  # expired, but still announced


def two_etrs(proxy: bool = False) -> MapServer:
    ms = server()
    ms.handle_register(register(record("153.16.1.0/24", ETR1), proxy=proxy), ETR1, 4342, 0.0)
    ms.handle_register(register(record("153.16.1.0/24", ETR2, ttl=60), proxy=proxy), ETR2, 50123, 0.0)
    return ms


def test_two_etrs_share_the_requests_in_ecms_to_port_4342() -> None:
    ms = two_etrs()
    assert len(ms.registrations()) == 2
    sent = [ms.handle_alt(alt_datagram("153.16.1.5", nonce=i, ttl=33), 1.0)[0] for i in range(2)]
    # RFC 9301 §5.8: the ECM's outer UDP header has destination port 4342, whatever port the
    # Map-Register came from.
    assert {(s.dst, s.dport) for s in sent} == {(ETR1, 4342), (ETR2, 4342)}  # type: ignore[union-attr]
    ecm = decode(sent[0].payload)  # type: ignore[union-attr]
    assert isinstance(ecm, ECM) and ecm.to_etr
    assert (ecm.source, str(ecm.destination), ecm.source_port, ecm.ttl) == (ITR, "153.16.1.5", 50000, 33)
    assert isinstance(ecm.inner, MapRequest) and ecm.inner.nonce == 0
    assert ms.counters["forwarded-to-etr"] == 2


def test_the_ecm_carries_the_alt_datagram_unchanged() -> None:
    """RFC 9301 §8.3: the Map-Server re-encapsulates the Map-Request and "does not otherwise alter" it."""
    ms = two_etrs()
    datagram = bytearray(alt_datagram("153.16.1.5", ttl=17))
    datagram[1] = 0xB8  # TOS (DSCP EF)
    datagram[4:6] = b"\x12\x34"  # identification
    datagram[6] = 0  # DF clear
    datagram[10:12] = b"\x00\x00"
    datagram[10:12] = checksum(bytes(datagram[:20])).to_bytes(2, "big")
    (out,) = ms.handle_alt(bytes(datagram), 1.0)
    assert out.payload[4:] == bytes(datagram)  # type: ignore[union-attr]


def test_proxy_reply_merges_both_etrs_locators_clears_l_and_sorts() -> None:
    ms = server()
    high = Locator(IPv4Address("203.0.113.9"), 1, 50, local=True)
    low = Locator(IPv4Address("192.0.2.200"), 2, 50, local=True)
    ms.handle_register(register(record("153.16.1.0/24", ETR1, 1440, None, high), proxy=True), ETR1, 4342, 0.0)
    ms.handle_register(register(record("153.16.1.0/24", ETR2, 60, None, low), proxy=True), ETR2, 4342, 0.0)
    (out,) = ms.handle_alt(alt_datagram("153.16.1.5", nonce=0xABC, sport=50123), 1.0)
    assert isinstance(out, SendUdp) and (out.dst, out.dport) == (ITR, 50123)
    reply = decode(out.payload)
    assert isinstance(reply, MapReply) and reply.nonce == 0xABC
    (rec,) = reply.records
    # RFC 9301 §5.5: ascending address order; §5.4: "When a Map-Server is doing proxy
    # Map-Replying for a LISP site, the L-bit is set to 0 for all Locators in this Locator-Set."
    assert [loc.address for loc in rec.locators] == [low.address, high.address]
    assert not any(loc.local for loc in rec.locators)
    assert rec.ttl == 60 and not rec.authoritative
    assert ms.counters["proxy-reply"] == 1


def test_xtr_id_keys_registrations_not_the_source() -> None:
    ms = server()
    ms.handle_register(register(record("153.16.1.0/24"), xtr_id=5), ETR1, 4342, 0.0)
    # The same xTR moved to a new RLOC (which its signed record names).
    ms.handle_register(register(record("153.16.1.0/24", ETR2), xtr_id=5, nonce=43), ETR2, 4342, 1.0)
    (reg,) = ms.registrations()
    assert reg.source == ETR2 and reg.etr_address == ETR2


def test_unregistered_site_gets_a_one_minute_negative_that_hides_no_registration() -> None:
    """RFC 9301 §8.3: no ETR registered for a configured EID-Prefix: Natively-Forward, 1-minute TTL."""
    ms = server()
    ms.handle_register(register(record("153.16.2.0/25"), key="secret-2", alg=HMAC_SHA_1_96), ETR1, 1, 0.0)
    (out,) = ms.handle_alt(alt_datagram("153.16.2.200"), 1.0)
    reply = decode(out.payload)  # type: ignore[union-attr]
    assert isinstance(reply, MapReply)
    rec = reply.records[0]
    # Not the site's /24: that would hide the registered /25.
    assert (str(rec.eid), rec.mask_len, rec.ttl, rec.locators) == ("153.16.2.128", 25, 1, ())
    assert rec.action == Action.NATIVELY_FORWARD and rec.authoritative
    (out,) = ms.handle_alt(alt_datagram("153.16.1.77"), 1.0)
    rec = decode(out.payload).records[0]  # type: ignore[union-attr]
    assert (str(rec.eid), rec.mask_len, rec.ttl) == ("153.16.1.0", 24, 1)  # the whole unregistered site
    assert ms.counters["not-registered"] == 2


@pytest.mark.parametrize(
    ("eid", "prefix"),
    [
        ("153.16.200.1", "153.16.128.0/17"),  # far from every site
        ("153.16.0.9", "153.16.0.0/24"),  # beside 153.16.1.0/24
        ("153.16.4.1", "153.16.4.0/22"),  # after 153.16.3.0/24, before the /17 boundary
    ],
)
def test_a_hole_in_an_announced_aggregate_gets_a_fifteen_minute_negative(eid: str, prefix: str) -> None:
    """RFC 9301 §8.3: an EID matching no configured EID-Prefix is a non-LISP hole in the aggregate:
    Natively-Forward with a 15-minute TTL.  The prefix is the largest one covering the EID that
    overlaps no configured or registered site and stays inside the aggregate."""
    ms = server()
    (out,) = ms.handle_alt(alt_datagram(eid), 1.0)
    rec = decode(out.payload).records[0]  # type: ignore[union-attr]
    assert (f"{rec.eid}/{rec.mask_len}", rec.ttl, rec.action) == (prefix, 15, Action.NATIVELY_FORWARD)
    assert rec.locators == () and ms.counters["not-in-site"] == 1


def test_a_negative_never_reaches_outside_the_aggregate() -> None:
    ms = MapServer([SITE], aggregates=[ip_network("153.16.0.0/16")])
    rec = decode(ms.handle_alt(alt_datagram("153.16.255.1"), 1.0)[0].payload).records[0]  # type: ignore[union-attr]
    # With one site at 153.16.1.0/24 the free space would reach /17 anyway; never shorter than /16.
    assert rec.mask_len >= 16
    lone = MapServer([], aggregates=[ip_network("10.0.0.0/8")])
    rec = decode(lone.handle_alt(alt_datagram("10.1.2.3"), 1.0)[0].payload).records[0]  # type: ignore[union-attr]
    assert (str(rec.eid), rec.mask_len) == ("10.0.0.0", 8)


def test_a_negative_hides_no_route_another_node_announced_inside_the_aggregate() -> None:
    """RFC 9301 §8.4's rule for negative prefixes ("does not match any EID-Prefix known to exist")
    applied to the Map-Server's aggregate: a peer's more-specific route inside it stays visible."""
    routes = [ip_network("153.16.64.0/24"), ip_network("10.0.0.0/8")]
    ms = server(routed_inside=lambda p: [r for r in routes if r.version == p.version and r.subnet_of(p)])
    rec = decode(ms.handle_alt(alt_datagram("153.16.65.1"), 1.0)[0].payload).records[0]  # type: ignore[union-attr]
    assert (f"{rec.eid}/{rec.mask_len}", rec.ttl) == ("153.16.65.0/24", 15)  # not 153.16.64.0/18
    rec = decode(ms.handle_alt(alt_datagram("153.16.200.1"), 1.0)[0].payload).records[0]  # type: ignore[union-attr]
    assert f"{rec.eid}/{rec.mask_len}" == "153.16.128.0/17"  # nothing routed there


def test_an_eid_in_no_site_and_no_aggregate_is_counted() -> None:
    ms = server()
    assert ms.handle_alt(alt_datagram("9.9.9.9"), 1.0) == []
    assert ms.counters["no-site"] == 1


def test_probe_map_requests_are_dropped() -> None:
    """RFC 9301 §5.2 / §5.8: RLOC-probe Map-Requests are never sent through the mapping system."""
    ms = two_etrs()
    assert ms.handle_alt(alt_datagram("153.16.1.5", probe=True), 1.0) == []
    assert ms.counters["dropped:probe"] == 1 and ms.counters["forwarded-to-etr"] == 0


def test_bad_alt_datagrams_are_counted() -> None:
    ms = server()
    good = alt_datagram("153.16.1.5")
    assert ms.handle_alt(good[:-3], 0.0) == []
    bad_sum = good[:26] + bytes([good[26] ^ 0xFF]) + good[27:]
    assert ms.handle_alt(bad_sum, 0.0) == []
    assert ms.handle_alt(udp_packet(ITR, IPv4Address("153.16.1.5"), 1, 4342, b"\x20"), 0.0) == []
    assert ms.counters["malformed"] == 3
