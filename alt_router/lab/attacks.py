"""Hostile traffic for lab nodes: the attacks of ``bench/abuse.py`` and its CI-sized tests (edge).

Each attack is a bounded loop (a count or a duration, never open-ended) that
sends only to the address it is given; the lab runs it inside one of its own
namespaces with ``python -m alt_router.lab.attacks NAME --json ...`` so the
traffic never leaves the lab.  Each prints one JSON object: what it sent, how
long it took and what came back.

- ``register-flood``: validly signed Map-Registers, a random xTR-ID each (one
  ETR that holds a site key, creating registrations as fast as it can);
- ``register-refused``: Map-Registers signed with a wrong key (refusals to log);
- ``mr-flood``: ECM Map-Requests to a Map-Resolver from many source addresses
  at a fixed rate per source;
- ``gre-fuzz``: GRE packets to a node's underlay address, half with a
  well-formed inner IPv4 UDP datagram (random sources, some multicast or
  broadcast, TTL 1 or an unrouted EID, so the node is tempted into ICMP
  errors), half random bytes;
- ``stream-clients``: monitoring-stream clients that connect and never read;
- ``route-churn``: announce/withdraw pairs through a node's write API, so every
  ALT node downstream publishes route events;
- ``half-open``: HTTP connections that send part of a request and stop.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from typing import Any

from alt_router.inet import ip_header, udp_packet
from alt_router.lisp import LISP_CONTROL_PORT, Locator, MappingRecord, MapRegister
from alt_router.lisp.auth import HMAC_SHA_256_128, sign
from alt_router.mapping.lig import Lig

GRE_PROTO = 47
_GRE_IPV4 = struct.pack("!HH", 0, 0x0800)


def _udp(bind: str = "0.0.0.0", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, port))
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            sock.recv(65535)
        except (BlockingIOError, InterruptedError):
            return n
        except OSError:
            return n
        n += 1


def _send(sock: socket.socket, data: bytes, dest: tuple[str, int]) -> bool:
    try:
        sock.sendto(data, dest)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False
    return True


def _register(site_prefix: str, rloc: str, key: str, xtr_id: int, nonce: int) -> bytes:
    net = ip_network(site_prefix)
    record = MappingRecord(
        net.network_address, net.prefixlen, ttl=1,
        locators=(Locator(ip_address(rloc), priority=1, weight=100),), authoritative=True,
    )
    msg = MapRegister(
        nonce, (record,), algorithm_id=HMAC_SHA_256_128, want_map_notify=True,
        xtr_id=xtr_id, site_id=1,
    )
    return sign(msg, key, algorithm_id=HMAC_SHA_256_128).encode()


def register_flood(args: argparse.Namespace) -> dict[str, Any]:
    """``count`` Map-Registers signed with ``key``, each from a new random xTR-ID."""
    rng = random.Random(args.seed)
    sock = _udp(args.source or "0.0.0.0")
    sent = notified = 0
    start = time.monotonic()
    nonce = int(time.time() * 1e6)  # increasing, as RFC 9301 §5.6 asks of an ETR
    for i in range(args.count):
        nonce += 1
        data = _register(args.prefix, args.rloc, args.key, rng.getrandbits(128), nonce)
        sent += _send(sock, data, (args.target, LISP_CONTROL_PORT))
        if i % 256 == 0:
            notified += _drain(sock)
    notified += _drain(sock)
    return {"sent": sent, "map_notifies": notified, "seconds": time.monotonic() - start}


def register_refused(args: argparse.Namespace) -> dict[str, Any]:
    """``count`` Map-Registers for a configured site, signed with a key that is not the site's."""
    rng = random.Random(args.seed)
    sock = _udp(args.source or "0.0.0.0")
    template = [
        _register(args.prefix, args.rloc, f"wrong-{i}", rng.getrandbits(128), i + 1) for i in range(64)
    ]
    sent = 0
    start = time.monotonic()
    for i in range(args.count):
        sent += _send(sock, template[i % len(template)], (args.target, LISP_CONTROL_PORT))
        if i % 1024 == 0:
            _drain(sock)
    return {"sent": sent, "seconds": time.monotonic() - start}


