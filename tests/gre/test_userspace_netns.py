"""The userspace GRE data path between network namespaces, driven through ``alt-router tunnel``."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alt_router.lab import Lab, ProcessHandle, Topology, wait_until
from tests.conftest import require_tool

pytestmark = pytest.mark.netns

_labs = itertools.count()
PY = sys.executable

# a --eth0-- b --eth1-- c ; a also owns 192.0.2.9, a source no tunnel knows.
TOPOLOGY: dict[str, Any] = {
    "hosts": {"a": {}, "b": {"forwarding": True}, "c": {}},
    "links": [
        {
            "a": {
                "host": "a",
                "ifname": "eth0",
                "addresses": ["192.0.2.1/24", "192.0.2.9/24", "2001:db8:1::1/64"],
            },
            "b": {"host": "b", "ifname": "eth0", "addresses": ["192.0.2.2/24", "2001:db8:1::2/64"]},
        },
        {
            "a": {"host": "b", "ifname": "eth1", "addresses": ["198.51.100.2/24"]},
            "b": {"host": "c", "ifname": "eth0", "addresses": ["198.51.100.3/24"]},
        },
    ],
}


@pytest.fixture
def lab(root: None, tmp_path: Path) -> Iterator[Lab]:
    name = f"gu{os.getpid() % 10000}{next(_labs)}"
    with Lab(Topology.from_dict({"name": name, **TOPOLOGY}), workdir=tmp_path) as built:
        yield built


def read_stats(path: Path) -> dict[str, Any]:
    try:
        result: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return result


def start_tunnel(lab: Lab, host: str, *args: str) -> tuple[ProcessHandle, Path]:
    """Run ``alt-router tunnel`` on ``host``; return once its devices are up (the stats file appears)."""
    stats = lab.workdir / f"{host}-stats.json"
    proc = lab.spawn(
        host, [PY, "-m", "alt_router.cli", "-v", "tunnel", "--stats", str(stats), *args], name="tunnel"
    )

    def ready() -> bool:
        if not proc.running():
            raise AssertionError(f"alt-router tunnel on {host} exited {proc.returncode}:\n{proc.log_tail()}")
        return bool(read_stats(stats))

    wait_until(ready, 15, what=f"tunnel on {host}", on_timeout=proc.log_tail)
    return proc, stats


def pair(lab: Lab, *extra: str, v6_underlay: bool = False) -> tuple[Path, Path]:
    la, lb = ("2001:db8:1::1", "2001:db8:1::2") if v6_underlay else ("192.0.2.1", "192.0.2.2")
    _, sa = start_tunnel(lab, "a", "--name", "gre1", "--local", la, "--remote", lb, "--mode", "userspace",
                         "--address", "10.255.0.1/30", "--address", "fd00:255::1/64", *extra)
    _, sb = start_tunnel(lab, "b", "--name", "gre1", "--local", lb, "--remote", la, "--mode", "userspace",
                         "--address", "10.255.0.2/30", "--address", "fd00:255::2/64", *extra)
    return sa, sb


def ping(lab: Lab, host: str, dst: str, count: int = 3) -> None:
    lab.exec(host, ["ping", "-c", str(count), "-i", "0.2", "-W", "2", dst], timeout=20)


SERVER = textwrap.dedent("""
    import hashlib, socket, sys
    addr, ready = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 5001))
    s.listen(1)
    open(ready, "w").close()
    c, _ = s.accept()
    h, n = hashlib.sha256(), 0
    while chunk := c.recv(65536):
        h.update(chunk)
        n += len(chunk)
    c.sendall(f"{n} {h.hexdigest()}".encode())
    c.close()
