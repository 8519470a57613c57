"""GRE in the kernel without the GRE module: two tc-BPF programs per tunnel (RFC 2784, RFC 2890 key).

On a host without ``ip_gre`` every tunnelled packet would otherwise cross userspace twice on a transit
(raw socket -> TUN, TUN -> raw socket). These programs keep the TUN device as the tunnel's interface
(routes, addresses, BGP sessions and the kernel's forwarding stay as they are) and move the GRE work
into the kernel:

- ``decap_program`` runs at the underlay device's ingress. A packet that is exactly this tunnel's GRE
  (IPv4 outer without options or fragmentation, a valid header checksum, our local and the tunnel's
  remote address, GRE version 0 without checksum or sequence number, the configured key if any, an
  IPv4 or IPv6 payload) loses its outer headers and is redirected into the TUN device's ingress, as if
  the TUN had received it. Anything else goes on untouched to the next filter, and in the end to the
  userspace engine's raw socket, which decides and counts as it always did.
- ``encap_program`` runs at the TUN device's egress. An IPv4 or IPv6 packet carrying UDP or ICMP
  (the ALT's datagrams; TCP stays with the engine, see the program) gets the outer IPv4 and GRE
  headers (DF set, the tunnel's TTL, the key if any) and is sent out of the underlay device with
  ``bpf_redirect_neigh``, which resolves the next hop's link-layer address like the stack would. A
  packet the programs cannot handle goes on to the TUN queue and the userspace engine.

Counters live in one array map shared by the node's tunnels: ``COUNTERS`` slots of 8 bytes per tunnel.
This module is pure: it builds bytes. Loading and attaching is ``gre/bpf``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final

from alt_router.gre.bpf_asm import (
    ADD,
    AND,
    JEQ,
    JGT,
    JNE,
    RSH,
    XOR,
    Program,
    wire16,
    wire32,
)
from alt_router.gre.config import TunnelConfig

# struct __sk_buff offsets (include/uapi/linux/bpf.h), stable ABI.
SKB_LEN: Final = 0
SKB_PROTOCOL: Final = 16
SKB_DATA: Final = 76
SKB_DATA_END: Final = 80

# Helper ids (the order of ___BPF_FUNC_MAPPER in include/uapi/linux/bpf.h), stable ABI.
MAP_LOOKUP_ELEM: Final = 1
REDIRECT: Final = 23
SKB_CHANGE_HEAD: Final = 43
SKB_ADJUST_ROOM: Final = 50
REDIRECT_NEIGH: Final = 152

ADJ_ROOM_MAC: Final = 1
F_INGRESS: Final = 1
F_ADJ_ROOM_ENCAP_L3_IPV4: Final = 1 << 1
F_ADJ_ROOM_ENCAP_L4_GRE: Final = 1 << 3
F_ADJ_ROOM_DECAP_L3_IPV4: Final = 1 << 7  # Linux 6.3 and later
F_ADJ_ROOM_DECAP_L3_IPV6: Final = 1 << 8

TC_ACT_UNSPEC: Final = -1  # direct action: try the next filter
TC_ACT_OK: Final = 0
TC_ACT_SHOT: Final = 2

ETH_HLEN: Final = 14
IPV4_HLEN: Final = 20
ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
GRE_KEY_FLAG: Final = 0x2000
IPV6_HLEN: Final = 40
IPPROTO_ICMP: Final = 1
IPPROTO_UDP: Final = 17
IPPROTO_GRE: Final = 47
IPPROTO_ICMPV6: Final = 58
IP_DF: Final = 0x4000

# Per-tunnel counter slots (u64 each) in the map's value.
COUNTERS: Final = ("decap-packets", "decap-bytes", "encap-packets", "encap-bytes", "decap-errors",
                   "encap-errors")
VALUE_SIZE: Final = 8 * len(COUNTERS)
_SLOT: Final = {name: 8 * i for i, name in enumerate(COUNTERS)}

# Registers: r1-r5 are helper arguments (clobbered by calls), r6-r9 survive calls, r10 is the frame.
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)


class UnsupportedTunnelError(ValueError):
    """A tunnel these programs do not cover; it stays on the userspace engine."""


@dataclass(frozen=True, slots=True)
class TunnelPrograms:
    """The two programs of one tunnel, ready for ``BPF_PROG_LOAD``."""

    decap: bytes
    encap: bytes


def offloadable(config: TunnelConfig) -> str | None:
    """None if the programs cover ``config``, else why not (for the log)."""
    if config.family != 4:
        return "IPv6 underlay"
    if config.checksum:
        return "GRE checksum (RFC 2784 C bit) configured"
    if config.sequence:
        return "GRE sequence numbers (RFC 2890 S bit) configured"
    return None


def programs(config: TunnelConfig, *, tun_ifindex: int, underlay_ifindex: int, map_fd: int,
             index: int) -> TunnelPrograms:
    """Both programs for ``config``; ``index`` is the tunnel's entry in the counter map."""
    why = offloadable(config)
    if why is not None:
        raise UnsupportedTunnelError(f"{config.name}: {why}")
    return TunnelPrograms(decap_program(config, tun_ifindex, map_fd, index),
                          encap_program(config, underlay_ifindex, map_fd, index))


