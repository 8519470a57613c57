"""Request parameters -> validated queries -> answers, without HTTP.

Everything an operator can type into a URL is checked here and refused with an
``ApiError`` (status, short error, detail) rather than reaching the RIB.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from itertools import islice
from typing import Literal

from alt_router.api.view import JsonDict, route_dict
from alt_router.rib.paths import Path
from alt_router.rib.rib import Rib

Prefix = IPv4Network | IPv6Network
MatchKind = Literal["exact", "longer", "shorter"]
MATCH_KINDS: tuple[MatchKind, ...] = ("exact", "longer", "shorter")

DEFAULT_LIMIT = 1_000
# Serialising costs ~30 us per route here: a 100,000-route answer holds the event loop ~3 s.
MAX_LIMIT = 100_000


class ApiError(ValueError):
    """A request the API refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, error: str, detail: str = "") -> None:
        self.status = status
        self.error = error
        self.detail = detail
        self.headers: dict[str, str] | None = None
        super().__init__(f"{status} {error}: {detail}" if detail else f"{status} {error}")

    def body(self) -> JsonDict:
        return {"error": self.error, "detail": self.detail}


def parse_prefix(text: str) -> Prefix:
    try:
        return ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ApiError(400, "bad prefix", f"{text!r}: {exc}") from None


def parse_eid(text: str) -> str:
    try:
        return str(ip_address(text.strip()))
    except ValueError:
        raise ApiError(400, "bad EID", f"{text!r} is not an IPv4 or IPv6 address") from None


def parse_seq(text: str, what: str = "since") -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ApiError(400, "bad sequence number", f"{what}={text!r}: expected a non-negative integer")
    return int(text)


@dataclass(frozen=True, slots=True)
class RoutesQuery:
    prefix: Prefix | None = None
    match: MatchKind = "exact"
    peer: str | None = None
    limit: int = DEFAULT_LIMIT


_ROUTE_PARAMS = frozenset({"prefix", "match", "peer", "limit"})


def parse_routes_query(params: Mapping[str, str]) -> RoutesQuery:
    unknown = sorted(set(params) - _ROUTE_PARAMS)
    if unknown:
        raise ApiError(400, "unknown parameter", f"{', '.join(unknown)} (known: prefix, match, peer, limit)")
    prefix = parse_prefix(params["prefix"]) if params.get("prefix") else None
    match = params.get("match", "exact")
    if match not in MATCH_KINDS:
        raise ApiError(400, "bad match kind", f"{match!r}: expected one of {', '.join(MATCH_KINDS)}")
    if "match" in params and prefix is None:
        raise ApiError(400, "match without prefix", "match= only makes sense with prefix=")
    limit = DEFAULT_LIMIT
    if "limit" in params:
        limit = parse_seq(params["limit"], "limit")
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(400, "bad limit", f"limit must be between 1 and {MAX_LIMIT}")
    peer = params.get("peer") or None
    return RoutesQuery(prefix, match, peer, limit)


def _related(prefix: Prefix, query: Prefix, match: MatchKind) -> bool:
    if prefix.version != query.version:
        return False
    if match == "exact":
        return prefix == query
    if match == "longer":
        return prefix.subnet_of(query)  # type: ignore[arg-type]  # same version checked above
    return query.subnet_of(prefix)  # type: ignore[arg-type]


def _rib_paths(rib: Rib, q: RoutesQuery) -> Iterable[Path]:
    if q.prefix is None:
        return rib.routes()
    if q.match == "exact":
        path = rib.get(q.prefix)
        return [] if path is None else [path]
    if q.match == "longer":
        return rib.covered(q.prefix)
    return rib.covering(q.prefix)


def select_routes(rib: Rib, q: RoutesQuery) -> JsonDict:
    """The answer to GET /v1/routes: Loc-RIB best paths, or one peer's Adj-RIB-In with ``best`` flags."""
    if q.peer is not None:
        if rib.peer(q.peer) is None:
            raise ApiError(404, "unknown peer", repr(q.peer))
        adj = rib.adj_rib_in(q.peer)
        paths = sorted(
            (p for p in adj.values() if q.prefix is None or _related(p.prefix, q.prefix, q.match)),
            key=lambda p: (p.prefix.version, int(p.prefix.network_address), p.prefix.prefixlen),
        )
        total = len(paths)
        rows = [route_dict(p, best=rib.get(p.prefix) == p) for p in paths[: q.limit]]
    else:
        paths_iter = _rib_paths(rib, q)
        total = len(rib) if q.prefix is None else -1
        # islice: an unfiltered dump of a full table must stop at the limit, not build it all.
        rows = [route_dict(p) for p in islice(paths_iter, q.limit + 1)]
        if total < 0:
            total = len(rows) if len(rows) <= q.limit else len(list(_rib_paths(rib, q)))
        rows = rows[: q.limit]
    return {"routes": rows, "count": len(rows), "total": total, "truncated": total > len(rows)}
