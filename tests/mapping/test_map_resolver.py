"""The Map-Resolver: ECM Map-Requests in, ALT datagrams / negative Map-Replies / ICMP out.

Peer behaviour (zero IPv6 inner checksums, inner source = source EID, LISP-SEC,
probes) is reproduced with byte vectors patched or built by hand.
"""

from __future__ import annotations

import logging
import random
import struct
from ipaddress import IPv4Address, IPv6Address, ip_network

import pytest

from alt_router.alt import AltForwarder
from alt_router.inet import parse_ip, parse_udp
from alt_router.lisp import ECM, Action, EidRecord, MappingRecord, MapRegister, MapReply, MapRequest, decode
from alt_router.mapping.actions import SendAlt, SendIp, SendUdp
from alt_router.mapping.map_resolver import MapResolver
from alt_router.mapping.ratelimit import SourceLimits
from alt_router.rib.paths import Path

from .util import ITR, ecm_request, map_request

ROUTER = IPv4Address("10.255.0.1")
ROUTES = ["10.0.0.0/8", "12.0.0.0/8", "153.16.1.0/24", "2001:db8:1::/48"]
ITR6 = IPv6Address("2001:db8:ffff::7")


class Routes:
    def __init__(self, prefixes: list[str]) -> None:
        self.prefixes = [ip_network(p) for p in prefixes]

    def lookup(self, address: IPv4Address | IPv6Address) -> Path | None:
        for p in sorted(self.prefixes, key=lambda p: -p.prefixlen):
            if p.version == address.version and address in p:
                return Path(p, "b", IPv4Address("10.255.1.2"), IPv4Address("10.255.1.2"))
        return None


def resolver(rate: float = 1000.0, burst: float = 1000.0, local: tuple[str, ...] = (),
             routes: list[str] | None = None, eid_space: tuple[str, ...] = (), **kw: float) -> MapResolver:
    table = Routes(ROUTES if routes is None else routes)
    fw = AltForwarder(table, {"b": "gre-b"}, router_v4=ROUTER, local_prefixes=[ip_network(p) for p in local])
    return MapResolver(fw, lambda: table.prefixes, rate=rate, burst=burst,
                       eid_space=[ip_network(p) for p in eid_space], **kw)  # type: ignore[arg-type]


def negative_record(actions: list[object]) -> MappingRecord:
    (action,) = actions
    assert isinstance(action, SendUdp)
    reply = decode(action.payload)
    assert isinstance(reply, MapReply)
    (record,) = reply.records
    return record


# --- forwarding into the ALT -------------------------------------------------------------------

def test_routed_eid_enters_the_alt_as_the_itrs_datagram() -> None:
    mr = resolver()
    data = ecm_request("153.16.1.9", sport=50001, ttl=30)
    (action,) = mr.handle(data, ITR, 50001, now=0.0)
    assert isinstance(action, SendAlt)
    ip = parse_ip(action.packet)
    udp = parse_udp(ip)
    assert (ip.src, str(ip.dst), ip.ttl) == (ITR, "153.16.1.9", 29)
    assert (udp.sport, udp.dport, udp.checksum_ok) == (50001, 4342, True)
    assert udp.payload == map_request("153.16.1.9").encode()
    assert mr.counters["forwarded"] == 1
    # ... towards the EID, by the route of the resolver's lookup (the only one, issue 13).
    assert action.route == "gre-b"


def test_local_eid_also_goes_through_the_forwarder() -> None:
    mr = resolver(local=("172.16.0.0/16",))
    (action,) = mr.handle(ecm_request("172.16.3.4"), ITR, 50000, now=0.0)
    assert isinstance(action, SendAlt)


def test_expired_ttl_answers_time_exceeded_from_the_resolver() -> None:
    mr = resolver()
    data = ecm_request("153.16.1.9", ttl=1)
    (action,) = mr.handle(data, ITR, 50000, 0.0)
    assert isinstance(action, SendIp)
    ip = parse_ip(action.packet)
    assert (ip.src, ip.dst, ip.payload[0]) == (ROUTER, ITR, 11)
    assert ip.payload[8:] == data[4:]  # the inner packet, nonce included
    assert mr.counters["ttl-expired"] == 1


# --- negative replies --------------------------------------------------------------------------

