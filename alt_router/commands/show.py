"""``alt-router show``: the node's state from its monitoring API, as tables or JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from alt_router.api.client import DEFAULT_URL, ApiClient, ApiClientError, ApiHttpError, ApiUnreachable
from alt_router.api.table import cell, format_duration, format_table

JsonDict = dict[str, Any]

# Exit codes: 1 the API answered with an error (or "no route"), 2 no API to talk to.
EXIT_ERROR = 1
EXIT_UNREACHABLE = 2
# Page sizes `show` asks for while it follows next_cursor (the API's defaults and caps: docs/api.md).
PAGE = {"routes": 1000, "registrations": 1000}


def add_api_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", default=os.environ.get("ALT_ROUTER_API", DEFAULT_URL), metavar="URL",
                   help=f"base URL of the node's API (default $ALT_ROUTER_API or {DEFAULT_URL})")
    p.add_argument("--token", default=os.environ.get("ALT_ROUTER_TOKEN"),
                   help="bearer token (default $ALT_ROUTER_TOKEN)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer (default 10)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("show", help="show peers, routes, tunnels, ... from a running node's API",
                              description="Query a running node's monitoring API and print tables "
                                          "(or the raw JSON with --json).")
    what = p.add_subparsers(dest="what", metavar="WHAT", required=True)

    def sub(name: str, help_: str) -> argparse.ArgumentParser:
        q = what.add_parser(name, help=help_)
        add_api_options(q)
        q.add_argument("--json", action="store_true", help="print the API's JSON answer instead of a table")
        return q

    sub("status", "node identity and uptime")
    sub("peers", "BGP peers: state, uptime, prefix counts")
    routes = sub("routes", "Loc-RIB routes, or what one peer sent (--peer)")
    routes.add_argument("prefix", nargs="?", help="only this prefix (see --match)")
    routes.add_argument("--match", choices=("exact", "longer", "shorter"),
                        help="with PREFIX: exact (default), longer (and more-specifics), "
                             "shorter (and less-specifics)")
    routes.add_argument("--peer", help="the Adj-RIB-In of this peer, best paths marked '>'")
    routes.add_argument("--limit", type=int, help="at most this many routes (default: all, page by page)")
    sub("tunnels", "GRE tunnels: mode and counters")
    sub("registrations", "Map-Server registrations")
    sub("aggregates", "EID-prefix aggregates: active, attributes, suppressed more-specifics")
    sub("counters", "every counter, by component")
    lookup = sub("lookup", "the route and next hop for an EID")
    lookup.add_argument("eid", help="an IPv4 or IPv6 EID")
    p.set_defaults(func=run)


# --- rendering (pure: JSON answer -> text) -----------------------------------------


def render_status(data: JsonDict) -> str:
    lines = [f"{k}: {cell(v)}" for k, v in data.items() if k not in {"api", "uptime"}]
    if "uptime" in data:
        lines.append(f"uptime: {format_duration(data['uptime'])}")
    stream = (data.get("api") or {}).get("stream") or {}
    if stream:
        lines.append(f"events: seq {stream.get('oldest_seq')}..{stream.get('last_seq')} kept, "
                     f"{stream.get('clients')} stream clients, {stream.get('dropped')} dropped")
    return "\n".join(lines)


def render_peers(data: JsonDict) -> str:
    rows = []
    for p in data.get("peers", []):
        pfx = p.get("prefixes") or {}
        dropped = pfx.get("dropped") or {}
        up = p.get("state") == "up"
        rows.append([
            p.get("name"), p.get("asn"), (p.get("addresses") or [None])[0], p.get("state"),
            format_duration(p.get("uptime")) if up else p.get("last_down_reason") or "never up",
            pfx.get("received"), pfx.get("accepted"), pfx.get("best"),
            ", ".join(f"{k} {v}" for k, v in dropped.items()) or None,
        ])
    headers = ["Peer", "AS", "Address", "State", "Up/Down", "Rcvd", "Accepted", "Best", "Dropped"]
    return format_table(headers, rows)


def _as_path(route: JsonDict) -> str:
    path = " ".join(str(a) for a in route.get("as_path") or [])
    if route.get("as_set"):
        path += " {" + ",".join(str(a) for a in route["as_set"]) + "}"
    return path.strip() or "-"


def render_routes(data: JsonDict) -> str:
    routes = data.get("routes", [])
    marked = any("best" in r for r in routes)
    rows = []
    for r in routes:
        row: list[object] = [r.get("prefix"), r.get("next_hop"), r.get("next_hop_peer") or r.get("peer"),
                             _as_path(r), r.get("origin")]
        rows.append([">" if r.get("best") else "", *row] if marked else row)
    headers = ["Prefix", "Next Hop", "Peer", "AS Path", "Origin"]
    out = format_table(["", *headers] if marked else headers, rows)
    summary = f"\nDisplayed {data.get('count', len(routes))} of {data.get('total', len(routes))} routes"
    if data.get("truncated"):
        summary += " (more: raise --limit)"
    return out + summary


def render_tunnels(data: JsonDict) -> str:
    rows = []
    for t in data.get("tunnels", []):
        c = t.get("counters") or {}
        drops = c.get("drops") or {}
        rows.append([t.get("name"), t.get("mode"), t.get("local"), t.get("remote"), t.get("peer"),
                     c.get("rx_packets"), c.get("rx_bytes"), c.get("tx_packets"), c.get("tx_bytes"),
                     ", ".join(f"{k} {v}" for k, v in drops.items()) or None])
    headers = ["Tunnel", "Mode", "Local", "Remote", "Peer",
               "RX pkts", "RX bytes", "TX pkts", "TX bytes", "Drops"]
    return format_table(headers, rows)


def render_registrations(data: JsonDict) -> str:
    rows = [[r.get("site"), r.get("eid_prefix"), r.get("rlocs"), r.get("etr"), r.get("expires_in"),
             r.get("proxy_reply")] for r in data.get("registrations", [])]
    return format_table(["Site", "EID-Prefix", "RLOCs", "ETR", "Expires", "Proxy"], rows)


def render_aggregates(data: JsonDict) -> str:
    rows = []
    for a in data.get("aggregates", []):
        if not a.get("active"):
            attrs = "inactive"
        elif a.get("as_set_members"):
            attrs = "AS_SET {" + ",".join(str(n) for n in a["as_set_members"]) + "}"
        else:
            attrs = "ATOMIC_AGGREGATE"
        flags = ",".join(f for f in ("summary-only", "always") if a.get(f.replace("-", "_"))) or None
        sample = a.get("suppressed_sample") or []
        hidden = ", ".join(sample) + (" ..." if a.get("suppressed", 0) > len(sample) else "")
        rows.append([a.get("prefix"), attrs, a.get("origin"), flags, a.get("contributors"),
                     a.get("suppressed"), hidden or None])
    return format_table(["Aggregate", "Attributes", "Origin", "Flags", "Contributors", "Suppressed",
                         "Suppressed prefixes"], rows)


def render_counters(data: JsonDict) -> str:
    rows: list[list[object]] = []

    def walk(component: str, name: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(component, f"{name}.{k}" if name else str(k), v)
        else:
            rows.append([component, name, value])

    for component, values in data.items():
        walk(str(component), "", values)
    return format_table(["Component", "Counter", "Value"], rows)


def render_lookup(data: JsonDict) -> str:
    route = data.get("route") or {}
    lines = [
        f"{data.get('eid')}: matched {data.get('prefix')}",
        f"  next hop {data.get('next_hop')} (peer {data.get('next_hop_peer')}"
        + (f", tunnel {data['tunnel']})" if data.get("tunnel") else ")"),
        f"  learned from {route.get('peer')}, AS path {_as_path(route)}",
    ]
    if data.get("suppressed_by"):
        lines.append(f"  not exported: suppressed by aggregate {data['suppressed_by']}")
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[JsonDict], str]] = {
    "status": render_status, "peers": render_peers, "routes": render_routes, "tunnels": render_tunnels,
    "registrations": render_registrations, "counters": render_counters, "lookup": render_lookup,
    "aggregates": render_aggregates,
}


# --- the command -------------------------------------------------------------------


def request_for(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """(path, query) for ``show WHAT``."""
    if args.what == "lookup":
        return f"/v1/lookup/{args.eid}", {}
    if args.what == "routes":
        params: dict[str, str] = {}
        if args.prefix:
            params["prefix"] = args.prefix
            if args.match:
                params["match"] = args.match
        elif args.match:
            raise ApiClientError("--match needs a PREFIX")
        if args.peer:
            params["peer"] = args.peer
        return "/v1/routes", params
    return f"/v1/{args.what}", {}


def fetch_pages(client: ApiClient, path: str, params: dict[str, str], key: str, *, page: int,
                limit: int | None = None) -> JsonDict:
    """Every page of a paged endpoint (or the first ``limit`` rows), as one answer.

    The API never answers more than a page; ``show`` follows ``next_cursor`` so it still shows
    everything.  The merged answer keeps the first page's other keys (``total``).
    """
    if limit is not None and limit < 1:
        raise ApiClientError("--limit must be at least 1")
    rows: list[Any] = []
    first: JsonDict | None = None
    cursor: str | None = None
    while True:
        want = page if limit is None else min(page, limit - len(rows))
        query = {**params, "limit": str(want)}
        if cursor is not None:
            query["cursor"] = cursor
        data = client.get(path, query)
        if first is None:
            first = data
        rows += data.get(key) or []
        cursor = data.get("next_cursor")
        if not cursor or (limit is not None and len(rows) >= limit):
            break
    assert first is not None
    return {**first, key: rows, "count": len(rows), "truncated": cursor is not None, "next_cursor": cursor}


def fail(message: str, code: int) -> int:
    print(f"alt-router: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    client = ApiClient(args.api, args.token, args.timeout)
    try:
        path, params = request_for(args)
        if args.what in PAGE:
            data = fetch_pages(client, path, params, args.what, page=PAGE[args.what],
                               limit=getattr(args, "limit", None))
        else:
            data = client.get(path, params)
    except ApiUnreachable as exc:
        return fail(str(exc), EXIT_UNREACHABLE)
    except ApiHttpError as exc:
        if args.what == "lookup" and exc.status == 404:
            return fail(f"% no route to {args.eid}", EXIT_ERROR)
        return fail(f"{exc.error}" + (f": {exc.detail}" if exc.detail else ""), EXIT_ERROR)
    except ApiClientError as exc:
        return fail(str(exc), EXIT_ERROR)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(RENDERERS[args.what](data))
    return 0
