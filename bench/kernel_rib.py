"""Kernel RIB benchmark: how soon the FRR-mode node's RIB follows the kernel's ALT table (issue 10).

    sudo python bench/kernel_rib.py                     # 200,000 routes
    sudo python bench/kernel_rib.py --routes 1000000

In a fresh namespace with one veth (``alt-b``, the tunnel of peer ``b``), ``ip -batch`` adds N
IPv4 /24s with ``proto bgp`` (as zebra installs BGP routes), then deletes them.  Each phase runs
twice: ``ip`` alone (the reference: the kernel's own cost of taking the routes), then ``ip`` again
while ``KernelRib`` (alt_router/node/kernel_rib.py) mirrors the table into a ``Rib`` on an asyncio
loop in this process.  Reported per phase: the reference time, ``ip``'s time with the reader
running, the time until the ``Rib`` holds exactly the kernel's routes (from the same start), and
ratio = that / the reference.  Then: the time of the initial dump of a full table into an empty
``Rib`` (a node started beside a running zebra) and the RSS that table added (the FRR-mode
Loc-RIB, ``rib/kernel_loc.py``), the reader's counters (``overflow`` should be 0),
and the decode cost per message of ``rib/kernel_routes.py`` against pyroute2's parser on the same
bytes (the reason the decoder is hand-written).

Needs root.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alt_router.node.kernel_rib import KernelRib
from alt_router.rib import Rib
from alt_router.rib.kernel_routes import KernelRouteDecoder, dump_links_request, dump_routes_request
from alt_router.rib.paths import PeerInfo

DEV = "alt-b"
GATEWAY = "10.255.0.2"


def _prefixes(n: int) -> list[str]:
    # Spread /24s over the unicast space deterministically: index i -> a.b.c.0/24 (as bench/lpm.py).
    return [f"{1 + (i >> 16) % 223}.{(i >> 8) & 0xFF}.{i & 0xFF}.0/24" for i in range(n)]


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True)


def _setup(ns: str) -> None:
    subprocess.run(["ip", "netns", "add", ns], check=True)
    _ip(ns, "link", "add", DEV, "type", "veth", "peer", "name", f"{DEV}-p")
    _ip(ns, "link", "set", DEV, "up")
    _ip(ns, "link", "set", f"{DEV}-p", "up")
    _ip(ns, "addr", "add", "10.255.0.1/30", "dev", DEV)


def _batch_files(directory: str, prefixes: list[str]) -> tuple[str, str]:
    add = os.path.join(directory, "add")
    delete = os.path.join(directory, "del")
    with open(add, "w") as f:
        f.writelines(f"route add {p} via {GATEWAY} dev {DEV} proto bgp\n" for p in prefixes)
    with open(delete, "w") as f:
        f.writelines(f"route del {p} proto bgp\n" for p in prefixes)
    return add, delete


def _ip_alone(ns: str, batch: str) -> float:
    t0 = time.monotonic()
    _ip(ns, "-batch", batch)
    return time.monotonic() - t0


async def _with_reader(rib: Rib, ns: str, batch: str, want: int) -> tuple[float, float, float]:
    """(ip's time, time until the RIB holds ``want`` routes, both from ip's start; this process's
    CPU seconds meanwhile: the reader's cost, which FRR would be short of on a busy machine)."""
    cpu0 = time.process_time()
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec("ip", "-n", ns, "-batch", batch)
    ip_done = 0.0
    while True:
        if ip_done == 0.0 and proc.returncode is not None:
            ip_done = time.monotonic() - t0
        if len(rib) == want and ip_done:
            return ip_done, time.monotonic() - t0, time.process_time() - cpu0
        if len(rib) == want and proc.returncode is None:
            await proc.wait()
            continue
        await asyncio.sleep(0.005)


async def _measure(ns: str, add: str, delete: str, n: int) -> dict[str, object]:
    peer = PeerInfo("b", 65001, (IPv4Address(GATEWAY),), max_prefix=n + 1)
    rib = Rib(65000, [], [peer])
    krib = KernelRib(rib, lambda name: "b" if name == DEV else None, netns=ns)
    await krib.start()
    ip_add, rib_add, cpu_add = await _with_reader(rib, ns, add, n)
    assert rib.lookup("1.0.0.1") is not None
    ip_del, rib_del, cpu_del = await _with_reader(rib, ns, delete, 0)
    counters = krib.counters()
    krib.stop()
    return {"ip_add_s": ip_add, "rib_add_s": rib_add, "cpu_add_s": cpu_add,
            "ip_del_s": ip_del, "rib_del_s": rib_del, "cpu_del_s": cpu_del, "counters": counters}


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


async def _initial_dump(ns: str, n: int) -> tuple[float, int]:
    """(seconds, RSS in KiB the full table added to this process: the FRR-mode Loc-RIB's size)."""
    rib = Rib(65000, [], [PeerInfo("b", 65001, (IPv4Address(GATEWAY),), max_prefix=n + 1)])
    krib = KernelRib(rib, lambda name: "b" if name == DEV else None, netns=ns)
    rss0 = _rss_kb()
    t0 = time.monotonic()
    await krib.start()
    took = time.monotonic() - t0
    assert len(rib) == n, (len(rib), n)
    rss = _rss_kb() - rss0
    krib.stop()
    return took, rss


def _dump_bytes(ns: str, request: bytes) -> bytes:
    """The raw messages of one dump in the namespace (what the decoders get)."""
    sock = pyroute2_netns.create_socket(ns, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE, flags=0)
    try:
        sock.send(request)
        parts = []
        while True:
            data = sock.recv(1 << 16)
            parts.append(data)
            if len(data) >= 16 and int.from_bytes(data[4:6], sys.byteorder) == 3:  # NLMSG_DONE
                break
        return b"".join(parts)
    finally:
        sock.close()


def _first_messages(data: bytes, count: int) -> bytes:
    off = 0
    for _ in range(count):
        if off >= len(data):
            break
        off += (int.from_bytes(data[off:off + 4], sys.byteorder) + 3) & ~3
    return data[:off]


def _decode_costs(links: bytes, data: bytes, n: int) -> dict[str, float]:
    decoder = KernelRouteDecoder(lambda name: "b", table=254)
    decoder.feed(links, 0.0)  # interface names first, as KernelRib dumps them
    t0 = time.process_time()
    decoded = decoder.feed(data, 0.0)
    ours = time.process_time() - t0
    assert len(decoded.changes) == n, (len(decoded.changes), n)
    # pyroute2 on at most 100,000 messages: at its rate a million would add minutes to the run.
    sample = _first_messages(data, 100_000)
    marshal = MarshalRtnl()
    t0 = time.process_time()
    count = 0
    for msg in marshal.parse(sample):
        # What the reader needs of each message: the attributes a route is made of.
        msg.get_attr("RTA_DST")
        msg.get_attr("RTA_OIF")
        msg.get_attr("RTA_GATEWAY")
        count += 1
    theirs = time.process_time() - t0
    return {"alt_router_us_per_msg": ours / n * 1e6, "pyroute2_us_per_msg": theirs / max(count, 1) * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--routes", type=int, default=200_000, help="IPv4 /24s to add (default 200,000)")
    ap.add_argument("--dump-only", metavar="NETNS", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dump_only:
        # A fresh interpreter: the RSS the table adds, without the heap the live phases left.
        took, kb = asyncio.run(_initial_dump(args.dump_only, args.routes))
        print(json.dumps([took, kb]))
        return 0
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    n = args.routes
    ns = f"altkrib{os.getpid()}"
    result: dict[str, object] = {"routes": n}
    with tempfile.TemporaryDirectory() as tmp:
        add, delete = _batch_files(tmp, _prefixes(n))
        try:
            _setup(ns)
            ref_add = _ip_alone(ns, add)
            ref_del = _ip_alone(ns, delete)
            live = asyncio.run(_measure(ns, add, delete, n))
            _ip_alone(ns, add)
            out = subprocess.run([sys.executable, __file__, "--routes", str(n), "--dump-only", ns],
                                 check=True, capture_output=True, text=True).stdout
            dump_s, dump_kb = json.loads(out)
            links, routes = _dump_bytes(ns, dump_links_request(1)), _dump_bytes(ns, dump_routes_request(2))
            costs = _decode_costs(links, routes, n)
        finally:
            subprocess.run(["ip", "netns", "delete", ns], check=False)
    result.update({"ip_alone_add_s": ref_add, "ip_alone_del_s": ref_del, **live,
                   "initial_dump_s": dump_s, "initial_dump_rss_mb": round(dump_kb / 1024, 1), **costs})
    print(json.dumps(result, indent=1), file=sys.stderr)
    rows = [("add", ref_add, live["ip_add_s"], live["rib_add_s"], live["cpu_add_s"]),
            ("delete", ref_del, live["ip_del_s"], live["rib_del_s"], live["cpu_del_s"])]
    print(f"{n:,} proto-bgp IPv4 /24s")
    print(f"{'phase':8} {'ip alone':>10} {'ip+reader':>10} {'rib done':>10} {'ratio':>7} {'reader cpu':>11}")
    for phase, ref, ip_s, rib_s, cpu_s in rows:
        assert isinstance(ip_s, float) and isinstance(rib_s, float) and isinstance(cpu_s, float)
        print(f"{phase:8} {ref:9.2f}s {ip_s:9.2f}s {rib_s:9.2f}s {rib_s / ref:6.2f}x {cpu_s:10.2f}s")
    print(f"initial dump of {n:,} routes into an empty RIB: {dump_s:.2f}s, RSS +{dump_kb / 1024:.1f} MB "
          f"({dump_kb * 1024 / max(n, 1):.0f} bytes a route)")
    print(f"decode per message: alt_router {costs['alt_router_us_per_msg']:.2f} us, "
          f"pyroute2 {costs['pyroute2_us_per_msg']:.2f} us")
    counters = live["counters"]
    assert isinstance(counters, dict)
    print(f"overflow {counters['overflow']}, resyncs {counters['resyncs']}, reads {counters['reads']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
