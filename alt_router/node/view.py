"""The monitoring API's window onto a running ``Node`` (``alt_router.api.view.NodeView``).

Reads the node's parts directly (``ViewedNode``: the daemon's ``Node`` has them; this module does
not import the daemon): every call comes from the daemon's event loop.  Tunnel names are the
node's own record (``Node.tunnel_names``), never recomputed here, so the API shows the names the
engine uses, also after a reload renamed or removed peers.

Counters are exported generically: each component's flat ``Counter`` is reshaped by
``shape_counters`` (``"a:b"`` names become ``{"a": {"b": n}}``, drop names go under
``"dropped"``), so a counter a component adds later shows up in ``/v1/counters`` and
``/metrics`` without a change here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from alt_router import __version__
from alt_router.api.view import JsonDict, peer_dicts, rib_lookup
from alt_router.gre.tunnel import Tunnels
from alt_router.node.config import NodeConfig
from alt_router.node.core import NodeCore, as_prefix
from alt_router.node.mapping import NodeMapping
from alt_router.rib import EventStream, Rib


class ViewedNode(Protocol):
    """The parts of a node the API reads (``alt_router.node.daemon.Node`` has them)."""

    @property
    def config(self) -> NodeConfig: ...
    @property
    def core(self) -> NodeCore: ...
    @property
    def stream(self) -> EventStream: ...
    @property
    def mapping(self) -> NodeMapping | None: ...
    @property
    def tunnels(self) -> Tunnels | None: ...
    @property
    def tunnel_names(self) -> Mapping[str, str]: ...  # peer name -> tunnel name

    def announce(self, prefix: str) -> bool: ...
    def withdraw(self, prefix: str) -> bool: ...

# Counter names that count something dropped, refused or lost, by component (the names are the
# components' own).  Anything else that looks like a drop (see ``is_drop``) is one too.
DROPS: Mapping[str, frozenset[str]] = {
    "edge": frozenset({"no-role", "malformed", "send-error", "recv-error", "rx-buffer-overflow",
                       "alt-dropped", "icmp-send-error", "alt-no-route", "alt-unbuildable"}),
    "forwarder": frozenset({"no-tunnel", "malformed", "not-alt", "no-route", "loop", "ttl-expired",
                            "no-local-handler", "icmp-suppressed"}),
    "map_server": frozenset({"malformed", "unexpected", "dropped:probe", "unsupported-eid", "no-itr-rloc",
                             "no-etr-rloc", "too-big", "no-site", "nonce-evicted", "dropped-on-reload"}),
    "map_resolver": frozenset({"malformed", "unexpected", "too-big", "unsupported-eid", "no-itr-rloc",
                               "not-map-request", "not-ecm", "family-mismatch", "ttl-expired"}),
    "etr": frozenset({"malformed", "unexpected", "map-notify-bad-auth", "map-notify-unknown-nonce"}),
    "node": frozenset({"bridge-malformed", "bridge-unknown", "command-errors", "unknown-neighbor"}),
    "exabgp_api": frozenset({"malformed", "nlri-skipped"}),
}
_DROP_SUFFIXES = ("-dropped", "-drops", "-error", "-errors", "-overflow", "-refused", "-suppressed")
_DROP_PREFIXES = ("dropped", "refused", "no-", "not-")
# Counters that only pace logging: not events an operator needs as metrics.
_SKIP_SUFFIX = "-logged"


def is_drop(component: str, name: str) -> bool:
    return (name in DROPS.get(component, ()) or name.endswith(_DROP_SUFFIXES)
            or name.startswith(_DROP_PREFIXES))


def shape_counters(component: str, flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{name: n}`` -> ``{name: n, family: {label: n}, "dropped": {reason: n}}``.

    ``"refused:over-site-cap"`` becomes ``{"refused": {"over-site-cap": n}}``; a drop name
    becomes ``{"dropped": {name: n}}`` (``"x-dropped"`` as reason ``x``).  A plain ``"x"`` next to
    ``"x:..."`` names keeps its name, and the labelled ones become ``"x-by-reason"`` (one metric
    family per name, and the labelled ones need not add up to the plain one).  Values that are
    not integers (gauges, nested stats) are left out: everything here is a monotonic count.
    """
    plain: dict[str, int] = {}
    labelled: dict[str, dict[str, int]] = {}
    for name, value in flat.items():
        if not isinstance(value, int) or isinstance(value, bool) or name.endswith(_SKIP_SUFFIX):
            continue
        family, sep, label = name.partition(":")
        if sep:
            labelled.setdefault(family, {})[label] = value
        elif is_drop(component, name):
            reason = name.removesuffix("-dropped") if name.endswith("-dropped") else name
            labelled.setdefault("dropped", {})[reason] = labelled.get("dropped", {}).get(reason, 0) + value
        else:
            plain[name] = value
    out: dict[str, Any] = dict(sorted(plain.items()))
    for family, values in sorted(labelled.items()):
        out[f"{family}-by-reason" if family in out else family] = dict(sorted(values.items()))
    return out


