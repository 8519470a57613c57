"""The ALT RIB: Adj-RIB-In per peer, best path per prefix, Loc-RIB as an LPM table.

Pure: every entry point takes the clock as an argument and returns what changed
(``RouteChange``/``PeerUp``/``PeerDown`` events, which are also published on the
``EventStream``, and ``TeardownPeer`` actions the edge must carry out).

Prefixes are keyed by their canonical text (``paths.prefix_key``) throughout:
that is what ExaBGP hands us and what pytricia takes, and it hashes once where
an ``ip_network`` object re-hashes on every dict operation.  An UPDATE's NLRI
arrive as ``Batch``es and the checks that depend only on the attributes and the
next hop (own AS in the path, next hop owner) run once per batch.

Staleness is mark-and-sweep per (peer, address family): a session restart seen
without a down in between (``peer_up`` on an up peer) or the beginning of an
enhanced route refresh (RFC 7313 BoRR) marks that peer's routes of the family
stale; re-announcing a route unmarks it; End-of-RIB or End-of-Route-Refresh
withdraws the routes still marked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address

from alt_router.rib.events import Event, EventStream, PeerDown, PeerUp, RouteChange
from alt_router.rib.fib import FibKind
from alt_router.rib.kernel_loc import Hop, KernelLoc, Via, int_key, path_of, text_key, via_of
from alt_router.rib.paths import (
    AFI_IPV4,
    AFI_IPV6,
    Attributes,
    Path,
    PeerInfo,
    Update,
    afi_of_key,
    best_path,
)
from alt_router.rib.policy import DropCounters, DropReason, ImportPolicy, TeardownPeer
from alt_router.rib.table import DualTable, TableError, as_address, as_prefix
from alt_router.types import IPAddress, Prefix

Output = Event | TeardownPeer
AFIS = (AFI_IPV4, AFI_IPV6)


@dataclass(slots=True)
class PeerStatus:
    info: PeerInfo
    up: bool = False
    since: float = 0.0
    router_id: IPv4Address | None = None
    last_down_reason: str = ""
    # canonical prefix text -> the path this peer announced for it
    adj_in: dict[str, Path] = field(default_factory=dict)
    # afi -> keys learned before the last mark and not re-announced since (swept at EoR)
    stale: dict[str, set[str]] = field(default_factory=dict)


class Rib:
    def __init__(
        self, local_asn: int, accept: Iterable[Prefix], peers: Iterable[PeerInfo],
        stream: EventStream | None = None, fib: FibKind = "dir24",
    ) -> None:
        peers = list(peers)
        self.policy = ImportPolicy(local_asn, accept, peers)
        self.stream = stream if stream is not None else EventStream()
        self.drops = DropCounters()
        self.stats: Counter[str] = Counter()
        self._peers: dict[str, PeerStatus] = {p.name: PeerStatus(p) for p in peers}
        self._states = list(self._peers.values())
        # fib="dir24": IPv4 longest match from a DIR-24-8 array (alt_router/rib/fib.py).
        self._loc: DualTable[Path] = DualTable(fib)
        self._router_ids: dict[str, IPv4Address] = {}
        self._publish_quiet = self.stream.publish_quiet
        # Bound once: _reselect runs per route, and every Python-level hop costs there.
        self._best_v4 = self._loc.v4.best_for_key_function()
        self._best_v6 = self._loc.v6.best_for_key_function()
        # lookup_packed(packed): best path for a raw 4- or 16-byte destination (None for no route
        # or another length), the forwarding fast path.  An attribute, not a method: with the FIB
        # an IPv4 lookup is a single Python call into the array closure (tree: straight to C).
        self.lookup_packed: Callable[[bytes], Path | None] = self._loc.lookup_packed_function()
        # FRR mode (``mirror_kernel``): the Loc-RIB is this compact mirror of the kernel's table
        # instead of ``_loc``, which then stays empty.
        self._kernel: KernelLoc | None = None
        # id(hop) -> [hop, routes through it] in the mirror: a peer's route count without a walk.
        self._hops: dict[int, tuple[Hop, int]] = {}

    # --- peers ---------------------------------------------------------------

    def peer(self, name: str) -> PeerStatus | None:
        return self._peers.get(name)

    def peers(self) -> Iterator[PeerStatus]:
        return iter(self._peers.values())

    def add_peer(self, info: PeerInfo) -> None:
        """Configure one more peer at run time (a config reload); it starts down, without routes."""
        if info.name in self._peers:
            raise ValueError(f"peer {info.name} is configured already")
        self._peers[info.name] = PeerStatus(info)
        self._states = list(self._peers.values())
        self.policy.add_peer(info)

    def update_peer(self, info: PeerInfo) -> None:
        """Replace a peer's settings that the RIB applies per route (max-prefix) without a session reset."""
        state = self._peers[info.name]
        if info.addresses != state.info.addresses:
            raise ValueError(f"peer {info.name}: its addresses cannot change while it is configured")
        state.info = info
        self.policy.add_peer(info)

    def remove_peer(self, name: str, now: float) -> list[Output]:
        """Unconfigure peer ``name``: its routes are withdrawn (falling back to other peers' paths)."""
        state = self._peers.get(name)
        if state is None:
            return []
        out = self.peer_down(name, "removed from the config", now)
        leftover, state.adj_in = state.adj_in, {}
        del self._peers[name]
        self._states = list(self._peers.values())
        self._router_ids.pop(name, None)
        self.policy.remove_peer(state.info)
        for key in leftover:
            self._reselect(key, out)
        return out

    def peer_name_for(self, address: str | IPAddress) -> str | None:
        """Name of the configured peer whose tunnel address is ``address`` (as ExaBGP reports it)."""
        try:
            addr = ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return None
        for state in self._states:
            if addr in state.info.addresses:
                return state.info.name
        return None

    def next_hop_peer(self, peer: str, next_hop: IPAddress) -> str | None:
        """The tunnel peer a route from ``peer`` with ``next_hop`` would forward to (None: dropped)."""
        state = self._peers.get(peer)
        owner = self.policy.next_hop_peer(next_hop, state.info if state is not None else None)
        return owner.name if owner is not None else None

    def peer_up(self, peer: str, now: float, router_id: IPv4Address | None = None) -> list[Output]:
        state = self._peers.get(peer)
        if state is None:
            self.stats["unknown-peer-state"] += 1
            return []
        # Up while already up means the session restarted without us seeing the down
        # (e.g. ExaBGP was restarted): keep the routes but mark them stale for the EoR sweep.
        for afi in AFIS:
            self._mark_stale(state, afi)
        state.up = True
        state.since = now
        if router_id is not None:
            state.router_id = router_id
            self._router_ids[peer] = router_id
        return [self._publish(PeerUp(peer, now))]

    def peer_down(self, peer: str, reason: str, now: float) -> list[Output]:
        state = self._peers.get(peer)
        if state is None or not state.up:
            return []
        out: list[Output] = []
        adj, state.adj_in = state.adj_in, {}
        state.stale.clear()
        if len(self._states) == 1:
            # The only peer: each of its paths is the best of its prefix, with nothing to
            # fall back to, so the table loses them without a reselection each (a 1M-route
            # session loss must not stall the daemon for long).
            publish = self._publish_quiet
            v4, v6 = self._loc.v4, self._loc.v6
            for key, path in adj.items():
                (v6 if ":" in key else v4).delete_key(key)
                change = RouteChange("withdraw", key, path, None)
                publish(change)
                out.append(change)
        else:
            for key in adj:
                self._reselect(key, out)
        state.up = False
        state.since = now
        state.last_down_reason = reason
        out.append(self._publish(PeerDown(peer, reason, now)))
        return out

    # --- updates -------------------------------------------------------------

    def apply(self, update: Update, now: float = 0.0) -> list[Output]:
        state = self._peers.get(update.peer)
        if state is None:
            self.drops.add(update.peer, DropReason.UNKNOWN_PEER, len(update))
            return []
        if not state.up:
            self.drops.add(update.peer, DropReason.PEER_NOT_UP, len(update))
            return []
        self.stats["updates"] += 1
        out: list[Output] = []
        withdrawn = [*(str(p) for p in update.withdraw), *update.withdraw_keys]
        self.stats["withdrawn"] += len(withdrawn)
        for key in withdrawn:
            self._remove(state, key, out)
        groups: list[tuple[IPAddress, Attributes, Sequence[str]]] = [
            (a.next_hop, a.attributes, (str(a.prefix),)) for a in update.announce
        ]
        groups += [(b.next_hop, b.attributes, b.prefixes) for b in update.batches]
        for i, (next_hop, attributes, keys) in enumerate(groups):
            done = self._announce(state, next_hop, attributes, keys, now, out)
            if done < len(keys):
                # max-prefix: the session is torn down; everything not yet applied is refused too.
                refused = len(keys) - done + sum(len(g[2]) for g in groups[i + 1:])
                self.drops.add(state.info.name, DropReason.MAX_PREFIX, refused)
                out.extend(self._max_prefix_teardown(state, now))
                break
        return out

    def end_of_rib(self, peer: str, afi: str) -> list[Output]:
        """Withdraw ``peer``'s routes of ``afi`` that were not re-announced since the last mark."""
        state = self._peers.get(peer)
        if state is None:
            return []
        stale = state.stale.pop(afi, None)
        if not stale:
            return []
        # In Adj-RIB-In order, so the output does not depend on set iteration order.
        keys = [k for k in state.adj_in if k in stale]
        self.stats["swept"] += len(keys)
        out: list[Output] = []
        for key in keys:
            self._remove(state, key, out)
        return out

    def refresh_begin(self, peer: str, afi: str) -> list[Output]:
        """Beginning of Route Refresh (RFC 7313 BoRR): mark the peer's routes of ``afi`` stale."""
        state = self._peers.get(peer)
        if state is not None and afi in AFIS:
            self._mark_stale(state, afi)
        return []

    def refresh_end(self, peer: str, afi: str) -> list[Output]:
        """End of Route Refresh (RFC 7313 EoRR): sweep like End-of-RIB."""
        return self.end_of_rib(peer, afi)

    @property
    def mirrors_kernel(self) -> bool:
        """FRR mode: the Loc-RIB mirrors the kernel's ALT table (``mirror_kernel``)."""
        return self._kernel is not None

    def mirror_kernel(self) -> None:
        """Make the Loc-RIB a compact mirror of the kernel's ALT table (FRR mode, ``rib/kernel_loc.py``):
        about 20 bytes a route instead of ~350, since zebra, not this RIB, chooses the routes.
        Only ``apply_kernel`` writes it from then on; the Loc-RIB must be empty.  Idempotent."""
        if self._kernel is not None:
            return
        if len(self._loc):
            raise ValueError("the Loc-RIB must be empty to mirror the kernel's table")
        loc = self._kernel = KernelLoc()
        find = loc.lookup

        def lookup_packed(packed: bytes) -> Path | None:
            found = find(packed)
            return None if found is None else path_of(found[0], found[1])

        self.lookup_packed = lookup_packed

    def apply_kernel(self, changes: Iterable[tuple[str, Path | None]]) -> int:
        """``apply_kernel_routes`` for ``(key, path)`` changes (``(key, None)`` removes ``key``)."""
        out: list[tuple[str, int, Via | None]] = []
        for key, path in changes:
            out.append((key, int_key(key)[1], None if path is None else via_of(path)))
        return self.apply_kernel_routes(out)

    def apply_kernel_routes(self, changes: Iterable[tuple[str, int, Via | None]]) -> int:
        """FRR mode: make the Loc-RIB what the kernel's ALT table holds (``rib/kernel_routes.py``).

        Each ``(key, ikey, via)`` sets the route of canonical prefix ``key`` (``ikey``: its int key,
        ``kernel_loc.int_key``); ``via`` None removes it.  bgpd applied the import policy and zebra
        chose the paths, so no Adj-RIB-In, filter or best-path step runs: the table is written and
        a RouteChange published per real change, which is all that lookups, /v1/routes and the
        event stream read.  A route through the same hop as the one held (a resynchronising dump)
        changes nothing and keeps its ``learned_at``.  Returns the number of changes.
        """
        self.mirror_kernel()
        loc = self._kernel
        assert loc is not None
        get, put, delete = loc.get, loc.set, loc.delete
        hops = self._hops
        publish = self._publish_quiet
        n = 0
        for key, ikey, new in changes:
            v6 = ":" in key
            old = get(v6, ikey)
            if new is None:
                if old is None:
                    continue
                delete(v6, ikey)
                self._count_hop(old[0], -1)
                publish(RouteChange("withdraw", key, path_of(key, old), None))
            elif old is None:
                put(v6, ikey, new)
                hop = new[0]
                entry = hops.get(id(hop))
                hops[id(hop)] = (hop, 1 if entry is None else entry[1] + 1)
                publish(RouteChange("add", key, None, path_of(key, new)))
            elif old[0] is new[0] or old[0] == new[0]:
                continue
            else:
                put(v6, ikey, new)
                self._count_hop(old[0], -1)
                self._count_hop(new[0], 1)
                publish(RouteChange("change", key, path_of(key, old), path_of(key, new)))
            n += 1
        self.stats["kernel-changes"] += n
        return n

    def _count_hop(self, hop: Hop, delta: int) -> None:
        entry = self._hops.get(id(hop))
        count = (0 if entry is None else entry[1]) + delta
        if count > 0:
            self._hops[id(hop)] = (hop, count)
        else:
            self._hops.pop(id(hop), None)

    def kernel_keys(self) -> Iterator[tuple[bool, int]]:
        """FRR mode: (IPv6?, int key) of every route, IPv4 then IPv6, each in address order."""
        loc = self._kernel
        if loc is None:
            return
        for v6 in (False, True):
            for ikey in loc.keys(v6):
                yield v6, ikey

    def routes_via(
        self, next_hops: Collection[IPAddress], after: str | None, limit: int,
    ) -> tuple[list[Path], int]:
        """FRR mode: up to ``limit`` routes after prefix ``after`` (None: from the start) whose next
        hop is one of ``next_hops``, in address order, and how many such routes there are in all.

        A page walks the table until it is full: cheap for a peer that carries much of it, up to a
        walk of the whole table for one that carries a few routes."""
        loc = self._kernel
        if loc is None:
            return [], 0
        wanted = set(next_hops)
        total = 0
        chosen: set[int] = set()
        for hop, count in self._hops.values():
            if hop[2] in wanted:
                total += count
                chosen.add(id(hop))
        out: list[Path] = []
        if not chosen or limit <= 0:
            return out, total
        start: list[tuple[bool, int | None]] = [(False, None), (True, None)]
        if after is not None:
            v6, ikey = int_key(after)
            start = [(True, ikey)] if v6 else [(False, ikey), (True, None)]
        for v6, key in start:
            for k, via in loc.items(v6, key):
                if id(via[0]) in chosen:
                    out.append(path_of(text_key(v6, k), via))
                    if len(out) >= limit:
                        return out, total
        return out, total

    # --- queries -------------------------------------------------------------

    def lookup(self, address: str | IPAddress) -> Path | None:
        """Best path of the longest prefix covering ``address`` (None for no route or a bad address)."""
        try:
            packed = as_address(address).packed
        except TableError:
            return None
        # The packed path: no prefix object is built for an answer that is only the path.
        return self.lookup_packed(packed)

    def get(self, prefix: str | Prefix) -> Path | None:
        if self._kernel is None:
            return self._loc.get(prefix)
        p = as_prefix(prefix)
        via = self._kernel.get(p.version == 6, int(p.network_address) << 8 | p.prefixlen)
        return None if via is None else path_of(str(p), via)

    def _kernel_ikey(self, prefix: str | Prefix) -> tuple[bool, int]:
        p = as_prefix(prefix)
        return p.version == 6, int(p.network_address) << 8 | p.prefixlen

    def paths(self, prefix: str | Prefix) -> list[Path]:
        """Every accepted path for exactly ``prefix``, best first."""
        if self._kernel is not None:
            best = self.get(prefix)
            return [] if best is None else [best]
        cands = self._candidates(str(as_prefix(prefix)))
        best = best_path(cands, self._router_ids)
        return sorted(cands, key=lambda p: p is not best)

    def covering(self, prefix: str | Prefix) -> list[Path]:
        if self._kernel is not None:
            return [path_of(k, via) for k, via in self._kernel.covering(*self._kernel_ikey(prefix))]
        return [path for _, path in self._loc.covering(prefix)]

    def covered(self, prefix: str | Prefix) -> list[Path]:
        if self._kernel is not None:
            return [path_of(k, via) for k, via in self._kernel.covered(*self._kernel_ikey(prefix))]
        return [path for _, path in self._loc.covered(prefix)]

    def adj_rib_in(self, peer: str) -> dict[Prefix, Path]:
        state = self._peers.get(peer)
        return {} if state is None else {path.prefix: path for path in state.adj_in.values()}

    def routes(self) -> Iterator[Path]:
        if self._kernel is not None:
            for v6 in (False, True):
                for k, via in self._kernel.items(v6):
                    yield path_of(text_key(v6, k), via)
            return
        yield from self._loc.v4.values()
        yield from self._loc.v6.values()

    def routes_after(self, after: str | None, limit: int) -> list[Path]:
        """A page of the Loc-RIB: up to ``limit`` best paths after prefix ``after`` (canonical text;
        None: from the start), IPv4 then IPv6, each in address order (see ``LpmTable.items_after``)."""
        if self._kernel is not None:
            return [path_of(k, via) for k, via in self._kernel.items_after(after, limit)]
        return [path for _, path in self._loc.items_after(after, limit)]

    def __len__(self) -> int:
        if self._kernel is not None:
            return len(self._kernel)
        return len(self._loc)

    # --- internals -----------------------------------------------------------

    def _publish(self, event: Event) -> Event:
        self.stream.publish(event)
        return event

    def _mark_stale(self, state: PeerStatus, afi: str) -> None:
        keys = {k for k in state.adj_in if afi_of_key(k) == afi}
        if keys:
            state.stale[afi] = keys
        else:
            state.stale.pop(afi, None)

    def _announce(  # noqa: PLR0917 - internal, one call per batch
        self, state: PeerStatus, next_hop: IPAddress, attributes: Attributes, keys: Sequence[str], now: float,
        out: list[Output],
    ) -> int:
        """Apply one batch; returns how many of ``keys`` it got through (fewer: max-prefix hit)."""
        info = state.info
        name = info.name
        policy = self.policy
        reason: DropReason | None = None
        if policy.has_own_asn(attributes):
            reason = DropReason.OWN_ASN
        owner = policy.next_hop_peer(next_hop, info) if reason is None else None
        if reason is None and owner is None:
            reason = DropReason.UNKNOWN_NEXT_HOP
        if reason is not None or owner is None:
            self.drops.add(name, reason or DropReason.UNKNOWN_NEXT_HOP, len(keys))
            for key in keys:
                # A refused replacement still replaces: the old path must not linger (RFC 7606 §2).
                self._remove(state, key, out)
            return len(keys)
        owner_name = owner.name
        adj = state.adj_in
        stale = state.stale
        accepts = policy.accepts_key
        addresses = {a.version: a for a in reversed(info.addresses)}
        addr4 = addresses.get(4, info.addresses[0])
        addr6 = addresses.get(6, info.addresses[0])
        max_prefix = info.max_prefix
        reselect = self._reselect
        make_path = Path.from_key
        outside = accepted = 0
        for i, key in enumerate(keys):
            if not accepts(key):
                outside += 1
                self._remove(state, key, out)
                continue
            old = adj.get(key)
            if stale:
                marked = stale.get(afi_of_key(key))
                if marked:
                    marked.discard(key)
            if old is not None:
                if (old.next_hop == next_hop and old.attributes == attributes
                        and old.next_hop_peer == owner_name):
                    accepted += 1
                    continue  # refreshed, not changed
            elif len(adj) >= max_prefix:
                self._count(name, outside, accepted)
                return i
            accepted += 1
            address = addr6 if ":" in key else addr4
            adj[key] = make_path(key, name, address, next_hop, owner_name, attributes, now)
            reselect(key, out)
        self._count(name, outside, accepted)
        return len(keys)

    def _count(self, peer: str, outside: int, accepted: int) -> None:
        if outside:
            self.drops.add(peer, DropReason.OUTSIDE_EID_SPACE, outside)
        self.stats["accepted"] += accepted

    def _remove(self, state: PeerStatus, key: str, out: list[Output]) -> None:
        if state.adj_in.pop(key, None) is not None:
            self._reselect(key, out)

    def _max_prefix_teardown(self, state: PeerStatus, now: float) -> list[Output]:
        reason = f"max-prefix {state.info.max_prefix} exceeded"
        out = self.peer_down(state.info.name, reason, now)
        out.append(TeardownPeer(state.info.name, reason))
        return out

    def _candidates(self, key: str) -> list[Path]:
        return [p for s in self._states if (p := s.adj_in.get(key)) is not None]

    def _reselect(self, key: str, out: list[Output]) -> None:
        v6 = ":" in key
        found = (self._best_v6 if v6 else self._best_v4)(key)
        old = found if found is not None and found.key == key else None
        new: Path | None
        states = self._states
        if len(states) == 1:
            new = states[0].adj_in.get(key)
        else:
            cands = [p for s in states if (p := s.adj_in.get(key)) is not None]
            new = cands[0] if len(cands) == 1 else best_path(cands, self._router_ids)
        table = self._loc.v6 if v6 else self._loc.v4
        if new is None:
            if old is not None:
                table.delete_key(key)
                change = RouteChange("withdraw", key, old, None)
                self._publish_quiet(change)
                out.append(change)
            return
        if old is None:
            table.set_key(key, new, new=True)
            change = RouteChange("add", key, None, new)
            self._publish_quiet(change)
            out.append(change)
            return
        if old is new:
            return
        table.set_key(key, new, new=False)
        if old != new:
            change = RouteChange("change", key, old, new)
            self._publish_quiet(change)
            out.append(change)
        # else: the same route re-learned: keep the table fresh but tell nobody