""")

CLIENT = textwrap.dedent("""
    import socket, sys
    addr, size = sys.argv[1], int(sys.argv[2])
    data = bytes(i * 7 % 251 for i in range(size))
    c = socket.create_connection((addr, 5001), timeout=15)
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    print(c.recv(200).decode())
""")


def tcp_transfer(lab: Lab, server: str, client: str, addr: str, size: int = 1 << 20) -> None:
    ready = lab.workdir / f"server-{addr.replace(':', '_')}.ready"
    lab.spawn(server, [PY, "-c", SERVER, addr, str(ready)], name="tcpserver")
    wait_until(ready.exists, 10, what="TCP server")
    out = lab.exec(client, [PY, "-c", CLIENT, addr, str(size)], timeout=30).stdout.split()
    expected = hashlib.sha256(bytes(i * 7 % 251 for i in range(size))).hexdigest()
    assert out == [str(size), expected]


@pytest.mark.parametrize(
    ("extra", "v6_underlay"),
    [
        pytest.param((), False, id="v4-underlay"),
        pytest.param(("--key", "42"), False, id="v4-underlay-key"),
        pytest.param(("--key", "7", "--csum", "--seq"), True, id="v6-underlay-key-csum-seq"),
    ],
)
def test_ping_and_tcp_across_a_userspace_tunnel(lab: Lab, extra: tuple[str, ...], v6_underlay: bool) -> None:
    _, sb = pair(lab, *extra, v6_underlay=v6_underlay)
    ping(lab, "a", "10.255.0.2")
    ping(lab, "a", "fd00:255::2")
    tcp_transfer(lab, "b", "a", "10.255.0.2")
    tcp_transfer(lab, "a", "b", "fd00:255::1", size=256 * 1024)
    stats = wait_until(lambda: (s := read_stats(sb)) and s["tunnels"]["gre1"]["rx_bytes"] > 1 << 20 and s,
                       5, what="stats to catch up")
    assert stats["mode"] == "userspace"
    assert stats["tunnels"]["gre1"]["drops"] == {}
    link = lab.exec("a", ["ip", "-j", "link", "show", "gre1"]).stdout
    expected_mtu = 1500 - (40 if v6_underlay else 20) - 4 - 4 * len([x for x in extra if x.startswith("--")])
    assert json.loads(link)[0]["mtu"] == expected_mtu


def test_middle_host_serves_two_tunnels_from_one_process(lab: Lab) -> None:
    conf = lab.workdir / "tunnels.toml"
    conf.write_text(textwrap.dedent("""
        mode = "userspace"
        [[tunnel]]
        name = "to-a"
        local = "192.0.2.2"
        remote = "192.0.2.1"
        key = 1
        addresses = ["10.255.1.2/30", "fd00:1::2/64"]
        [[tunnel]]
        name = "to-c"
        local = "198.51.100.2"
        remote = "198.51.100.3"
        key = 2
        addresses = ["10.255.2.1/30", "fd00:2::1/64"]
    """))
    start_tunnel(lab, "b", "-c", str(conf))
    start_tunnel(lab, "a", "--name", "gre1", "--local", "192.0.2.1", "--remote", "192.0.2.2", "--key", "1",
                 "--address", "10.255.1.1/30", "--address", "fd00:1::1/64")
    start_tunnel(lab, "c", "--name", "gre1", "--local", "198.51.100.3", "--remote", "198.51.100.2",
                 "--key", "2", "--address", "10.255.2.2/30", "--address", "fd00:2::2/64")
    lab.exec("a", ["ip", "route", "add", "10.255.2.0/30", "via", "10.255.1.2"])
    lab.exec("a", ["ip", "-6", "route", "add", "fd00:2::/64", "via", "fd00:1::2"])
    lab.exec("c", ["ip", "route", "add", "10.255.1.0/30", "via", "10.255.2.1"])
    lab.exec("c", ["ip", "-6", "route", "add", "fd00:1::/64", "via", "fd00:2::1"])
    ping(lab, "a", "10.255.2.2")
    ping(lab, "c", "fd00:1::1")


def test_tshark_decodes_our_packets_as_gre(lab: Lab) -> None:
    tshark = require_tool("tshark")
    pcap = lab.workdir / "underlay.pcap"
    pair(lab, "--key", "42")
    cap = lab.spawn(
        "b", [tshark, "-i", "eth0", "-f", "ip proto 47", "-w", str(pcap), "-c", "4"], name="tshark"
    )
    try:
        # tshark needs a moment to attach; keep pinging until it has its four packets.
        def captured() -> bool:
            subprocess.run(
                ["ip", "netns", "exec", lab.netns("a"), "ping", "-c", "1", "-W", "1", "10.255.0.2"],
                capture_output=True, check=False,
            )
            return not cap.running()

        wait_until(captured, 20, what="tshark to capture 4 GRE packets", on_timeout=cap.log_tail)
    finally:
        cap.stop()
    decoded = subprocess.run([tshark, "-r", str(pcap), "-T", "json"], capture_output=True, text=True,
                             check=True)
    packets = [p["_source"]["layers"] for p in json.loads(decoded.stdout)]
    assert len(packets) == 4
    for layers in packets:
        assert "gre" in layers, layers.keys()
        gre = layers["gre"]
        assert int(gre["gre.key"], 0) == 42
        # The kernel also sends IPv6 (router solicitations) into the TUN: typed by the inner header.
        assert gre["gre.proto"] == ("0x86dd" if "ipv6" in layers else "0x0800"), layers.keys()
    assert any("icmp" in layers and layers["gre"]["gre.proto"] == "0x0800" for layers in packets)


MALFORMED = textwrap.dedent("""
    import socket, struct, sys
    dst = sys.argv[1]
    # A real ICMP echo so that a wrongly accepted packet would be visible.
    inner = bytes.fromhex("450000540001400040010000" "0affff01" "0aff0002") + bytes(64)
    key = struct.pack("!I", 42)
    bad = [
        b"\\x20\\x01\\x08\\x00" + key + inner,                  # version 1
        b"\\x60\\x00\\x08\\x00\\x00\\x00\\x00\\x00" + key + inner,  # routing bit
        b"\\x20\\x00\\x08",                                     # truncated
        b"\\xa0\\x00\\x08\\x00\\xde\\xad\\x00\\x00" + key + inner,  # bad checksum
        b"\\x20\\x00\\x08\\x00" + struct.pack("!I", 99) + inner,    # wrong key
    ]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
    for p in bad:
        s.sendto(p, (dst, 0))
    u = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
    u.bind(("192.0.2.9", 0))
    u.sendto(b"\\x20\\x00\\x08\\x00" + key + inner, (dst, 0))   # from an unknown remote
