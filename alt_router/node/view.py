"""The monitoring API's window onto a running ``Node`` (``alt_router.api.view.NodeView``).

Reads the node's state directly: every call comes from the daemon's event loop.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from alt_router import __version__
from alt_router.api.view import JsonDict, peer_dicts, rib_lookup
from alt_router.node.core import as_prefix
from alt_router.rib import EventStream, Rib

if TYPE_CHECKING:
    from alt_router.node.daemon import Node


class DaemonView:
    def __init__(self, node: Node, clock: Any = time.time) -> None:
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
        return {
            "node": cfg.name,
            "asn": cfg.asn,
            "router_id": str(cfg.router_id),
            "version": __version__,
            "started_at": self.started_at,
            "uptime": now - self.started_at,
            "roles": self._roles(),
        }

    def peers(self) -> list[JsonDict]:
        out = peer_dicts(self.rib, self.clock())
        for item in out:
            peer = self.node.config.peer(item["name"])
            if peer is not None:
                local, remote = peer.tunnel.session
                item["session"] = {"local": str(local), "remote": str(remote)}
        return out

    def _tunnel_names(self) -> dict[str, str]:
        from alt_router.node.daemon import tunnel_name  # noqa: PLC0415 - the daemon imports this module

        return {tunnel_name(p, i): p.name for i, p in enumerate(self.node.config.peers)}

    def tunnels(self) -> list[JsonDict]:
        tunnels = self.node.tunnels
        stats: dict[str, Any] = {}
        if tunnels is not None:
            raw = tunnels.stats().get("tunnels", {})
            stats = raw if isinstance(raw, dict) else {}
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

    def lookup(self, eid: str) -> JsonDict | None:
        found = rib_lookup(self.rib, eid)
        if found is not None:
            by_peer = {peer: name for name, peer in self._tunnel_names().items()}
            found["tunnel"] = by_peer.get(found["next_hop_peer"])
        return found

    def registrations(self) -> list[JsonDict]:
        if self.node.mapping is None:
            return []
        out: list[JsonDict] = []
        for reg in self.node.mapping.registrations():
            out.append(
                {
                    "site": reg.get("site"),
                    "eid_prefix": reg.get("prefix"),
                    "rlocs": reg.get("locators", []),
                    "etr": reg.get("etr"),
                    "expires_in": reg.get("expires_in"),
                    "proxy_reply": reg.get("proxy_reply"),
                }
            )
        return out

    def counters(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {
            "node": dict(self.node.core.counters),
            "exabgp_api": dict(self.node.core.reader.counters),
        }
        if self.node.mapping is not None:
            status = self.node.mapping.status()
            for component in ("map_resolver", "map_server", "etr", "forwarder"):
                value = status.get(component)
                if isinstance(value, dict):
                    out[component] = {k: v for k, v in value.items() if isinstance(v, int | dict)}
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
