"""LPM tables: longest match, exact get, covering/covered queries, both families."""

from __future__ import annotations

import random
from ipaddress import ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alt_router.rib.table import DualTable, LpmTable, TableError


def table_of(*prefixes: str) -> LpmTable[str]:
    t: LpmTable[str] = LpmTable(4)
    for p in prefixes:
        t.insert(p, p)
    return t


def test_longest_match_prefers_the_most_specific() -> None:
    t = table_of("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24")
    assert t.lookup("10.1.2.3") == (ip_network("10.1.2.0/24"), "10.1.2.0/24")
    assert t.lookup(ip_address("10.1.3.3")) == (ip_network("10.1.0.0/16"), "10.1.0.0/16")
    assert t.lookup("10.9.9.9") == (ip_network("10.0.0.0/8"), "10.0.0.0/8")
    assert t.lookup("11.0.0.1") is None


def test_insert_replaces_and_delete_removes_exactly() -> None:
    t = table_of("10.0.0.0/8", "10.1.0.0/16")
    t.insert("10.1.0.0/16", "new")
    assert t.get("10.1.0.0/16") == "new" and len(t) == 2
    assert t.delete("10.1.0.0/16") is True
    assert t.delete("10.1.0.0/16") is False
    assert t.get("10.1.0.0/16") is None  # exact get does not fall back to 10/8
    assert t.lookup("10.1.0.1") == (ip_network("10.0.0.0/8"), "10.0.0.0/8")
    assert "10.0.0.0/8" in t and "10.1.0.0/16" not in t and 42 not in t


def test_covering_and_covered() -> None:
    t = table_of("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.2.0.0/16", "11.0.0.0/8")
    assert [str(p) for p, _ in t.covering("10.1.2.0/24")] == ["10.1.2.0/24", "10.1.0.0/16", "10.0.0.0/8"]
    assert [str(p) for p, _ in t.covering("10.1.2.128/25")] == ["10.1.2.0/24", "10.1.0.0/16", "10.0.0.0/8"]
    assert t.covering("12.0.0.0/8") == []
    assert [str(p) for p, _ in t.covered("10.0.0.0/8")] == [
        "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.2.0.0/16"]
    # A query prefix that is not in the table leaves no trace behind.
    assert [str(p) for p, _ in t.covered("10.1.0.0/17")] == ["10.1.2.0/24"]
    assert "10.1.0.0/17" not in t and len(t) == 5
    assert len(t.covered("0.0.0.0/0")) == 5


def test_iteration_and_ipv6() -> None:
    t: LpmTable[int] = LpmTable(6)
    t.insert("2001:db8::/32", 1)
    t.insert("2001:db8:1::/48", 2)
    assert t.lookup("2001:db8:1::5") == (ip_network("2001:db8:1::/48"), 2)
    assert sorted(v for _, v in t) == [1, 2]


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "nonsense", "10.0.0.0/33", "2001:db8::/32"])
def test_bad_or_wrong_family_prefix_is_a_table_error(bad: str) -> None:
    with pytest.raises(TableError):
        LpmTable[int](4).insert(bad, 1)


def test_bad_address_and_version() -> None:
    with pytest.raises(TableError):
        table_of("10.0.0.0/8").lookup("not-an-address")
    with pytest.raises(TableError):
        table_of("10.0.0.0/8").lookup("2001:db8::1")
    with pytest.raises(TableError):
        LpmTable[int](5)


def test_dual_table_dispatches_by_family() -> None:
    d: DualTable[str] = DualTable()
    d.insert("153.16.0.0/16", "v4")
    d.insert("2001:db8::/32", "v6")
    assert d.lookup("153.16.1.1") is not None and d.lookup("153.16.1.1")[1] == "v4"  # type: ignore[index]
    assert d.lookup("2001:db8::1")[1] == "v6"  # type: ignore[index]
    assert len(d) == 2 and {v for _, v in d} == {"v4", "v6"}
    assert d.delete("2001:db8::/32") and d.lookup("2001:db8::1") is None
    assert "153.16.0.0/16" in d


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), max_size=40),
       st.lists(st.integers(0, 2**32 - 1), max_size=20))
def test_lookup_matches_a_linear_scan(entries: list[tuple[int, int]], probes: list[int]) -> None:
    t: LpmTable[str] = LpmTable(4)
    nets = {ip_network((addr, plen), strict=False) for addr, plen in entries}
    for n in nets:
        t.insert(n, str(n))
    assert len(t) == len(nets)
    for probe in probes:
        a = ip_address(probe)
        covering = [n for n in nets if a in n]
        expected = max(covering, key=lambda n: n.prefixlen) if covering else None
        got = t.lookup(a)
        assert (got[0] if got else None) == expected


def test_many_random_prefixes_roundtrip() -> None:
    rnd = random.Random(7)
    t: LpmTable[int] = LpmTable(4)
    nets = {ip_network((rnd.getrandbits(32), 24), strict=False) for _ in range(2000)}
    for i, n in enumerate(sorted(nets)):
        t.insert(n, i)
    assert {p for p, _ in t} == nets
