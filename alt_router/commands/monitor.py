"""``alt-router monitor``: follow a node's live event stream, one line per event.

On a lost connection it reconnects with the last sequence number it printed,
so nothing still in the node's history is missed; when the node says events
are gone (a ``gap``), it says so, since a table read by hand is now stale.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from alt_router.api.client import ApiClient, ApiClientError, ApiHttpError, ApiUnreachable, SseEvent
from alt_router.commands.show import EXIT_ERROR, EXIT_UNREACHABLE, add_api_options, fail

MAX_BACKOFF = 5.0

Connect = Callable[[int | None], Iterator[SseEvent]]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("monitor", help="follow route and peer changes live",
                              description="Print one line per route or peer event from a node's "
                                          "/v1/stream; reconnects and resumes from the last event seen.")
    add_api_options(p)
    p.add_argument("--since", type=int, metavar="SEQ", help="first replay every kept event after SEQ")
    p.add_argument("--count", type=int, metavar="N", help="exit after N events")
    p.add_argument("--json", action="store_true", help="print each event as a JSON object")
    p.add_argument("--no-reconnect", action="store_true", help="exit when the stream ends")
    p.set_defaults(func=run)


def _path(route: dict[str, Any] | None) -> str:
    if not route:
        return ""
    as_path = " ".join(str(a) for a in route.get("as_path") or []) or "(local)"
    peer = route.get("next_hop_peer") or route.get("peer")
    return f"via {route.get('next_hop')} peer {peer} as-path {as_path}"


def format_event(event: SseEvent) -> str:
    """One line for a human: ``[seq] what``."""
    try:
        data = event.json()
    except ValueError:
        return f"[{event.id}] {event.event} (undecodable: {event.data[:80]!r})"
    if not isinstance(data, dict):
        return f"[{event.id}] {event.event} {data!r}"
    if event.event == "route":
        kind = data.get("kind")
        detail = _path(data.get("old") if kind == "withdraw" else data.get("new"))
        return f"[{event.id}] route {kind:<8} {data.get('prefix')} {detail}".rstrip()
    if event.event == "peer":
        line = f"[{event.id}] peer  {data.get('peer')} {data.get('state')}"
        return line + (f" ({data['reason']})" if data.get("reason") else "")
    if event.event == "gap":
        return (f"[{event.id}] gap   events missed ({data.get('reason')}): re-read the tables; "
                f"following from seq {data.get('last_seq')}")
    return f"[{event.id}] {event.event} {json.dumps(data, sort_keys=True)}"


def follow(connect: Connect, since: int | None, out: TextIO, *, as_json: bool = False,
           count: int | None = None, reconnect: bool = True,
           sleep: Callable[[float], None] = time.sleep, err: TextIO = sys.stderr) -> int:
    """Print events until ``count`` of them (or forever); returns the exit code.

    The first connection failing is an error (exit 2); after that, losing the
    stream means reconnecting with backoff from the last sequence number seen.
    """
    last = since
    printed = 0
    connected_once = False
    backoff = 0.25
    while True:
        try:
            for event in connect(last):
                connected_once = True
                backoff = 0.25
                if event.id is not None and event.id.isdigit():
                    last = int(event.id)
                if as_json:
                    payload: dict[str, Any] = {"event": event.event, "id": event.id}
                    try:
                        payload["data"] = event.json()
                    except ValueError:
                        payload["data"] = event.data
                    print(json.dumps(payload, sort_keys=True), file=out, flush=True)
                else:
                    print(format_event(event), file=out, flush=True)
                printed += 1
                if count is not None and printed >= count:
                    return 0
            connected_once = True
            reason = "the node closed the stream"
        except ApiUnreachable as exc:
            if not connected_once:
                return fail(str(exc), EXIT_UNREACHABLE)
            reason = str(exc)
        except ApiHttpError as exc:
            return fail(f"{exc.error}" + (f": {exc.detail}" if exc.detail else ""), EXIT_ERROR)
        if not reconnect:
            return 0
        print(f"alt-router: {reason}; reconnecting from seq {last}", file=err, flush=True)
        sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF)


def run(args: argparse.Namespace) -> int:
    client = ApiClient(args.api, args.token, args.timeout)
    # The node sends a keepalive every 15 s: a read this long without one means the connection is dead.
    read_timeout = max(args.timeout, 45.0)
    try:
        return follow(lambda since: client.stream(since, read_timeout), args.since, sys.stdout,
                      as_json=args.json, count=args.count, reconnect=not args.no_reconnect)
    except ApiClientError as exc:
        return fail(str(exc), EXIT_ERROR)
