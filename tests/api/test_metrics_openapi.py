"""/metrics parses as Prometheus text with the expected samples; /v1/openapi.json lists every route."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from alt_router.api.metrics import NodeCollector, metric_name
from alt_router.api.openapi import document
from tests.api.conftest import LiveServer
from tests.api.fake_view import FakeNodeView
from tests.api.test_http import populate


def scrape(live: LiveServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, raw = live.request("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(raw.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_expose_peers_routes_drops_tunnels_and_mapping_counters(live: LiveServer) -> None:
    populate(live)
    m = scrape(live)
    assert m[("alt_router_peer_up", (("peer", "b"),))] == 1
    assert m[("alt_router_peers", (("state", "up"),))] == 2
    assert m[("alt_router_peer_prefixes_accepted", (("peer", "b"),))] == 3
    dropped = ("alt_router_peer_prefixes_dropped_total", (("peer", "c"), ("reason", "outside-eid-space")))
    assert m[dropped] == 1
    assert m[("alt_router_rib_routes", ())] == 4
    assert m[("alt_router_rib_events_total", ())] == live.view.events.last_seq
    assert m[("alt_router_tunnel_rx_packets_total", (("mode", "userspace"), ("tunnel", "gre-b")))] == 10
    assert m[("alt_router_tunnel_dropped_total",
              (("mode", "userspace"), ("reason", "wrong-key"), ("tunnel", "gre-b")))] == 2
    assert m[("alt_router_map_server_registers_refused_total", (("reason", "unknown-site"),))] == 2
    assert m[("alt_router_map_resolver_requests_total", ())] == 3
    assert m[("alt_router_forwarder_dropped_total", (("reason", "no-route"),))] == 4
    assert m[("alt_router_rib_accepted_total", ())] == 5
    assert m[("alt_router_registered_eid_prefixes", (("site", "acme"),))] == 1
    assert m[("alt_router_api_stream_clients", ())] == 0
    assert m[("alt_router_uptime_seconds", ())] == 100
    assert m[("alt_router_scrape_errors_total", ())] == 0


def test_metrics_read_the_view_on_every_scrape(live: LiveServer) -> None:
    live.call(live.view.up, "b")
    assert scrape(live)[("alt_router_peers", (("state", "up"),))] == 1
    live.call(live.view.up, "c")
    assert scrape(live)[("alt_router_peers", (("state", "up"),))] == 2


def test_a_broken_section_or_clashing_name_does_not_spoil_the_scrape(live: LiveServer) -> None:
    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("map-server not started")

    live.view.registration_totals = broken  # type: ignore[assignment]
    live.view.extra_counters = {"rib_routes": {"": 7}, "weird": {"x": "not a number", "y": None}}
    m = scrape(live)
    assert m[("alt_router_rib_routes", ())] == 0  # the built-in gauge, not the clashing counter
    assert m[("alt_router_scrape_errors_total", ())] == 2
    assert ("alt_router_peers", (("state", "down"),)) in m


def test_collector_tolerates_missing_and_odd_values() -> None:
    view = FakeNodeView()
    odd_peers: list[dict[str, Any]] = [
        {"name": "x"}, {"state": "up", "prefixes": {"accepted": "3", "dropped": None}},
    ]
    view.peers = lambda: odd_peers  # type: ignore[method-assign]
    view.tunnels = lambda: [{"name": "t", "counters": None}]  # type: ignore[method-assign]
    families = list(NodeCollector(view).collect())
    names = {f.name for f in families}
    assert "alt_router_peer_up" in names and "alt_router_tunnel_rx_packets" in names
    errors = next(f for f in families if f.name == "alt_router_scrape_errors")
    assert errors.samples[0].value == 0


def test_metric_names_are_sanitised() -> None:
    assert metric_name("map-server", "Registers refused") == "map_server_registers_refused"
    assert metric_name("a..b", "__c") == "a_b_c"


def test_openapi_is_json_and_lists_every_route(live: LiveServer) -> None:
    status, _, raw = live.request("GET", "/v1/openapi.json")
    assert status == 200
    doc = json.loads(raw)
    assert doc["openapi"].startswith("3.") and doc["info"]["title"]
    served = {(r.method.lower(), r.resource.canonical.replace("{prefix:.+}", "{prefix}"))
              for r in live.server.app.router.routes() if r.method != "HEAD" and r.resource is not None}
    described = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert served == described
    for ops in doc["paths"].values():
        for op in ops.values():
            assert op["summary"]
            assert {"200", "201"} & set(op["responses"])


def test_openapi_references_resolve() -> None:
    doc = document()
    text = json.dumps(doc)
    for name in ("Error", "Route", "Peer"):
        assert f'"#/components/schemas/{name}"' in text
        assert name in doc["components"]["schemas"]
