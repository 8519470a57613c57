"""A node with a large table stops within 3 s of SIGTERM, even when ExaBGP is slow to go (issue 11)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from alt_router.bgp.supervisor import process_matches
from alt_router.lab import wait_until
from alt_router.node.config import parse_config
from alt_router.node.daemon import Node, serve
from alt_router.rib.paths import Attributes, Batch, Update

# An ExaBGP that ignores SIGTERM for as long as a big table's teardown can take.
STUBBORN = [sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
            "fake-exabgp"]
STOP_DEADLINE = 3.0


def config_text(state_dir: Path) -> str:
    return f"""
[node]
name = "big"
asn = 65001
router_id = "192.0.2.1"
state_dir = "{state_dir}"
max_prefix = 10000000
[eid]
accept = ["16.0.0.0/4"]
[api]
port = {20000 + os.getpid() % 20000}
[[peers]]
name = "s"
asn = 65100
families = ["ipv4"]
[peers.underlay]
local = "10.50.0.2"
remote = "10.50.0.1"
[peers.tunnel]
local_ipv4 = "10.255.1.2/30"
remote_ipv4 = "10.255.1.1"
"""


def fill(node: Node, count: int) -> None:
    up = {"type": "state", "neighbor": {"address": {"local": "10.255.1.2", "peer": "10.255.1.1"},
                                        "asn": {"local": 65001, "peer": 65100}, "state": "up"}}
    node.core.on_line(json.dumps(up), 0.0)
    base = int(IPv4Address("16.0.0.0")) >> 8
    attrs = Attributes(as_path=(65100,))
    hop = IPv4Address("10.255.1.1")
    step = 10_000
    for start in range(0, count, step):
        nets = tuple(f"{IPv4Address((base + i) << 8)}/24" for i in range(start, min(count, start + step)))
        node.core.rib.apply(Update("s", batches=(Batch(hop, attrs, nets),)), 1.0)
    node.bridge.freeze_routes()
    assert len(node.core.rib) == count


def ignores_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def stop_time(tmp_path: Path, routes: int) -> float:
    node = Node(parse_config(config_text(tmp_path)), with_tunnels=False, exabgp_argv=STUBBORN)
    fill(node, routes)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        task = loop.create_task(serve(node))
        await asyncio.to_thread(wait_until, lambda: node.supervisor.pid is not None, 30)
        pid = node.supervisor.pid
        assert pid is not None
        await asyncio.to_thread(wait_until, lambda: ignores_sigterm(pid), 30)
        start = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        await task
        took = time.monotonic() - start
        # ExaBGP is still closing its sessions, in its own session with its pidfile kept.
        assert process_matches(pid, ("fake-exabgp",))
        assert (tmp_path / "exabgp.pid").exists()
        return took

    took = asyncio.run(scenario())
    popen = node.supervisor._popen
    assert popen is not None
    popen.kill()
    popen.wait(10)
    return took


def test_sigterm_stops_a_node_with_100k_routes_within_3s(tmp_path: Path) -> None:
    assert stop_time(tmp_path, 100_000) < STOP_DEADLINE


@pytest.mark.slow
def test_sigterm_stops_a_node_with_1m_routes_within_3s(tmp_path: Path) -> None:
    assert stop_time(tmp_path, 1_000_000) < STOP_DEADLINE
