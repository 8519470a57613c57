"""Aggregates on the API: /v1/aggregates, the ``aggregate`` stream event, ``show aggregates``
(RFC 6836 §7.1 aggregation; attributes per RFC 4271 §9.2.2.2)."""

from __future__ import annotations

from ipaddress import ip_network

from alt_router.api.client import ApiClient
from alt_router.api.openapi import document
from alt_router.commands.show import render_aggregates
from alt_router.rib.aggregate import AggregateSpec, Aggregator
from alt_router.rib.events import AggregateEvent
from tests.api.conftest import LiveServer

from .test_stream import READ_TIMEOUT, take


def _rows() -> list[dict[str, object]]:
    agg = Aggregator([AggregateSpec(ip_network("153.16.0.0/12"), summary_only=True),
                      AggregateSpec(ip_network("2001:db8::/32"), as_set=True)])
    agg.update(ip_network("153.16.1.0/24"), (65010,))
    agg.update(ip_network("153.17.0.0/16"), (65011, 65012))
    return agg.view()


def test_aggregates_endpoint_lists_state_and_what_is_suppressed(live: LiveServer) -> None:
    live.view.aggregate_rows = _rows()  # type: ignore[attr-defined]
    status, body = live.json("GET", "/v1/aggregates")
    assert status == 200 and body["count"] == 2 and body["active"] == 1
    first, second = body["aggregates"]
    assert first["prefix"] == "153.16.0.0/12" and first["active"] and first["atomic_aggregate"]
    assert first["suppressed"] == 2 and first["suppressed_sample"] == ["153.16.1.0/24", "153.17.0.0/16"]
    assert second["active"] is False and second["suppressed"] == 0
    assert "/v1/aggregates" in document()["paths"]


def test_aggregate_changes_are_stream_events(live: LiveServer) -> None:
    stream = ApiClient(live.url).stream(read_timeout=READ_TIMEOUT)
    agg = Aggregator([AggregateSpec(ip_network("153.16.0.0/12"), as_set=True)])
    (change,) = agg.update(ip_network("153.16.1.0/24"), (65010, 65020))
    live.call(live.view.events.publish, AggregateEvent("originate", change.prefix, change.route))
    live.call(live.view.events.publish, AggregateEvent("withdraw", change.prefix, None))
    up, down = take(stream, 2)
    assert up.event == "aggregate" and up.json()["kind"] == "originate"
    assert up.json()["as_set"] == [65010, 65020] and up.json()["atomic_aggregate"] is False
    assert down.json() == {"seq": int(down.id or 0), "kind": "withdraw", "prefix": "153.16.0.0/12",
                           "origin": None, "as_set": [], "atomic_aggregate": None}
    stream.close()


def test_show_aggregates_renders_attributes_and_suppressed_prefixes() -> None:
    text = render_aggregates({"aggregates": _rows()})
    assert "153.16.0.0/12" in text and "ATOMIC_AGGREGATE" in text and "summary-only" in text
    assert "153.16.1.0/24, 153.17.0.0/16" in text
    assert "inactive" in text
