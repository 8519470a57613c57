"""Forwarding under an active aggregate (RFC 6836 §7.1): holes are no route, never a loop."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_network

from alt_router.alt import AltForwarder
from alt_router.gre.dataplane import Drop, Forward, Local
from alt_router.inet import parse_ip
from alt_router.rib import AnnouncedRoute, Update

from .test_forwarder import ROUTER4, _rib, alt_datagram, dropped, forwarder

B = IPv4Address("10.255.1.2")
C = IPv4Address("10.255.2.2")


def test_a_hole_in_an_active_aggregate_is_no_route_not_the_peers_wider_route() -> None:
    """The parent "c" announces 10.0.0.0/8 (it covers our 10.1.0.0/16 aggregate); a datagram for
    an EID under our aggregate that no contributor covers must not go back up to it."""
    rib = _rib()
    fw = AltForwarder.for_rib(rib, {"b": "gre-b", "c": "gre-c"}, router_v4=ROUTER4)
    rib.apply(Update("c", announce=(AnnouncedRoute(ip_network("10.0.0.0/8"), C, (65003,)),)))
    rib.apply(Update("b", announce=(AnnouncedRoute(ip_network("10.1.2.0/24"), B, (65002,)),)))
    hole = alt_datagram("10.1.9.9")
    v = fw.forward(hole, "gre-b")
    assert isinstance(v, Forward) and v.tunnel == "gre-c"  # no aggregate yet: the /8 carries it
    fw.set_discard([ip_network("10.1.0.0/16")])
    verdict = fw.forward(hole, "gre-b")
    assert isinstance(verdict, Drop) and verdict.reason == "no-route" and verdict.icmp is not None
    assert fw.counters["no-route"] == 1 and fw.counters["no-route:aggregate"] == 1
    assert parse_ip(verdict.icmp).dst == IPv4Address("192.0.2.7")  # unreachable to the source
    # The aggregating node still forwards by its own more-specifics (the contributors).
    v = fw.forward(alt_datagram("10.1.2.3"), "gre-c")
    assert isinstance(v, Forward) and v.tunnel == "gre-b"
    # Outside the aggregate nothing changes.
    v = fw.forward(alt_datagram("10.2.0.1"), "gre-b")
    assert isinstance(v, Forward) and v.tunnel == "gre-c"
    assert fw.route(IPv4Address("10.1.9.9")) is None  # the Map-Resolver sees no route (negative reply)
    assert fw.discard_prefixes() == [ip_network("10.1.0.0/16")]
    # The aggregate went inactive: the cache follows.
    fw.set_discard([])
    v = fw.forward(hole, "gre-b")
    assert isinstance(v, Forward) and v.tunnel == "gre-c"


def test_a_peers_copy_of_the_same_prefix_does_not_carry_a_hole() -> None:
    """An equal-length route is the aggregate coming back (ATOMIC_AGGREGATE has no AS_SET to stop it)."""
    fw = forwarder({"10.1.0.0/16": "c", "10.1.4.0/22": "b"})
    fw.set_discard([ip_network("10.1.0.0/16")])
    assert dropped(fw.forward(alt_datagram("10.1.200.1"), "gre-b")) == "no-route"
    assert isinstance(fw.forward(alt_datagram("10.1.5.1"), "gre-c"), Forward)


def test_fast_forward_never_takes_a_discard_decision_for_a_tunnel() -> None:
    rib = _rib()
    fw = AltForwarder.for_rib(rib, {"b": "gre-b", "c": "gre-c"}, router_v4=ROUTER4)
    rib.apply(Update("c", announce=(AnnouncedRoute(ip_network("10.0.0.0/8"), C, (65003,)),)))
    fw.set_discard([ip_network("10.1.0.0/16")])
    packet = b"\x00" * 4 + alt_datagram("10.1.2.3")
    assert dropped(fw.forward(packet[4:], "gre-b")) == "no-route"  # fills the cache
    assert fw.fast_forward(packet, 4, "gre-b") is None
    assert dropped(fw.forward(packet[4:], "gre-b")) == "no-route"
    assert fw.counters["no-route:aggregate"] == 2


def test_local_prefixes_win_over_an_equal_aggregate() -> None:
    """A Map-Server node that also aggregates its own space answers (negative) for the holes."""
    fw = forwarder({"10.0.0.0/8": "c"})
    fw.set_discard([ip_network("10.1.0.0/16")])
    fw.set_served([ip_network("10.1.0.0/16")])
    assert isinstance(fw.forward(alt_datagram("10.1.2.3"), "gre-c"), Local)
