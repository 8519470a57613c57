"""The Map-Resolver: ECM Map-Requests in, ALT datagrams / negative Map-Replies / ICMP out."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_network

from alt_router.alt import AltForwarder
from alt_router.inet import parse_ip, parse_udp
from alt_router.lisp import ECM, Action, MappingRecord, MapRegister, MapReply, decode
from alt_router.mapping.actions import SendAlt, SendIp, SendUdp
from alt_router.mapping.map_resolver import MapResolver
from alt_router.rib.paths import Path

from .util import ITR, ecm_request, map_request

ROUTER = IPv4Address("10.255.0.1")
ROUTES = ["10.0.0.0/8", "12.0.0.0/8", "153.16.1.0/24"]


class Routes:
    def __init__(self, prefixes: list[str]) -> None:
        self.prefixes = [ip_network(p) for p in prefixes]

    def lookup(self, address: IPv4Address | IPv6Address) -> Path | None:
        for p in sorted(self.prefixes, key=lambda p: -p.prefixlen):
            if p.version == address.version and address in p:
                return Path(p, "b", IPv4Address("10.255.1.2"), IPv4Address("10.255.1.2"))
        return None


def resolver(rate: float = 1000.0, burst: float = 1000.0, local: tuple[str, ...] = ()) -> MapResolver:
    routes = Routes(ROUTES)
    fw = AltForwarder(routes, {"b": "gre-b"}, router_v4=ROUTER, local_prefixes=[ip_network(p) for p in local])
    return MapResolver(fw, lambda: routes.prefixes, rate=rate, burst=burst)


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
    # ... and the forwarder, fed the same packet, sends it out towards the EID.
    assert mr.forwarder.originate(action.packet).tunnel == "gre-b"  # type: ignore[union-attr]


def test_local_eid_also_goes_through_the_forwarder() -> None:
    mr = resolver(local=("172.16.0.0/16",))
    (action,) = mr.handle(ecm_request("172.16.3.4"), ITR, 50000, now=0.0)
    assert isinstance(action, SendAlt)


def test_unrouted_eid_gets_a_negative_reply_for_the_largest_free_prefix() -> None:
    mr = resolver()
    outer_source = IPv4Address("198.51.100.9")
    (action,) = mr.handle(ecm_request("11.1.2.3", nonce=77, sport=50002), outer_source, 4342, 0.0)
    assert isinstance(action, SendUdp)
    assert (action.dst, action.dport, action.sport) == (ITR, 50002, 4342)  # ITR-RLOC, inner source port
    reply = decode(action.payload)
    assert isinstance(reply, MapReply) and reply.nonce == 77
    (record,) = reply.records
    assert record == MappingRecord(IPv4Address("11.0.0.0"), 8, ttl=15, action=Action.NATIVELY_FORWARD)
    assert mr.counters["negative-reply"] == 1


def test_negative_prefix_respects_local_prefixes_and_route_changes() -> None:
    mr = resolver(local=("11.1.0.0/16",))
    (action,) = mr.handle(ecm_request("11.2.0.1"), ITR, 50000, 0.0)
    reply = decode(action.payload)  # type: ignore[union-attr]
    assert isinstance(reply, MapReply)
    assert (reply.records[0].eid, reply.records[0].mask_len) == (IPv4Address("11.2.0.0"), 15)


def test_expired_ttl_answers_time_exceeded_from_the_resolver() -> None:
    mr = resolver()
    data = ecm_request("153.16.1.9", ttl=1)
    (action,) = mr.handle(data, ITR, 50000, 0.0)
    assert isinstance(action, SendIp)
    ip = parse_ip(action.packet)
    assert (ip.src, ip.dst, ip.payload[0]) == (ROUTER, ITR, 11)
    assert ip.payload[8:] == data[4:]  # the inner packet, nonce included
    assert mr.counters["ttl-expired"] == 1


def test_rate_limit_per_source_with_a_fake_clock() -> None:
    mr = resolver(rate=1.0, burst=2)
    other = IPv4Address("192.0.2.99")
    got = [bool(mr.handle(ecm_request("11.1.1.1"), ITR, 50000, 0.0)) for _ in range(3)]
    assert got == [True, True, False]
    assert mr.handle(ecm_request("11.1.1.1"), other, 50000, 0.0)
    assert not mr.handle(ecm_request("11.1.1.1"), ITR, 50000, 0.5)
    assert mr.handle(ecm_request("11.1.1.1"), ITR, 50000, 1.0)
    assert mr.counters["rate-limited"] == 2


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