""")


def test_malformed_gre_is_dropped_by_reason_and_traffic_continues(lab: Lab) -> None:
    _, sb = pair(lab, "--key", "42")
    # The kernel's own IPv6 chatter on a's TUN (MLD reports, router solicitations) crosses the tunnel
    # as well-formed GRE and counts as received: silence it, then count from here.
    lab.exec("a", ["sysctl", "-q", "-w", "net.ipv6.conf.gre1.disable_ipv6=1"])
    silenced = time.time()
    fresh = wait_until(lambda: (st := read_stats(sb)) and st.get("time", 0) > silenced and st, 5,
                       what="tunnel stats written after the sysctl")
    rx_before = fresh["tunnels"]["gre1"]["rx_packets"]
    lab.exec("a", [PY, "-c", MALFORMED, "192.0.2.2"])
    expected = {"bad-version": 1, "routing-bit": 1, "truncated": 1, "bad-checksum": 1, "wrong-key": 1}

    def counted() -> dict[str, Any]:
        s = read_stats(sb)
        return s if s and s["tunnels"]["gre1"]["drops"] == expected else {}

    stats = wait_until(counted, 5, what="drop counters", on_timeout=lambda: json.dumps(read_stats(sb)))
    assert stats["unmatched"]["drops"] == {"unknown-remote": 1}
    assert stats["tunnels"]["gre1"]["rx_packets"] == rx_before  # none of the malformed ones
    ping(lab, "a", "10.255.0.2")

    # A TUN that is down: packets for it are counted, not fatal; back up, traffic flows again.
    lab.exec("b", ["ip", "link", "set", "gre1", "down"])
    lab.exec("a", ["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.255.0.2"], check=False)
    wait_until(lambda: read_stats(sb)["tunnels"]["gre1"]["drops"].get("tun-write-error", 0) >= 1, 5,
               what="tun-write-error to be counted")
    lab.exec("b", ["ip", "link", "set", "gre1", "up"])
    lab.exec("b", ["ip", "addr", "replace", "10.255.0.2/30", "dev", "gre1"])
    ping(lab, "a", "10.255.0.2")


def tun_devices(lab: Lab, host: str) -> list[str]:
    out = lab.exec(host, ["ip", "-j", "-d", "link", "show"]).stdout
    return [link["ifname"] for link in json.loads(out) if link.get("linkinfo", {}).get("info_kind") == "tun"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_shutdown_removes_the_tun_devices(lab: Lab, sig: signal.Signals) -> None:
    conf = lab.workdir / "tunnels.toml"
    conf.write_text(textwrap.dedent("""
        [[tunnel]]
        name = "t1"
        local = "192.0.2.2"
        remote = "192.0.2.1"
        [[tunnel]]
        name = "t2"
        local = "198.51.100.2"
        remote = "198.51.100.3"
    """))
    proc, stats = start_tunnel(lab, "b", "-c", str(conf), "--mode", "userspace")
    assert sorted(tun_devices(lab, "b")) == ["t1", "t2"]
    proc.signal(sig)
    proc.popen.wait(10)
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, proc.log_tail()
        assert "t1" in read_stats(stats)["tunnels"]
    wait_until(lambda: tun_devices(lab, "b") == [], 5, what="TUN devices to disappear")


HOOK_ROUTER = textwrap.dedent("""
    import asyncio, json, signal, sys, time
    from ipaddress import ip_address, ip_interface
    from alt_router.gre.config import TunnelConfig
    from alt_router.gre.dataplane import DELIVER, Drop, Forward
    from alt_router.gre.userspace import Engine
    from alt_router.inet import checksum

    ready, out, threaded = sys.argv[1], sys.argv[2], sys.argv[3:] == ["thread"]
    tunnels = [
        TunnelConfig("to-a", ip_address("192.0.2.2"), ip_address("192.0.2.1"), key=1,
                     addresses=(ip_interface("10.255.1.2/30"),)),
        TunnelConfig("to-c", ip_address("198.51.100.2"), ip_address("198.51.100.3"), key=2,
                     addresses=(ip_interface("10.255.2.1/30"),)),
    ]
    routes = {bytes([10, 255, 2, 2]): "to-c", bytes([10, 255, 1, 1]): "to-a"}

    def hook(tunnel, packet):
        target = routes.get(packet[16:20]) if packet[0] == 0x45 else None
        if target is None or target == tunnel.name:
            return DELIVER
        if packet[8] <= 1:
            return Drop("ttl-expired")
        head = packet[:8] + bytes([packet[8] - 1, packet[9]]) + b"\\0\\0" + packet[12:20]
        head = head[:10] + checksum(head).to_bytes(2, "big") + head[12:]
        return Forward(target, head + packet[20:])

    def stall(seconds):
        # What a Map-Register flood does to the node's loop: Python flat out, holding the GIL.
        open(ready + ".stalling", "w").close()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        open(ready + ".stalled", "w").close()

    async def main():
        engine = Engine(tunnels, hook)
        engine.open()
        loop = asyncio.get_running_loop()
        if threaded:
            sys.setswitchinterval(0.001)
            engine.start(loop)
        else:
            engine.attach(loop)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, lambda: loop.call_soon(stall, 8.0))
        open(ready, "w").close()
        await stop.wait()
        engine.close()
        with open(out, "w") as f:
            json.dump(engine.stats(), f)

    asyncio.run(main())
