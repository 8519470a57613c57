"""Bounded Map-Server state (issue 11): caps, expiry off a heap, paging, quiet logs, shrinking back."""

from __future__ import annotations

import gc
import logging
import random
import tracemalloc
from ipaddress import IPv4Address, ip_network

import pytest

from alt_router.mapping.map_server import MapServer, Site

from . import peer_vectors as pv

KEY = "flood-key"
SITE = Site("big", KEY, pv.SHA256, (ip_network("153.16.0.0/16"),), accept_more_specifics=True)
OTHER = Site("other", "other-key", pv.SHA256, (ip_network("153.17.0.0/16"),))
RLOC = IPv4Address("198.51.100.30")


def reg(prefix: str = "153.16.1.0/24", *, key: str = KEY, rloc: str = str(RLOC), **kw: object) -> bytes:
    return pv.map_register(key, pv.record(prefix, pv.locator(rloc)), **kw)  # type: ignore[arg-type]


def flood(ms: MapServer, n: int, *, sources: int = 1, now: float = 0.0, seed: int = 1) -> None:
    """One key holder, a random xTR-ID per Map-Register (the attack of issue 11)."""
    rng = random.Random(seed)
    for i in range(n):
        src = IPv4Address(int(RLOC) + i % sources)
        ms.handle_register(reg(xtr_id=rng.getrandbits(128), nonce=i + 1, flags=0), src, 4342, now)


def test_one_source_cannot_grow_state_beyond_its_cap() -> None:
    ms = MapServer([SITE], max_per_site=100, max_per_source=10)
    flood(ms, 500)
    assert len(ms) == 10
    assert ms.counters["refused:over-source-cap"] == 490
    assert ms.stats()["nonces"] == 10  # refusals leave no nonce record behind


def test_many_sources_stop_at_the_site_cap_and_other_sites_still_register() -> None:
    ms = MapServer([SITE, OTHER], max_per_site=50, max_per_source=10)
    flood(ms, 400, sources=40)
    assert len(ms) == 50
    assert ms.counters["refused:over-site-cap"] > 0
    assert ms.handle_register(reg("153.17.0.0/16", key="other-key"), RLOC, 4342, 1.0)
    assert len(ms) == 51


def test_a_refresh_at_the_cap_is_still_accepted() -> None:
    ms = MapServer([SITE], max_per_site=2, max_per_source=2)
    ms.handle_register(reg("153.16.1.0/24", nonce=1), RLOC, 4342, 0.0)
    ms.handle_register(reg("153.16.2.0/24", nonce=2), RLOC, 4342, 0.0)
    assert ms.handle_register(reg("153.16.3.0/24", nonce=3), RLOC, 4342, 0.0) == []
    assert ms.handle_register(reg("153.16.1.0/24", nonce=4), RLOC, 4342, 100.0)  # a refresh: no new state
    assert ms.next_expiry() == 180.0  # 153.16.2.0/24's; 153.16.1.0/24 now lasts until 280


def test_refusals_are_logged_once_per_reason_and_source_then_summarised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ms = MapServer([SITE], max_per_site=100, max_per_source=1, log_interval=10.0)
    with caplog.at_level(logging.INFO, logger="alt_router.mapping.map_server"):
        flood(ms, 200, now=0.0)
        assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1
        assert ms.next_deadline() == 10.0
        ms.tick(10.0)
    summary = [r.getMessage() for r in caplog.records if "more over-source-cap" in r.getMessage()]
    assert summary == [f"Map-Server: 198 more over-source-cap from {RLOC} in the last 10s"]


def test_after_a_flood_expires_every_structure_shrinks_back() -> None:
    ms = MapServer([SITE], max_per_site=400, max_per_source=400)
    flood(ms, 300, sources=3)
    assert len(ms) == 300
    out = ms.tick(181.0)  # RFC 9301 §8.2: three minutes after the last Map-Register
    assert out and len(ms) == 0
    stats = ms.stats()
    assert stats == {"registrations": 0, "sites_registered": 0, "sources": 0, "nonces": 0, "heap": 0}
    assert ms.registrations_page(None, 10) == ([], None)
    assert ms.next_expiry() is None


def test_refreshes_do_not_pile_up_in_the_heap() -> None:
    ms = MapServer([SITE])
    for i in range(5000):
        ms.handle_register(reg(nonce=i + 1, flags=0), RLOC, 4342, float(i) / 100)
    assert len(ms) == 1 and ms.stats()["heap"] < 2 * 2 + 1024 + 2


