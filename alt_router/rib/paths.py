"""Routes as the RIB holds them, the updates that feed it, and the best-path rule.

The RIB does not know ExaBGP: ``alt_router.bgp.exabgp_api`` turns JSON into these
``Update`` objects.  Best path (documented in docs/configuration.md):

1. shortest AS_PATH (an AS_SET counts as one, RFC 4271 §9.1.2.2 a),
2. then the lowest peer BGP router-id (a peer whose router-id is not yet known
   sorts after every known one),
3. then the lowest peer address (the tunnel inner address), so the choice is
   deterministic whatever order the updates arrived in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
Prefix = IPv4Network | IPv6Network

AFI_IPV4 = "ipv4"
AFI_IPV6 = "ipv6"


def afi_of(prefix: Prefix) -> str:
    return AFI_IPV4 if prefix.version == 4 else AFI_IPV6


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A configured tunnel peer as the RIB needs it."""

    name: str
    asn: int
    addresses: tuple[IPAddress, ...]
    max_prefix: int = 10_000


@dataclass(frozen=True, slots=True)
class Announce:
    """One announced prefix with the attributes it came with."""

    prefix: Prefix
    next_hop: IPAddress
    as_path: tuple[int, ...] = ()
    as_set: tuple[int, ...] = ()
    origin: str = "igp"
    med: int | None = None
    communities: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Update:
    """Announcements and withdrawals received from one peer (by peer name)."""

    peer: str
    announce: tuple[Announce, ...] = ()
    withdraw: tuple[Prefix, ...] = ()


@dataclass(frozen=True, slots=True)
class Path:
    """An accepted route: a prefix reachable through a tunnel peer."""

    prefix: Prefix
    peer: str
    peer_address: IPAddress
    next_hop: IPAddress
    # The tunnel peer that owns next_hop: where the forwarder sends.  Normally ``peer`` itself.
    next_hop_peer: str = ""
    as_path: tuple[int, ...] = ()
    as_set: tuple[int, ...] = ()
    origin: str = "igp"
    med: int | None = None
    communities: tuple[tuple[int, int], ...] = ()
    # Excluded from equality so a re-announcement with identical attributes is not a change.
    learned_at: float = field(default=0.0, compare=False)

    @property
    def path_length(self) -> int:
        return len(self.as_path) + (1 if self.as_set else 0)

    @property
    def afi(self) -> str:
        return afi_of(self.prefix)


_NO_ROUTER_ID = 1 << 32


def path_rank(path: Path, router_ids: dict[str, IPv4Address]) -> tuple[int, int, int, int]:
    """Sort key: lower is better (see the module docstring)."""
    rid = router_ids.get(path.peer)
    return (
        path.path_length,
        int(rid) if rid is not None else _NO_ROUTER_ID,
        path.peer_address.version,
        int(path.peer_address),
    )


def best_path(paths: Iterable[Path], router_ids: dict[str, IPv4Address]) -> Path | None:
    return min(paths, key=lambda p: path_rank(p, router_ids), default=None)
