"""The node's decisions, sans-IO: ExaBGP lines in, RIB updates and ExaBGP commands out.

``NodeCore`` owns the RIB and decides what to tell ExaBGP.  The asyncio edge
(``daemon.py``) feeds it every line from the bridge and writes back the
commands it returns; the clock is always an argument.

Export (ExaBGP does not propagate routes between its neighbors, so the node
must): when the best path for a prefix changes, it is announced to every other
peer that carries the family and whose AS is not already in the path, with our
AS prepended (ExaBGP only adds its AS when no AS_PATH is given).  Prefixes the
node originates itself (configured or ``announce``d at run time) win over
learned ones.  Every command names its neighbor, so each peer gets the next hop
it can use (``exabgp_config.next_hop_for``).

Aggregation (``[[eid.aggregates]]``, ``rib/aggregate.py``): every learned best
path and every run-time origination feeds the aggregator; an active aggregate
is originated with its aggregate attributes (AS_SET or ATOMIC_AGGREGATE, and
AGGREGATOR), and a more-specific under an active ``summary_only`` aggregate is
not exported (it stays in the RIB, and the node forwards by it).  Prefixes from
``[eid].announce`` contribute but are announced regardless: they live in
ExaBGP's own configuration.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address
from typing import Any

from alt_router.bgp import exabgp_api as api
from alt_router.bgp.bridge import HELLO, REPLAYED, Hello
from alt_router.bgp.exabgp_config import next_hop_for
from alt_router.node.config import NodeConfig, PeerConfig
from alt_router.rib import EventStream, Path, PeerInfo, Rib, RouteChange, TeardownPeer
from alt_router.rib.aggregate import AggregateChange, AggregateRoute, Aggregator
from alt_router.rib.events import AggregateEvent, AggregateKind
from alt_router.rib.rib import Output
from alt_router.rib.table import TableError
from alt_router.rib.table import as_prefix as table_as_prefix
from alt_router.types import Prefix

log = logging.getLogger(__name__)

# Above this many routes a status snapshot lists counts only: dumping a full table every few seconds
# would cost more than the routing itself.
SNAPSHOT_ROUTE_LIMIT = 10_000


class NodeError(ValueError):
    """A request the node cannot carry out (e.g. a malformed prefix)."""


def as_prefix(prefix: str | Prefix) -> Prefix:
    """The RIB's prefix parser, with the node's error type (an API/control request's mistake)."""
    try:
        return table_as_prefix(prefix)
    except TableError as exc:
        raise NodeError(str(exc)) from None


def _family(prefix: Prefix) -> str:
    return f"ipv{prefix.version}"


def announce_command(peer: PeerConfig, prefix: Prefix, path: Path | None, local_asn: int) -> str:
    """ExaBGP command announcing ``prefix`` to ``peer``: our own route when ``path`` is None, else transit."""
    remote = peer.tunnel.session[1]
    cmd = f"neighbor {remote} announce route {prefix} next-hop {next_hop_for(peer, prefix)}"
    if path is None:
        return cmd
    segment = " ".join(str(a) for a in (local_asn, *path.as_path))
    cmd += f" origin {path.origin} as-path [ {segment} ]"
    if path.as_set:
        # After the sequence, not inside it: ExaBGP cannot parse "[ 1 2 ( 3 ) ]".
        cmd += " ( " + " ".join(str(a) for a in path.as_set) + " )"
    if path.communities:
        cmd += " community [ " + " ".join(f"{a}:{b}" for a, b in path.communities) + " ]"
    attrs = path.attributes
    # An aggregate's marks travel with it across every transit (RFC 4271 §5.1.6, §5.1.7).
    if attrs.atomic_aggregate:
        cmd += " atomic-aggregate"
    if attrs.aggregator is not None:
        cmd += f" aggregator ( {attrs.aggregator} )"
    return cmd


def aggregate_command(peer: PeerConfig, route: AggregateRoute, local_asn: int, router_id: IPv4Address) -> str:
    """ExaBGP command originating the aggregate ``route`` to ``peer`` (RFC 4271 §5.1.6-§5.1.7, §9.2.2.2).

    ExaBGP's syntax puts the AS_SET after the sequence: ``as-path [ 65001 ] ( 65010 65020 )``.
    """
    remote = peer.tunnel.session[1]
    cmd = (f"neighbor {remote} announce route {route.prefix} next-hop {next_hop_for(peer, route.prefix)}"
           f" origin {route.origin}")
    if route.as_set:
        cmd += f" as-path [ {local_asn} ] ( " + " ".join(str(a) for a in route.as_set) + " )"
    if route.atomic_aggregate:
        cmd += " atomic-aggregate"
    return cmd + f" aggregator ( {local_asn}:{router_id} )"


def withdraw_command(peer: PeerConfig, prefix: Prefix) -> str:
    return f"neighbor {peer.tunnel.session[1]} withdraw route {prefix} next-hop {next_hop_for(peer, prefix)}"


class NodeCore:
    def __init__(self, config: NodeConfig, stream: EventStream | None = None) -> None:
        self.config = config
        self.local_asn = config.node.asn
        infos = [PeerInfo(p.name, p.asn, p.tunnel.remotes, p.max_prefix) for p in config.peers]
        self.rib = Rib(self.local_asn, config.eid.accept, infos, stream, fib=config.node.fib)
        self.reader = api.ApiReader()
        self.counters: Counter[str] = Counter()
        self.router_ids: dict[str, IPv4Address] = {}
        # With an operator's own ExaBGP config its static routes are not ours to know.
        own = config.eid.announce if config.exabgp.config is None else ()
        self.static: frozenset[Prefix] = frozenset(own)
        self.dynamic: dict[Prefix, None] = {}
        self.exported: dict[Prefix, Path] = {}
        self.aggregator = Aggregator(config.eid.aggregates)
        # more-specific -> the summary-only aggregate that keeps it from the peers
        self.suppressed: dict[Prefix, Prefix] = {}
        # The active aggregates, and who wants to hear when that set changes (the forwarder's
        # discard table, through the data-plane thread: ``watch_aggregates``).
        self._active: set[Prefix] = set()
        self._aggregate_listener: Callable[[list[Prefix]], object] | None = None
        changes: list[AggregateChange] = []
        for prefix in self.static:
            changes += self.aggregator.update(prefix, ())
        changes += self.aggregator.start()
        self._note_aggregates(changes)  # announced with everything else when the bridge connects
        self.hello: Hello | None = None
        self.teardowns: list[TeardownPeer] = []
        self._peers = {p.name: p for p in config.peers}

    # --- lines from the bridge --------------------------------------------------------------

    def on_line(self, line: bytes | str, now: float) -> list[str]:
        """One line from the bridge; returns the commands for ExaBGP.  Never raises on bad input."""
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        if text.startswith("#"):
            return self._on_bridge_line(text.strip())
        event = self.reader.feed(line)
        if event is None:
            malformed = self.reader.counters["malformed"]
            # The first few and then every 1000th: a confused ExaBGP must not flood the log.
            if malformed > self.counters["malformed-logged"] and (malformed <= 10 or malformed % 1000 == 0):
                self.counters["malformed-logged"] = malformed
                log.warning("skipped a malformed line from ExaBGP (%d so far): %s", malformed,
                            self.reader.last_error)
            return []
        return self.on_event(event, now)

    def _on_bridge_line(self, text: str) -> list[str]:
        if text.startswith(HELLO):
            try:
                self.hello = Hello.parse(text)
            except ValueError as exc:
                self.counters["bridge-malformed"] += 1
                log.warning("%s", exc)
                return []
            if self.hello.dropped:
                log.warning("the bridge dropped %d ExaBGP lines while we were away; asking for refreshes",
                            self.hello.dropped)
            return []
        if text == REPLAYED:
            return self.refresh_all()
        self.counters["bridge-unknown"] += 1
        return []

    def on_event(self, event: api.ApiEvent, now: float) -> list[str]:
        if isinstance(event, api.CommandAck):
            if not event.ok:
                self.counters["command-errors"] += 1
                log.warning("ExaBGP refused a command (see its log)")
            return []
        if isinstance(event, api.Shutdown):
            log.info("ExaBGP reports it is shutting down")
            return []
        if isinstance(event, api.Ignored):
            return []
        name = self.rib.peer_name_for(event.neighbor.peer)
        if name is None:
            self.counters["unknown-neighbor"] += 1
            log.warning("ExaBGP reported %s for %s, which is not a configured tunnel peer",
                        type(event).__name__, event.neighbor.peer)
            return []
        out: list[Output] = []
        if isinstance(event, api.PeerOpen):
            if event.direction == "receive":
                self.router_ids[name] = event.router_id
        elif isinstance(event, api.PeerState):
            if event.state == "up":
                log.info("peer %s (%s) is up", name, event.neighbor.peer)
                out = self.rib.peer_up(name, now, self.router_ids.get(name))
            elif event.state == "down":
                log.warning("peer %s (%s) is down: %s", name, event.neighbor.peer,
                            event.reason or "no reason")
                out = self.rib.peer_down(name, event.reason or "down", now)
        elif isinstance(event, api.RouteUpdate):
            if event.direction == "receive":
                self._log_unknown_next_hops(name, event)
                out = self.rib.apply(event.to_rib(name), now)
        elif isinstance(event, api.EndOfRib):
            out = self.rib.end_of_rib(name, event.afi)
        elif isinstance(event, api.RouteRefresh):
            if event.direction == "receive" and event.subtype == "begin":
                out = self.rib.refresh_begin(name, event.afi)
            elif event.direction == "receive" and event.subtype == "end":
                out = self.rib.refresh_end(name, event.afi)
        elif isinstance(event, api.Notification):
            log.warning("NOTIFICATION %s peer %s: code %d subcode %d %s",
                        "from" if event.direction == "receive" else "to", name, event.code, event.subcode,
                        event.message)
        return self._outputs(out)

    def _log_unknown_next_hops(self, peer: str, event: api.RouteUpdate) -> None:
        # The RIB counts these drops; the log says which next hop, for the operator.
        for batch in event.batches:
            if self.rib.next_hop_peer(peer, batch.next_hop) is None:
                self.counters["unknown-next-hop-logged"] += 1
                n = self.counters["unknown-next-hop-logged"]
                if n <= 10 or n % 1000 == 0:
                    log.warning("%d route(s) (%s...) from %s have next hop %s, which is not a tunnel peer: "
                                "dropped", len(batch.prefixes), batch.prefixes[0], peer, batch.next_hop)

    # --- what the edge tells us -------------------------------------------------------------

    def on_bridge_connected(self) -> list[str]:
        """A (new) bridge connected: everything we want ExaBGP to announce, again (idempotent there)."""
        self.counters["bridge-connections"] += 1
        cmds: list[str] = []
        for prefix in self.dynamic:
            if prefix not in self.suppressed:
                cmds += self._own_commands(prefix, announce=True)
        # A re-send, not a change: nothing for the event stream.
        cmds += self._render_aggregates(AggregateChange(r.prefix, r) for r in self.aggregator.routes())
        for prefix, path in self.exported.items():
            cmds += [announce_command(p, prefix, path, self.local_asn) for p in self._eligible(path)]
        return cmds

    def refresh_all(self) -> list[str]:
        """Ask every up peer to re-send its routes (after a daemon restart or lost lines)."""
        cmds = []
        for state in self.rib.peers():
            if not state.up:
                continue
            peer = self._peers[state.info.name]
            for family in peer.families:
                cmds.append(api.route_refresh(peer.tunnel.session[1], family, "unicast"))
        self.counters["refresh-requests"] += len(cmds)
        return cmds

    def on_exabgp_exit(self, now: float) -> list[str]:
        """ExaBGP died: its sessions died with it, and with them every learned route."""
        out: list[Output] = []
        for state in list(self.rib.peers()):
            if state.up:
                out += self.rib.peer_down(state.info.name, "ExaBGP exited", now)
        self._outputs(out)
        # The next ExaBGP starts empty; nothing it held is 'exported' any more.
        self.exported.clear()
        return []

    # --- peers added and removed by a config reload -------------------------------------------

    def set_peers(self, config: NodeConfig, now: float) -> list[str]:
        """Switch to ``config``'s peer set: new peers join the RIB (down), removed ones leave it.

        Returns the commands for the remaining peers (withdrawals of what only a removed peer
        gave us, alternatives where another peer has a path).  Routes are exported to a new
        peer by ``on_bridge_connected``'s full re-send, once ExaBGP knows the neighbor.
        """
        new = {p.name: p for p in config.peers}
        out: list[Output] = []
        for name in [n for n in self._peers if n not in new]:
            out += self.rib.remove_peer(name, now)
            self.router_ids.pop(name, None)
        cmds = [c for c in self._outputs(out) if not any(
            c.startswith(f"neighbor {p.tunnel.session[1]} ") for n, p in self._peers.items() if n not in new)]
        for p in config.peers:
            info = PeerInfo(p.name, p.asn, p.tunnel.remotes, p.max_prefix)
            if p.name not in self._peers:
                self.rib.add_peer(info)
            elif self._peers[p.name].max_prefix != p.max_prefix:
                self.rib.update_peer(info)
        self.config = config
        self._peers = dict(new)
        # With a single peer nothing was exported (see _export); with two or more everything is.
        own = {*self.static, *self.dynamic}
        self.exported = {path.prefix: path for path in self.rib.routes()
                         if path.prefix not in own and path.prefix not in self.suppressed} \
            if len(self._peers) >= 2 else {}
        return cmds

    # --- run-time announcements -------------------------------------------------------------

    def announce(self, prefix: str | Prefix) -> list[str]:
        """Originate ``prefix`` towards every peer carrying its family; idempotent."""
        p = as_prefix(prefix)
        if p in self.dynamic or p in self.static:
            return []
        self.dynamic[p] = None
        was_exported = self.exported.pop(p, None) is not None
        cmds = self._aggregate_commands(*self.aggregator.update(p, ()))
        agg = self.aggregator.suppressed_by(p)
        if agg is not None:
            self.suppressed[p] = agg
            return cmds + (self._own_commands(p, announce=False) if was_exported else [])
        return cmds + self._own_commands(p, announce=True)

    def withdraw(self, prefix: str | Prefix) -> list[str]:
        """Stop originating ``prefix`` (a configured one stays); idempotent."""
        p = as_prefix(prefix)
        if p not in self.dynamic:
            return []
        del self.dynamic[p]
        learned = self.rib.get(p)
        contribution = (*learned.as_path, *learned.as_set) if learned is not None else None
        cmds = self._aggregate_commands(*self.aggregator.update(
            p, contribution, learned.origin if learned else "igp",
            learned.attributes.atomic_aggregate if learned else False))
        hidden = self.suppressed.pop(p, None) is not None
        if learned is not None:
            agg = self.aggregator.suppressed_by(p)
            if agg is not None:
                self.suppressed[p] = agg
                return cmds  # the learned path is hidden by the same aggregate
            # Someone else originates it too: fall back to exporting their path.
            self.exported[p] = learned
            eligible = set(self._eligible(learned))
            return cmds + [announce_command(peer, p, learned, self.local_asn) if peer in eligible
                           else withdraw_command(peer, p) for peer in self._carrying(p)]
        return cmds + ([] if hidden else self._own_commands(p, announce=False))

    def originated(self) -> list[Prefix]:
        return sorted({*self.static, *self.dynamic}, key=lambda p: (p.version, p))

    # --- internals ---------------------------------------------------------------------------

    def _carrying(self, prefix: Prefix) -> list[PeerConfig]:
        return [p for p in self.config.peers if _family(prefix) in p.families]

    def _own_commands(self, prefix: Prefix, *, announce: bool) -> list[str]:
        if announce:
            return [announce_command(p, prefix, None, self.local_asn) for p in self._carrying(prefix)]
        return [withdraw_command(p, prefix) for p in self._carrying(prefix)]

    def _eligible(self, path: Path) -> list[PeerConfig]:
        """Peers that should hear ``path``: not its source, family carried, their AS not in it."""
        in_path = {*path.as_path, *path.as_set}
        return [p for p in self._carrying(path.prefix) if p.name != path.peer and p.asn not in in_path]

    def _outputs(self, outputs: Iterable[Output]) -> list[str]:
        cmds: list[str] = []
        for out in outputs:
            if isinstance(out, RouteChange):
                cmds += self._export(out)
            elif isinstance(out, TeardownPeer):
                cmds += self._teardown(out)
        return cmds

    def _teardown(self, action: TeardownPeer) -> list[str]:
        peer = self._peers.get(action.peer)
        if peer is None:
            return []
        self.teardowns.append(action)
        self.counters["teardowns"] += 1
        log.error("tearing down the session with %s (%s): %s", peer.name, peer.tunnel.session[1],
                  action.reason)
        return [api.teardown(peer.tunnel.session[1], api.CEASE_MAX_PREFIX)]

    def watch_aggregates(self, listener: Callable[[list[Prefix]], object]) -> None:
        """Call ``listener`` with the active aggregates now and whenever that set changes."""
        self._aggregate_listener = listener
        listener(self.active_aggregates())

    def active_aggregates(self) -> list[Prefix]:
        return sorted(self._active, key=lambda p: (p.version, p))

    def _note_aggregates(self, changes: Iterable[AggregateChange]) -> None:
        """Publish each change on the event stream; tell the listener if the active set moved."""
        moved = False
        kind: AggregateKind
        for change in changes:
            if change.route is None:
                kind = "withdraw"
                self._active.discard(change.prefix)
                moved = True
            elif change.prefix in self._active:
                kind = "change"
            else:
                kind = "originate"
                self._active.add(change.prefix)
                moved = True
            self.rib.stream.publish(AggregateEvent(kind, change.prefix, change.route))
        if moved and self._aggregate_listener is not None:
            self._aggregate_listener(self.active_aggregates())

    def aggregates_view(self) -> list[dict[str, Any]]:
        """Every configured aggregate with its state (``Aggregator.view``), for the API and ``show``."""
        return self.aggregator.view()

    def suppressed_by(self, prefix: Prefix) -> Prefix | None:
        """The summary-only aggregate keeping ``prefix`` from the peers, if any."""
        return self.suppressed.get(prefix)

    def _aggregate_commands(self, *changes: AggregateChange) -> list[str]:
        self._note_aggregates(changes)
        return self._render_aggregates(changes)

    def _render_aggregates(self, changes: Iterable[AggregateChange]) -> list[str]:
        cmds: list[str] = []
        for change in changes:
            route = change.route
            if route is None:
                log.info("aggregate %s withdrawn: no contributing route left", change.prefix)
                self.counters["aggregates-withdrawn"] += 1
                cmds += [withdraw_command(p, change.prefix) for p in self._carrying(change.prefix)]
                continue
            self.counters["aggregates-originated"] += 1
            members = set(route.as_set)
            for p in self._carrying(change.prefix):
                if p.asn in members:  # it would drop it as its own (and must: loop prevention)
                    cmds.append(withdraw_command(p, change.prefix))
                else:
                    cmds.append(aggregate_command(p, route, self.local_asn, self.config.node.router_id))
        self.counters["exported-commands"] += len(cmds)
        return cmds

    def _export(self, change: RouteChange) -> list[str]:
        prefix = change.prefix
        if prefix in self.static or prefix in self.dynamic:
            return []  # our own origination wins (module docstring)
        new = change.new
        agg_cmds: list[str] = []
        if self.aggregator:  # one len() on the ingest hot path when no aggregate is configured
            agg_cmds = self._aggregate_commands(*self.aggregator.update(
                prefix, (*new.as_path, *new.as_set) if new is not None else None,
                new.origin if new is not None else "igp",
                new.attributes.atomic_aggregate if new is not None else False))
            agg = self.aggregator.suppressed_by(prefix) if new is not None else None
            if agg is not None:
                self.suppressed[prefix] = agg
                new = None  # kept from the peers by a summary-only aggregate
            else:
                self.suppressed.pop(prefix, None)
        if len(self._peers) < 2:
            return agg_cmds  # the only peer is the source of every route: nobody to export to
        old = self.exported.get(prefix)
        old_peers = {p.name for p in self._eligible(old)} if old is not None else set()
        cmds: list[str] = []
        if new is None:
            self.exported.pop(prefix, None)
            new_peers: list[PeerConfig] = []
        else:
            self.exported[prefix] = new
            new_peers = self._eligible(new)
        new_names = {p.name for p in new_peers}
        cmds += [withdraw_command(self._peers[n], prefix) for n in sorted(old_peers - new_names)]
        if new is not None:
            cmds += [announce_command(p, prefix, new, self.local_asn) for p in new_peers]
        self.counters["exported-commands"] += len(cmds)
        return agg_cmds + cmds

    # --- status -------------------------------------------------------------------------------

    def snapshot(self, now: float, *, routes: bool = True) -> dict[str, Any]:
        peers: dict[str, Any] = {}
        for state in self.rib.peers():
            cfg = self._peers[state.info.name]
            peers[state.info.name] = {
                "address": str(cfg.tunnel.session[1]),
                "asn": cfg.asn,
                "up": state.up,
                "since": state.since,
                "router_id": str(state.router_id) if state.router_id else None,
                "received": len(state.adj_in),
                "max_prefix": cfg.max_prefix,
                "last_down_reason": state.last_down_reason,
            }
        snap: dict[str, Any] = {
            "node": self.config.node.name,
            "asn": self.local_asn,
            "time": now,
            "peers": peers,
            "rib": {"routes": len(self.rib)},
            "drops": self.rib.drops.as_dict(),
            "rib_stats": dict(self.rib.stats),
            "api": dict(self.reader.counters),
            "counters": dict(self.counters),
            "originated": [str(p) for p in self.originated()],
            "exported": len(self.exported),
            "teardowns": [{"peer": t.peer, "reason": t.reason} for t in self.teardowns[-20:]],
            "aggregates": self.aggregator.view(),
            "events_last_seq": self.rib.stream.last_seq,
        }
        if self.hello is not None:
            snap["bridge"] = {"pid": self.hello.pid, "dropped": self.hello.dropped}
        if routes and len(self.rib) <= SNAPSHOT_ROUTE_LIMIT:
            snap["routes"] = {
                str(p.prefix): {"peer": p.peer, "next_hop": str(p.next_hop), "as_path": list(p.as_path)}
                for p in self.rib.routes()
            }
        return snap
