"""Paging with a cursor: /v1/routes and /v1/registrations answer a bounded page and next_cursor;
the status never grows with the tables; ``alt-router show`` follows the cursor to show everything."""

from __future__ import annotations

import json
import urllib.parse
from ipaddress import ip_network
from typing import Any

import pytest

from alt_router.api import query
from alt_router.api.query import MAX_LIMIT, MAX_REGISTRATIONS_LIMIT
from alt_router.cli import main
from alt_router.rib.table import DualTable
from tests.api.conftest import LiveServer
from tests.api.test_http import populate

N_ROUTES = 2500


def many_routes(live: LiveServer, n: int = N_ROUTES) -> list[str]:
    """n /24s in 153.16.0.0/12 from peer b (plus an aggregate), in address order."""
    prefixes = ["153.16.0.0/12"] + [f"153.{16 + i // 256}.{i % 256}.0/24" for i in range(n)]

    def job() -> None:
        live.view.up("b")
        for start in range(0, len(prefixes), 500):
            live.view.learn("b", *prefixes[start:start + 500])
    live.call(job)
    return sorted(prefixes, key=lambda p: (int(ip_network(p).network_address), ip_network(p).prefixlen))


def get(live: LiveServer, path: str, **params: Any) -> tuple[int, Any]:
    query = urllib.parse.urlencode({k: str(v) for k, v in params.items() if v is not None})
    return live.json("GET", f"{path}?{query}" if query else path)


def walk(live: LiveServer, path: str, key: str, **params: Any) -> tuple[list[Any], int]:
    rows: list[Any] = []
    cursor = None
    pages = 0
    while True:
        status, body = get(live, path, cursor=cursor, **params)
        assert status == 200, body
        pages += 1
        rows += body[key]
        assert body["count"] == len(body[key])
        cursor = body["next_cursor"]
        if cursor is None:
            return rows, pages


def test_routes_are_paged_in_address_order_without_loss_or_repeat(live: LiveServer) -> None:
    expected = many_routes(live)
    rows, pages = walk(live, "/v1/routes", "routes", limit=1000)
    assert [r["prefix"] for r in rows] == expected
    assert pages == 3  # 2,501 routes: 1,000 + 1,000 + 501
    _, body = get(live, "/v1/routes", limit=1000)
    assert body["count"] == 1000 and body["total"] == N_ROUTES + 1 and body["truncated"] is True
    assert body["next_cursor"] == body["routes"][-1]["prefix"]


def test_a_page_answer_never_exceeds_the_cap(live: LiveServer) -> None:
    many_routes(live, 300)
    status, body = get(live, "/v1/routes")  # default limit
    assert status == 200 and body["next_cursor"] is None and body["count"] == 301
    status, body = get(live, "/v1/routes", limit=MAX_LIMIT + 1)
    assert status == 400 and body["error"] == "bad limit"
    status, body = get(live, "/v1/registrations", limit=MAX_REGISTRATIONS_LIMIT + 1)
    assert status == 400 and body["error"] == "bad limit"


def test_a_cursor_survives_its_route_being_withdrawn(live: LiveServer) -> None:
    expected = many_routes(live, 50)
    _, first = get(live, "/v1/routes", limit=10)
    cursor = first["next_cursor"]
    live.call(live.view.unlearn, "b", cursor)  # the page's last route goes away between pages
    _, second = get(live, "/v1/routes", limit=10, cursor=cursor)
    assert [r["prefix"] for r in second["routes"]] == expected[10:20]


def test_ipv4_pages_run_on_into_ipv6(live: LiveServer) -> None:
    populate(live)  # three IPv4 routes and one IPv6
    rows, pages = walk(live, "/v1/routes", "routes", limit=1)
    assert [r["prefix"] for r in rows] == ["153.16.0.0/16", "153.16.1.0/24", "153.17.0.0/16", "2001:db8::/48"]
    assert pages == 4