def test_unrouted_eid_gets_a_negative_reply_for_the_largest_free_prefix() -> None:
    mr = resolver()
    outer_source = IPv4Address("198.51.100.9")
    (action,) = mr.handle(ecm_request("11.1.2.3", nonce=77, sport=50002), outer_source, 4342, 0.0)
    assert isinstance(action, SendUdp)
    assert (action.dst, action.dport, action.sport) == (ITR, 50002, 4342)  # ITR-RLOC, inner source port
    reply = decode(action.payload)
    assert isinstance(reply, MapReply) and reply.nonce == 77
    (record,) = reply.records
    # RFC 9301 §8.4: Natively-Forward, 15 minutes, least specific prefix hiding no EID prefix.
    assert record == MappingRecord(IPv4Address("11.0.0.0"), 8, ttl=15, action=Action.NATIVELY_FORWARD)
    assert mr.counters["negative-reply"] == 1


def test_negative_prefix_respects_local_prefixes() -> None:
    mr = resolver(local=("11.1.0.0/16",))
    record = negative_record(mr.handle(ecm_request("11.2.0.1"), ITR, 50000, 0.0))
    assert (record.eid, record.mask_len) == (IPv4Address("11.2.0.0"), 15)


def test_eid_space_without_an_alt_route_gets_the_short_outage_ttl() -> None:
    """Issue 11: an ALT flap must not send ITRs to native forwarding for 15 minutes.

    RFC 9301 §8.1 gives 1 minute where the EID may exist but nothing answers for it,
    15 minutes only where the EID does not exist (§8.4).
    """
    # The ALT is down: no routes at all.  153.16.0.0/12 is our EID space.
    mr = resolver(routes=[], eid_space=("153.16.0.0/12",))
    inside = negative_record(mr.handle(ecm_request("153.16.1.9"), ITR, 50000, 0.0))
    assert (inside.ttl, inside.action) == (1, Action.NATIVELY_FORWARD)
    assert (str(inside.eid), inside.mask_len) == ("153.16.0.0", 12)  # kept inside the EID space
    outside = negative_record(mr.handle(ecm_request("11.1.2.3"), ITR, 50000, 0.0))
    assert outside.ttl == 15
    # A 15-minute entry must not cover any of the EID space (it would hide it for 15 minutes).
    covered = ip_network((outside.eid, outside.mask_len))
    assert not covered.overlaps(ip_network("153.16.0.0/12"))
    assert mr.counters["negative-reply"] == 2 and mr.counters["negative-reply:eid-space-unrouted"] == 1


def test_outage_ttl_is_configurable_and_routes_narrow_the_prefix() -> None:
    mr = resolver(routes=["153.16.1.0/24"], eid_space=("153.16.0.0/12",), outage_negative_ttl=3)
    record = negative_record(mr.handle(ecm_request("153.17.0.1"), ITR, 50000, 0.0))
    assert record.ttl == 3 and (str(record.eid), record.mask_len) == ("153.17.0.0", 16)


# --- RFC 9301 conformance points -----------------------------------------------------------------

def test_probe_map_request_is_dropped_and_counted() -> None:
    """RFC 9301 §5.2: "If a Map-Resolver or Map-Server receives a Map-Request with the probe-bit set,
    it MUST drop the message.\""""
    mr = resolver()
    request = MapRequest(5, None, (ITR,), (EidRecord(IPv4Address("11.1.1.1"), 32),), probe=True)
    data = ECM(request, ITR, IPv4Address("11.1.1.1"), source_port=50000).encode()
    assert data[4 + 20 + 8] & 0x02  # the P bit on the wire (Map-Request byte 0, bit 6)
    assert mr.handle(data, ITR, 50000, 0.0) == []
    assert mr.counters["dropped:probe"] == 1 and mr.counters["negative-reply"] == 0


def ipv6_ecm(eid: str, checksum: bytes | None, itr: IPv6Address = ITR6) -> bytes:
    request = MapRequest(9, None, (itr,), (EidRecord(IPv6Address(eid), 128),))
    data = ECM(request, itr, IPv6Address(eid), source_port=50003).encode()
    if checksum is None:
        return data
    at = 4 + 40 + 6  # ECM header, IPv6 header, UDP checksum field
    return data[:at] + checksum + data[at + 2:]


def test_ipv6_ecm_with_a_zero_inner_udp_checksum_is_accepted_and_counted() -> None:
    """Issue 12 item 4: one deployed ITR sends 0 (RFC 9301 §5.8 says non-zero; RFC 6935/6936 allow it)."""
    mr = resolver()
    (action,) = mr.handle(ipv6_ecm("2001:db8:1::5", b"\x00\x00"), ITR6, 50003, 0.0)
    assert isinstance(action, SendAlt)
    assert parse_udp(parse_ip(action.packet)).checksum_ok  # what we forward has a real checksum
    assert mr.counters["accepted:ipv6-zero-udp-checksum"] == 1
    (neg,) = mr.handle(ipv6_ecm("2001:db8:9::5", b"\x00\x00"), ITR6, 50003, 0.0)
    assert isinstance(neg, SendUdp) and neg.dst == ITR6
    assert mr.counters["accepted:ipv6-zero-udp-checksum"] == 2


