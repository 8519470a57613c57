"""EID-prefix aggregation (RFC 6836 §7.1, §8.1; RFC 4271 §9.2.2.2 for the attributes)."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from alt_router.rib.aggregate import AggregateChange, AggregateError, AggregateSpec, Aggregator

AGG = ip_network("153.16.0.0/12")
SITE1 = ip_network("153.16.1.0/24")
SITE2 = ip_network("153.17.2.0/24")
OUTSIDE = ip_network("153.32.0.0/24")


def test_originated_while_a_contributor_exists() -> None:
    # RFC 6836 §7.1: an ALT router aggregates the EID-prefixes it learns; the aggregate
    # exists while something it covers does (the BGP aggregate-address convention).
    agg = Aggregator([AggregateSpec(AGG)])
    assert agg.start() == []
    [change] = agg.update(SITE1, (65010,))
    assert change.prefix == AGG and change.route is not None
    assert change.route.atomic_aggregate and change.route.as_set == () and change.route.origin == "igp"
    assert agg.update(SITE2, (65011,)) == []  # second contributor: attributes unchanged
    assert agg.update(SITE1, None) == []
    assert agg.update(SITE2, None) == [AggregateChange(AGG, None)]  # the last one went
    assert agg.routes() == []


def test_routes_outside_and_the_aggregate_itself_do_not_contribute() -> None:
    agg = Aggregator([AggregateSpec(AGG)])
    assert agg.update(OUTSIDE, (65010,)) == []
    assert agg.update(AGG, (65010,)) == []  # a peer's route for the same prefix is not "more specific"
    assert agg.routes() == []


def test_always_is_originated_without_contributors() -> None:
    agg = Aggregator([AggregateSpec(AGG, always=True)])
    [change] = agg.start()
    assert change.route is not None and change.route.contributors == 0
    agg.update(SITE1, (65010,))
    assert agg.update(SITE1, None) == []  # stays


def test_as_set_follows_the_contributors() -> None:
    # RFC 4271 §9.2.2.2: the aggregate's AS_SET holds the ASes of the aggregated paths;
    # it changes (and is re-announced) as contributors come and go.
    agg = Aggregator([AggregateSpec(AGG, as_set=True)])
    [c1] = agg.update(SITE1, (65010, 65020))
    assert c1.route is not None and c1.route.as_set == (65010, 65020) and not c1.route.atomic_aggregate
    [c2] = agg.update(SITE2, (65011, 65020))
    assert c2.route is not None and c2.route.as_set == (65010, 65011, 65020)
    [c3] = agg.update(SITE1, None)
    assert c3.route is not None and c3.route.as_set == (65011, 65020)  # 65010 left with SITE1


def test_origin_is_the_least_preferred_of_the_contributors() -> None:
    agg = Aggregator([AggregateSpec(AGG)])
    agg.update(SITE1, (65010,), "igp")
    [c] = agg.update(SITE2, (65011,), "incomplete")
    assert c.route is not None and c.route.origin == "incomplete"
    [c] = agg.update(SITE2, None)
    assert c.route is not None and c.route.origin == "igp"


def test_summary_only_suppresses_covered_routes_while_active() -> None:
    agg = Aggregator([AggregateSpec(AGG, summary_only=True)])
    assert agg.suppressed_by(SITE1) is None  # not active yet
    agg.update(SITE1, (65010,))
    assert agg.suppressed_by(SITE1) == AGG
    assert agg.suppressed_by(SITE2) == AGG
    assert agg.suppressed_by(OUTSIDE) is None
    assert agg.suppressed_by(AGG) is None  # an aggregate does not hide itself
    [view] = agg.view()
    assert view["suppressed"] == 1 and view["suppressed_sample"] == [str(SITE1)]


def test_without_summary_only_nothing_is_suppressed() -> None:
    agg = Aggregator([AggregateSpec(AGG)])
    agg.update(SITE1, (65010,))
    assert agg.suppressed_by(SITE1) is None


def test_nested_aggregates_each_count_their_contributors() -> None:
    inner = ip_network("153.16.0.0/16")
    agg = Aggregator([AggregateSpec(AGG), AggregateSpec(inner, summary_only=True)])
    changes = agg.update(SITE1, (65010,))
    assert [c.prefix for c in changes] == [inner, AGG]  # most specific first
    assert agg.suppressed_by(SITE1) == inner
    assert agg.active_covering(ip_network("153.16.9.0/24")) == inner
    assert agg.active_covering(ip_network("153.20.0.0/24")) == AGG


def test_ipv6() -> None:
    agg = Aggregator([AggregateSpec(ip_network("2001:db8::/32"), summary_only=True)])
    [c] = agg.update(ip_network("2001:db8:16::/48"), (65010,))
    assert c.route is not None
    assert agg.suppressed_by(ip_network("2001:db8:16::/48")) == ip_network("2001:db8::/32")
    assert agg.suppressed_by(ip_network("2001:db9::/48")) is None


def test_duplicate_spec_is_refused() -> None:
    with pytest.raises(AggregateError):
        Aggregator([AggregateSpec(AGG), AggregateSpec(AGG, as_set=True)])


def test_many_contributors_cost_no_scan() -> None:
    # 20,000 sites under one aggregate: every update touches only the aggregates covering it.
    agg = Aggregator([AggregateSpec(AGG, summary_only=True)])
    sites = list(ip_network("153.16.0.0/13").subnets(new_prefix=28))[:20_000]
    for i, site in enumerate(sites):
        out = agg.update(site, (65000 + i % 7,))
        assert out == ([] if i else out)
    assert agg.view()[0]["contributors"] == 20_000
    for site in sites[:-1]:
        assert agg.update(site, None) == []
    assert agg.update(sites[-1], None) == [AggregateChange(AGG, None)]


def test_a_contributor_with_atomic_aggregate_makes_an_as_set_aggregate_atomic_too() -> None:
    """RFC 4271 §9.2.2.2: "If at least one of the routes to be aggregated has ATOMIC_AGGREGATE path
    attribute, then the aggregated route SHALL have this attribute as well"."""
    agg = Aggregator([AggregateSpec(ip_network("153.16.0.0/12"), as_set=True)])
    [first] = agg.update(ip_network("153.16.1.0/24"), (65010,))
    assert first.route is not None and not first.route.atomic_aggregate
    [second] = agg.update(ip_network("153.17.0.0/16"), (65020,), atomic=True)
    assert second.route is not None and second.route.atomic_aggregate
    assert second.route.as_set == (65010, 65020)
    [third] = agg.update(ip_network("153.17.0.0/16"), None)
    assert third.route is not None and not third.route.atomic_aggregate