def test_the_nonce_table_is_lru_capped() -> None:
    ms = MapServer([SITE], max_nonces=5)
    rng = random.Random(3)
    for i in range(20):
        # TTL-0 Map-Registers create no registration but do leave a nonce record.
        data = pv.map_register(KEY, pv.record("153.16.1.0/24", ttl=0), nonce=1,
                               xtr_id=rng.getrandbits(128), flags=0)
        ms.handle_register(data, RLOC, 4342, float(i))
    assert ms.stats()["nonces"] == 5 and ms.counters["nonce-evicted"] == 15
    ms.tick(1000.0)
    assert ms.stats()["nonces"] == 0


def test_pages_cover_every_registration_once_in_order() -> None:
    ms = MapServer([SITE, OTHER], max_per_site=1000, max_per_source=1000)
    for i in range(37):
        ms.handle_register(reg(f"153.16.{i}.0/24", nonce=i + 1, flags=0), RLOC, 4342, 0.0)
    ms.handle_register(reg("153.17.0.0/16", key="other-key", xtr_id=9), RLOC, 4342, 0.0)
    seen, cursor, pages = [], None, 0
    while True:
        items, cursor = ms.registrations_page(cursor, 10)
        seen += items
        pages += 1
        if cursor is None:
            break
    assert pages == 4 and len(seen) == 38
    assert seen == ms.registrations()
    assert [r.prefix for r in seen[:3]] == [ip_network(f"153.16.{i}.0/24") for i in range(3)]
    assert seen[-1].site == "other"


def test_a_cursor_survives_changes_between_pages() -> None:
    ms = MapServer([SITE])
    for i in range(6):
        ms.handle_register(reg(f"153.16.{i}.0/24", nonce=i + 1, flags=0), RLOC, 4342, 0.0)
    _, cursor = ms.registrations_page(None, 3)
    assert cursor is not None
    # The last item of the first page goes away; the next page starts after it all the same.
    ms.handle_register(pv.map_register(KEY, pv.record("153.16.2.0/24", ttl=0), nonce=100), RLOC, 4342, 1.0)
    second, end = ms.registrations_page(cursor, 3)
    assert [r.prefix for r in second] == [ip_network(f"153.16.{i}.0/24") for i in (3, 4, 5)]
    assert end is None


@pytest.mark.parametrize("cursor", ["", "[1,2]", "not json", '["a", 4, 1, 24, 0, 0, true]'])
def test_a_foreign_cursor_is_a_value_error(cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        MapServer([SITE]).registrations_page(cursor, 10)


def test_an_expired_more_specific_falls_back_to_a_live_covering_registration() -> None:
    ms = MapServer([SITE])
    ms.handle_register(reg("153.16.0.0/16", nonce=1, flags=0), RLOC, 4342, 0.0)
    ms.handle_register(reg("153.16.1.0/24", nonce=2, flags=pv.T_BIT), RLOC, 4342, 0.0)  # TTL 1440 min
    short = pv.map_register(KEY, pv.record("153.16.1.0/24", pv.locator(str(RLOC)), ttl=1), nonce=3,
                            flags=pv.T_BIT)
    ms.handle_register(short, RLOC, 4342, 0.0)  # now 60 s
    assert ms.lookup(IPv4Address("153.16.1.1"), 30.0)[0].prefix == ip_network("153.16.1.0/24")
    assert ms.lookup(IPv4Address("153.16.1.1"), 90.0)[0].prefix == ip_network("153.16.0.0/16")


def test_expiries_are_summarised_not_logged_one_by_one(caplog: pytest.LogCaptureFixture) -> None:
    ms = MapServer([SITE], max_per_site=500, max_per_source=500, log_interval=10.0)
    flood(ms, 100)
    with caplog.at_level(logging.INFO, logger="alt_router.mapping.map_server"):
        ms.tick(181.0)
        assert len(caplog.records) == 1 and "expired" in caplog.records[0].getMessage()
        assert ms.next_deadline() == 191.0  # the summary is due: the node's timer fires for it
        ms.tick(191.0)
    last = caplog.records[-1]
    assert last.getMessage() == "Map-Server: 99 more registration expired from big in the last 10s"
    assert last.levelno == logging.INFO
    assert ms.next_deadline() is None


def test_memory_returns_to_its_baseline_after_a_flood_expires() -> None:
    """Issue 11: "Memory returns to its baseline ... after an attack ends" (here: the Map-Server's)."""
    ms = MapServer([SITE], max_per_site=100_000, max_per_source=100_000)
    data = [reg(xtr_id=i + 1, nonce=1, flags=0) for i in range(4000)]
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i, d in enumerate(data):
            ms.handle_register(d, IPv4Address(int(RLOC) + i % 50), 4342, 0.0)
        during, _ = tracemalloc.get_traced_memory()
        ms.tick(1000.0)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ms) == 0
    grown = during - before
    assert grown > 1_000_000  # the flood did cost something
    assert after - before < grown * 0.01  # without the compaction about 5% stays (dict tables)