def test_wrong_non_zero_inner_checksum_is_still_malformed() -> None:
    mr = resolver()
    good = ipv6_ecm("2001:db8:1::5", None)
    wrong = bytes([good[50] ^ 0xFF]) + good[51:52]
    assert mr.handle(ipv6_ecm("2001:db8:1::5", wrong), ITR6, 50003, 0.0) == []
    assert mr.counters["malformed"] == 1 and mr.counters["accepted:ipv6-zero-udp-checksum"] == 0


def test_ecm_whose_inner_source_is_the_source_eid_is_answered_at_the_itr_rloc() -> None:
    """RFC 9301 §5.5: the Map-Reply goes to an ITR-RLOC of the Map-Request, not to the inner source."""
    mr = resolver()
    source_eid = IPv4Address("153.16.7.7")
    request = MapRequest(11, source_eid, (ITR,), (EidRecord(IPv4Address("11.1.1.1"), 32),))
    data = ECM(request, source_eid, IPv4Address("11.1.1.1"), source_port=50004).encode()
    (action,) = mr.handle(data, ITR, 4342, 0.0)
    assert isinstance(action, SendUdp) and (action.dst, action.dport) == (ITR, 50004)
    assert mr.counters["accepted:inner-source-not-itr-rloc"] == 1


def test_lisp_sec_ecm_is_forwarded_unchanged_and_counted() -> None:
    """RFC 9301 §5.8: with S the ECM Authentication Data follows the ECM header (RFC 9303 §6.1)."""
    mr = resolver()
    ad = (struct.pack("!BBH", 1, 0, 2) + struct.pack("!HH", 24, 0) + bytes(8) + bytes(range(16))
          + struct.pack("!HH", 8, 0) + struct.pack("!BBH", 0, 0, 0))
    inner = ECM(map_request("153.16.1.9"), ITR, IPv4Address("153.16.1.9"), source_port=50005).encode()[4:]
    data = bytes((0x88, 0, 0, 0)) + ad + inner  # type 8, S bit
    (action,) = mr.handle(data, ITR, 50005, 0.0)
    assert isinstance(action, SendAlt)
    assert parse_udp(parse_ip(action.packet)).payload == map_request("153.16.1.9").encode()
    assert mr.counters["accepted:lisp-sec-unverified"] == 1


def test_malformed_and_unexpected_messages_are_counted_drops() -> None:
    mr = resolver()
    assert mr.handle(b"\x80\x00", ITR, 1, 0.0) == []
    assert mr.handle(b"", ITR, 1, 0.0) == []
    assert mr.handle(map_request("10.1.1.1").encode(), ITR, 1, 0.0) == []
    register = MapRegister(1, (MappingRecord(IPv4Address("10.0.0.0"), 8),))
    assert mr.handle(ECM(register, ITR, IPv4Address("10.0.0.1")).encode(), ITR, 1, 0.0) == []
    assert mr.counters["malformed"] == 2
    assert mr.counters["not-ecm"] == 1
    assert mr.counters["not-map-request"] == 1


# --- rate limits (issue 11), fake clock ---------------------------------------------------------

def test_rate_limit_per_ipv4_slash_24_with_a_fake_clock() -> None:
    mr = resolver(rate=1.0, burst=2)
    neighbour = IPv4Address("192.0.2.99")  # same /24 as ITR: shares its bucket
    other = IPv4Address("192.0.3.7")
    assert bool(mr.handle(ecm_request("11.1.1.1"), ITR, 50000, 0.0))
    assert bool(mr.handle(ecm_request("11.1.1.1"), neighbour, 50000, 0.0))
    assert not mr.handle(ecm_request("11.1.1.1"), ITR, 50000, 0.0)
    assert not mr.handle(ecm_request("11.1.1.1"), neighbour, 50000, 0.0)  # rotating addresses does not help
    assert mr.handle(ecm_request("11.1.1.1", itr=other), other, 50000, 0.0)
    assert not mr.handle(ecm_request("11.1.1.1"), ITR, 50000, 0.5)
    assert mr.handle(ecm_request("11.1.1.1"), ITR, 50000, 1.0)
    assert mr.counters["rate-limited:prefix"] == 3


def test_rate_limit_per_ipv6_slash_64() -> None:
    mr = resolver(rate=1.0, burst=1)
    a = IPv6Address("2001:db8:ffff::1")
    b = IPv6Address("2001:db8:ffff::dead:beef")  # same /64
    c = IPv6Address("2001:db8:ffff:1::1")  # next /64
    assert mr.handle(ipv6_ecm("2001:db8:9::1", None, a), a, 1, 0.0)
    assert not mr.handle(ipv6_ecm("2001:db8:9::1", None, b), b, 1, 0.0)
    assert mr.handle(ipv6_ecm("2001:db8:9::1", None, c), c, 1, 0.0)
    assert mr.counters["rate-limited:prefix"] == 1


