"""What the API needs from a running node, and helpers that turn RIB objects into JSON-ready dicts.

The daemon implements ``NodeView``; the API never reaches into the daemon
otherwise.  The dict shapes below are the API's contract (docs/api.md); the
helpers build the RIB-derived parts so the daemon and the tests agree on them.
"""

from __future__ import annotations

from typing import Any, Protocol

from alt_router.rib.events import AggregateEvent, Event, EventStream, PeerDown, PeerUp, Record, RouteChange
from alt_router.rib.paths import Path
from alt_router.rib.rib import Rib
from alt_router.rib.table import TableError, as_address

JsonDict = dict[str, Any]


class NodeView(Protocol):
    """A read/announce window onto a running node.

    Every method is called from the daemon's event loop, so implementations may
    read node state directly.  Shapes (all keys optional unless stated; the API
    and the metrics tolerate missing ones):

    - ``status()``: ``{"node": str, "asn": int, "router_id": str, "version": str,
      "started_at": float, "uptime": float, "roles": [str]}``
    - ``peers()``: see ``peer_dicts``; the daemon may add keys (e.g. ``"session"``).
    - ``tunnels()``: ``[{"name", "mode", "local", "remote", "peer", "counters":
      {"rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "drops": {reason: n}}}]``
      (``counters`` is ``gre.dataplane.Counters.as_dict()``).
    - ``lookup(eid)``: ``None`` when there is no route, else ``{"eid", "prefix",
      "route": route_dict(...), "next_hop", "tunnel"}`` (see ``rib_lookup``).
    - ``registrations(cursor, limit)``: one page, ``([{"site", "eid_prefix", "rlocs": [...],
      "etr", "registered_at", "expires_in", "proxy_reply"}], next_cursor)``; ``cursor`` is
      None or a ``next_cursor`` it gave before (opaque), ``next_cursor`` None on the last page.
      Raise ``ValueError`` for a cursor it did not make.
    - ``aggregates()``: one dict per ``[[eid.aggregates]]`` entry (``rib.aggregate.Aggregator.view``):
      ``{"prefix", "active", "summary_only", "as_set", "always", "contributors", "suppressed",
      "suppressed_sample": [prefix], "origin", "as_set_members": [asn], "atomic_aggregate"}``.
    - ``registration_totals()``: ``{site: registrations}`` (never the registrations themselves).
    - ``counters()``: ``{component: {name: int | {label: int}}}`` with components such
      as ``"rib"``, ``"edge"``, ``"map_server"``, ``"map_resolver"``, ``"forwarder"``, ``"gre"``;
      every number is a monotonically increasing count (they become Prometheus counters,
      ``alt_router_<component>_<name>_total``, the inner dict's keys as ``reason`` labels).
      Drops go under ``"dropped"``: ``{"dropped": {reason: n}}``.  The API passes any
      component and name through, so a new counter needs no API change.
    - ``announce``/``withdraw``: idempotent, return whether anything changed; raise
      ``ValueError`` with a message to refuse (e.g. outside the node's EID space).
    """

    @property
    def rib(self) -> Rib: ...

    @property
    def events(self) -> EventStream: ...

    def status(self) -> JsonDict: ...

    def peers(self) -> list[JsonDict]: ...

    def tunnels(self) -> list[JsonDict]: ...

    def lookup(self, eid: str) -> JsonDict | None: ...

    def registrations(self, cursor: str | None, limit: int) -> tuple[list[JsonDict], str | None]: ...

    def aggregates(self) -> list[JsonDict]: ...

    def registration_totals(self) -> dict[str, int]: ...

    def counters(self) -> dict[str, dict[str, Any]]: ...

    def announce(self, prefix: str) -> bool: ...

    def withdraw(self, prefix: str) -> bool: ...


