"""Kernel drop counts of our own sockets: what never reached the process, read from /proc/net.

A socket whose receive buffer is full makes the kernel drop what arrives and
count it in the socket (``sk_drops``, the counter SO_RXQ_OVFL reports too).  The
``drops`` column of /proc/net/udp, udp6, raw and raw6 shows it per socket inode,
so it can be read at status time for any socket, even one read with
recvmmsg(2) through ctypes, without an ancillary-data buffer per packet.  The
tables list the sockets of the reader's network namespace, which is the one
the sockets were made in.

Exported as ``rx-buffer-overflow``: for UDP and raw sockets nearly every such
drop is a full receive buffer (the rest are packets with a bad UDP checksum or
refused by a socket filter).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Final

RX_BUFFER_OVERFLOW: Final = "rx-buffer-overflow"
PROC_NET: Final = Path("/proc/net")
_TABLES: Final[dict[tuple[int, int], str]] = {
    (socket.AF_INET, socket.SOCK_DGRAM): "udp", (socket.AF_INET6, socket.SOCK_DGRAM): "udp6",
    (socket.AF_INET, socket.SOCK_RAW): "raw", (socket.AF_INET6, socket.SOCK_RAW): "raw6",
}


def parse_drops(text: str, inodes: Iterable[int]) -> dict[int, int]:
    """``{inode: drops}`` for the sockets of ``inodes`` listed in one /proc/net table's text."""
    wanted = set(inodes)
    out: dict[int, int] = {}
    lines = text.splitlines()
    if not lines:
        return out
    header = lines[0].split()
    try:
        # The header names "tx_queue rx_queue" and "tm->when" as single columns, but the rows
        # split "tx_queue:rx_queue" and "tr tm->when" differently: count from the right.
        inode_from_end = len(header) - header.index("inode")
    except ValueError:
        return out
    for line in lines[1:]:
        fields = line.split()
        if len(fields) < inode_from_end:
            continue
        try:
            inode = int(fields[-inode_from_end])
            if inode in wanted:
                out[inode] = int(fields[-1])
        except ValueError:
            continue
    return out


def socket_drops(socks: Iterable[socket.socket], proc_net: Path = PROC_NET) -> int:
    """The kernel's drop count summed over ``socks`` (closed sockets and unknown kinds count 0)."""
    by_table: dict[str, set[int]] = {}
    for sock in socks:
        fd = sock.fileno()
        table = _TABLES.get((int(sock.family), int(sock.type) & 0xF))
        if fd < 0 or table is None:
            continue
        try:
            by_table.setdefault(table, set()).add(os.fstat(fd).st_ino)
        except OSError:
            continue
    total = 0
    for table, inodes in by_table.items():
        try:
            text = (proc_net / table).read_text()
        except OSError:
            continue
        total += sum(parse_drops(text, inodes).values())
    return total


TUN_QUEUE_OVERFLOW: Final = "tun-queue-overflow"
SYS_NET: Final = Path("/sys/class/net")


def link_tx_dropped(name: str, sys_net: Path = SYS_NET) -> int | None:
    """The kernel's ``tx_dropped`` of link ``name``: for a TUN, packets routed into it that the
    process did not read before its queue (txqueuelen) filled.

    None when it cannot be read, or when /sys shows another network namespace than ours (a
    process moved with ``nsenter`` without remounting /sys): the ifindex must match the one
    the kernel gives this process for the name.
    """
    try:
        base = sys_net / name
        if int((base / "ifindex").read_text()) != socket.if_nametoindex(name):
            return None
        return int((base / "statistics" / "tx_dropped").read_text())
    except (OSError, ValueError):
        return None
