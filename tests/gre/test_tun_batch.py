"""The engine's TUN -> underlay path reads into sendmmsg slots; it must send and count exactly as
``Dataplane.encapsulate_fast`` and the per-packet path do (RFC 2784 §2: GRE header, then the
payload packet).  No root: a datagram socketpair stands in for the TUN, UDP for the underlay."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, ip_address

import pytest

from alt_router.gre import userspace as us
from alt_router.gre.config import TunnelConfig
from alt_router.gre.dataplane import Dataplane
from alt_router.inet import udp_packet

A, B = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")
INNER = udp_packet(ip_address("10.0.0.1"), ip_address("10.0.0.2"), 1000, 4342, b"hello")
INNER6 = udp_packet(ip_address("fd00::1"), ip_address("fd00::2"), 1000, 4342, b"hello")


@pytest.fixture(params=[True, False], ids=["batched", "per-packet"])
def engine(request: pytest.FixtureRequest) -> Iterator[tuple[us.Engine, socket.socket, int, socket.socket]]:
    e = us.Engine([TunnelConfig("t", A, B, key=5)])
    tun_app, tun_dev = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sink.bind(("127.0.0.1", 0))
        for s in (sink, out, tun_dev):
            s.setblocking(False)
        e._sock[4] = out
        head = e._egress4["t"][0]
        e._egress4["t"] = (head, sink.getsockname())
        if request.param:
            e._mmsg = us.MmsgIO(out.fileno(), batch=4, slot=2048, tx_slot=1501)
        yield e, tun_app, tun_dev.fileno(), sink
    finally:
        e._sock.clear()
        for s in (tun_app, tun_dev, sink, out):
            s.close()


def drain(sock: socket.socket, want: int) -> list[bytes]:
    got: list[bytes] = []
    end = time.monotonic() + 5
    while len(got) < want and time.monotonic() < end:
        try:
            got.append(sock.recv(4096))
        except BlockingIOError:
            time.sleep(0.001)
    return got


def test_tun_packets_leave_encapsulated_and_counted(
    engine: tuple[us.Engine, socket.socket, int, socket.socket],
) -> None:
    e, tun_app, tun_fd, sink = engine
    reference = Dataplane([TunnelConfig("t", A, B, key=5)])
    # More than one send batch, a junk packet in the middle and one over the MTU.
    packets = [INNER, INNER6] * 5 + [b"\x00junk"] + [INNER] * 3 + [b"\x45" + bytes(1500)] + [INNER6]
    for p in packets:
        tun_app.send(p)
    e._read_tun(tun_fd, "t")
    expected = []
    for p in packets:
        result = reference.encapsulate_fast("t", p)
        if isinstance(result, tuple):
            expected.append(e._egress4["t"][0] + result[2])
    got = drain(sink, len(expected))
    # The UDP sink sees the datagram as the raw socket would send it (outer header included).
    assert got == expected
    assert e.dataplane.stats() == reference.stats()