def route_dict(path: Path, best: bool | None = None) -> JsonDict:
    out: JsonDict = {
        # key is the prefix's canonical text: no ipaddress object per route on a full-table dump.
        "prefix": path.key,
        "peer": path.peer,
        "peer_address": str(path.peer_address),
        "next_hop": str(path.next_hop),
        "next_hop_peer": path.next_hop_peer or path.peer,
        "as_path": list(path.as_path),
        "as_set": list(path.as_set),
        "origin": path.origin,
        "med": path.med,
        "communities": [f"{a}:{b}" for a, b in path.communities],
        "atomic_aggregate": path.attributes.atomic_aggregate,
        "aggregator": path.attributes.aggregator,
        "learned_at": path.learned_at,
    }
    if best is not None:
        out["best"] = best
    return out


def peer_dicts(rib: Rib, now: float, count_best: bool = False) -> list[JsonDict]:
    """One dict per configured peer from what the RIB knows.

    ``prefixes.accepted`` is the Adj-RIB-In size now, ``prefixes.dropped`` the
    refusals by reason since start (cumulative, like every ``*_total`` metric),
    ``received`` their sum.  ``prefixes.best`` (how many accepted prefixes are the
    Loc-RIB's choice) needs a pass over the whole Loc-RIB, about 5 ms per 1,000
    routes here, so it is only counted when asked for: keep it off on a full table.
    """
    drops = rib.drops.as_dict()
    best: dict[str, int] = {}
    if count_best:
        for path in rib.routes():
            best[path.peer] = best.get(path.peer, 0) + 1
    out: list[JsonDict] = []
    for state in rib.peers():
        name = state.info.name
        accepted = len(state.adj_in)
        dropped = drops.get(name, {})
        out.append({
            "name": name,
            "asn": state.info.asn,
            "addresses": [str(a) for a in state.info.addresses],
            "state": "up" if state.up else "down",
            "since": state.since,
            "uptime": max(0.0, now - state.since) if state.up else None,
            "router_id": str(state.router_id) if state.router_id is not None else None,
            "last_down_reason": state.last_down_reason or None,
            "max_prefix": state.info.max_prefix,
            "prefixes": {
                "received": accepted + sum(dropped.values()),
                "accepted": accepted,
                "dropped": dropped,
            },
        })
        if count_best:
            out[-1]["prefixes"]["best"] = best.get(name, 0)
    return out


def rib_lookup(rib: Rib, eid: str) -> JsonDict | None:
    """The Loc-RIB's answer for ``eid``: the covering route and the tunnel peer a datagram would go to."""
    try:
        addr = as_address(eid)
    except TableError:
        return None
    path = rib.lookup(addr)
    if path is None:
        return None
    return {
        "eid": str(addr),
        "prefix": path.key,
        "next_hop": str(path.next_hop),
        "next_hop_peer": path.next_hop_peer or path.peer,
        "route": route_dict(path),
    }


def event_dict(record: Record) -> tuple[str, JsonDict]:
    """(SSE event name, data) for one stream record."""
    event: Event = record.event
    if isinstance(event, RouteChange):
        return "route", {
            "seq": record.seq,
            "kind": event.kind,
            "prefix": event.key,
            "old": route_dict(event.old) if event.old is not None else None,
            "new": route_dict(event.new) if event.new is not None else None,
        }
    if isinstance(event, PeerUp):
        return "peer", {"seq": record.seq, "peer": event.peer, "state": "up", "at": event.at}
    if isinstance(event, PeerDown):
        return "peer", {
            "seq": record.seq, "peer": event.peer, "state": "down", "reason": event.reason, "at": event.at,
        }
    if isinstance(event, AggregateEvent):
        route = event.route
        return "aggregate", {
            "seq": record.seq, "kind": event.kind, "prefix": str(event.prefix),
            "origin": route.origin if route else None,
            "as_set": list(route.as_set) if route else [],
            "atomic_aggregate": route.atomic_aggregate if route else None,
        }
    # A future event type must not break the stream for clients that do not know it.
    return "other", {"seq": record.seq, "type": type(event).__name__}