@pytest.mark.parametrize("query", [
    {"prefix": "153.16.0.0/12", "match": "longer"},
    {"peer": "b"},
    {"peer": "b", "prefix": "153.16.0.0/13", "match": "longer"},
])
def test_filtered_routes_are_paged_too(live: LiveServer, query: dict[str, str]) -> None:
    many_routes(live, 120)
    _, whole = get(live, "/v1/routes", limit=MAX_LIMIT, **query)
    assert whole["next_cursor"] is None
    rows, pages = walk(live, "/v1/routes", "routes", limit=25, **query)
    assert rows == whole["routes"] and pages == -(-len(rows) // 25)


def test_shorter_match_pages_longest_first(live: LiveServer) -> None:
    populate(live)
    rows, _ = walk(live, "/v1/routes", "routes", limit=1, prefix="153.16.1.128/25", match="shorter")
    assert [r["prefix"] for r in rows] == ["153.16.1.0/24", "153.16.0.0/16"]


@pytest.mark.parametrize("cursor", ["banana", "153.16.0.1/16", "x" * 600, "\u00e9"])
def test_a_bad_route_cursor_is_400(live: LiveServer, cursor: str) -> None:
    status, body = get(live, "/v1/routes", cursor=cursor)
    assert status == 400 and body["error"] == "bad cursor"


def test_registrations_are_paged(live: LiveServer) -> None:
    live.call(live.view.register, 249)
    rows, pages = walk(live, "/v1/registrations", "registrations", limit=100)
    assert len(rows) == 250 and pages == 3
    assert len({(r["site"], r["eid_prefix"], r["etr"]) for r in rows}) == 250
    _, body = get(live, "/v1/registrations")
    assert body["total"] == 250 and body["count"] == 100 and body["next_cursor"]
    status, body = get(live, "/v1/registrations", cursor="not a cursor")
    assert status == 400 and body["error"] == "bad cursor"
    status, body = get(live, "/v1/registrations", colour="red")
    assert status == 400 and body["error"] == "unknown parameter"


def test_status_and_counters_do_not_grow_with_routes_or_registrations(live: LiveServer) -> None:
    def sizes() -> tuple[int, int, int]:
        return tuple(len(live.request("GET", path)[2]) for path in  # type: ignore[return-value]
                     ("/v1/status", "/v1/counters", "/metrics"))

    populate(live)
    small = sizes()
    many_routes(live, 2000)
    live.call(live.view.register, 2000)
    big = sizes()
    # Only numbers change (a few more digits), never a list.
    for before, after in zip(small, big, strict=True):
        assert after - before < 200
    _, status = live.json("GET", "/v1/status")
    assert status["routes"] == 2004


def test_show_follows_the_cursor(live: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    expected = many_routes(live, 2100)
    live.call(live.view.register, 1500)
    assert main(["show", "routes", "--json", "--api", live.url]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [r["prefix"] for r in shown["routes"]] == expected and shown["next_cursor"] is None
    assert main(["show", "routes", "--api", live.url]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"Displayed {len(expected)} of {len(expected)} routes"
    assert main(["show", "routes", "--limit", "1500", "--api", live.url]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"Displayed 1500 of {len(expected)} routes (more: raise --limit)")
    assert main(["show", "registrations", "--json", "--api", live.url]) == 0
    assert len(json.loads(capsys.readouterr().out)["registrations"]) == 1501


@pytest.mark.parametrize(("small", "probes"), [(20_000, 2048), (0, 2048), (0, 5)])
def test_table_items_after_matches_sorted_order_for_any_cursor(
        monkeypatch: pytest.MonkeyPatch, small: int, probes: int) -> None:
    """The pure paging walk of the RIB's table: every entry once, in order, from any cursor, whether
    it lists whole blocks (a small table), splits them, or runs out of splitting budget."""
    import random  # noqa: PLC0415

    from alt_router.rib import table as table_module  # noqa: PLC0415

    monkeypatch.setattr(table_module, "_PAGE_SMALL", small)
    monkeypatch.setattr(table_module, "_PAGE_PROBES", probes)

    rng = random.Random(9301)
    table: DualTable[str] = DualTable()
    keys = set()
    for _ in range(400):
        v4 = rng.random() < 0.7
        length = rng.choice([0, 1, 8, 9, 16, 24, 32] if v4 else [0, 16, 32, 48, 64, 128])
        bits = 32 if v4 else 128
        addr = rng.getrandbits(bits) >> (bits - length) << (bits - length) if length else 0
        key = str(ip_network((addr, length)))
        table.insert(key, key)
        keys.add(key)

    def order(k: str) -> tuple[int, int, int]:
        n = ip_network(k)
        return n.version, int(n.network_address), n.prefixlen

    expected = sorted(keys, key=order)
    for limit in (1, 7, 1000):
        got: list[str] = []
        cursor = None
        while page := table.items_after(cursor, limit):
            got += [k for k, _ in page]
            cursor = page[-1][0]
        assert got == expected
    for _ in range(50):  # cursors that are not in the table
        cursor = str(ip_network((rng.getrandbits(32) >> 8 << 8, 24)))
        assert [k for k, _ in table.items_after(cursor, 10_000)] == [
            k for k in expected if order(k) > order(cursor)]


def test_a_big_adj_rib_in_is_paged_in_the_loc_ribs_order(live: LiveServer, monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    populate(live)
    many_routes(live, 300)
    _, small = get(live, "/v1/routes", limit=MAX_LIMIT, peer="b")  # sorted whole
    monkeypatch.setattr(query, "SORT_MAX", 10)
    monkeypatch.setattr(query, "WALK_CHUNK", 16)
    rows, pages = walk(live, "/v1/routes", "routes", limit=7, peer="b")
    assert rows == small["routes"] and pages == -(-len(rows) // 7)
    _, filtered = get(live, "/v1/routes", limit=MAX_LIMIT, peer="b", prefix="153.17.0.0/16", match="longer")
    assert [r["prefix"] for r in filtered["routes"]] == [
        r["prefix"] for r in small["routes"] if r["prefix"].startswith("153.17.")]
    _, total = get(live, "/v1/routes", peer="b", limit=1)
    assert total["total"] == len(rows)
