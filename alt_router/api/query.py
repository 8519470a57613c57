"""Request parameters -> validated queries -> answers, without HTTP.

Everything an operator can type into a URL is checked here and refused with an
``ApiError`` (status, short error, detail) rather than reaching the RIB.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from typing import Literal

from alt_router.api.view import JsonDict, route_dict
from alt_router.rib.paths import Path
from alt_router.rib.rib import Rib
from alt_router.types import IPAddress, Prefix

MatchKind = Literal["exact", "longer", "shorter"]
MATCH_KINDS: tuple[MatchKind, ...] = ("exact", "longer", "shorter")

DEFAULT_LIMIT = 1_000
# Serialising costs ~30 us per route here: a page of 5,000 holds the event loop ~150 ms.  More
# than that is a walk with the cursor, not one answer.
MAX_LIMIT = 5_000
DEFAULT_REGISTRATIONS_LIMIT = 100
MAX_REGISTRATIONS_LIMIT = 1_000
# An opaque cursor longer than this was not made by this API.
MAX_CURSOR = 512
# A peer's Adj-RIB-In up to this size is sorted for each page; a bigger one is walked in the
# Loc-RIB's order, WALK_CHUNK entries at a time.
SORT_MAX = 20_000
WALK_CHUNK = 4096


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
    cursor: Prefix | None = None


_ROUTE_PARAMS = frozenset({"prefix", "match", "peer", "limit", "cursor"})


def parse_limit(params: Mapping[str, str], default: int, most: int) -> int:
    if "limit" not in params:
        return default
    limit = parse_seq(params["limit"], "limit")
    if not 1 <= limit <= most:
        raise ApiError(400, "bad limit", f"limit must be between 1 and {most}")
    return limit


def parse_cursor(text: str) -> str:
    if not text or len(text) > MAX_CURSOR or not text.isascii() or not text.isprintable():
        raise ApiError(400, "bad cursor", "pass back the next_cursor of the previous page, unchanged")
    return text


def parse_routes_query(params: Mapping[str, str]) -> RoutesQuery:
    unknown = sorted(set(params) - _ROUTE_PARAMS)
    if unknown:
        raise ApiError(400, "unknown parameter",
                       f"{', '.join(unknown)} (known: prefix, match, peer, limit, cursor)")
    prefix = parse_prefix(params["prefix"]) if params.get("prefix") else None
    match = params.get("match", "exact")
    if match not in MATCH_KINDS:
        raise ApiError(400, "bad match kind", f"{match!r}: expected one of {', '.join(MATCH_KINDS)}")
    if "match" in params and prefix is None:
        raise ApiError(400, "match without prefix", "match= only makes sense with prefix=")
    limit = parse_limit(params, DEFAULT_LIMIT, MAX_LIMIT)
    cursor: Prefix | None = None
    if "cursor" in params:
        try:
            cursor = ip_network(parse_cursor(params["cursor"]), strict=True)
        except ValueError:
            raise ApiError(400, "bad cursor",
                           "pass back the next_cursor of the previous page, unchanged") from None
    peer = params.get("peer") or None
    return RoutesQuery(prefix, match, peer, limit, cursor)


def parse_registrations_query(params: Mapping[str, str]) -> tuple[str | None, int]:
    unknown = sorted(set(params) - {"limit", "cursor"})
    if unknown:
        raise ApiError(400, "unknown parameter", f"{', '.join(unknown)} (known: limit, cursor)")
    cursor = parse_cursor(params["cursor"]) if "cursor" in params else None
    return cursor, parse_limit(params, DEFAULT_REGISTRATIONS_LIMIT, MAX_REGISTRATIONS_LIMIT)


def _related(prefix: Prefix, query: Prefix, match: MatchKind) -> bool:
    if prefix.version != query.version:
        return False
    if match == "exact":
        return prefix == query
    if match == "longer":
        return prefix.subnet_of(query)  # type: ignore[arg-type]  # same version checked above
    return query.subnet_of(prefix)  # type: ignore[arg-type]


def _address_order(prefix: Prefix) -> tuple[int, int, int]:
    return prefix.version, int(prefix.network_address), prefix.prefixlen


def _length_order(prefix: Prefix) -> tuple[int, int, int]:
    # match=shorter lists the covering prefixes longest first.
    return prefix.version, -prefix.prefixlen, 0


def _filtered_paths(rib: Rib, q: RoutesQuery) -> list[Path]:
    """Loc-RIB paths for a prefix filter: at most the prefix's more- or less-specifics."""
    assert q.prefix is not None
    if q.match == "exact":
        path = rib.get(q.prefix)
        return [] if path is None else [path]
    if q.match == "longer":
        return rib.covered(q.prefix)
    return rib.covering(q.prefix)


