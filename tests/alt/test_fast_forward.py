"""``AltForwarder.fast_forward`` is ``forward`` for the common case and declines everything else."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alt_router.alt import AltForwarder
from alt_router.gre import header as gre
from alt_router.gre.config import TunnelConfig
from alt_router.gre.dataplane import TO_UNDERLAY, Dataplane, Forward
from alt_router.inet import PROTO_GRE, ipv4_header, parse_ip, udp_packet
from alt_router.rib import AnnouncedRoute, PeerInfo, Rib, Update
from tests.alt.test_forwarder import PAYLOAD, FakeRoutes

ROUTES = {"10.0.0.0/8": "b", "10.1.0.0/16": "c", "2001:db8::/32": "b", "10.7.0.0/16": "z"}
DESTINATIONS = ["10.1.2.3", "10.9.9.9", "10.5.0.1", "10.7.0.1", "172.16.0.1", "2001:db8::5", "2001:db9::1"]


def forwarder(**kw: object) -> AltForwarder:
    kwargs: dict[str, object] = {
        "router_v4": IPv4Address("10.255.0.1"), "local_prefixes": [ip_network("10.5.0.0/16")],
        "generation": lambda: 0,
    }
    kwargs.update(kw)
    return AltForwarder(FakeRoutes(ROUTES), {"b": "gre-b", "c": "gre-c"}, **kwargs)  # type: ignore[arg-type]


def datagram(dst: str, ttl: int = 64, dport: int = 4342) -> bytes:
    src = "2001:db8:ffff::1" if ":" in dst else "192.0.2.7"
    return udp_packet(ip_address(src), ip_address(dst), 40000, dport, PAYLOAD, ttl=ttl)


def check_agrees(packet: bytes, from_tunnel: str, prefix: bytes = b"") -> tuple[str, bytes] | None:
    """fast_forward on a warm cache against forward on an identical forwarder."""
    fast, ref = forwarder(), forwarder()
    for fw in (fast, ref):
        fw.forward(packet, from_tunnel)  # warm the cache the same way
    before = dict(fast.counters)
    result = fast.fast_forward(prefix + packet, len(prefix), from_tunnel)
    verdict = ref.forward(packet, from_tunnel)
    if result is None:
        assert fast.counters == before
    else:
        assert verdict == Forward(*result)
        assert fast.counters == ref.counters
    return result


@pytest.mark.parametrize("dst", DESTINATIONS)
@pytest.mark.parametrize("ttl", [0, 1, 2, 64])
@pytest.mark.parametrize("from_tunnel", ["gre-b", "gre-c"])
def test_agrees_with_forward(dst: str, ttl: int, from_tunnel: str) -> None:
    check_agrees(datagram(dst, ttl), from_tunnel, prefix=b"\x45GRE+outer")


def test_takes_the_common_cases() -> None:
    """Not vacuous: routed ALT datagrams of both families with TTL to spare do go the fast way."""
    out = check_agrees(datagram("10.1.2.3", ttl=9), "gre-b", prefix=bytes(28))
    assert out is not None and out[0] == "gre-c"
    assert parse_ip(out[1]).ttl == 8  # and the header checksum verifies
    out6 = check_agrees(datagram("2001:db8::5", ttl=9), "gre-c")
    assert out6 is not None and out6[0] == "gre-b" and out6[1][7] == 8


def test_declines_on_a_cold_cache_and_without_versioned_routes() -> None:
    packet = datagram("10.1.2.3")
    assert forwarder().fast_forward(packet, 0, "gre-b") is None
    unversioned = forwarder(generation=None)
    unversioned.forward(packet, "gre-b")
    assert unversioned.fast_forward(packet, 0, "gre-b") is None


@pytest.mark.parametrize("mutate", [
    lambda p: p[:6] + b"\x20\x00" + p[8:],  # MF: a first fragment
    lambda p: p[:6] + b"\x00\x08" + p[8:],  # a later fragment
    lambda p: p[:9] + b"\x06" + p[10:],  # TCP
    lambda p: p[:22] + b"\x00\x35" + p[24:],  # UDP 53
    lambda p: p[:2] + b"\xff\xff" + p[4:],  # total length beyond the packet
    lambda p: b"\x46" + p[1:],  # options
    lambda p: p[:27],  # truncated
])
def test_declines_what_is_not_a_plain_alt_datagram(mutate: object) -> None:
    packet = mutate(datagram("10.1.2.3"))  # type: ignore[operator]
    assert check_agrees(packet, "gre-b") is None


@settings(max_examples=300)
@given(st.binary(max_size=70), st.integers(0, 4), st.sampled_from(DESTINATIONS), st.integers(0, 69))
def test_random_mutations_agree(noise: bytes, offset: int, dst: str, at: int) -> None:
    packet = bytearray(datagram(dst))
    packet[at:at + len(noise[:4])] = noise[:4]
    check_agrees(bytes(packet), "gre-b", prefix=noise[:offset])
    check_agrees(noise, "gre-b")


def test_rib_change_empties_the_cache_for_the_fast_path_too() -> None:
    hop_b, hop_c = IPv4Address("10.255.1.2"), IPv4Address("10.255.2.2")
    peers = [PeerInfo("b", 65002, (hop_b,)), PeerInfo("c", 65003, (hop_c,))]
    rib = Rib(65001, [ip_network("10.0.0.0/8")], peers)
    rib.peer_up("b", 0.0)
    rib.peer_up("c", 0.0)
    rib.apply(Update("b", announce=(AnnouncedRoute(ip_network("10.1.0.0/16"), hop_b, (65002,)),)))
    fw = AltForwarder.for_rib(rib, {"b": "gre-b", "c": "gre-c"})
    packet = datagram("10.1.2.3")
    fw.forward(packet, "gre-x")
    assert fw.fast_forward(packet, 0, "gre-x") is not None
    rib.apply(Update("c", announce=(AnnouncedRoute(ip_network("10.1.2.0/24"), hop_c, (65003,)),)))
    assert fw.fast_forward(packet, 0, "gre-x") is None  # the stale route is gone
    fw.forward(packet, "gre-x")
    out = fw.fast_forward(packet, 0, "gre-x")
    assert out is not None and out[0] == "gre-c"


def test_one_pass_through_the_dataplane_with_both_hooks() -> None:
    tb = TunnelConfig("gre-b", IPv4Address("198.51.100.1"), IPv4Address("198.51.100.2"), key=1)
    tc = TunnelConfig("gre-c", IPv4Address("198.51.100.1"), IPv4Address("198.51.100.3"), key=2)
    fw = forwarder()
    d = Dataplane([tb, tc], fw.hook, fw.fast_forward)
    inner = datagram("10.1.2.3", ttl=9)
    wire = gre.encode(gre.GreHeader(gre.PROTO_IPV4, 1), inner)
    packet = ipv4_header(tb.remote, tb.local, PROTO_GRE, len(wire)) + wire  # type: ignore[arg-type]
    first = d.receive_ipv4_fast(packet)  # cold cache: the full hook decides, and fills it
    second = d.receive_ipv4_fast(packet)
    assert isinstance(first, list) and isinstance(second, tuple)
    assert d.action_for(second) == first[0]
    assert second[0] == TO_UNDERLAY and second[1] == "gre-c"
    hdr, out = gre.decode(second[2])
    assert hdr.key == 2 and parse_ip(out).ttl == 8
    assert fw.counters["forwarded"] == 2
    assert d.counters["gre-b"].rx_packets == 2 and d.counters["gre-c"].tx_packets == 2
