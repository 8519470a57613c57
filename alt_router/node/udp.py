"""Blocking UDP and raw-socket helpers for the ``lig`` and ``etr`` commands (edge).

The daemon has its own asyncio socket edge in ``node/mapping.py``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from alt_router.inet import address
from alt_router.mapping.actions import Action, SendUdp
from alt_router.types import IPAddress


def family_of(addr: IPAddress) -> socket.AddressFamily:
    return socket.AF_INET if addr.version == 4 else socket.AF_INET6


def default_source(dst: IPAddress, port: int) -> IPAddress:
    """The address the kernel would use to reach ``dst``: connect() a UDP socket, read getsockname()."""
    with socket.socket(family_of(dst), socket.SOCK_DGRAM) as s:
        s.connect((str(dst), port))  # no packet is sent: UDP connect only picks the route
        return address(s.getsockname()[0])


def open_udp(bind: IPAddress, port: int) -> socket.socket:
    sock = socket.socket(family_of(bind), socket.SOCK_DGRAM)
    try:
        sock.bind((str(bind), port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def bound_port(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


def open_icmp(version: int) -> socket.socket:
    """A raw ICMP (or ICMPv6) socket for trace replies; needs root (CAP_NET_RAW)."""
    if version == 4:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    else:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    sock.setblocking(False)
    return sock


def icmp_payload(data: bytes, version: int) -> bytes:
    """Strip the IPv4 header a raw ICMP socket hands over (an ICMPv6 socket gives none)."""
    if version == 4 and data and data[0] >> 4 == 4:
        return data[(data[0] & 0x0F) * 4:]
    return data


def send_all(sockets: dict[int, socket.socket], actions: Iterable[Action]) -> int:
    """Send the ``SendUdp`` actions from the socket bound to their source port; return how many failed."""
    failed = 0
    for action in actions:
        if not isinstance(action, SendUdp):
            continue
        sock = sockets.get(action.sport)
        if sock is None or sock.family != family_of(action.dst):
            failed += 1
            continue
        try:
            sock.sendto(action.payload, (str(action.dst), action.dport))
        except OSError:
            failed += 1
    return failed


def send_ip(packet: bytes) -> None:
    """Hand a whole IPv4 packet (an ICMP error, header included) to the kernel to route (needs root)."""
    if not packet or packet[0] >> 4 != 4:
        raise ValueError("send_ip: only IPv4 packets carry their own header on a raw socket")
    dst = ".".join(str(b) for b in packet[16:20])
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
        s.sendto(packet, (dst, 0))
