"""Routes as the RIB holds them, the updates that feed it, and the best-path rule.

The RIB does not know ExaBGP: ``alt_router.bgp.exabgp_api`` turns JSON into these
``Update`` objects.  Best path (documented in docs/configuration.md):

1. shortest AS_PATH (an AS_SET counts as one, RFC 4271 §9.1.2.2 a),
2. then the lowest peer BGP router-id (a peer whose router-id is not yet known
   sorts after every known one),
3. then the lowest peer address (the tunnel inner address), so the choice is
   deterministic whatever order the updates arrived in.

Sized for a million routes: one UPDATE's NLRI share one ``Attributes`` object
(``Batch``), prefixes travel as their canonical text (the form pytricia takes),
and a ``Path`` builds its ``ipaddress`` prefix object only when asked for it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_network
from typing import Any

from alt_router.types import IPAddress, Prefix

AFI_IPV4 = "ipv4"
AFI_IPV6 = "ipv6"


def afi_of(prefix: Prefix) -> str:
    return AFI_IPV4 if prefix.version == 4 else AFI_IPV6


def afi_of_key(key: str) -> str:
    return AFI_IPV6 if ":" in key else AFI_IPV4


_inet_pton = socket.inet_pton
_AF_INET = socket.AF_INET
_from_bytes = int.from_bytes


def prefix_key(text: str) -> str | None:
    """The canonical text of the prefix ``text`` (what ``str(ip_network(text))`` gives), or None.

    Strict like ``ip_network(strict=True)``: host bits set is an error.  IPv4 takes a
    fast path (``inet_pton`` is strict about dotted quads and ~10x cheaper than
    ``ip_network``) and returns ``text`` itself when it is already canonical, which
    ExaBGP's always is, so no new string is made per NLRI.
    """
    if ":" not in text:
        addr, slash, length = text.partition("/")
        if not slash or not length.isdigit() or len(length) > 2 or (len(length) == 2 and length[0] == "0"):
            return None
        plen = int(length)
        if plen > 32:
            return None
        try:
            value = _from_bytes(_inet_pton(_AF_INET, addr), "big")
        except (OSError, ValueError):
            return None
        if value & ((1 << (32 - plen)) - 1):
            return None
        return text
    try:
        return str(ip_network(text, strict=True))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A configured tunnel peer as the RIB needs it."""

    name: str
    asn: int
    addresses: tuple[IPAddress, ...]
    max_prefix: int = 10_000


@dataclass(frozen=True, slots=True)
class Attributes:
    """The path attributes the ALT uses; one object is shared by every NLRI of an UPDATE."""

    as_path: tuple[int, ...] = ()
    as_set: tuple[int, ...] = ()
    origin: str = "igp"
    med: int | None = None
    communities: tuple[tuple[int, int], ...] = ()
    # Carried on unchanged by every transit (RFC 4271 §5.1.6, §5.1.7): an aggregate's marks.
    atomic_aggregate: bool = False
    aggregator: str | None = None  # "ASN:router-id", as ExaBGP writes and reads it

    @property
    def path_length(self) -> int:
        return len(self.as_path) + (1 if self.as_set else 0)


NO_ATTRIBUTES = Attributes()


@dataclass(frozen=True, slots=True)
class AnnouncedRoute:
    """One announced prefix with the attributes it came with."""

    prefix: Prefix
    next_hop: IPAddress
    as_path: tuple[int, ...] = ()
    as_set: tuple[int, ...] = ()
    origin: str = "igp"
    med: int | None = None
    communities: tuple[tuple[int, int], ...] = ()

    @property
    def attributes(self) -> Attributes:
        return Attributes(self.as_path, self.as_set, self.origin, self.med, self.communities)


@dataclass(frozen=True, slots=True)
class Batch:
    """The NLRI of one UPDATE that share a next hop: prefixes as canonical text (``prefix_key``)."""

    next_hop: IPAddress
    attributes: Attributes
    prefixes: tuple[str, ...]

    def announcements(self) -> list[AnnouncedRoute]:
        a = self.attributes
        return [
            AnnouncedRoute(ip_network(p), self.next_hop, a.as_path, a.as_set, a.origin, a.med, a.communities)
            for p in self.prefixes
        ]


@dataclass(frozen=True, slots=True)
class Update:
    """Announcements and withdrawals received from one peer (by peer name).

    ``announce``/``withdraw`` carry objects (convenient for a handful of routes);
    ``batches``/``withdraw_keys`` carry the same as canonical prefix text (what
    ExaBGP's bulk updates become).  The RIB applies withdrawals first, then
    ``announce``, then ``batches``.
    """

    peer: str
    announce: tuple[AnnouncedRoute, ...] = ()
    withdraw: tuple[Prefix, ...] = ()
    batches: tuple[Batch, ...] = ()
    withdraw_keys: tuple[str, ...] = ()

    def __len__(self) -> int:
        """Number of NLRI it carries."""
        return (len(self.announce) + len(self.withdraw) + len(self.withdraw_keys)
                + sum(len(b.prefixes) for b in self.batches))


