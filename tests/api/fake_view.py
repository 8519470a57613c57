"""A NodeView for tests: a real Rib and EventStream, canned tunnels, registrations and counters."""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_network
from typing import Any

from alt_router.api.view import JsonDict, peer_dicts, rib_lookup
from alt_router.rib import AnnouncedRoute, EventStream, PeerInfo, Rib, Update
from alt_router.rib.table import as_prefix

LOCAL_AS = 65001
PEERS = (
    PeerInfo("b", 65002, (ip_address("10.255.1.2"), ip_address("fd00:1::2"))),
    PeerInfo("c", 65003, (ip_address("10.255.2.2"),)),
)
NEXT_HOP = {"b": ip_address("10.255.1.2"), "c": ip_address("10.255.2.2")}
ACCEPT = (ip_network("153.16.0.0/12"), ip_network("2001:db8::/32"))


class FakeNodeView:
    def __init__(self, history: int = 10_000) -> None:
        self.events = EventStream(capacity=history)
        self.rib = Rib(LOCAL_AS, ACCEPT, PEERS, self.events)
        self.now = 1000.0
        self.announced: set[str] = set()
        self.tunnel_counters: dict[str, Any] = {
            "rx_packets": 10, "rx_bytes": 1000, "tx_packets": 7, "tx_bytes": 700, "drops": {"wrong-key": 2},
        }
        self.extra_counters: dict[str, dict[str, Any]] = {}
        self.regs: list[JsonDict] = [
            {"site": "acme", "eid_prefix": "153.16.1.0/24", "rlocs": ["192.0.2.50"], "etr": "192.0.2.50",
             "registered_at": 990.0, "expires_in": 170, "proxy_reply": False}]

    def register(self, n: int, site: str = "bulk") -> None:
        """n more registrations of /32s in 153.18.0.0/16 from distinct ETRs."""
        base = len(self.regs)
        for i in range(base, base + n):
            self.regs.append({"site": site, "eid_prefix": f"153.18.{i // 256 % 256}.{i % 256}/32",
                              "rlocs": [f"192.0.2.{i % 250}"], "etr": f"198.18.{i // 256 % 256}.{i % 256}",
                              "registered_at": 990.0, "expires_in": 170, "proxy_reply": False})

    # --- driving it --------------------------------------------------------------

    def up(self, *peers: str) -> None:
        for p in peers:
            self.rib.peer_up(p, self.now)

    def learn(self, peer: str, *prefixes: str, as_path: tuple[int, ...] = ()) -> None:
        asn = next(p.asn for p in PEERS if p.name == peer)
        anns = tuple(AnnouncedRoute(ip_network(p), NEXT_HOP[peer], as_path or (asn,)) for p in prefixes)
        self.rib.apply(Update(peer, anns), self.now)

    def unlearn(self, peer: str, *prefixes: str) -> None:
        self.rib.apply(Update(peer, withdraw=tuple(ip_network(p) for p in prefixes)), self.now)

    # --- NodeView ----------------------------------------------------------------

    def status(self) -> JsonDict:
        return {"node": "a", "asn": LOCAL_AS, "router_id": "10.0.0.1", "version": "test",
                "started_at": 900.0, "uptime": self.now - 900.0, "roles": ["alt", "map-server"]}

    def peers(self) -> list[JsonDict]:
        return peer_dicts(self.rib, self.now, count_best=True)

    def tunnels(self) -> list[JsonDict]:
        return [
            {"name": "gre-b", "mode": "userspace", "local": "192.0.2.1", "remote": "192.0.2.2", "peer": "b",
             "counters": self.tunnel_counters},
            {"name": "gre-c", "mode": "kernel", "local": "192.0.2.1", "remote": "192.0.2.3", "peer": "c",
             "counters": {"rx_packets": 0, "rx_bytes": 0, "tx_packets": 0, "tx_bytes": 0, "drops": {}}},
        ]

    def lookup(self, eid: str) -> JsonDict | None:
        found = rib_lookup(self.rib, eid)
        if found is not None:
            found["tunnel"] = f"gre-{found['next_hop_peer']}"
        return found

    @staticmethod
    def _reg_key(reg: JsonDict) -> list[str]:
        return [reg["site"], reg["eid_prefix"], reg["etr"]]

    def registrations(self, cursor: str | None, limit: int) -> tuple[list[JsonDict], str | None]:
        ordered = sorted(self.regs, key=self._reg_key)
        if cursor is not None:
            try:
                after = json.loads(cursor)
            except ValueError:
                raise ValueError(f"bad cursor {cursor!r}") from None
            if not isinstance(after, list):
                raise ValueError(f"bad cursor {cursor!r}")
            ordered = [r for r in ordered if self._reg_key(r) > after]
        page = ordered[:limit]
        more = len(ordered) > limit
        return page, (json.dumps(self._reg_key(page[-1])) if more else None)

    def aggregates(self) -> list[JsonDict]:
        return list(getattr(self, "aggregate_rows", []))

    def registration_totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for reg in self.regs:
            totals[reg["site"]] = totals.get(reg["site"], 0) + 1
        return totals

    def counters(self) -> dict[str, dict[str, Any]]:
        return {
            "rib": dict(self.rib.stats),
            "map_server": {"registers_received": 5, "registers_refused": {"bad-auth": 1, "unknown-site": 2}},
            "map_resolver": {"requests": 3, "negative_replies": 1},
            "forwarder": {"forwarded": 12, "dropped": {"ttl-expired": 1, "no-route": 4}},
            **self.extra_counters,
        }

    def announce(self, prefix: str) -> bool:
        p = as_prefix(prefix)
        if not self.rib.policy.accepts_prefix(p):
            raise ValueError(f"{p} is outside this node's EID space")
        if str(p) in self.announced:
            return False
        self.announced.add(str(p))
        return True

    def withdraw(self, prefix: str) -> bool:
        p = str(as_prefix(prefix))
        if p not in self.announced:
            return False
        self.announced.discard(p)
        return True