def _page(paths: Iterable[Path], q: RoutesQuery, order: Callable[[Prefix], tuple[int, int, int]]
          ) -> tuple[list[Path], int]:
    """(up to limit + 1 paths after the cursor, how many paths there are in all)."""
    ordered = sorted(paths, key=lambda p: order(p.prefix))
    start = 0
    if q.cursor is not None:
        after = order(q.cursor)
        start = bisect_right([order(p.prefix) for p in ordered], after)
    return ordered[start:start + q.limit + 1], len(ordered)


def _peer_page(rib: Rib, adj: Mapping[str, Path], q: RoutesQuery) -> tuple[list[Path], int]:
    """A page of one peer's Adj-RIB-In, in address order.

    Up to ``SORT_MAX`` paths are sorted whole (~2 us each).  A bigger Adj-RIB-In is walked in the
    Loc-RIB's order instead, whose every prefix has a best path, so every accepted path's prefix
    is there: a page then costs the Loc-RIB entries it walks past, not a sort of the whole table.
    """
    if len(adj) <= SORT_MAX:
        related = (p for p in adj.values() if q.prefix is None or _related(p.prefix, q.prefix, q.match))
        return _page(related, q, _address_order)
    if q.prefix is not None:
        candidates = (adj.get(best.key) for best in _filtered_paths(rib, q))
        return _page((p for p in candidates if p is not None), q, _address_order)
    out: list[Path] = []
    after = str(q.cursor) if q.cursor is not None else None
    while len(out) <= q.limit:
        chunk = rib.routes_after(after, WALK_CHUNK)
        for best in chunk:
            path = adj.get(best.key)
            if path is not None:
                out.append(path)
                if len(out) > q.limit:
                    break
        if len(chunk) < WALK_CHUNK:
            break
        after = chunk[-1].key
    return out, len(adj)


def _kernel_peer_page(rib: Rib, next_hops: Collection[IPAddress], q: RoutesQuery) -> tuple[list[Path], int]:
    """FRR mode: a page of the Loc-RIB routes whose kernel next hop is one of the peer's tunnel
    addresses (the routes FRR chose via that peer: its Adj-RIB-In is FRR's, not mirrored)."""
    if q.prefix is None:
        return rib.routes_via(next_hops, str(q.cursor) if q.cursor is not None else None, q.limit + 1)
    order = _length_order if q.match == "shorter" else _address_order
    return _page((p for p in _filtered_paths(rib, q) if p.next_hop in next_hops), q, order)


def select_routes(rib: Rib, q: RoutesQuery) -> JsonDict:
    """The answer to GET /v1/routes: one page of Loc-RIB best paths, or of one peer's Adj-RIB-In
    with ``best`` flags.  ``next_cursor`` (the last prefix of this page) asks for the next page;
    None means this was the last one."""
    if q.peer is not None:
        state = rib.peer(q.peer)
        if state is None:
            raise ApiError(404, "unknown peer", repr(q.peer))
        if rib.mirrors_kernel:
            paths, total = _kernel_peer_page(rib, frozenset(state.info.addresses), q)
            rows = [route_dict(p, best=True) for p in paths[: q.limit]]
        else:
            paths, total = _peer_page(rib, state.adj_in, q)
            rows = [route_dict(p, best=rib.get(p.key) == p) for p in paths[: q.limit]]
    elif q.prefix is None:
        paths = rib.routes_after(str(q.cursor) if q.cursor is not None else None, q.limit + 1)
        total = len(rib)
        rows = [route_dict(p) for p in paths[: q.limit]]
    else:
        order = _length_order if q.match == "shorter" else _address_order
        paths, total = _page(_filtered_paths(rib, q), q, order)
        rows = [route_dict(p) for p in paths[: q.limit]]
    more = len(paths) > q.limit
    next_cursor = rows[-1]["prefix"] if more and rows else None
    return {"routes": rows, "count": len(rows), "total": total, "truncated": more, "next_cursor": next_cursor}