_set = object.__setattr__


class Path:
    """An accepted route: a prefix reachable through a tunnel peer.  Immutable.

    Not a dataclass: at a million routes the per-route ``ipaddress`` object (about
    180 bytes and 3 us to build) was the largest cost of ingest, so a Path keeps
    the prefix as its canonical text (``key``) and builds ``prefix`` on first use.
    Equality ignores ``learned_at``, so a re-announcement with identical
    attributes is not a change.
    """

    __slots__ = ("_prefix", "attributes", "key", "learned_at", "next_hop", "next_hop_peer", "peer",
                 "peer_address")

    _prefix: Prefix | None
    key: str
    peer: str
    peer_address: IPAddress
    next_hop: IPAddress
    # The tunnel peer that owns next_hop: where the forwarder sends.  Normally ``peer`` itself.
    next_hop_peer: str
    attributes: Attributes
    learned_at: float

    def __init__(  # noqa: PLR0917 - the positional order of the dataclass it replaced
        self, prefix: Prefix | str, peer: str, peer_address: IPAddress, next_hop: IPAddress,
        next_hop_peer: str = "", as_path: tuple[int, ...] = (), as_set: tuple[int, ...] = (),
        origin: str = "igp", med: int | None = None, communities: tuple[tuple[int, int], ...] = (),
        learned_at: float = 0.0, *, attributes: Attributes | None = None,
    ) -> None:
        net = prefix if isinstance(prefix, IPv4Network | IPv6Network) else ip_network(prefix, strict=True)
        if attributes is None:
            attributes = Attributes(tuple(as_path), tuple(as_set), origin, med, tuple(communities))
        _set(self, "_prefix", net)
        _set(self, "key", str(net))
        _set(self, "peer", peer)
        _set(self, "peer_address", peer_address)
        _set(self, "next_hop", next_hop)
        _set(self, "next_hop_peer", next_hop_peer)
        _set(self, "attributes", attributes)
        _set(self, "learned_at", learned_at)

    @classmethod
    def from_key(  # noqa: PLR0917 - the RIB's hot path, one call per route
        cls, key: str, peer: str, peer_address: IPAddress, next_hop: IPAddress, next_hop_peer: str,
        attributes: Attributes, learned_at: float,
    ) -> Path:
        """The RIB's constructor: ``key`` must already be canonical (``prefix_key``)."""
        self = cls.__new__(cls)
        _set(self, "_prefix", None)
        _set(self, "key", key)
        _set(self, "peer", peer)
        _set(self, "peer_address", peer_address)
        _set(self, "next_hop", next_hop)
        _set(self, "next_hop_peer", next_hop_peer)
        _set(self, "attributes", attributes)
        _set(self, "learned_at", learned_at)
        return self

    @property
    def prefix(self) -> Prefix:
        net = self._prefix
        if net is None:
            net = ip_network(self.key)
            _set(self, "_prefix", net)  # a cache, not a change: the value follows from key
        return net

    @property
    def as_path(self) -> tuple[int, ...]:
        return self.attributes.as_path

    @property
    def as_set(self) -> tuple[int, ...]:
        return self.attributes.as_set

    @property
    def origin(self) -> str:
        return self.attributes.origin

    @property
    def med(self) -> int | None:
        return self.attributes.med

    @property
    def communities(self) -> tuple[tuple[int, int], ...]:
        return self.attributes.communities

    @property
    def path_length(self) -> int:
        return self.attributes.path_length

    @property
    def afi(self) -> str:
        return afi_of_key(self.key)

    def _identity(self) -> tuple[Any, ...]:
        return (self.key, self.peer, self.peer_address, self.next_hop, self.next_hop_peer, self.attributes)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Path):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Path is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Path is immutable: cannot delete {name}")

    def __repr__(self) -> str:
        a = self.attributes
        return (f"Path(prefix={self.key}, peer={self.peer!r}, peer_address={self.peer_address}, "
                f"next_hop={self.next_hop}, next_hop_peer={self.next_hop_peer!r}, as_path={a.as_path}, "
                f"as_set={a.as_set}, origin={a.origin!r}, med={a.med}, communities={a.communities}, "
                f"learned_at={self.learned_at})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.from_key, (self.key, self.peer, self.peer_address, self.next_hop, self.next_hop_peer,
                                self.attributes, self.learned_at))


_NO_ROUTER_ID = 1 << 32


def path_rank(path: Path, router_ids: dict[str, IPv4Address]) -> tuple[int, int, int, int]:
    """Sort key: lower is better (see the module docstring)."""
    rid = router_ids.get(path.peer)
    return (
        path.attributes.path_length,
        int(rid) if rid is not None else _NO_ROUTER_ID,
        path.peer_address.version,
        int(path.peer_address),
    )


def best_path(paths: Iterable[Path], router_ids: dict[str, IPv4Address]) -> Path | None:
    return min(paths, key=lambda p: path_rank(p, router_ids), default=None)
