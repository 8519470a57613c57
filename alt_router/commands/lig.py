"""``alt-router lig EID -m MAP-RESOLVER``: ask the mapping system for an EID (RFC 6835).

Exit status: 0 for a positive Map-Reply, 1 for a negative one, 2 for no reply
(timeout) or an error.  ``--trace`` lists the ALT hops with TTL-limited
requests and needs root for the raw ICMP socket (docs/mapping.md).
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time

from alt_router.inet import InetError, address
from alt_router.lisp import LISP_CONTROL_PORT
from alt_router.mapping.lig import Lig, LigReply, TraceHop, format_hop, format_reply, reply_to_dict
from alt_router.node.udp import bound_port, default_source, icmp_payload, open_icmp, open_udp
from alt_router.types import IPAddress


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lig", help="look up an EID's mapping through a Map-Resolver (RFC 6835)")
    p.add_argument("eid", help="the EID to look up (IPv4 or IPv6 address)")
    p.add_argument("-m", "--map-resolver", required=True, help="Map-Resolver address")
    p.add_argument("--mr-port", type=int, default=LISP_CONTROL_PORT, help="Map-Resolver UDP port (4342)")
    p.add_argument("--source", help="ITR-RLOC and source address (default: the route's source to the MR)")
    p.add_argument("--source-eid", help="Source-EID of the Map-Request (default: none, AFI 0, RFC 9301 §5.2)")
    p.add_argument("--port", type=int, default=0, help="local UDP port for replies (default: ephemeral)")
    p.add_argument("-c", "--count", type=int, default=1, help="number of requests (default 1)")
    p.add_argument("-t", "--timeout", type=float, default=2.0, help="seconds to wait per request (default 2)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--trace", action="store_true", help="show the ALT hops (TTL-limited; needs root)")
    p.add_argument("--max-hops", type=int, default=16, help="trace: highest TTL tried (default 16)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        eid = address(args.eid)
        mr = address(args.map_resolver)
        source = address(args.source) if args.source else default_source(mr, args.mr_port)
        source_eid = address(args.source_eid) if args.source_eid else None
    except (InetError, OSError) as exc:
        print(f"lig: {exc}", file=sys.stderr)
        return 2
    if source.version != mr.version:
        print(f"lig: source {source} and Map-Resolver {mr} are of different families", file=sys.stderr)
        return 2
    if args.count < 1 or args.timeout <= 0 or not 1 <= args.max_hops <= 255:
        print("lig: --count must be >= 1, --timeout > 0, --max-hops 1..255", file=sys.stderr)
        return 2
    try:
        sock = open_udp(source if args.source else (address("::") if mr.version == 6 else address("0.0.0.0")),
                        args.port)
    except OSError as exc:
        print(f"lig: cannot bind UDP port {args.port}: {exc}", file=sys.stderr)
        return 2
    with sock:
        lig = Lig(eid, source, mr, port=bound_port(sock), source_eid=source_eid)
        if args.trace:
            return _trace(args, lig, sock)
        return _lookup(args, lig, sock)


def _wait(
    lig: Lig, sock: socket.socket, icmp: socket.socket | None, timeout: float
) -> LigReply | TraceHop | None:
    deadline = time.monotonic() + timeout
    readers = [sock] if icmp is None else [sock, icmp]
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select(readers, [], [], left)
        for r in ready:
            try:
                data, peer = r.recvfrom(65535)
            except OSError:
                continue
            now = time.monotonic()
            try:
                sender = address(peer[0].split("%")[0])
            except InetError:
                continue
            if r is icmp:
                hop = lig.receive_icmp(icmp_payload(data, sender.version), sender, now)
                if hop is not None:
                    return hop
            else:
                reply = lig.receive(data, sender, now)
                if reply is not None:
                    return reply


def _send(lig: Lig, sock: socket.socket, mr: IPAddress, port: int, ttl: int = 64) -> bool:
    try:
        sock.sendto(lig.request(time.monotonic(), ttl), (str(mr), port))
    except OSError as exc:
        print(f"lig: cannot send to {mr}:{port}: {exc}", file=sys.stderr)
        return False
    return True


def _lookup(args: argparse.Namespace, lig: Lig, sock: socket.socket) -> int:
    replies: list[LigReply] = []
    timeouts = 0
    if not args.json:
        print(f"Send Map-Request to {lig.map_resolver} for {lig.eid} from {lig.source}:{lig.port} ...")
    for _ in range(args.count):
        if not _send(lig, sock, lig.map_resolver, args.mr_port):
            return 2
        got = _wait(lig, sock, None, args.timeout)
        if isinstance(got, LigReply):
            replies.append(got)
            if not args.json:
                print(format_reply(got))
        else:
            timeouts += 1
            if not args.json:
                print(f"*** No map-reply received in {args.timeout:g} s")
    status = 2 if not replies else (0 if any(r.positive for r in replies) else 1)
    if args.json:
        doc = {
            "eid": str(lig.eid), "map_resolver": str(lig.map_resolver), "source": str(lig.source),
            "source_eid": None if lig.source_eid is None else str(lig.source_eid),
            "replies": [reply_to_dict(r) for r in replies], "timeouts": timeouts,
            "ignored": {k: v for k, v in lig.counters.items() if k not in ("sent", "replies")},
            "result": {0: "positive", 1: "negative", 2: "timeout"}[status],
        }
        print(json.dumps(doc, indent=2))
    return status


def _trace(args: argparse.Namespace, lig: Lig, sock: socket.socket) -> int:
    try:
        icmp = open_icmp(lig.eid.version)
    except PermissionError:
        print("lig: --trace needs root (CAP_NET_RAW) for a raw ICMP socket", file=sys.stderr)
        return 2
    hops: list[dict[str, object]] = []
    status = 2
    with icmp:
        if not args.json:
            print(f"Trace Map-Request for {lig.eid} via {lig.map_resolver}, up to {args.max_hops} hops")
        for ttl in range(1, args.max_hops + 1):
            if not _send(lig, sock, lig.map_resolver, args.mr_port, ttl):
                return 2
            got = _wait(lig, sock, icmp, args.timeout)
            if isinstance(got, LigReply):
                status = 0 if got.positive else 1
                hops.append({"ttl": ttl, "map_reply": reply_to_dict(got)})
                if not args.json:
                    print(f"{ttl:>3}  Map-Reply from {got.source}  {got.rtt * 1000:.3f} ms")
                    print(format_reply(got))
                break
            if isinstance(got, TraceHop):
                hops.append({"ttl": ttl, "router": str(got.router), "kind": got.kind,
                             "rtt_ms": round(got.rtt * 1000, 3)})
            else:
                hops.append({"ttl": ttl, "router": None})
            if not args.json:
                print(format_hop(got, ttl))
            if isinstance(got, TraceHop) and got.kind == "unreachable":
                break
    if args.json:
        doc = {"eid": str(lig.eid), "map_resolver": str(lig.map_resolver), "hops": hops}
        print(json.dumps(doc, indent=2))
    return status
