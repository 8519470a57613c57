"""The ALT datagram forwarder: bytes in, verdicts out (RFC 6836 §3.3: LPM, TTL; ICMP errors in the Drop)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from hypothesis import given, settings
from hypothesis import strategies as st

from alt_router.alt import LOCAL, AltForwarder
from alt_router.gre.config import TunnelConfig
from alt_router.gre.dataplane import Dataplane, Deliver, Drop, Forward, Local, SendUnderlay
from alt_router.inet import checksum, ipv4_header, parse_ip, parse_udp, udp_packet
from alt_router.rib import AnnouncedRoute, PeerInfo, Rib, Update
from alt_router.rib.paths import Path

ITR = IPv4Address("192.0.2.7")
ROUTER4 = IPv4Address("10.255.0.1")
ROUTER6 = IPv6Address("fd00:255::1")
PAYLOAD = bytes.fromhex("10000001") + bytes(8) + b"map-request-body"


def alt_datagram(dst: str, ttl: int = 64, src: str = "192.0.2.7", dport: int = 4342) -> bytes:
    return udp_packet(ip_address(src), ip_address(dst), 40000, dport, PAYLOAD, ttl=ttl)


class FakeRoutes:
    """LPM over a dict: the forwarder only needs ``lookup``."""

    def __init__(self, routes: dict[str, str]) -> None:
        self.paths = [
            Path(ip_network(p), peer, ip_address("10.255.9.9") if ":" not in p else ip_address("fd00::9"),
                 ip_address("10.255.9.9"))
            for p, peer in routes.items()
        ]
        self.lookups = 0

    def lookup(self, address: IPv4Address | IPv6Address) -> Path | None:
        self.lookups += 1
        found = [p for p in self.paths if p.prefix.version == address.version and address in p.prefix]
        return max(found, key=lambda p: p.prefix.prefixlen, default=None)


def dropped(verdict: object) -> str | None:
    """The drop reason of a verdict (None: not a drop), whatever ICMP error it carries."""
    return verdict.reason if isinstance(verdict, Drop) else None


def forwarder(routes: dict[str, str] | None = None, **kwargs: object) -> AltForwarder:
    table = FakeRoutes(routes if routes is not None else {"10.0.0.0/8": "b", "10.1.0.0/16": "c",
                                                          "2001:db8::/32": "b"})
    kw: dict[str, object] = {"router_v4": ROUTER4, "router_v6": ROUTER6}
    kw.update(kwargs)
    return AltForwarder(table, {"b": "gre-b", "c": "gre-c"}, **kw)  # type: ignore[arg-type]


def test_forwards_on_longest_match_and_decrements_ttl() -> None:
    fw = forwarder()
    packet = alt_datagram("10.1.2.3", ttl=5)
    verdict = fw.forward(packet, "gre-b")
    assert isinstance(verdict, Forward)
    assert verdict.tunnel == "gre-c"
    out = parse_ip(verdict.packet)  # verifies the header checksum
    assert out.ttl == 4
    assert verdict.packet[:8] == packet[:8] and verdict.packet[12:] == packet[12:]
    assert parse_udp(out).checksum_ok
    assert fw.counters["forwarded"] == 1
    assert isinstance(fw.forward(alt_datagram("10.9.9.9"), "gre-c"), Forward)


def test_ipv6_hop_limit_decremented() -> None:
    fw = forwarder()
    packet = alt_datagram("2001:db8::5", ttl=9, src="2001:db8:ffff::1")
    verdict = fw.forward(packet, "gre-c")
    assert isinstance(verdict, Forward) and verdict.tunnel == "gre-b"
    assert verdict.packet[7] == 8
    assert verdict.packet[:7] == packet[:7] and verdict.packet[8:] == packet[8:]


def test_ttl_expiry_drops_with_time_exceeded_to_the_source() -> None:
    """RFC 1812 §5.3.1: TTL expired in transit, ICMP Time Exceeded to the source (in the verdict)."""
    fw = forwarder()
    packet = alt_datagram("10.1.2.3", ttl=1)
    verdict = fw.forward(packet, "gre-b")
    assert isinstance(verdict, Drop) and verdict.reason == "ttl-expired" and verdict.icmp is not None
    assert fw.counters["ttl-expired"] == 1 and fw.counters["icmp-queued"] == 1
    ip = parse_ip(verdict.icmp)
    assert (ip.src, ip.dst, ip.proto) == (ROUTER4, ITR, 1)
    assert ip.payload[0] == 11 and checksum(ip.payload) == 0
    assert ip.payload[8:] == packet  # the whole (short) offending packet is quoted


def test_ttl_expiry_ipv6_sends_icmpv6_time_exceeded() -> None:
    fw = forwarder()
    verdict = fw.forward(alt_datagram("2001:db8::5", ttl=1, src="2001:db8:ffff::1"), "gre-x")
    assert isinstance(verdict, Drop) and verdict.reason == "ttl-expired" and verdict.icmp is not None
    ip = parse_ip(verdict.icmp)
    assert ip.proto == 58 and ip.payload[0] == 3 and ip.src == ROUTER6


def test_no_route_drops_with_unreachable() -> None:
    fw = forwarder()
    verdict = fw.forward(alt_datagram("172.16.0.1"), "gre-b")
    assert isinstance(verdict, Drop) and verdict.reason == "no-route" and verdict.icmp is not None
    assert fw.counters["no-route"] == 1
    assert parse_ip(verdict.icmp).payload[:2] == b"\x03\x00"  # RFC 1812 §5.2.7.1: net unreachable


def test_no_router_address_suppresses_icmp() -> None:
    fw = forwarder(router_v4=None)
    assert fw.forward(alt_datagram("172.16.0.1"), "gre-b") == Drop("no-route", None)
    assert fw.counters["icmp-suppressed"] == 1


def test_next_hop_back_out_of_the_incoming_tunnel_is_a_loop() -> None:
    fw = forwarder()
    assert dropped(fw.forward(alt_datagram("10.9.9.9"), "gre-b")) == "loop"
    assert fw.counters["loop"] == 1 and fw.counters["forwarded"] == 0


def test_local_prefix_is_delivered_locally_until_removed() -> None:
    fw = forwarder(local_prefixes=[ip_network("10.1.2.0/24")])
    packet = alt_datagram("10.1.2.3")
    assert fw.forward(packet, "gre-b") == Local("gre-b", packet)  # an event: where from, and what
    assert fw.route(IPv4Address("10.1.2.3")) == LOCAL
    fw.remove_local(ip_network("10.1.2.0/24"))
    verdict = fw.forward(alt_datagram("10.1.2.3"), "gre-b")
    assert isinstance(verdict, Forward) and verdict.tunnel == "gre-c"
    fw.add_local(ip_network("10.1.2.0/24"))
    assert isinstance(fw.forward(alt_datagram("10.1.2.3"), "gre-b"), Local)


def test_non_alt_packets_go_to_the_kernel() -> None:
    fw = forwarder()
    bgp = ipv4_header(ROUTER4, IPv4Address("10.255.0.2"), 6, 20) + bytes(20)
    assert isinstance(fw.forward(bgp, "gre-b"), Deliver)
    assert isinstance(fw.forward(alt_datagram("10.1.2.3", dport=53), "gre-b"), Deliver)
    frag = bytearray(alt_datagram("10.1.2.3"))
    frag[6] |= 0x20  # MF: a first fragment
    assert isinstance(fw.forward(bytes(frag), "gre-b"), Deliver)
    assert fw.counters["not-alt"] == 3 and fw.counters["forwarded"] == 0


def test_malformed_packets_are_counted_drops() -> None:
    fw = forwarder()
    good = alt_datagram("10.1.2.3")
    for bad in (b"", b"\x50" + bytes(30), good[:12], b"\x46" + good[1:20], good[:2] + b"\xff\xff" + good[4:],
                b"\x60" + bytes(20)):
        assert dropped(fw.forward(bad, "gre-b")) == "malformed", bad
    assert fw.counters["malformed"] == 6


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    fw = forwarder()
    verdict = fw.forward(data, "gre-b")
    assert isinstance(verdict, Deliver | Drop | Forward | Local)


@settings(max_examples=200)
@given(ttl=st.integers(2, 255), ident=st.integers(0, 0xFFFF), tos=st.integers(0, 255),
       dst=st.integers(0x0A000000, 0x0AFFFFFF))
def test_incremental_checksum_matches_recomputation(ttl: int, ident: int, tos: int, dst: int) -> None:
    fw = forwarder()
    body = struct.pack("!HHHH", 1, 4342, 8 + len(PAYLOAD), 0) + PAYLOAD
    packet = ipv4_header(ITR, IPv4Address(dst), 17, len(body), ttl=ttl, ident=ident, tos=tos) + body
    verdict = fw.forward(packet, "gre-x")
    assert isinstance(verdict, Forward)
    header = verdict.packet[:20]
    assert checksum(header) == 0
    assert header[8] == ttl - 1


def test_route_is_the_resolvers_one_lookup_and_changes_nothing() -> None:
    """Issue 13: the Map-Resolver's lookup is the datagram's only one; it reads, never counts or caches."""
    fw = forwarder({"10.0.0.0/8": "b", "10.1.0.0/16": "c", "172.16.0.0/12": "z"})
    assert fw.route(IPv4Address("10.1.2.3")) == "gre-c"
    assert fw.route(IPv4Address("192.168.0.1")) is None
    assert fw.route(IPv4Address("172.16.0.1")) is None  # peer without a tunnel
    assert all(n == 0 for n in fw.counters.values()) and fw.stats()["cache"] == 0


def test_route_via_unknown_peer_counts_no_tunnel() -> None:
    fw = forwarder({"10.0.0.0/8": "z"})
    verdict = fw.forward(alt_datagram("10.1.2.3"), "gre-x")
    assert isinstance(verdict, Drop) and verdict.reason == "no-route"
    assert fw.counters["no-tunnel"] == 1


B = IPv4Address("10.255.1.2")
C = IPv4Address("10.255.2.2")


def _rib() -> Rib:
    peers = [PeerInfo("b", 65002, (IPv4Address("10.255.1.2"),)),
             PeerInfo("c", 65003, (IPv4Address("10.255.2.2"),))]
    rib = Rib(65001, [ip_network("10.0.0.0/8")], peers)
    rib.peer_up("b", 0.0)
    rib.peer_up("c", 0.0)
    return rib


def test_cache_follows_rib_changes() -> None:
    rib = _rib()
    fw = AltForwarder.for_rib(rib, {"b": "gre-b", "c": "gre-c"}, router_v4=ROUTER4)
    assert dropped(fw.forward(alt_datagram("10.1.2.3"), "gre-x")) == "no-route"
    rib.apply(Update("b", announce=(AnnouncedRoute(ip_network("10.1.0.0/16"), B, (65002,)),)))
    v = fw.forward(alt_datagram("10.1.2.3"), "gre-x")
    assert isinstance(v, Forward) and v.tunnel == "gre-b"
    rib.apply(Update("c", announce=(AnnouncedRoute(ip_network("10.1.2.0/24"), C, (65003,)),)))
    v = fw.forward(alt_datagram("10.1.2.3"), "gre-x")
    assert isinstance(v, Forward) and v.tunnel == "gre-c"
    rib.apply(Update("c", withdraw=(ip_network("10.1.2.0/24"),)))
    v = fw.forward(alt_datagram("10.1.2.3"), "gre-x")
    assert isinstance(v, Forward) and v.tunnel == "gre-b"


def test_hook_drives_the_gre_dataplane_between_tunnels() -> None:
    tb = TunnelConfig("gre-b", IPv4Address("198.51.100.1"), IPv4Address("198.51.100.2"))
    tc = TunnelConfig("gre-c", IPv4Address("198.51.100.1"), IPv4Address("198.51.100.3"))
    fw = forwarder()
    dp = Dataplane([tb, tc], hook=fw.hook)
    gre_ipv4 = b"\x00\x00\x08\x00"
    actions = dp.receive(tb.local, tb.remote, gre_ipv4 + alt_datagram("10.1.2.3", ttl=9))
    (send,) = actions
    assert isinstance(send, SendUnderlay) and send.tunnel == "gre-c"
    assert parse_ip(send.datagram[4:]).ttl == 8