""")


def test_inner_hook_forwards_between_tunnels_without_the_kernel(lab: Lab) -> None:
    """The issue-5 design: decapsulate, decide, re-encapsulate in one pass, under asyncio."""
    lab.exec("b", ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
    ready, out = lab.workdir / "hook.ready", lab.workdir / "hook-stats.json"
    router = lab.spawn("b", [PY, "-c", HOOK_ROUTER, str(ready), str(out)], name="hookrouter")
    wait_until(ready.exists, 15, what="hook router", on_timeout=router.log_tail)
    start_tunnel(lab, "a", "--name", "gre1", "--local", "192.0.2.1", "--remote", "192.0.2.2", "--key", "1",
                 "--address", "10.255.1.1/30")
    start_tunnel(lab, "c", "--name", "gre1", "--local", "198.51.100.3", "--remote", "198.51.100.2",
                 "--key", "2", "--address", "10.255.2.2/30")
    lab.exec("a", ["ip", "route", "add", "10.255.2.0/30", "via", "10.255.1.2"])
    lab.exec("c", ["ip", "route", "add", "10.255.1.0/30", "via", "10.255.2.1"])
    result = lab.exec("a", ["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.255.2.2"], timeout=20)
    assert "ttl=63" in result.stdout  # c's reply, decremented once by the hook
    router.stop()
    stats = json.loads(out.read_text())
    assert stats["tunnels"]["to-a"]["rx_packets"] >= 3 and stats["tunnels"]["to-c"]["tx_packets"] >= 3
    assert stats["tunnels"]["to-c"]["rx_packets"] >= 3 and stats["tunnels"]["to-a"]["tx_packets"] >= 3


def test_threaded_engine_forwards_while_its_event_loop_is_stalled(lab: Lab) -> None:
    """Issue 11: with the engine in its data-plane thread, a frozen event loop stops nothing."""
    lab.exec("b", ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
    ready, out = lab.workdir / "hook.ready", lab.workdir / "hook-stats.json"
    router = lab.spawn("b", [PY, "-c", HOOK_ROUTER, str(ready), str(out), "thread"], name="hookrouter")
    wait_until(ready.exists, 15, what="hook router", on_timeout=router.log_tail)
    start_tunnel(lab, "a", "--name", "gre1", "--local", "192.0.2.1", "--remote", "192.0.2.2", "--key", "1",
                 "--address", "10.255.1.1/30")
    start_tunnel(lab, "c", "--name", "gre1", "--local", "198.51.100.3", "--remote", "198.51.100.2",
                 "--key", "2", "--address", "10.255.2.2/30")
    lab.exec("a", ["ip", "route", "add", "10.255.2.0/30", "via", "10.255.1.2"])
    lab.exec("c", ["ip", "route", "add", "10.255.1.0/30", "via", "10.255.2.1"])
    router.signal(signal.SIGUSR1)
    stalling, stalled = Path(f"{ready}.stalling"), Path(f"{ready}.stalled")
    wait_until(stalling.exists, 10, what="the router's loop to stall", on_timeout=router.log_tail)
    result = lab.exec("a", ["ping", "-c", "5", "-i", "0.2", "-W", "1", "10.255.2.2"], timeout=20)
    assert not stalled.exists(), "the stall ended before the pings did: the test proves nothing"
    assert " 0% packet loss" in result.stdout and "ttl=63" in result.stdout, result.stdout
    wait_until(stalled.exists, 20, what="the stall to end", on_timeout=router.log_tail)
    router.stop()
    stats = json.loads(out.read_text())
    assert stats["dataplane_thread"] is False  # stopped by close() before the dump
    assert stats["tunnels"]["to-a"]["rx_packets"] >= 5 and stats["tunnels"]["to-c"]["tx_packets"] >= 5
