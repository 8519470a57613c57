"""The negative Map-Reply prefix: covers the EID, overlaps no route, and is the largest such."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

from hypothesis import given, settings
from hypothesis import strategies as st

from alt_router.mapping.negative import PrefixIndex, PrefixSet


def v4_prefix(addr: int, length: int) -> IPv4Network:
    return IPv4Network((addr >> (32 - length) << (32 - length), length))


prefixes = st.lists(st.builds(v4_prefix, st.integers(0, 2**32 - 1), st.integers(1, 32)), max_size=25)


@settings(max_examples=150, deadline=None)
@given(routes=prefixes, eid=st.integers(0, 2**32 - 1))
def test_negative_prefix_is_the_largest_free_prefix(routes: list[IPv4Network], eid: int) -> None:
    address = IPv4Address(eid)
    # The resolver only asks when the LPM missed: no route covers the EID.
    routes = [r for r in routes if address not in r]
    got = PrefixIndex(routes).uncovered(address)
    assert address in got
    assert not any(got.overlaps(r) for r in routes)
    if got.prefixlen > 0:
        # One bit shorter would swallow (part of) a routed prefix: a wrong prefix makes ITRs re-query.
        assert any(got.supernet().overlaps(r) for r in routes)


def test_examples() -> None:
    index = PrefixIndex([ip_network("10.0.0.0/8"), ip_network("12.0.0.0/8"), ip_network("2001:db8::/32")])
    assert index.uncovered(IPv4Address("11.1.1.1")) == ip_network("11.0.0.0/8")
    assert index.uncovered(IPv4Address("192.168.1.1")) == ip_network("128.0.0.0/1")
    assert index.uncovered(IPv6Address("2001:db9::1")) == ip_network("2001:db9::/32")
    assert index.uncovered(IPv6Address("::1")) == ip_network("::/3")
    assert PrefixIndex([]).uncovered(IPv4Address("1.2.3.4")) == ip_network("0.0.0.0/0")
    host = PrefixIndex([ip_network("1.2.3.5/32")]).uncovered(IPv4Address("1.2.3.4"))
    assert host == ip_network("1.2.3.4/32")


@settings(max_examples=50, deadline=None)
@given(routes=st.lists(st.builds(lambda a, n: IPv6Network((a >> (128 - n) << (128 - n), n)),
                                 st.integers(0, 2**128 - 1), st.integers(1, 128)), max_size=20),
       eid=st.integers(0, 2**128 - 1))
def test_ipv6_property(routes: list[IPv6Network], eid: int) -> None:
    address = IPv6Address(eid)
    routes = [r for r in routes if address not in r]
    got = PrefixIndex(routes).uncovered(address)
    assert address in got and not any(got.overlaps(r) for r in routes)
    if got.prefixlen > 0:
        assert any(got.supernet().overlaps(r) for r in routes)


@settings(max_examples=150, deadline=None)
@given(eid=st.integers(0, 2**32 - 1),
       near=st.lists(st.tuples(st.integers(0, 2**16 - 1), st.integers(8, 32)), min_size=1, max_size=12))
def test_routes_near_the_eid(eid: int, near: list[tuple[int, int]]) -> None:
    address = IPv4Address(eid)
    routes = [v4_prefix(eid ^ d, n) for d, n in near]
    routes = [r for r in routes if address not in r]
    got = PrefixIndex(routes).uncovered(address)
    assert address in got and not any(got.overlaps(r) for r in routes)
    if got.prefixlen > 0:
        assert any(got.supernet().overlaps(r) for r in routes)


# --- PrefixSet: the Map-Server's incremental index (RFC 9301 §8.3 negative prefixes) ----------------


@settings(max_examples=200, deadline=None)
@given(prefixes=prefixes, eid=st.integers(0, 2**32 - 1), floor=st.integers(0, 32))
def test_prefix_set_ignores_covering_prefixes_and_respects_the_floor(
    prefixes: list[IPv4Network], eid: int, floor: int
) -> None:
    address = IPv4Address(eid)
    got = PrefixSet(prefixes).uncovered(address, floor)
    others = [p for p in prefixes if address not in p]
    assert address in got and got.prefixlen >= floor
    assert not any(got.overlaps(p) for p in others)
    if got.prefixlen > floor:
        # The largest such prefix: one bit shorter would swallow (part of) another prefix.
        assert any(got.supernet().overlaps(p) for p in others)


def test_prefix_set_counts_references() -> None:
    s = PrefixSet([ip_network("10.1.0.0/16"), ip_network("10.1.0.0/16"), ip_network("10.1.0.0/24")])
    s.discard(ip_network("10.1.0.0/16"))
    assert ip_network("10.1.0.0/16") in s and len(s) == 2
    s.discard(ip_network("10.1.0.0/16"))
    s.discard(ip_network("10.9.0.0/16"))  # never added: nothing happens
    assert len(s) == 1
    # The EID's covering site prefix (10.0.0.0/8 floor) does not shorten the answer; the /24 beside it does.
    s.add(ip_network("10.0.0.0/8"))
    assert s.uncovered(IPv4Address("10.1.1.1"), 8) == ip_network("10.1.1.0/24")
    assert s.uncovered(IPv4Address("10.200.0.1"), 8) == ip_network("10.128.0.0/9")


def test_prefix_set_ipv6() -> None:
    s = PrefixSet([ip_network("2001:db8::/32"), ip_network("2001:db8:1::/48")])
    assert s.uncovered(IPv6Address("2001:db8:2::1"), 32) == ip_network("2001:db8:2::/47")
    assert s.uncovered(IPv6Address("2001:db9::1")) == ip_network("2001:db9::/32")
