"""KernelRib against a real kernel table (FRR mode, issue 10): routes added with ``proto bgp`` in a
fresh namespace appear in the Rib and its event stream, deletions withdraw them, other protocols
are ignored, and a receive buffer overflow (ENOBUFS) is repaired by a fresh dump.

RFC 3549 §3.1.1 (route messages) and §2.3.2 (the netlink header) through linux rtnetlink: the
namespace's routes are read back exactly as zebra's would be.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import TypeVar

import pytest

from alt_router.lab import wait_until
from alt_router.node.kernel_rib import KernelRib
from alt_router.rib import Rib
from alt_router.rib.events import Record, RouteChange
from alt_router.rib.paths import PeerInfo
from tests.conftest import require_tool, run_lab_name

pytestmark = pytest.mark.netns

T = TypeVar("T")
PEERS = {"alt-b": "b"}


@pytest.fixture
def netns(root: None) -> Iterator[str]:
    """A fresh namespace with one veth, ``alt-b`` (peer b's tunnel), 10.255.0.1/30, up."""
    require_tool("ip")
    name = f"altkrib-{run_lab_name('krib')}"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ip(name, "link", "add", "alt-b", "type", "veth", "peer", "name", "alt-b-p")
        ip(name, "link", "set", "alt-b", "up")
        ip(name, "link", "set", "alt-b-p", "up")
        ip(name, "addr", "add", "10.255.0.1/30", "dev", "alt-b")
        ip(name, "-6", "addr", "add", "fd00::1/64", "dev", "alt-b", "nodad")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop on a thread of its own, as the daemon's: the test thread waits with wait_until."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def ip(netns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", netns, *args], check=True)


def on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> T:
    """``fn()`` run on the loop thread, which is the only one writing the Rib."""
    async def call() -> T:
        return fn()
    return asyncio.run_coroutine_threadsafe(call(), loop).result(30)


def make_rib() -> Rib:
    return Rib(65000, [], [PeerInfo("b", 65001, (IPv4Address("10.255.0.2"),))])


def start(loop: asyncio.AbstractEventLoop, krib: KernelRib) -> None:
    asyncio.run_coroutine_threadsafe(krib.start(), loop).result(30)


def keys(loop: asyncio.AbstractEventLoop, rib: Rib) -> set[str]:
    return on_loop(loop, lambda: {path.key for path in rib.routes()})


def kernel_bgp_keys(netns: str) -> set[str]:
    out: set[str] = set()
    for family in ("-4", "-6"):
        text = subprocess.run(["ip", "-n", netns, family, "route", "show", "proto", "bgp"],
                              capture_output=True, text=True, check=True).stdout
        out.update(line.split()[0] for line in text.splitlines() if line.strip())
    return out


def test_bgp_routes_follow_the_kernel_and_others_are_ignored(
    netns: str, loop: asyncio.AbstractEventLoop,
) -> None:
    ip(netns, "route", "add", "153.16.1.0/24", "via", "10.255.0.2", "dev", "alt-b", "proto", "bgp")
    ip(netns, "route", "add", "153.16.2.0/24", "via", "10.255.0.2", "dev", "alt-b", "proto", "static")
    rib = make_rib()
    krib = KernelRib(rib, PEERS.get, netns=netns, clock=lambda: 42.0)
    start(loop, krib)
    try:
        # The initial dump: only the BGP route.
        assert keys(loop, rib) == {"153.16.1.0/24"}
        path = rib.lookup("153.16.1.7")
        assert path is not None and (path.peer, path.next_hop, path.learned_at) == (
            "b", IPv4Address("10.255.0.2"), 42.0)
        assert rib.lookup("153.16.2.7") is None
        events: list[Record] = []
        on_loop(loop, lambda: rib.stream.subscribe(events.append))

        ip(netns, "route", "add", "153.16.3.0/24", "via", "10.255.0.2", "dev", "alt-b", "proto", "bgp")
        ip(netns, "-6", "route", "add", "2001:db8:3::/48", "via", "fd00::2", "dev", "alt-b", "proto", "bgp")
        # The node's own Map-Server site route (protocol 250, type local) is not an ALT route.
        ip(netns, "route", "add", "local", "153.16.9.0/24", "dev", "lo", "proto", "250", "table", "main")
        wait_until(lambda: rib.lookup("2001:db8:3::1"), 10, what="the IPv6 route in the Rib")
        wait_until(lambda: rib.lookup("153.16.3.1"), 10, what="the IPv4 route in the Rib")
        added = {r.event.key for r in events if isinstance(r.event, RouteChange) and r.event.kind == "add"}
        assert added == {"153.16.3.0/24", "2001:db8:3::/48"}
        assert rib.lookup("153.16.9.1") is None

        ip(netns, "route", "del", "153.16.3.0/24", "proto", "bgp")
        wait_until(lambda: rib.lookup("153.16.3.1") is None, 10, what="the deleted route gone")
        assert any(isinstance(r.event, RouteChange) and r.event.kind == "withdraw"
                   and r.event.key == "153.16.3.0/24" for r in events)
        # Another protocol's route replacing the BGP one in place: no RTM_DELROUTE, still gone.
        ip(netns, "route", "replace", "153.16.1.0/24", "via", "10.255.0.2", "dev", "alt-b", "proto", "static")
        wait_until(lambda: rib.lookup("153.16.1.1") is None, 10, what="the replaced route gone")
        counters = on_loop(loop, krib.counters)
        assert counters["other-protocol"] >= 1 and counters["overflow"] == 0
        ip(netns, "route", "add", "153.16.5.0/24", "via", "10.255.0.2", "dev", "alt-b", "proto", "bgp")
        wait_until(lambda: rib.lookup("153.16.5.1"), 10, what="one more IPv4 route in the Rib")

        # The tunnel goes down: the kernel flushes its IPv4 routes without a message each;
        # the reader resynchronises and the Rib follows.
        ip(netns, "link", "set", "alt-b", "down")
        wait_until(lambda: not keys(loop, rib), 10, what="the Rib empty after the link went down")
        assert on_loop(loop, krib.counters)["swept"] >= 1
    finally:
        on_loop(loop, krib.stop)


def test_overflow_resynchronises_to_the_kernel_table(
    netns: str, loop: asyncio.AbstractEventLoop, tmp_path: Path,
) -> None:
    ip(netns, "route", "add", "153.16.1.0/24", "via", "10.255.0.2", "dev", "alt-b", "proto", "bgp")
    ip(netns, "route", "add", "153.16.2.0/24", "via", "10.255.0.2", "dev", "alt-b", "proto", "bgp")
    rib = make_rib()
    # The smallest receive buffer the kernel allows: a few events fill it.
    krib = KernelRib(rib, PEERS.get, netns=netns, rcvbuf=1)
    start(loop, krib)
    try:
        assert keys(loop, rib) == {"153.16.1.0/24", "153.16.2.0/24"}
        batch = tmp_path / "routes"
        batch.write_text("".join(f"route add 10.{i >> 8}.{i & 255}.0/24 via 10.255.0.2 dev alt-b proto bgp\n"
                                 for i in range(3000)) + "route del 153.16.1.0/24 proto bgp\n")
        # Keep the loop from reading while the kernel sends 3,001 events into a tiny buffer.
        gate = threading.Event()
        loop.call_soon_threadsafe(gate.wait, 30)
        try:
            ip(netns, "-batch", str(batch))
        finally:
            gate.set()
        want = kernel_bgp_keys(netns)
        assert len(want) == 3001 and "153.16.1.0/24" not in want
        wait_until(lambda: keys(loop, rib) == want, 30, what="the Rib equal to the kernel's table",
                   on_timeout=lambda: str(on_loop(loop, krib.counters)))
        counters = on_loop(loop, krib.counters)
        assert counters["overflow"] >= 1 and counters["resyncs"] >= 1
        assert counters["swept"] >= 1  # 153.16.1.0/24: its delete was among the lost events
    finally:
        on_loop(loop, krib.stop)
