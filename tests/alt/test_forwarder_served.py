"""A Map-Server node's own space: its aggregates and sites are local, a longer RIB route still wins."""

from __future__ import annotations

from ipaddress import ip_network

from alt_router.alt import LOCAL
from alt_router.gre.dataplane import Drop, Forward, Local

from .test_forwarder import alt_datagram, forwarder


def test_served_prefixes_are_delivered_locally_instead_of_dropped() -> None:
    """RFC 9301 §8.2-§8.3: the Map-Server answers for its aggregate (a negative Map-Reply for a hole)."""
    fw = forwarder({"10.0.0.0/8": "b"})
    assert isinstance(fw.forward(alt_datagram("153.16.200.1"), "gre-c"), Drop)  # no-route today
    fw.set_served([ip_network("153.16.0.0/16"), ip_network("153.16.1.0/24")])
    assert fw.route(ip_network("153.16.200.1/32").network_address) == LOCAL
    assert isinstance(fw.forward(alt_datagram("153.16.200.1"), "gre-c"), Local)
    assert fw.served_prefixes() == [ip_network("153.16.0.0/16"), ip_network("153.16.1.0/24")]
    assert fw.local_prefixes() == []  # served is not announced: status keeps the two apart


def test_a_more_specific_rib_route_beats_a_served_or_local_prefix() -> None:
    """Longest match (RFC 6836 §6.1): a peer's more-specific inside our aggregate is forwarded to it."""
    fw = forwarder({"153.16.9.0/24": "b", "153.0.0.0/8": "c"})
    fw.set_served([ip_network("153.16.0.0/16")])
    fw.add_local(ip_network("153.16.1.0/24"))
    verdict = fw.forward(alt_datagram("153.16.9.1"), "gre-c")
    assert isinstance(verdict, Forward) and verdict.tunnel == "gre-b"
    assert isinstance(fw.forward(alt_datagram("153.16.1.1"), "gre-c"), Local)
    assert isinstance(fw.forward(alt_datagram("153.16.77.1"), "gre-b"), Local)  # /16 beats the /8
    fw.set_served([])
    assert isinstance(fw.forward(alt_datagram("153.16.77.1"), "gre-b"), Forward)  # the cache followed
