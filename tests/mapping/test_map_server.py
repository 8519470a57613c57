"""The Map-Server: registrations (auth, site checks, expiry, Map-Notify) and Map-Requests off the ALT."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address, ip_network

import pytest

from alt_router.inet import udp_packet
from alt_router.lisp import (
    ECM,
    HMAC_SHA_1_96,
    HMAC_SHA_256_128,
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
from alt_router.mapping.map_server import MapServer
from alt_router.node.config import SiteConfig

from .util import ITR, map_request

ETR1 = IPv4Address("198.51.100.11")
ETR2 = IPv4Address("198.51.100.12")
SITE = SiteConfig("site-1", "secret-1", "hmac-sha256-128", (ip_network("153.16.1.0/24"),))
SITE_MORE = SiteConfig("site-2", "secret-2", "hmac-sha1-96", (ip_network("153.16.2.0/24"),),
                       accept_more_specifics=True)
SITE_ALWAYS = SiteConfig("site-3", "secret-3", "hmac-sha256-128", (ip_network("153.16.3.0/24"),),
                         always_announce=True)


def record(prefix: str, rloc: IPv4Address = ETR1, ttl: int = 1440, eid: object = None) -> MappingRecord:
    net = ip_network(prefix)
    return MappingRecord(eid or net.network_address, net.prefixlen, ttl=ttl,  # type: ignore[arg-type]
                         locators=(Locator(rloc, 1, 50),), authoritative=True)


def register(*records: MappingRecord, key: str = "secret-1", alg: int = HMAC_SHA_256_128, nonce: int = 42,
             notify: bool = True, proxy: bool = False, key_id: int = 0, use_ttl: bool = False,
             xtr_id: int | None = None) -> bytes:
    msg = MapRegister(nonce, records, key_id=key_id, algorithm_id=alg, want_map_notify=notify,
                      proxy_reply=proxy, use_ttl=use_ttl, xtr_id=xtr_id,
                      site_id=0 if xtr_id is not None else None)
    return sign(msg, key, algorithm_id=alg).encode()


def server() -> MapServer:
    return MapServer([SITE, SITE_MORE, SITE_ALWAYS])


def alt_datagram(eid: str, nonce: int = 9, sport: int = 50000, ttl: int = 60) -> bytes:
    return udp_packet(ITR, ip_address(eid), sport, 4342, map_request(eid, nonce).encode(), ttl=ttl)


def test_good_register_announces_and_notifies_the_source_port() -> None:
    ms = server()
    out = ms.handle_register(register(record("153.16.1.0/24"), nonce=4242), ETR1, 61000, now=0.0)
    assert out[0] == Announce(ip_network("153.16.1.0/24"))
    notify = out[1]
    assert isinstance(notify, SendUdp)
    assert (notify.dst, notify.dport, notify.sport) == (ETR1, 61000, 4342)
    msg = decode(notify.payload)
    assert isinstance(msg, MapNotify) and msg.nonce == 4242
    assert msg.records == (record("153.16.1.0/24"),)
    assert verify(notify.payload, "secret-1")
    assert [r.prefix for r in ms.registrations()] == [ip_network("153.16.1.0/24")]
    # A refresh announces nothing new; without the M bit there is no Map-Notify.
    assert ms.handle_register(register(record("153.16.1.0/24"), notify=False), ETR1, 61000, 10.0) == []


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
    ms = server()
    assert ms.handle_register(data, ETR1, 4342, 0.0) == []
    assert ms.counters[f"refused:{reason}"] == 1
    assert ms.registrations() == []
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
    ms = server()
    ms.handle_register(register(record("153.16.1.0/24")), ETR1, 4342, 100.0)
    assert ms.next_expiry() == 280.0
    assert ms.tick(279.0) == []
    assert ms.lookup(IPv4Address("153.16.1.1"), 279.0)
    assert ms.lookup(IPv4Address("153.16.1.1"), 280.0) == []  # expired even before tick runs
    assert ms.tick(280.0) == [Withdraw(ip_network("153.16.1.0/24"))]
    assert ms.registrations() == [] and ms.counters["expired"] == 1


def test_t_bit_uses_the_record_ttl_and_ttl_zero_deregisters() -> None:
    ms = server()
    ms.handle_register(register(record("153.16.1.0/24", ttl=10), use_ttl=True), ETR1, 4342, 0.0)
    assert ms.next_expiry() == 600.0
    out = ms.handle_register(register(record("153.16.1.0/24", ttl=0), notify=False), ETR1, 4342, 5.0)
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
    ms.handle_register(register(record("153.16.1.0/24", ETR2, ttl=60), proxy=proxy), ETR2, 4343, 0.0)
    return ms


def test_two_etrs_share_the_requests_in_ecms() -> None:
    ms = two_etrs()
    assert len(ms.registrations()) == 2
    sent = [ms.handle_alt(alt_datagram("153.16.1.5", nonce=i, ttl=33), 1.0)[0] for i in range(2)]
    assert {(s.dst, s.dport) for s in sent} == {(ETR1, 4342), (ETR2, 4343)}  # type: ignore[union-attr]
    ecm = decode(sent[0].payload)  # type: ignore[union-attr]
    assert isinstance(ecm, ECM) and ecm.to_etr
    assert (ecm.source, str(ecm.destination), ecm.source_port, ecm.ttl) == (ITR, "153.16.1.5", 50000, 33)
    assert isinstance(ecm.inner, MapRequest) and ecm.inner.nonce == 0
    assert ms.counters["forwarded-to-etr"] == 2


def test_proxy_reply_merges_both_etrs_locators() -> None:
    ms = two_etrs(proxy=True)
    (out,) = ms.handle_alt(alt_datagram("153.16.1.5", nonce=0xABC, sport=50123), 1.0)
    assert isinstance(out, SendUdp) and (out.dst, out.dport) == (ITR, 50123)
    reply = decode(out.payload)
    assert isinstance(reply, MapReply) and reply.nonce == 0xABC
    (rec,) = reply.records
    assert {loc.address for loc in rec.locators} == {ETR1, ETR2}
    assert rec.ttl == 60 and not rec.authoritative


def test_xtr_id_keys_registrations_not_the_source() -> None:
    ms = server()
    ms.handle_register(register(record("153.16.1.0/24"), xtr_id=5), ETR1, 4342, 0.0)
    ms.handle_register(register(record("153.16.1.0/24"), xtr_id=5), ETR2, 4342, 1.0)  # same xTR, new RLOC
    (reg,) = ms.registrations()
    assert reg.source == ETR2


def test_unregistered_site_and_unknown_eid() -> None:
    ms = server()
    ms.handle_register(register(record("153.16.2.0/25"), key="secret-2", alg=HMAC_SHA_1_96), ETR1, 1, 0.0)
    (out,) = ms.handle_alt(alt_datagram("153.16.2.200"), 1.0)
    reply = decode(out.payload)  # type: ignore[union-attr]
    assert isinstance(reply, MapReply)
    rec = reply.records[0]
    # Not the site's /24: that would hide the registered /25.
    assert (str(rec.eid), rec.mask_len, rec.ttl, rec.locators) == ("153.16.2.128", 25, 1, ())
    assert ms.handle_alt(alt_datagram("9.9.9.9"), 1.0) == []
    assert ms.counters["no-site"] == 1


def test_bad_alt_datagrams_are_counted() -> None:
    ms = server()
    good = alt_datagram("153.16.1.5")
    assert ms.handle_alt(good[:-3], 0.0) == []
    bad_sum = good[:26] + bytes([good[26] ^ 0xFF]) + good[27:]
    assert ms.handle_alt(bad_sum, 0.0) == []
    assert ms.handle_alt(udp_packet(ITR, IPv4Address("153.16.1.5"), 1, 4342, b"\x20"), 0.0) == []
    assert ms.counters["malformed"] == 3
