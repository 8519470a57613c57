"""The GRE tunnel lab shared by the netns tests of tests/gre: hosts, tunnels, traffic."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from alt_router.gre import bpf
from alt_router.lab import Lab, ProcessHandle, Topology, wait_until

PY = sys.executable
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


def skip_without_bpf() -> None:
    """tc-BPF GRE is a host capability like kernel GRE (Linux 6.3+, root or CAP_BPF): skip without it."""
    ok, why = bpf.probe()
    if not ok:
        pytest.skip(why)


def make_lab(tmp_path: Path) -> Lab:
    """The module's lab, with a per-run unique name (enter it with ``with``)."""
    return Lab(Topology.from_dict({"name": f"gu{os.getpid() % 10000}{next(_labs)}", **TOPOLOGY}),
               workdir=tmp_path)


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


def pair(lab: Lab, *extra: str, v6_underlay: bool = False,
         modes: tuple[str, str] = ("userspace", "userspace")) -> tuple[Path, Path]:
    """gre1 between a and b (``modes``: each end's ``--mode``); their stats files."""
    if "bpf" in modes:
        skip_without_bpf()
    la, lb = ("2001:db8:1::1", "2001:db8:1::2") if v6_underlay else ("192.0.2.1", "192.0.2.2")
    _, sa = start_tunnel(lab, "a", "--name", "gre1", "--local", la, "--remote", lb, "--mode", modes[0],
                         "--address", "10.255.0.1/30", "--address", "fd00:255::1/64", *extra)
    _, sb = start_tunnel(lab, "b", "--name", "gre1", "--local", lb, "--remote", la, "--mode", modes[1],
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