def mr_flood(args: argparse.Namespace) -> dict[str, Any]:
    """ECM Map-Requests at ``rate`` per second from each of ``sources`` for ``duration`` seconds."""
    rng = random.Random(args.seed)
    sources = [s for s in args.sources.split(",") if s]
    eid_space = ip_network(args.eid_space)
    socks = [_udp(s) for s in sources]
    ligs = [
        Lig(ip_address(args.eid or str(eid_space.network_address)), ip_address(s), ip_address(args.target),
            port=sock.getsockname()[1])
        for s, sock in zip(sources, socks, strict=True)
    ]
    sent = replies = 0
    start = time.monotonic()
    interval = 1.0 / args.rate
    next_round = start
    while True:
        now = time.monotonic()
        if now - start >= args.duration:
            break
        if now < next_round:
            ready, _, _ = select.select(socks, [], [], next_round - now)
            for sock in ready:
                replies += _drain(sock)
            continue
        next_round += interval
        for lig, sock in zip(ligs, socks, strict=True):
            if not args.eid:
                lig.eid = _random_host(rng, eid_space)
            sent += _send(sock, lig.request(now), (args.target, LISP_CONTROL_PORT))
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        ready, _, _ = select.select(socks, [], [], 0.1)
        for sock in ready:
            replies += _drain(sock)
    return {"sources": len(sources), "sent": sent, "replies": replies, "seconds": time.monotonic() - start}


def _random_host(rng: random.Random, net: Any) -> Any:
    return net.network_address + rng.randrange(net.num_addresses)


_NASTY_SOURCES = ("224.0.0.1", "255.255.255.255", "127.0.0.1", "0.0.0.0", "239.1.2.3")


def _inner(rng: random.Random, eid_space: IPv4Network, reply_to: str) -> bytes:
    src = rng.choice((*_NASTY_SOURCES, reply_to, str(_random_host(rng, ip_network("10.0.0.0/8")))))
    dst = _random_host(rng, eid_space)
    payload = rng.randbytes(rng.randrange(8, 64))
    ttl = rng.choice((1, 1, 2, 64))
    return udp_packet(IPv4Address(src), dst, rng.randrange(1024, 65535), LISP_CONTROL_PORT, payload, ttl=ttl)


def gre_fuzz(args: argparse.Namespace) -> dict[str, Any]:
    """``count`` GRE packets to ``target``; counts the ICMP errors that come back to this host.

    With ``--spoof`` (a tunnel peer's underlay address) and ``--key`` (that tunnel's GRE key) the
    packets pass the node's tunnel demultiplexing and reach its forwarder, which is where ICMP
    errors are made; without them they test the GRE engine's own drops.
    """
    rng = random.Random(args.seed)
    eid_space = ip_network(args.eid_space)
    assert isinstance(eid_space, IPv4Network)
    if args.spoof:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # we write the header
    else:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, GRE_PROTO)
    raw.setblocking(False)
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    icmp.setblocking(False)
    gre = _GRE_IPV4 if args.gre_key < 0 else struct.pack("!HHI", 0x2000, 0x0800, args.gre_key)
    src, dst = IPv4Address(args.spoof or "0.0.0.0"), IPv4Address(args.target)
    sent = icmp_seen = 0
    start = time.monotonic()
    for i in range(args.count):
        if i % 2:
            packet = gre + _inner(rng, eid_space, args.reply_to)
        else:
            packet = gre + rng.randbytes(rng.randrange(0, 96)) if args.spoof else rng.randbytes(96)
        if args.spoof:
            packet = ip_header(src, dst, GRE_PROTO, len(packet), dont_fragment=False) + packet
        sent += _send(raw, packet, (args.target, 0))
        if i % 256 == 0:
            icmp_seen += _drain(icmp)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        if select.select([icmp], [], [], 0.1)[0]:
            icmp_seen += _drain(icmp)
    return {"sent": sent, "icmp_received": icmp_seen, "seconds": time.monotonic() - start}