def _outer(config: TunnelConfig) -> tuple[IPv4Address, IPv4Address, int]:
    local, remote = config.local, config.remote
    assert isinstance(local, IPv4Address) and isinstance(remote, IPv4Address)
    return local, remote, IPV4_HLEN + 4 + (4 if config.key is not None else 0)


def _count(p: Program, map_fd: int, index: int, slots: tuple[tuple[str, int | None], ...],
           skip: str) -> None:
    """Add to counters: ``(slot, register)`` adds the register's value, ``(slot, None)`` adds 1."""
    p.store_imm(4, R10, -4, index)
    p.load_map_fd(R1, map_fd)
    p.mov(R2, R10)
    p.alu_imm(ADD, R2, -4)
    p.call(MAP_LOOKUP_ELEM)
    p.jump_imm(JEQ, R0, 0, skip, wide=True)
    for slot, reg in slots:
        if reg is None:
            p.mov_imm(R1, 1)
        p.atomic_add(8, R0, _SLOT[slot], R1 if reg is None else reg)
    p.label(skip)


def _fold(p: Program, acc: int, tmp: int) -> None:
    """Fold a one's-complement sum in ``acc`` to 16 bits (RFC 1071 §4.1)."""
    for _ in range(2):
        p.mov(tmp, acc)
        p.alu_imm(RSH, tmp, 16)
        p.alu_imm(AND, acc, 0xFFFF)
        p.alu(ADD, acc, tmp)


def decap_program(config: TunnelConfig, tun_ifindex: int, map_fd: int, index: int) -> bytes:
    local, remote, outer = _outer(config)
    ip = ETH_HLEN  # the program sees the frame from its Ethernet header
    gre = ip + IPV4_HLEN
    p = Program()
    p.mov(R6, R1)
    p.load(4, R2, R6, SKB_DATA)
    p.load(4, R3, R6, SKB_DATA_END)
    p.mov(R4, R2)
    p.alu_imm(ADD, R4, ETH_HLEN + outer)
    p.jump_reg(JGT, R4, R3, "pass")
    for size, off, value, mask in (
        (2, 12, wire16(ETH_P_IP), None),
        (1, ip, 0x45, None),  # version 4, no options
        (2, ip + 6, 0, wire16(0x3FFF)),  # neither more fragments nor an offset
        (1, ip + 9, IPPROTO_GRE, None),
        (4, ip + 12, wire32(int(remote)), None),
        (4, ip + 16, wire32(int(local)), None),
        (2, gre, wire16(GRE_KEY_FLAG if config.key is not None else 0), None),  # C, S, version 0
    ):
        p.load(size, R5, R2, off)
        if mask is not None:
            p.alu_imm(AND, R5, mask)
        p.jump_imm(JNE, R5, value, "pass")
    if config.key is not None:
        p.load(4, R5, R2, gre + 4)
        p.jump_imm(JNE, R5, wire32(config.key), "pass")
    # The stack checks the outer header's checksum before ip_gre sees it; so do we. The sum of the
    # little-endian 16-bit words is the byte-swapped sum, and 0xFFFF is its own swap.
    p.mov_imm(R5, 0)
    for off in range(ip, ip + IPV4_HLEN, 2):
        p.load(2, R4, R2, off)
        p.alu(ADD, R5, R4)
    _fold(p, R5, R4)
    p.jump_imm(JNE, R5, 0xFFFF, "pass")
    p.load(2, R7, R2, gre + 2)
    p.mov_imm(R8, F_ADJ_ROOM_DECAP_L3_IPV4)
    p.jump_imm(JEQ, R7, wire16(ETH_P_IP), "strip")
    p.jump_imm(JNE, R7, wire16(ETH_P_IPV6), "pass")
    p.mov_imm(R8, F_ADJ_ROOM_DECAP_L3_IPV6)
    p.label("strip")
    p.mov(R1, R6)
    p.mov_imm(R2, -outer)
    p.mov_imm(R3, ADJ_ROOM_MAC)
    p.mov(R4, R8)
    p.call(SKB_ADJUST_ROOM)
    p.jump_imm(JNE, R0, 0, "error", wide=True)
    p.load(4, R9, R6, SKB_LEN)
    p.alu_imm(ADD, R9, -ETH_HLEN)
    _count(p, map_fd, index, (("decap-packets", None), ("decap-bytes", R9)), "counted")
    p.mov_imm(R1, tun_ifindex)
    p.mov_imm(R2, F_INGRESS)
    p.call(REDIRECT)
    p.exit()
    p.label("error")  # the packet is untouched: the userspace engine gets it
    _count(p, map_fd, index, (("decap-errors", None),), "counted-error")
    p.ret(TC_ACT_OK)
    p.label("pass")
    p.ret(TC_ACT_UNSPEC)
    return p.assemble()


