"""The ALT RIB: Adj-RIB-In per peer, best path per prefix, Loc-RIB as an LPM table.

Pure: every entry point takes the clock as an argument and returns what changed
(``RouteChange``/``PeerUp``/``PeerDown`` events, which are also published on the
``EventStream``, and ``TeardownPeer`` actions the edge must carry out).

Staleness is mark-and-sweep with a generation per (peer, address family): a
session restart seen without a down in between (``peer_up`` on an up peer) or
the beginning of an enhanced route refresh (RFC 7313 BoRR) bumps the generation;
End-of-RIB or End-of-Route-Refresh then withdraws that peer's routes of that
family whose generation is older, i.e. those not re-announced since the mark.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address

from alt_router.rib.events import Event, EventStream, PeerDown, PeerUp, RouteChange
from alt_router.rib.paths import (
    AFI_IPV4,
    AFI_IPV6,
    Announce,
    IPAddress,
    Path,
    PeerInfo,
    Prefix,
    Update,
    afi_of,
    best_path,
)
from alt_router.rib.policy import DropCounters, DropReason, ImportPolicy, TeardownPeer
from alt_router.rib.table import DualTable, TableError, as_prefix

Output = Event | TeardownPeer


@dataclass(slots=True)
class PeerStatus:
    info: PeerInfo
    up: bool = False
    since: float = 0.0
    router_id: IPv4Address | None = None
    last_down_reason: str = ""
    generation: dict[str, int] = field(default_factory=lambda: {AFI_IPV4: 0, AFI_IPV6: 0})
    # prefix -> (path, generation it was last announced in)
    adj_in: dict[Prefix, tuple[Path, int]] = field(default_factory=dict)


class Rib:
    def __init__(
        self, local_asn: int, accept: Iterable[Prefix], peers: Iterable[PeerInfo],
        stream: EventStream | None = None,
    ) -> None:
        peers = list(peers)
        self.policy = ImportPolicy(local_asn, accept, peers)
        self.stream = stream if stream is not None else EventStream()
        self.drops = DropCounters()
        self.stats: Counter[str] = Counter()
        self._peers: dict[str, PeerStatus] = {p.name: PeerStatus(p) for p in peers}
        self._candidates: dict[Prefix, dict[str, Path]] = {}
        self._loc: DualTable[Path] = DualTable()
        self._router_ids: dict[str, IPv4Address] = {}

    # --- peers ---------------------------------------------------------------

    def peer(self, name: str) -> PeerStatus | None:
        return self._peers.get(name)

    def peers(self) -> Iterator[PeerStatus]:
        return iter(self._peers.values())

    def peer_name_for(self, address: str | IPAddress) -> str | None:
        """Name of the configured peer whose tunnel address is ``address`` (as ExaBGP reports it)."""
        try:
            addr = ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return None
        for state in self._peers.values():
            if addr in state.info.addresses:
                return state.info.name
        return None

    def peer_up(self, peer: str, now: float, router_id: IPv4Address | None = None) -> list[Output]:
        state = self._peers.get(peer)
        if state is None:
            self.stats["unknown-peer-state"] += 1
            return []
        # Up while already up means the session restarted without us seeing the down
        # (e.g. ExaBGP was restarted): keep the routes but mark them stale for the EoR sweep.
        for afi in state.generation:
            state.generation[afi] += 1
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
        out: list[Output] = self._withdraw_all(state)
        state.up = False
        state.since = now
        state.last_down_reason = reason
        out.append(self._publish(PeerDown(peer, reason, now)))
        return out

    # --- updates -------------------------------------------------------------

    def apply(self, update: Update, now: float = 0.0) -> list[Output]:
        state = self._peers.get(update.peer)
        n = len(update.announce) + len(update.withdraw)
        if state is None:
            self.drops.add(update.peer, DropReason.UNKNOWN_PEER, n)
            return []
        if not state.up:
            self.drops.add(update.peer, DropReason.PEER_NOT_UP, n)
            return []
        self.stats["updates"] += 1
        out: list[Output] = []
        for prefix in update.withdraw:
            self.stats["withdrawn"] += 1
            out.extend(self._remove(state, prefix))
        for i, ann in enumerate(update.announce):
            reason = self.policy.check(ann)
            if reason is not None:
                self.drops.add(state.info.name, reason)
                # A refused replacement still replaces: the old path must not linger (RFC 7606 §2).
                out.extend(self._remove(state, ann.prefix))
                continue
            if ann.prefix not in state.adj_in and len(state.adj_in) >= state.info.max_prefix:
                self.drops.add(state.info.name, DropReason.MAX_PREFIX, len(update.announce) - i)
                out.extend(self._max_prefix_teardown(state, now))
                return out
            self.stats["accepted"] += 1
            out.extend(self._add(state, ann, now))
        return out

    def end_of_rib(self, peer: str, afi: str) -> list[Output]:
        """Withdraw ``peer``'s routes of ``afi`` that were not re-announced since the last mark."""
        state = self._peers.get(peer)
        if state is None or afi not in state.generation:
            return []
        current = state.generation[afi]
        stale = [p for p, (path, gen) in state.adj_in.items() if gen < current and path.afi == afi]
        self.stats["swept"] += len(stale)
        out: list[Output] = []
        for prefix in stale:
            out.extend(self._remove(state, prefix))
        return out

    def refresh_begin(self, peer: str, afi: str) -> list[Output]:
        """Beginning of Route Refresh (RFC 7313 BoRR): mark the peer's routes of ``afi`` stale."""
        state = self._peers.get(peer)
        if state is not None and afi in state.generation:
            state.generation[afi] += 1
        return []

    def refresh_end(self, peer: str, afi: str) -> list[Output]:
        """End of Route Refresh (RFC 7313 EoRR): sweep like End-of-RIB."""
        return self.end_of_rib(peer, afi)

    # --- queries -------------------------------------------------------------

    def lookup(self, address: str | IPAddress) -> Path | None:
        """Best path of the longest prefix covering ``address`` (None for no route or a bad address)."""
        try:
            found = self._loc.lookup(address)
        except TableError:
            return None
        return found[1] if found else None

    def lookup_packed(self, packed: bytes) -> Path | None:
        """Best path for a raw 4- or 16-byte destination address: the forwarding fast path."""
        return self._loc.lookup_packed(packed)

    def get(self, prefix: str | Prefix) -> Path | None:
        return self._loc.get(prefix)

    def paths(self, prefix: str | Prefix) -> list[Path]:
        """Every accepted path for exactly ``prefix``, best first."""
        cands = self._candidates.get(as_prefix(prefix), {})
        best = best_path(cands.values(), self._router_ids)
        return sorted(cands.values(), key=lambda p: p is not best)

    def covering(self, prefix: str | Prefix) -> list[Path]:
        return [path for _, path in self._loc.covering(prefix)]

    def covered(self, prefix: str | Prefix) -> list[Path]:
        return [path for _, path in self._loc.covered(prefix)]

    def adj_rib_in(self, peer: str) -> dict[Prefix, Path]:
        state = self._peers.get(peer)
        return {} if state is None else {p: path for p, (path, _) in state.adj_in.items()}

    def routes(self) -> Iterator[Path]:
        for _, path in self._loc:
            yield path

    def __len__(self) -> int:
        return len(self._loc)

    # --- internals -----------------------------------------------------------

    def _publish(self, event: Event) -> Event:
        self.stream.publish(event)
        return event

    def _add(self, state: PeerStatus, ann: Announce, now: float) -> list[Output]:
        nh_peer = self.policy.next_hop_peer(ann.next_hop)
        assert nh_peer is not None  # policy.check refused unknown next hops
        path = Path(
            prefix=ann.prefix, peer=state.info.name, peer_address=_session_address(state.info, ann.prefix),
            next_hop=ann.next_hop, next_hop_peer=nh_peer.name, as_path=ann.as_path, as_set=ann.as_set,
            origin=ann.origin, med=ann.med, communities=ann.communities, learned_at=now,
        )
        old = state.adj_in.get(ann.prefix)
        state.adj_in[ann.prefix] = (path, state.generation[afi_of(ann.prefix)])
        if old is not None and old[0] == path:
            return []  # refreshed, not changed (the generation above is what mattered)
        self._candidates.setdefault(ann.prefix, {})[state.info.name] = path
        return self._reselect(ann.prefix)

    def _remove(self, state: PeerStatus, prefix: Prefix) -> list[Output]:
        if state.adj_in.pop(prefix, None) is None:
            return []
        cands = self._candidates.get(prefix)
        if cands is not None:
            cands.pop(state.info.name, None)
            if not cands:
                del self._candidates[prefix]
        return self._reselect(prefix)

    def _withdraw_all(self, state: PeerStatus) -> list[Output]:
        out: list[Output] = []
        for prefix in list(state.adj_in):
            out.extend(self._remove(state, prefix))
        return out

    def _max_prefix_teardown(self, state: PeerStatus, now: float) -> list[Output]:
        reason = f"max-prefix {state.info.max_prefix} exceeded"
        out = self.peer_down(state.info.name, reason, now)
        out.append(TeardownPeer(state.info.name, reason))
        return out

    def _reselect(self, prefix: Prefix) -> list[Output]:
        old = self._loc.get(prefix)
        cands = self._candidates.get(prefix)
        new = best_path(cands.values(), self._router_ids) if cands else None
        if new is None:
            if old is None:
                return []
            self._loc.delete(prefix)
            return [self._publish(RouteChange("withdraw", prefix, old, None))]
        if old is None:
            self._loc.insert(prefix, new)
            return [self._publish(RouteChange("add", prefix, None, new))]
        if old == new and old.learned_at == new.learned_at:
            return []
        self._loc.insert(prefix, new)
        if old == new:
            return []  # same route re-learned: keep the table fresh but tell nobody
        return [self._publish(RouteChange("change", prefix, old, new))]


def _session_address(info: PeerInfo, prefix: Prefix) -> IPAddress:
    # The tie-breaker compares peers by the address of the family in question when the peer has one.
    for addr in info.addresses:
        if addr.version == prefix.version:
            return addr
    return info.addresses[0]
