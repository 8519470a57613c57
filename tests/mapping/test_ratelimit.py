"""Token buckets: per key with a bounded LRU table, per source prefix, global (issue 11)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from alt_router.mapping.ratelimit import RateLimiter, SourceLimits, prefix_key


def test_burst_then_rate_with_a_fake_clock() -> None:
    rl = RateLimiter(rate=2.0, burst=3)
    assert [rl.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert rl.allow("a", 0.25) is False  # half a token
    assert rl.allow("a", 0.5) is True
    assert rl.allow("a", 0.5) is False
    assert rl.allow("b", 0.5) is True  # per source


def test_bucket_never_exceeds_burst_and_clock_going_back_mints_nothing() -> None:
    rl = RateLimiter(rate=1.0, burst=2)
    assert rl.allow("a", 1000.0) and rl.allow("a", 1000.0)
    assert not rl.allow("a", 1000.0)
    assert not rl.allow("a", 10.0)
    assert rl.allow("a", 1001.0)
    assert not rl.allow("a", 1001.0)


def test_source_table_is_bounded() -> None:
    rl = RateLimiter(rate=1.0, burst=1, max_sources=3)
    for i in range(10):
        rl.allow(i, 0.0)
    assert len(rl) == 3 and rl.evicted == 7


def test_bad_parameters_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=0, burst=1)


def test_prefix_key_groups_ipv4_slash_24_and_ipv6_slash_64_apart_by_family() -> None:
    assert prefix_key(IPv4Address("192.0.2.1")) == prefix_key(IPv4Address("192.0.2.254"))
    assert prefix_key(IPv4Address("192.0.2.1")) != prefix_key(IPv4Address("192.0.3.1"))
    assert prefix_key(IPv6Address("2001:db8::1")) == prefix_key(IPv6Address("2001:db8::ffff:1"))
    assert prefix_key(IPv6Address("2001:db8::1")) != prefix_key(IPv6Address("2001:db8:0:1::1"))
    # The same integer prefix in the two families is two keys.
    assert prefix_key(IPv4Address("0.0.0.1")) != prefix_key(IPv6Address("::1"))


def test_source_limits_prefix_then_global() -> None:
    lim = SourceLimits(rate=1.0, burst=2, global_rate=1.0, global_burst=3)
    a, b, c = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2"), IPv4Address("198.51.100.1")
    assert [lim.admit(x, 0.0) for x in (a, b, a)] == [None, None, "prefix"]
    assert lim.admit(c, 0.0) is None  # the global bucket's third token
    assert lim.admit(IPv4Address("203.0.113.1"), 0.0) == "global"
    assert lim.admit(a, 1.0) is None  # a second later: one token each


def test_replies_charge_the_destination_prefix_unless_it_is_the_requesters() -> None:
    lim = SourceLimits(rate=1.0, burst=1, global_rate=100.0, global_burst=100)
    requester, same_24 = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.9")
    victim = IPv4Address("203.0.113.5")
    assert lim.admit(requester, 0.0) is None
    assert lim.admit_reply(same_24, requester, 0.0)  # already paid for with the request
    assert lim.admit_reply(victim, requester, 0.0)
    assert not lim.admit_reply(victim, requester, 0.0)


def test_source_limits_refuse_bad_parameters() -> None:
    with pytest.raises(ValueError, match="global"):
        SourceLimits(rate=1.0, burst=1, global_rate=0, global_burst=1)
    with pytest.raises(ValueError, match="prefix lengths"):
        SourceLimits(rate=1.0, burst=1, global_rate=1, global_burst=1, v4_len=33)
    with pytest.raises(ValueError, match="max_sources"):
        RateLimiter(rate=1.0, burst=1, max_sources=0)
