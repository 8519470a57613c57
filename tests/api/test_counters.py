"""Every drop is visible: the node's counters, reshaped generically, in /v1/counters and /metrics."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

from alt_router.node.view import DaemonView, gre_counters, shape_counters
from tests.api.conftest import LiveServer
from tests.api.test_metrics_openapi import scrape

EDGE = {"received": 50, "sent": 40, "no-role": 2, "malformed": 1, "send-error": 3, "alt-dropped": 4,
        "rx-buffer-overflow": 7, "to-mr": 9, "malformed-logged": 1}


def test_edge_drops_are_grouped_under_dropped_by_reason() -> None:
    shaped = shape_counters("edge", EDGE)
    assert shaped["dropped"] == {"alt": 4, "malformed": 1, "no-role": 2, "rx-buffer-overflow": 7,
                                 "send-error": 3}
    assert shaped["received"] == 50 and shaped["to-mr"] == 9
    assert "malformed-logged" not in shaped  # log pacing, not an event


def test_labelled_names_become_one_family_and_odd_values_are_left_out() -> None:
    shaped = shape_counters("map_server", {
        "registered": 9, "refused:over-site-cap": 3, "refused:bad-auth": 1, "auth:hmac-sha-256": 9,
        "no-site": 2, "heap": "not a count", "flag": True,
    })
    assert shaped == {"registered": 9, "refused": {"bad-auth": 1, "over-site-cap": 3},
                      "auth": {"hmac-sha-256": 9}, "dropped": {"no-site": 2}}
    shaped = shape_counters("forwarder", {"forwarded": 5, "icmp-queued": 2, "icmp-suppressed:multicast": 4,
                                          "icmp-suppressed:rate": 6, "icmp-suppressed": 10, "no-route": 1})
    assert shaped["icmp-suppressed"] == {"multicast": 4, "rate": 6}
    assert shaped["dropped"] == {"icmp-suppressed": 10, "no-route": 1}
    # A plain count next to labelled ones of the same name: both kept, as two families.
    shaped = shape_counters("map_resolver", {"negative-reply": 9, "negative-reply:eid-space-unrouted": 4})
    assert shaped == {"negative-reply": 9, "negative-reply-by-reason": {"eid-space-unrouted": 4}}


def test_a_counter_nobody_told_the_api_about_still_shows_up() -> None:
    shaped = shape_counters("edge", {"icmp-rate-limited": 3, "brand-new-thing": 1, "queue-overflow": 2})
    assert shaped["brand-new-thing"] == 1 and shaped["dropped"]["queue-overflow"] == 2


def test_gre_engine_counters() -> None:
    stats: dict[str, Any] = {
        "tunnels": {"gre0": {"rx_packets": 1}},
        "unmatched": {"rx_packets": 12, "rx_bytes": 900, "tx_packets": 0, "tx_bytes": 0,
                      "drops": {"unknown-remote": 10, "bad-outer": 2}},
        "sockets": {"rx-buffer-overflow": 25},
        "dataplane_thread": True,
        "command_queue": {"depth": 0, "dropped": 1, "capacity": 1024},
        "handoff": {"queued": 30, "dropped": 4, "errors": 0, "depth": 3, "high_water": 9, "capacity": 4096},
    }
    shaped = gre_counters(stats)
    assert shaped["dropped"] == {"bad-outer": 2, "command-queue-full": 1, "handoff-full": 4,
                                 "rx-buffer-overflow": 25, "unknown-remote": 10}
    assert shaped["unmatched_rx_packets"] == 12 and shaped["handoff_queued"] == 30
    assert "depth" not in str(shaped) and "capacity" not in str(shaped)  # gauges are not counters


def fake_node() -> Any:
    rib = SimpleNamespace(stats=Counter({"updates": 3}))
    core = SimpleNamespace(counters=Counter({"bridge-connections": 1, "unknown-neighbor": 2}),
                           reader=SimpleNamespace(counters=Counter({"update": 4, "malformed": 1})), rib=rib)
    forwarder = SimpleNamespace(stats=lambda: {"counters": {"forwarded": 8, "ttl-expired": 1, "no-route": 2},
                                                "cache": 100, "local": 1})
    mapping = SimpleNamespace(
        edge_counters=lambda: dict(EDGE), forwarder=forwarder,
        mr=SimpleNamespace(counters=Counter({"negative-reply": 5, "dropped:rate-limited": 6})),
        ms=SimpleNamespace(counters=Counter({"registered": 2, "refused:over-source-cap": 7})),
        etr=None, roles=["map-resolver", "map-server"])
    tunnels = SimpleNamespace(mode="userspace", stats=lambda: {
        "tunnels": {}, "unmatched": {"rx_packets": 1, "rx_bytes": 2, "drops": {"unknown-remote": 1}},
        "sockets": {"rx-buffer-overflow": 3}})
    return SimpleNamespace(core=core, mapping=mapping, tunnels=tunnels)


def test_the_daemon_view_exports_every_component() -> None:
    view = DaemonView(fake_node(), clock=lambda: 0.0)
    counters = view.counters()
    assert set(counters) == {"node", "exabgp_api", "rib", "edge", "forwarder", "map_resolver", "map_server",
                             "gre"}
    assert counters["edge"]["dropped"]["no-role"] == 2
    assert counters["forwarder"] == {"forwarded": 8, "dropped": {"no-route": 2, "ttl-expired": 1}}
    assert counters["map_resolver"]["dropped"] == {"rate-limited": 6}
    assert counters["map_server"]["refused"] == {"over-source-cap": 7}
    assert counters["gre"]["dropped"] == {"rx-buffer-overflow": 3, "unknown-remote": 1}
    assert counters["node"]["dropped"] == {"unknown-neighbor": 2}


def test_edge_and_gre_drops_are_prometheus_counters_with_a_reason(live: LiveServer) -> None:
    node_counters = DaemonView(fake_node(), clock=lambda: 0.0).counters()
    live.view.extra_counters = {k: node_counters[k] for k in ("edge", "gre", "map_resolver")}
    m = scrape(live)
    assert m[("alt_router_edge_dropped_total", (("reason", "no-role"),))] == 2
    assert m[("alt_router_edge_dropped_total", (("reason", "malformed"),))] == 1
    assert m[("alt_router_edge_dropped_total", (("reason", "send-error"),))] == 3
    assert m[("alt_router_edge_dropped_total", (("reason", "rx-buffer-overflow"),))] == 7
    assert m[("alt_router_edge_received_total", ())] == 50
    assert m[("alt_router_gre_dropped_total", (("reason", "rx-buffer-overflow"),))] == 3
    assert m[("alt_router_map_resolver_dropped_total", (("reason", "rate-limited"),))] == 6
    assert m[("alt_router_api_dropped_total", (("reason", "too-many-connections"),))] == 0
    assert m[("alt_router_api_stream_dropped_total", (("reason", "queue-overflow"),))] == 0
    # Every counter family is named *_total in the exposition.
    _, _, raw = live.request("GET", "/metrics")
    for line in raw.decode().splitlines():
        if line.startswith("# TYPE") and line.endswith(" counter"):
            name = line.split()[2]
            assert name.endswith("_total") and "_total_" not in name, name
    _, counters = live.json("GET", "/v1/counters")
    assert counters["edge"]["dropped"]["no-role"] == 2


def test_status_json_holds_totals_not_lists() -> None:
    from alt_router.node.daemon import Node  # noqa: PLC0415

    regs = [{"site": "s", "prefix": f"153.16.{i}.0/24"} for i in range(5000)]
    fake = SimpleNamespace(status=lambda routes=True: {
        "rib": {"routes": 5000}, **({"routes": {"153.16.0.0/24": {}}} if routes else {}),
        "mapping": {"registrations": regs, "edge": {"received": 1}}})
    snap = Node.status_file(fake)  # type: ignore[arg-type]
    assert "routes" not in snap and snap["mapping"]["registrations"] == 5000


def test_daemon_view_pages_registrations_and_reports_totals() -> None:
    from ipaddress import ip_address, ip_network  # noqa: PLC0415

    def reg(i: int) -> Any:
        rloc = ip_address("192.0.2.9")
        record = SimpleNamespace(locators=[SimpleNamespace(address=rloc)])
        return SimpleNamespace(site="acme", prefix=ip_network(f"153.16.{i}.0/24"), source=rloc,
                               source_port=4342, xtr_id=None, registered_at=5.0, expires=65.0,
                               proxy_reply=False, record=record)

    pages = {None: ([reg(0), reg(1)], "c1"), "c1": ([reg(2)], None)}

    def page(after: str | None, limit: int) -> tuple[list[Any], str | None]:
        if after not in pages:
            raise ValueError("bad cursor")
        return pages[after]

    node = fake_node()
    node.mapping.ms = SimpleNamespace(registrations_page=page, counters=Counter(),
                                      site_counts=lambda: {"acme": 3})
    node.mapping.clock = lambda: 5.0
    view = DaemonView(node, clock=lambda: 0.0)
    rows, cursor = view.registrations(None, 2)
    assert cursor == "c1" and [r["eid_prefix"] for r in rows] == ["153.16.0.0/24", "153.16.1.0/24"]
    assert rows[0]["expires_in"] == 60.0 and rows[0]["rlocs"] == ["192.0.2.9"]
    assert rows[0]["etr"] == "192.0.2.9"
    assert view.registrations("c1", 2) == ([view.registrations("c1", 2)[0][0]], None)
    assert view.registration_totals() == {"acme": 3}


def test_the_daemon_view_of_a_real_node(tmp_path: Any) -> None:
    """No tunnels, no ExaBGP: the view over a Node with a Map-Server reads every part it names."""
    from alt_router.node.daemon import Node  # noqa: PLC0415
    from tests.node.test_reload import CONFIG, SITES, cfg  # noqa: PLC0415

    node = Node(cfg(CONFIG + SITES, tmp_path), with_tunnels=False)
    view = DaemonView(node)
    counters = view.counters()
    assert {"node", "exabgp_api", "rib", "edge", "forwarder", "map_server"} <= set(counters)
    assert set(counters["edge"]["dropped"]) >= {"no-role", "malformed", "send-error"}
    for values in counters.values():  # only counts, as Prometheus counters need
        for value in values.values():
            assert isinstance(value, int) or all(isinstance(n, int) for n in value.values())
    status = view.status()
    assert status["routes"] == 0 and status["registrations"] == 0
    assert view.registrations(None, 10) == ([], None)
    assert view.registration_totals() == {}
    snap = node.status_file()
    assert "routes" not in snap and snap["mapping"]["registrations"] == 0