def header_sum(config: TunnelConfig) -> int:
    """The one's-complement sum of the outer IPv4 header's words without total length and checksum."""
    local, remote, _ = _outer(config)
    words = [0x4500, 0, IP_DF, (config.ttl << 8) | IPPROTO_GRE]
    for addr in (int(local), int(remote)):
        words += [addr >> 16, addr & 0xFFFF]
    return sum(words)


def encap_program(config: TunnelConfig, underlay_ifindex: int, map_fd: int, index: int) -> bytes:
    local, remote, outer = _outer(config)
    p = Program()
    p.mov(R6, R1)
    p.load(4, R7, R6, SKB_PROTOCOL)
    p.load(4, R2, R6, SKB_DATA)
    p.load(4, R3, R6, SKB_DATA_END)
    p.mov(R4, R2)
    p.alu_imm(ADD, R4, IPV6_HLEN)
    p.jump_reg(JGT, R4, R3, "pass")
    # Only UDP and ICMP: a TCP segment from this host (BGP) still holds a partial checksum here,
    # which the stack completes after this hook (validate_xmit_skb). Sent through the TUN, it gets
    # completed and the engine encapsulates it; redirected from here, a veth would carry the
    # partial checksum to a peer that reads the raw bytes. The ALT's datagrams are UDP.
    p.jump_imm(JNE, R7, wire16(ETH_P_IP), "v6")
    p.load(1, R5, R2, 9)
    p.jump_imm(JEQ, R5, IPPROTO_UDP, "grow")
    p.jump_imm(JEQ, R5, IPPROTO_ICMP, "grow")
    p.jump("pass")
    p.label("v6")
    p.jump_imm(JNE, R7, wire16(ETH_P_IPV6), "pass")
    p.load(1, R5, R2, 6)
    p.jump_imm(JEQ, R5, IPPROTO_UDP, "grow")
    p.jump_imm(JNE, R5, IPPROTO_ICMPV6, "pass")
    p.label("grow")
    p.mov(R1, R6)
    p.mov_imm(R2, outer)
    p.mov_imm(R3, ADJ_ROOM_MAC)  # a TUN device has no link-layer header: the room goes in front
    p.mov_imm(R4, F_ADJ_ROOM_ENCAP_L3_IPV4 | F_ADJ_ROOM_ENCAP_L4_GRE)
    p.call(SKB_ADJUST_ROOM)
    p.jump_imm(JNE, R0, 0, "error", wide=True)
    p.load(4, R2, R6, SKB_DATA)
    p.load(4, R3, R6, SKB_DATA_END)
    p.mov(R4, R2)
    p.alu_imm(ADD, R4, outer)
    p.jump_reg(JGT, R4, R3, "drop")
    p.load(4, R9, R6, SKB_LEN)
    p.store_imm(1, R2, 0, 0x45)
    p.store_imm(1, R2, 1, 0)
    p.mov(R8, R9)
    p.to_be(R8, 16)
    p.store(2, R2, 2, R8)
    p.store_imm(2, R2, 4, 0)
    p.store_imm(2, R2, 6, wire16(IP_DF))
    p.store_imm(1, R2, 8, config.ttl)
    p.store_imm(1, R2, 9, IPPROTO_GRE)
    p.mov(R8, R9)
    p.alu_imm(ADD, R8, header_sum(config))
    _fold(p, R8, R5)
    p.alu_imm(XOR, R8, 0xFFFF)
    p.to_be(R8, 16)
    p.store(2, R2, 10, R8)
    p.store_imm(4, R2, 12, wire32(int(local)))
    p.store_imm(4, R2, 16, wire32(int(remote)))
    p.store_imm(2, R2, 20, wire16(GRE_KEY_FLAG if config.key is not None else 0))
    p.store(2, R2, 22, R7)  # the payload's EtherType, as the skb carried it (network order)
    if config.key is not None:
        p.store_imm(4, R2, 24, wire32(config.key))
    _count(p, map_fd, index, (("encap-packets", None), ("encap-bytes", R9)), "counted")
    # bpf_redirect_neigh strips an Ethernet header before it resolves the next hop and writes the
    # real one; a TUN packet has none, so give it an all-zero (unicast) placeholder.
    p.mov(R1, R6)
    p.mov_imm(R2, ETH_HLEN)
    p.mov_imm(R3, 0)
    p.call(SKB_CHANGE_HEAD)
    p.jump_imm(JNE, R0, 0, "drop", wide=True)
    p.mov_imm(R1, underlay_ifindex)
    p.mov_imm(R2, 0)
    p.mov_imm(R3, 0)
    p.mov_imm(R4, 0)
    p.call(REDIRECT_NEIGH)
    p.exit()
    p.label("error")  # adjust_room refused and left the packet as it was: the TUN queue takes it
    _count(p, map_fd, index, (("encap-errors", None),), "counted-error")
    p.ret(TC_ACT_OK)
    p.label("drop")  # cannot happen after a successful grow; the verifier wants the check
    p.ret(TC_ACT_SHOT)
    p.label("pass")
    p.ret(TC_ACT_OK)
    return p.assemble()
