"""The tc-BPF GRE programs, run by the kernel on test packets (BPF_PROG_TEST_RUN), no network needed.

What the decapsulation program must take is exactly what RFC 2784 §2 and RFC 2890 §2 define for a
tunnel without checksum or sequence number: GRE version 0, C and S clear, K as configured; everything
else must go on untouched to the userspace engine, which counts the reason. The encapsulation
program needs a TUN device to run; tests/gre/test_userspace_netns.py drives it (and tshark decodes it).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, ip_address

import pytest

from alt_router.gre import bpf, bpf_gre
from alt_router.gre.config import TunnelConfig
from alt_router.inet import checksum, ipv4_header

LOCAL, REMOTE = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")
ETH = bytes.fromhex("020000000001" "020000000002" "0800")
TUN_IFINDEX = 7
REDIRECT = 7  # TC_ACT_REDIRECT
NEXT_FILTER = -1  # TC_ACT_UNSPEC: not ours, the next filter (and in the end the stack) gets it
# An ALT datagram: IPv4/UDP to 4342 (RFC 6836 §4.2), and the same in IPv6.
INNER4 = ipv4_header(IPv4Address("10.0.0.1"), IPv4Address("153.16.1.1"), 17, 8 + 4) + \
    struct.pack("!HHHH", 4342, 4342, 12, 0) + b"\x10\x00\x00\x01"
INNER6 = bytes.fromhex("60000000000c1140") + ip_address("2001:db8::1").packed + \
    ip_address("2001:db8:153::1").packed + struct.pack("!HHHH", 4342, 4342, 12, 0) + b"\x10\x00\x00\x01"


@pytest.fixture(scope="module")
def loader() -> Iterator[Callable[[TunnelConfig], tuple[int, int]]]:
    ok, why = bpf.probe()
    if not ok:
        pytest.skip(why)
    fds: list[int] = []

    def load(config: TunnelConfig) -> tuple[int, int]:
        map_fd = bpf.create_array(bpf_gre.VALUE_SIZE, 1)
        progs = bpf_gre.programs(config, tun_ifindex=TUN_IFINDEX, underlay_ifindex=1, map_fd=map_fd, index=0)
        prog_fd = bpf.load_sched_cls(progs.decap, "test_decap")
        fds.extend((map_fd, prog_fd))
        return prog_fd, map_fd

    yield load
    for fd in fds:
        os.close(fd)


def gre_frame(inner: bytes = INNER4, *, flags: int = 0, proto: int = 0x0800, key: int | None = None,
              src: IPv4Address = REMOTE, dst: IPv4Address = LOCAL, frag: int = 0x4000,
              options: bytes = b"", bad_sum: bool = False) -> bytes:
    gre = struct.pack("!HH", flags | (0x2000 if key is not None else 0), proto)
    if key is not None:
        gre += struct.pack("!I", key)
    total = 20 + len(options) + len(gre) + len(inner)
    head = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45 + len(options) // 4, 0, total, 0, frag, 64, 47, 0,
                                 src.packed, dst.packed) + options)
    struct.pack_into("!H", head, 10, checksum(bytes(head)) ^ (0x1111 if bad_sum else 0))
    return ETH + bytes(head) + gre + inner


def counters(map_fd: int) -> dict[str, int]:
    raw = bpf.lookup(map_fd, 0, bpf_gre.VALUE_SIZE)
    return dict(zip(bpf_gre.COUNTERS, struct.unpack(f"<{len(bpf_gre.COUNTERS)}Q", raw), strict=True))


@pytest.mark.parametrize("key", [None, 42, 0xFFFFFFFF])
@pytest.mark.parametrize(("inner", "proto"), [(INNER4, 0x0800), (INNER6, 0x86DD)], ids=["ipv4", "ipv6"])
def test_this_tunnels_gre_is_decapsulated_and_redirected(loader: Callable[[TunnelConfig], tuple[int, int]],
                                                         key: int | None, inner: bytes, proto: int) -> None:
    prog, counts = loader(TunnelConfig("gre1", LOCAL, REMOTE, key=key))
    run = bpf.test_run(prog, gre_frame(inner, proto=proto, key=key))
    assert run.retval == REDIRECT
    # The outer IPv4 and GRE headers are gone; the link-layer header stays for the redirect to strip.
    assert run.data == ETH + inner
    assert counters(counts) == {"decap-packets": 1, "decap-bytes": len(inner), "encap-packets": 0,
                                "encap-bytes": 0, "decap-errors": 0, "encap-errors": 0}


NOT_OURS: dict[str, Callable[[], bytes]] = {
    "other remote": lambda: gre_frame(src=IPv4Address("192.0.2.9"), key=42),
    "other local": lambda: gre_frame(dst=IPv4Address("192.0.2.8"), key=42),
    "wrong key": lambda: gre_frame(key=43),
    "no key": gre_frame,
    "checksum bit (RFC 2784 §2.1)": lambda: gre_frame(flags=0x8000, key=42),
    "sequence bit (RFC 2890 §2.2)": lambda: gre_frame(flags=0x1000, key=42),
    "routing bit (RFC 1701)": lambda: gre_frame(flags=0x4000, key=42),
    "version 1 (RFC 2784 §2.3.1)": lambda: gre_frame(flags=0x0001, key=42),
    "more fragments": lambda: gre_frame(frag=0x2000, key=42),
    "fragment offset": lambda: gre_frame(frag=0x0010, key=42),
    "IPv4 options": lambda: gre_frame(options=b"\x01\x01\x01\x00", key=42),
    "bad header checksum": lambda: gre_frame(bad_sum=True, key=42),
    "transparent Ethernet bridging": lambda: gre_frame(proto=0x6558, key=42),
    "truncated": lambda: gre_frame(key=42)[:14 + 20 + 6],
    "not GRE": lambda: ETH + ipv4_header(REMOTE, LOCAL, 17, len(INNER4)) + INNER4,
    "IPv6 frame": lambda: ETH[:12] + b"\x86\xdd" + INNER6,
}


@pytest.mark.parametrize("make", NOT_OURS.values(), ids=NOT_OURS.keys())
def test_anything_else_goes_on_untouched(loader: Callable[[TunnelConfig], tuple[int, int]],
                                         make: Callable[[], bytes]) -> None:
    prog, counts = loader(TunnelConfig("gre1", LOCAL, REMOTE, key=42))
    frame = make()
    run = bpf.test_run(prog, frame)
    assert run.retval == NEXT_FILTER
    assert run.data == frame
    assert set(counters(counts).values()) == {0}


Loader = Callable[[TunnelConfig], tuple[int, int]]


def test_the_encapsulation_program_passes_the_verifier(loader: Loader) -> None:
    for config in (TunnelConfig("gre1", LOCAL, REMOTE), TunnelConfig("gre2", LOCAL, REMOTE, key=7, ttl=255)):
        map_fd = bpf.create_array(bpf_gre.VALUE_SIZE, 1)
        with bpf.closing_fd(map_fd):
            code = bpf_gre.encap_program(config, 1, map_fd, 0)
            with bpf.closing_fd(bpf.load_sched_cls(code, "test_encap")):
                pass


@pytest.mark.parametrize("length", [20 + 4 + 28, 1500, 65535])
def test_the_outer_header_checksum_is_the_internet_checksum(length: int) -> None:
    # encap_program adds the total length to header_sum and folds (RFC 1071); the same in Python.
    config = TunnelConfig("gre1", LOCAL, REMOTE, ttl=33)
    total = bpf_gre.header_sum(config) + length
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    expected = ipv4_header(LOCAL, REMOTE, 47, length - 20, ttl=33)
    assert struct.unpack_from("!H", expected, 2)[0] == length
    assert (~total & 0xFFFF) == checksum(expected[:10] + b"\0\0" + expected[12:])


@pytest.mark.parametrize(("config", "why"), [
    (TunnelConfig("g", ip_address("2001:db8::1"), ip_address("2001:db8::2")), "IPv6 underlay"),
    (TunnelConfig("g", LOCAL, REMOTE, checksum=True), "checksum"),
    (TunnelConfig("g", LOCAL, REMOTE, sequence=True), "sequence"),
])
def test_tunnels_the_programs_do_not_cover_say_why(config: TunnelConfig, why: str) -> None:
    reason = bpf_gre.offloadable(config)
    assert reason is not None and why in reason
    with pytest.raises(bpf_gre.UnsupportedTunnelError, match=why):
        bpf_gre.programs(config, tun_ifindex=1, underlay_ifindex=1, map_fd=0, index=0)
