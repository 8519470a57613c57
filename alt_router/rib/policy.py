"""Import policy: which received routes the ALT RIB refuses, and why.

ExaBGP hands us every route, including ones that carry our own AS (it does not
do the RFC 4271 §9.1.2 loop check), so the loop check lives here.  Every refusal
is a ``DropReason`` counted per peer, so "why is my prefix missing" has an answer.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address

from alt_router.rib.paths import AnnouncedRoute, Attributes, PeerInfo
from alt_router.rib.table import DualTable
from alt_router.types import IPAddress, Prefix


class DropReason(enum.Enum):
    OWN_ASN = "own-asn"
    OUTSIDE_EID_SPACE = "outside-eid-space"
    UNKNOWN_NEXT_HOP = "unknown-next-hop"
    MAX_PREFIX = "max-prefix"
    PEER_NOT_UP = "peer-not-up"
    UNKNOWN_PEER = "unknown-peer"


@dataclass(frozen=True, slots=True)
class TeardownPeer:
    """Action for the edge: close this peer's BGP session (its routes are already withdrawn)."""

    peer: str
    reason: str


class DropCounters:
    """Counts of refused routes per (peer, reason)."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, DropReason]] = Counter()

    def add(self, peer: str, reason: DropReason, n: int = 1) -> None:
        self._counts[(peer, reason)] += n

    def get(self, peer: str, reason: DropReason) -> int:
        return self._counts[(peer, reason)]

    def total(self, reason: DropReason | None = None) -> int:
        return sum(n for (_, r), n in self._counts.items() if reason is None or r is reason)

    def as_dict(self) -> dict[str, dict[str, int]]:
        """{peer: {reason: count}}, for the API and metrics."""
        out: dict[str, dict[str, int]] = {}
        for (peer, reason), n in sorted(self._counts.items(), key=lambda kv: (kv[0][0], kv[0][1].value)):
            out.setdefault(peer, {})[reason.value] = n
        return out


def _unmapped(addr: IPAddress) -> IPAddress:
    # An IPv6 route over an IPv4 session arrives with an IPv4-mapped next hop (::ffff:a.b.c.d).
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class ImportPolicy:
    """The per-route checks that need no RIB state (max-prefix is the RIB's, it counts)."""

    def __init__(self, local_asn: int, accept: Iterable[Prefix], peers: Iterable[PeerInfo]) -> None:
        self.local_asn = local_asn
        self._accept: DualTable[bool] = DualTable()
        for prefix in accept:
            self._accept.insert(prefix, True)
        self._accept_v4 = self._accept.v4.best_for_key_function()
        self._accept_v6 = self._accept.v6.best_for_key_function()
        self._by_address: dict[IPAddress, PeerInfo] = {}
        for peer in peers:
            for addr in peer.addresses:
                self._by_address[addr] = peer

    def add_peer(self, peer: PeerInfo) -> None:
        for addr in peer.addresses:
            self._by_address[addr] = peer

    def remove_peer(self, peer: PeerInfo) -> None:
        for addr in peer.addresses:
            if self._by_address.get(addr) is not None and self._by_address[addr].name == peer.name:
                del self._by_address[addr]

    def accepts_prefix(self, prefix: Prefix) -> bool:
        return bool(self._accept.covering(prefix))

    def accepts_key(self, key: str) -> bool:
        """``accepts_prefix`` for canonical prefix text (the bulk path: no prefix object)."""
        return (self._accept_v6 if ":" in key else self._accept_v4)(key) is not None

    def has_own_asn(self, attributes: Attributes) -> bool:
        return self.local_asn in attributes.as_path or self.local_asn in attributes.as_set

    def next_hop_peer(self, next_hop: IPAddress, session: PeerInfo | None = None) -> PeerInfo | None:
        """The tunnel peer that owns ``next_hop``; ``session`` is the peer the route came from.

        A link-local next hop (fe80::/10) names an address on the link the session runs
        over, so it belongs to the session's peer: BIRD on a direct IPv6 session sends one
        beside the global next hop, and ExaBGP reports the link-local one.
        """
        peer = self._by_address.get(_unmapped(next_hop))
        if (peer is None and session is not None and isinstance(next_hop, IPv6Address)
                and next_hop.is_link_local):
            return session
        return peer

    def check(self, ann: AnnouncedRoute, session: PeerInfo | None = None) -> DropReason | None:
        if self.local_asn in ann.as_path or self.local_asn in ann.as_set:
            return DropReason.OWN_ASN
        if not self.accepts_prefix(ann.prefix):
            return DropReason.OUTSIDE_EID_SPACE
        if self.next_hop_peer(ann.next_hop, session) is None:
            return DropReason.UNKNOWN_NEXT_HOP
        return None