def test_global_bucket_bounds_a_flood_from_random_sources() -> None:
    mr = resolver(rate=10.0, burst=10, global_rate=5.0, global_burst=5)
    rng = random.Random(1)
    served = 0
    for _ in range(100):
        src = IPv4Address(rng.getrandbits(32))
        served += bool(mr.handle(ecm_request("11.1.1.1", itr=src), src, 1, 0.0))
    assert served == 5 and mr.counters["rate-limited:global"] == 95
    # One second later the global bucket has 5 more tokens.
    src = IPv4Address("203.0.113.1")
    assert mr.handle(ecm_request("11.1.1.1", itr=src), src, 1, 1.0)


def test_negative_replies_are_charged_to_the_itr_rloc_prefix() -> None:
    """A negative reply goes to an address inside the request: a reflection vector (issue 11)."""
    mr = resolver(rate=2.0, burst=2)
    victim = IPv4Address("203.0.113.50")
    rng = random.Random(2)
    sent_to_victim = 0
    for _ in range(50):
        spoofed = IPv4Address(rng.getrandbits(32))
        out = mr.handle(ecm_request("11.1.1.1", itr=victim), spoofed, 1, 0.0)
        sent_to_victim += sum(1 for a in out if isinstance(a, SendUdp) and a.dst == victim)
    assert sent_to_victim == 2  # the victim's /24 bucket, not 50 spoofed sources' buckets
    assert mr.counters["rate-limited:reply"] == 48


def test_the_prefix_table_stays_bounded_under_100k_random_sources() -> None:
    """Issue 11: memory bounded under a flood of random (spoofed) sources, IPv4 and IPv6."""
    limits = SourceLimits(rate=1.0, burst=1, global_rate=1e9, global_burst=1e9, max_prefixes=1000)
    rng = random.Random(3)
    for i in range(100_000):
        addr = IPv4Address(rng.getrandbits(32)) if i % 2 else IPv6Address(rng.getrandbits(128))
        limits.admit(addr, i * 1e-6)
        assert len(limits) <= 1000
    assert limits.evicted >= 98_000
    # The same through the resolver (fewer datagrams: each one is decoded).
    mr = resolver(rate=1.0, burst=1, global_rate=1e9, global_burst=1e9, max_prefixes=100)
    data = ecm_request("11.1.1.1")
    for i in range(5000):
        mr.handle(data, IPv4Address(rng.getrandbits(32)), 1, i * 1e-6)
    assert len(mr.limits) <= 100 and mr.counters["received"] == 5000


def test_refusals_are_summarised_in_the_log_not_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    mr = resolver(rate=1.0, burst=1, log_interval=10.0)
    caplog.set_level(logging.WARNING, logger="alt_router.mapping.map_resolver")
    for i in range(500):
        mr.handle(ecm_request("11.1.1.1"), ITR, 1, i * 0.001)
    assert mr.counters["rate-limited:prefix"] == 499
    assert len(caplog.records) == 1 and "192.0.2.7" in caplog.records[0].getMessage()
    assert mr.next_deadline() == pytest.approx(10.001)
    mr.tick(5.0)
    assert len(caplog.records) == 1  # not due yet
    mr.tick(10.001)
    lines = [r.getMessage() for r in caplog.records[1:]]
    assert lines == ["Map-Resolver: 498 more rate-limited:prefix from 192.0.2.0/24 in the last 10s"]
    assert mr.next_deadline() is None


def test_forwarded_requests_are_charged_to_the_itr_rloc_prefix_too() -> None:
    """The ETR answers the ITR-RLOC inside the request: spoofed sources must not aim those replies either."""
    mr = resolver(rate=2.0, burst=2)
    victim = IPv4Address("203.0.113.50")
    rng = random.Random(4)
    forwarded = 0
    for _ in range(20):
        spoofed = IPv4Address(rng.getrandbits(32))
        forwarded += len(mr.handle(ecm_request("153.16.1.9", itr=victim), spoofed, 1, 0.0))
    assert forwarded == 2 and mr.counters["rate-limited:reply"] == 18
    # The ITR's own requests (ITR-RLOC in its own /24) are charged once, not twice.
    mr = resolver(rate=2.0, burst=2)
    assert [len(mr.handle(ecm_request("153.16.1.9"), ITR, 1, 0.0)) for _ in range(3)] == [1, 1, 0]