def _connect(host: str, port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    # A tiny receive buffer makes the server's side back up after a few kilobytes.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


def stream_clients(args: argparse.Namespace) -> dict[str, Any]:
    """``count`` stream clients that send their request and never read, held for ``duration`` s."""
    auth = f"Authorization: Bearer {args.token}\r\n" if args.token else ""
    request = f"GET /v1/stream HTTP/1.1\r\nHost: {args.target}\r\n{auth}\r\n".encode()
    socks: list[socket.socket] = []
    refused = 0
    for _ in range(args.count):
        try:
            sock = _connect(args.target, args.port)
            sock.sendall(request)
            socks.append(sock)
        except OSError:
            refused += 1
    time.sleep(args.duration)  # the attack is to hold them open, unread, this long
    closed = sum(_closed_by_peer(s) for s in socks)
    for s in socks:
        s.close()
    return {"opened": len(socks), "refused": refused, "closed_by_server": closed}


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server has closed (or reset) this connection: EOF after whatever it sent."""
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def route_churn(args: argparse.Namespace) -> dict[str, Any]:
    """``count`` announce + withdraw pairs of prefixes under ``prefix`` through the write API."""
    base = ip_network(args.prefix)
    # /24s where the base has room for ``count`` of them, longer prefixes where it has not.
    length = min(base.max_prefixlen, max(24, base.prefixlen + max(1, args.count - 1).bit_length()))
    subnets = base.subnets(new_prefix=length) if base.prefixlen < length else iter([base])
    headers = {"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"}
    url = f"http://{args.target}:{args.port}/v1/routes"
    ok = failed = 0
    start = time.monotonic()
    for _, net in zip(range(args.count), subnets, strict=False):
        for method, target, body in (
            ("POST", url, json.dumps({"prefix": str(net)}).encode()),
            ("DELETE", f"{url}/{net}", None),
        ):
            req = urllib.request.Request(target, data=body, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    ok += resp.status < 300
            except (urllib.error.URLError, OSError):
                failed += 1
    return {"requests": ok, "failed": failed, "seconds": time.monotonic() - start}


def half_open(args: argparse.Namespace) -> dict[str, Any]:
    """``count`` connections that send half a request line and stop; how many the server closed."""
    socks: list[socket.socket] = []
    refused = 0
    for _ in range(args.count):
        try:
            sock = _connect(args.target, args.port)
            sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
            socks.append(sock)
        except OSError:
            refused += 1
    deadline = time.monotonic() + args.duration
    closed = 0
    while time.monotonic() < deadline:
        closed = sum(_closed_by_peer(s) for s in socks)
        if closed == len(socks):
            break
        time.sleep(0.5)
    for s in socks:
        s.close()
    return {"opened": len(socks), "refused": refused, "closed_by_server": closed,
            "seconds": args.duration - max(0.0, deadline - time.monotonic())}


ATTACKS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "register-flood": register_flood,
    "register-refused": register_refused,
    "mr-flood": mr_flood,
    "gre-fuzz": gre_fuzz,
    "stream-clients": stream_clients,
    "route-churn": route_churn,
    "half-open": half_open,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m alt_router.lab.attacks", description=__doc__.split("\n")[0])
    p.add_argument("attack", choices=sorted(ATTACKS))
    p.add_argument("--target", required=True, help="the address attacked (inside the lab)")
    p.add_argument("--port", type=int, default=8179, help="HTTP port (API attacks)")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--duration", type=float, default=10.0, help="seconds (timed attacks)")
    p.add_argument("--rate", type=float, default=50.0, help="requests/s per source (mr-flood)")
    p.add_argument("--sources", default="", help="comma-separated source addresses (mr-flood)")
    p.add_argument("--source", default="", help="source address to bind")
    p.add_argument("--eid", default="", help="one EID to ask for (mr-flood; default: random in --eid-space)")
    p.add_argument("--eid-space", default="153.16.0.0/12")
    p.add_argument("--prefix", default="153.16.1.0/24", help="site prefix (register-*), base (route-churn)")
    p.add_argument("--rloc", default="10.0.0.2", help="RLOC in the Map-Registers")
    p.add_argument("--key", default="", help="site key (register-flood)")
    p.add_argument("--token", default="", help="API token")
    p.add_argument("--reply-to", default="10.0.0.1", help="a real host among the fuzz's inner sources")
    p.add_argument("--spoof", default="", help="gre-fuzz: outer source (a tunnel peer's underlay address)")
    p.add_argument("--gre-key", type=int, default=-1, help="gre-fuzz: GRE key of that tunnel (default none)")
    p.add_argument("--seed", type=int, default=1)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.count < 0 or args.duration < 0 or args.rate <= 0:
        print("attacks: --count and --duration must be >= 0, --rate > 0", file=sys.stderr)
        return 2
    result = ATTACKS[args.attack](args)
    result["attack"] = args.attack
    result["pid"] = os.getpid()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
