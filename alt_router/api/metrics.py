"""Prometheus metrics read from the NodeView at scrape time.

A custom Collector rather than Counter/Gauge objects updated by the node: the
node's own counters are the single source of truth, and a scrape costs one pass
over peers, tunnels and counters (never over the routes or the registrations).

Names follow Prometheus conventions: ``alt_router_<thing>_<unit>``, counters end in
``_total`` (``CounterMetricFamily`` adds it), drops are ``alt_router_<thing>_dropped_total``
with a ``reason`` label.  ``view.counters()`` is exported generically, so a counter a
component adds shows up here without a change.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from alt_router.api.stream import StreamHub
from alt_router.api.view import NodeView

log = logging.getLogger(__name__)

PREFIX = "alt_router"
_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(*parts: str) -> str:
    name = "_".join(_BAD_CHARS.sub("_", p.strip()).strip("_").lower() for p in parts if p)
    return re.sub(r"_+", "_", name)


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


class NodeCollector(Collector):
    def __init__(self, view: NodeView, hub: StreamHub | None = None,
                 requests: Mapping[str, int] | None = None,
                 http: Callable[[], Mapping[str, int]] | None = None) -> None:
        self.view = view
        self.hub = hub
        self.requests = requests
        self.http = http
        self.errors = 0

    def collect(self) -> Iterable[Metric]:
        # Each section on its own: one broken part of the view must not blank the whole scrape.
        seen: set[str] = set()
        for section in (self._status, self._peers, self._rib, self._tunnels, self._registrations,
                        self._api, self._counters):
            try:
                families = list(section())
            except Exception:
                self.errors += 1
                log.exception("metrics section %s failed", section.__name__)
                continue
            for family in families:
                # A counter the daemon names like a built-in metric would make the exposition invalid.
                if family.name in seen:
                    self.errors += 1
                    log.warning("metric %s defined twice; keeping the first", family.name)
                    continue
                seen.add(family.name)
                yield family
        yield CounterMetricFamily(f"{PREFIX}_scrape_errors", "Metric sections that failed to collect",
                                  value=self.errors)

    def _status(self) -> Iterator[Metric]:
        status = self.view.status()
        info = GaugeMetricFamily(f"{PREFIX}_info", "Node identity (value is always 1)",
                                 labels=["node", "asn", "router_id", "version"])
        info.add_metric([str(status.get("node", "")), str(status.get("asn", "")),
                         str(status.get("router_id", "")), str(status.get("version", ""))], 1)
        yield info
        uptime = _num(status.get("uptime"))
        if uptime is not None:
            yield GaugeMetricFamily(f"{PREFIX}_uptime_seconds", "Seconds since the node started",
                                    value=uptime)

    def _peers(self) -> Iterator[Metric]:
        peers = self.view.peers()
        up = GaugeMetricFamily(f"{PREFIX}_peer_up", "1 if the BGP session is established", labels=["peer"])
        uptime = GaugeMetricFamily(f"{PREFIX}_peer_uptime_seconds", "Seconds the session has been up",
                                   labels=["peer"])
        accepted = GaugeMetricFamily(f"{PREFIX}_peer_prefixes_accepted",
                                     "Prefixes in the peer's Adj-RIB-In", labels=["peer"])
        best = GaugeMetricFamily(f"{PREFIX}_peer_prefixes_best",
                                 "Accepted prefixes that are the Loc-RIB's best path",
                                 labels=["peer"])
        dropped = CounterMetricFamily(f"{PREFIX}_peer_prefixes_dropped",
                                      "Prefixes refused by import policy", labels=["peer", "reason"])
        count = GaugeMetricFamily(f"{PREFIX}_peers", "Configured peers by session state", labels=["state"])
        states = {"up": 0, "down": 0}
        for p in peers:
            name = str(p.get("name", ""))
            state = str(p.get("state", "down"))
            states[state] = states.get(state, 0) + 1
            up.add_metric([name], 1.0 if state == "up" else 0.0)
            t = _num(p.get("uptime"))
            if t is not None:
                uptime.add_metric([name], t)
            prefixes = p.get("prefixes") or {}
            for family, key in ((accepted, "accepted"), (best, "best")):
                v = _num(prefixes.get(key))
                if v is not None:
                    family.add_metric([name], v)
            for reason, n in sorted((prefixes.get("dropped") or {}).items()):
                v = _num(n)
                if v is not None:
                    dropped.add_metric([name, str(reason)], v)
        for state, n in sorted(states.items()):
            count.add_metric([state], n)
        yield from (count, up, uptime, accepted, best, dropped)

    def _rib(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(f"{PREFIX}_rib_routes", "Prefixes in the Loc-RIB", value=len(self.view.rib))
        yield CounterMetricFamily(f"{PREFIX}_rib_events", "Route and peer events published",
                                  value=self.view.events.last_seq)

    def _tunnels(self) -> Iterator[Metric]:
        labels = ["tunnel", "mode"]
        fams = {
            key: CounterMetricFamily(f"{PREFIX}_tunnel_{key}", f"GRE {key.replace('_', ' ')}", labels=labels)
            for key in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")
        }
        drops = CounterMetricFamily(f"{PREFIX}_tunnel_dropped", "GRE packets dropped, by reason",
                                    labels=[*labels, "reason"])
        for t in self.view.tunnels():
            lv = [str(t.get("name", "")), str(t.get("mode", ""))]
            counters = t.get("counters") or {}
            for key, fam in fams.items():
                v = _num(counters.get(key))
                if v is not None:
                    fam.add_metric(lv, v)
            for reason, n in sorted((counters.get("drops") or {}).items()):
                v = _num(n)
                if v is not None:
                    drops.add_metric([*lv, str(reason)], v)
        yield from fams.values()
        yield drops

    def _registrations(self) -> Iterator[Metric]:
        per_site = GaugeMetricFamily(f"{PREFIX}_registered_eid_prefixes",
                                     "EID-prefix registrations held by the Map-Server, by site",
                                     labels=["site"])
        for site, n in sorted(self.view.registration_totals().items()):
            per_site.add_metric([str(site)], n)
        yield per_site

    def _counters(self) -> Iterator[Metric]:
        """``{component: {name: n | {reason: n}}}`` -> ``alt_router_<component>_<name>_total[{reason}]``."""
        for component, values in sorted(self.view.counters().items()):
            if not isinstance(values, dict):
                continue
            for name, value in sorted(values.items()):
                full = f"{PREFIX}_{metric_name(str(component), str(name))}"
                if isinstance(value, dict):
                    fam = CounterMetricFamily(full, f"{component} {name}, by reason", labels=["reason"])
                    for reason, n in sorted(value.items()):
                        v = _num(n)
                        if v is not None:
                            fam.add_metric([str(reason)], v)
                    yield fam
                else:
                    v = _num(value)
                    if v is not None:
                        yield CounterMetricFamily(full, f"{component} {name}", value=v)

    def _api(self) -> Iterator[Metric]:
        if self.requests is not None:
            requests = CounterMetricFamily(f"{PREFIX}_api_requests", "API requests answered, by status code",
                                           labels=["code"])
            for code, n in sorted(self.requests.items()):
                requests.add_metric([code], n)
            yield requests
        if self.http is not None:
            http = self.http()
            yield GaugeMetricFamily(f"{PREFIX}_api_connections", "Open API connections",
                                    value=http.get("connections", 0))
            yield CounterMetricFamily(f"{PREFIX}_api_connections_accepted", "API connections accepted",
                                      value=http.get("connections_accepted", 0))
            dropped = CounterMetricFamily(
                f"{PREFIX}_api_dropped", "API connections and requests refused or cut, by reason",
                labels=["reason"])
            for reason, key in (("too-many-connections", "connections_refused"),
                                ("header-timeout", "header_timeouts"), ("body-timeout", "body_timeouts"),
                                ("malformed", "malformed_requests")):
                dropped.add_metric([reason], http.get(key, 0))
            yield dropped
        if self.hub is None:
            return
        stats = self.hub.stats()
        yield GaugeMetricFamily(f"{PREFIX}_api_stream_clients", "Connected /v1/stream clients",
                                value=stats["clients"])
        yield CounterMetricFamily(f"{PREFIX}_api_stream_events_encoded",
                                  "Events encoded for the stream (once each, whatever the client count)",
                                  value=stats["encoded"])
        stream_dropped = CounterMetricFamily(f"{PREFIX}_api_stream_dropped",
                                             "Stream clients dropped or refused", labels=["reason"])
        stream_dropped.add_metric(["queue-overflow"], stats["dropped"])
        stream_dropped.add_metric(["too-many-clients"], stats["refused"])
        yield stream_dropped


def make_registry(view: NodeView, hub: StreamHub | None = None,
                  requests: Mapping[str, int] | None = None,
                  http: Callable[[], Mapping[str, int]] | None = None) -> CollectorRegistry:
    """A registry of its own (not the global one), so several servers in one process do not clash."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(view, hub, requests, http))
    return registry