def gre_counters(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The GRE engine's own counters (per-tunnel ones are in ``tunnels()``): packets no tunnel
    matched, kernel receive-buffer overflows on its sockets, and its queues' drops."""
    dropped: dict[str, int] = {}
    out: dict[str, Any] = {}
    unmatched = stats.get("unmatched")
    if isinstance(unmatched, Mapping):
        for key in ("rx_packets", "rx_bytes"):
            if isinstance(unmatched.get(key), int):
                out[f"unmatched_{key}"] = unmatched[key]
        for reason, n in (unmatched.get("drops") or {}).items():
            if isinstance(n, int):
                dropped[str(reason)] = dropped.get(str(reason), 0) + n
    sockets = stats.get("sockets")
    if isinstance(sockets, Mapping):
        for name, n in sockets.items():
            if isinstance(n, int) and not isinstance(n, bool):
                dropped[str(name)] = n
    for queue in ("command_queue", "handoff"):
        q = stats.get(queue)
        if isinstance(q, Mapping):
            if isinstance(q.get("dropped"), int):
                dropped[f"{queue.replace('_', '-')}-full"] = q["dropped"]
            if isinstance(q.get("errors"), int):
                out[f"{queue}_errors"] = q["errors"]
            if isinstance(q.get("queued"), int):
                out[f"{queue}_queued"] = q["queued"]
    out["dropped"] = dict(sorted(dropped.items()))
    return out


def registration_dict(reg: Any, now: float) -> JsonDict:
    return {
        "site": reg.site,
        "eid_prefix": str(reg.prefix),
        "rlocs": [str(loc.address) for loc in reg.record.locators],
        "etr": str(reg.source),
        "port": reg.source_port,
        "xtr_id": reg.xtr_id,
        "registered_at": reg.registered_at,
        "expires_in": round(reg.expires - now, 1),
        "proxy_reply": reg.proxy_reply,
    }


class DaemonView:
    def __init__(self, node: ViewedNode, clock: Any = time.time) -> None:
        self.node = node
        self.clock = clock
        self.started_at = clock()

    @property
    def rib(self) -> Rib:
        rib: Rib = self.node.core.rib
        return rib

    @property
    def events(self) -> EventStream:
        return self.node.stream

    def _roles(self) -> list[str]:
        roles = ["alt"]
        if self.node.mapping is not None:
            roles += [r for r in self.node.mapping.roles if r not in roles]
        return roles

    def status(self) -> JsonDict:
        cfg = self.node.config.node
        now = self.clock()
        out: JsonDict = {
            "node": cfg.name,
            "asn": cfg.asn,
            "router_id": str(cfg.router_id),
            "version": __version__,
            "started_at": self.started_at,
            "uptime": now - self.started_at,
            "roles": self._roles(),
            # Totals only: the status never grows with the table (the lists are paged endpoints).
            "routes": len(self.rib),
        }
        ms = self.node.mapping.ms if self.node.mapping is not None else None
        if ms is not None:
            out["registrations"] = len(ms)
        return out

    def peers(self) -> list[JsonDict]:
        out = peer_dicts(self.rib, self.clock())
        for item in out:
            peer = self.node.config.peer(item["name"])
            if peer is not None:
                local, remote = peer.tunnel.session
                item["session"] = {"local": str(local), "remote": str(remote)}
        return out

    def _tunnel_names(self) -> dict[str, str]:
        """Tunnel name -> peer name, in the config's peer order."""
        names = self.node.tunnel_names
        return {names[p.name]: p.name for p in self.node.config.peers if p.name in names}

    def _gre_stats(self) -> dict[str, Any]:
        tunnels = self.node.tunnels
        if tunnels is None:
            return {}
        raw = tunnels.stats()
        return raw if isinstance(raw, dict) else {}

    def tunnels(self) -> list[JsonDict]:
        tunnels = self.node.tunnels
        raw = self._gre_stats().get("tunnels", {})
        stats: dict[str, Any] = raw if isinstance(raw, dict) else {}
        out: list[JsonDict] = []
        names = self._tunnel_names()
        for name, peer_name in names.items():
            peer = self.node.config.peer(peer_name)
            assert peer is not None
            out.append(
                {
                    "name": name,
                    "mode": tunnels.mode if tunnels is not None else "none",
                    "local": str(peer.underlay.local),
                    "remote": str(peer.underlay.remote),
                    "peer": peer_name,
                    "counters": stats.get(name, {}),
                }
            )
        return out

    async def lookup_detail(self, found: JsonDict) -> JsonDict:
        """FRR mode: the route's AS paths from FRR, on demand (the kernel table has no BGP attributes)."""
        frr = getattr(self.node, "frr", None)
        if frr is None:
            return found
        detail = await frr.lookup_detail(as_prefix(found["prefix"]))
        paths = detail.get("as_paths")
        if paths and isinstance(found.get("route"), dict):
            found["route"]["as_path"] = paths[0]
        return {**found, **detail}

    def lookup(self, eid: str) -> JsonDict | None:
        found = rib_lookup(self.rib, eid)
        if found is not None:
            by_peer = {peer: name for name, peer in self._tunnel_names().items()}
            found["tunnel"] = by_peer.get(found["next_hop_peer"])
            hidden_by = self.node.core.suppressed_by(as_prefix(found["prefix"]))
            found["suppressed_by"] = str(hidden_by) if hidden_by is not None else None
        return found

    def aggregates(self) -> list[JsonDict]:
        return self.node.core.aggregates_view()

    def registrations(self, cursor: str | None, limit: int) -> tuple[list[JsonDict], str | None]:
        mapping = self.node.mapping
        if mapping is None or mapping.ms is None:
            if cursor is not None:
                raise ValueError("this node has no registrations to page through")
            return [], None
        regs, next_cursor = mapping.ms.registrations_page(cursor, limit)
        now = mapping.clock()
        return [registration_dict(r, now) for r in regs], next_cursor

    def registration_totals(self) -> dict[str, int]:
        mapping = self.node.mapping
        ms = mapping.ms if mapping is not None else None
        if ms is None:
            return {}
        per_site = getattr(ms, "site_counts", None)
        if callable(per_site):
            return {str(k): int(v) for k, v in per_site().items()}
        counts = getattr(ms, "_site_count", None)
        if isinstance(counts, Mapping):
            return {str(k): int(v) for k, v in counts.items() if v}
        return {"": len(ms)}

    def counters(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        sources: list[tuple[str, Callable[[], Mapping[str, Any]]]] = [
            ("node", lambda: self.node.core.counters),
            ("exabgp_api", lambda: self.node.core.reader.counters),
            ("rib", lambda: self.rib.stats),
        ]
        mapping = self.node.mapping
        if mapping is not None:
            sources.append(("edge", mapping.edge_counters))
            forwarder = mapping.forwarder  # None in FRR-integrated mode (the kernel forwards)
            if forwarder is not None:
                sources.append(("forwarder", lambda: _forwarder_counters(forwarder.stats())))
            for component, core in (("map_resolver", mapping.mr), ("map_server", mapping.ms),
                                    ("etr", mapping.etr)):
                if core is not None:
                    sources.append((component, _counter_source(core)))
        frr = getattr(self.node, "frr", None)
        if frr is not None:
            sources.append(("frr", frr.flat_counters))
            if frr.kernel_routes is not None:
                sources.append(("kernel_rib", frr.kernel_routes.counters))
        for component, read in sources:
            out[component] = shape_counters(component, read())
        if self.node.tunnels is not None:
            out["gre"] = gre_counters(self._gre_stats())
        return out

    def _check(self, prefix: str) -> None:
        p = as_prefix(prefix)
        if not self.node.config.eid.accepts(p):
            raise ValueError(
                f"{p} is outside this node's EID space ({', '.join(map(str, self.node.config.eid.accept))})"
            )

    def announce(self, prefix: str) -> bool:
        self._check(prefix)
        return self.node.announce(prefix)

    def withdraw(self, prefix: str) -> bool:
        as_prefix(prefix)
        return self.node.withdraw(prefix)


def _counter_source(core: Any) -> Callable[[], Mapping[str, Any]]:
    def read() -> Mapping[str, Any]:
        counters = getattr(core, "counters", {})
        return counters if isinstance(counters, Mapping) else {}
    return read


def _forwarder_counters(stats: Mapping[str, Any]) -> Mapping[str, Any]:
    counters = stats.get("counters")
    return counters if isinstance(counters, Mapping) else {}
