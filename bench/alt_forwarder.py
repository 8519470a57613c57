"""The ALT forwarder's decision alone (no GRE, no sockets), one core.

Run:  python bench/alt_forwarder.py [--routes 256] [--destinations 1000] [-n 300000]

A RIB with ``--routes`` IPv4 /16 routes learned from one peer, ``--destinations``
distinct EIDs, and ``AltForwarder.forward`` called on pre-built ALT datagrams:
first with the per-destination cache (the daemon's case), then ``fast_forward``
(the cached common case without a verdict object), then uncached (a RIB lookup per
datagram).  Last, the whole in-process hop without syscalls: GRE-in-IPv4 packets into
``Dataplane.receive_ipv4`` with the forwarder's hook (the general path) and into
``receive_ipv4_fast`` with its fast hook too (what the engine runs).  For the hop
with sockets see bench/forward.py.
"""

from __future__ import annotations

import argparse
import time
from ipaddress import IPv4Address, ip_network

from alt_router.alt import AltForwarder
from alt_router.gre import header as gre
from alt_router.gre.config import TunnelConfig
from alt_router.gre.dataplane import Dataplane
from alt_router.inet import PROTO_GRE, ipv4_header, udp_packet
from alt_router.rib import AnnouncedRoute, PeerInfo, Rib, Update


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routes", type=int, default=256, help="routes in the RIB (<= 65536)")
    ap.add_argument("--destinations", type=int, default=1000, help="distinct EIDs in the datagram mix")
    ap.add_argument("-n", type=int, default=300_000, help="datagrams in the cached run")
    args = ap.parse_args()
    hop = IPv4Address("10.255.1.2")
    rib = Rib(65001, [ip_network("0.0.0.0/0")], [PeerInfo("b", 65002, (hop,))])
    rib.peer_up("b", 0.0)
    rib.apply(Update("b", announce=tuple(
        AnnouncedRoute(ip_network(f"{10 + i // 256}.{i % 256}.0.0/16"), hop, (65002,))
        for i in range(args.routes)
    )))
    src = IPv4Address("192.0.2.1")
    # Destination i lies in route i % routes, so every datagram has a route.
    eids = [
        IPv4Address(f"{10 + (i % args.routes) // 256}.{i % args.routes % 256}.{i // 256 % 256}.{i % 250 + 1}")
        for i in range(args.destinations)
    ]
    packets = [udp_packet(src, eid, 4342, 4342, bytes(60)) for eid in eids]
    m = len(packets)

    cached = AltForwarder.for_rib(rib, {"b": "gre-b"}, router_v4=IPv4Address("10.255.1.1"))
    forward = cached.forward
    t = time.perf_counter()
    for i in range(args.n):
        forward(packets[i % m], "gre-a")
    rate = args.n / (time.perf_counter() - t)
    print(f"cached:   {rate:>12,.0f} datagrams/s ({args.routes} routes, {m} destinations)")

    fast = cached.fast_forward
    t = time.perf_counter()
    for i in range(args.n):
        fast(packets[i % m], 0, "gre-a")
    rate = args.n / (time.perf_counter() - t)
    print(f"fast:     {rate:>12,.0f} datagrams/s (fast_forward, cached)")

    uncached = AltForwarder(rib, {"b": "gre-b"})
    n = max(1, args.n // 6)
    t = time.perf_counter()
    for i in range(n):
        uncached.forward(packets[i % m], "gre-a")
    rate = n / (time.perf_counter() - t)
    print(f"uncached: {rate:>12,.0f} datagrams/s (RIB lookup per datagram)")
    assert cached.counters["forwarded"] == 2 * args.n, cached.counters

    a, b, here = IPv4Address("198.51.100.2"), IPv4Address("198.51.100.3"), IPv4Address("198.51.100.1")
    tunnels = [TunnelConfig("gre-a", here, a, key=1), TunnelConfig("gre-b", here, b, key=2)]
    outer = []
    for p in packets:
        wire = gre.encode(gre.GreHeader(gre.PROTO_IPV4, 1), p)
        outer.append(ipv4_header(a, here, PROTO_GRE, len(wire)) + wire)
    for name, plane, receive in (
        ("general", (d := Dataplane(tunnels, cached.hook)), d.receive_ipv4),
        ("fast", (e := Dataplane(tunnels, cached.hook, cached.fast_forward)), e.receive_ipv4_fast),
    ):
        t = time.perf_counter()
        for i in range(args.n):
            receive(outer[i % m])
        rate = args.n / (time.perf_counter() - t)
        assert plane.counters["gre-b"].tx_packets == args.n
        print(f"GRE hop, {name + ':':8s} {rate:>9,.0f} datagrams/s (decapsulate, decide, encapsulate; "
              "no syscalls)")


if __name__ == "__main__":
    main()
