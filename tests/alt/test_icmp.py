"""ICMP errors from the forwarder: never about non-unicast, errors or later fragments, and rate limited.

RFC 1812 §4.3.2.7 (when not to send), §4.3.2.8 and RFC 4443 §2.4(f) (rate limiting), RFC 4443
§2.4(e.1)-(e.6) (the same rules for ICMPv6).
"""

from __future__ import annotations

import random
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest

from alt_router.alt import AltForwarder, icmp
from alt_router.alt.icmp import IcmpLimits, IcmpRateLimiter, forbidden
from alt_router.gre.dataplane import Drop
from alt_router.inet import checksum, ip_header, ipv4_header, udp_packet
from alt_router.rib.paths import Path

ROUTER4 = IPv4Address("10.255.0.1")
ROUTER6 = IPv6Address("fd00:255::1")
PAYLOAD = bytes.fromhex("10000001") + bytes(8) + b"map-request-body"


class Routes:
    """10.0.0.0/8 and 2001:db8::/32 via peer b; nothing else."""

    def __init__(self) -> None:
        self.paths = [Path(ip_network(p), "b", ip_address(nh), ip_address(nh))
                      for p, nh in (("10.0.0.0/8", "10.255.9.9"), ("2001:db8::/32", "fd00::9"))]

    def lookup(self, address: IPv4Address | IPv6Address) -> Path | None:
        return next((p for p in self.paths if p.prefix.version == address.version and address in p.prefix),
                    None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def forwarder(clock: Clock | None = None, limits: IcmpLimits | None = None) -> AltForwarder:
    return AltForwarder(Routes(), {"b": "gre-b"}, router_v4=ROUTER4, router_v6=ROUTER6,  # type: ignore[arg-type]
                        clock=clock, icmp_limits=limits)


def datagram(src: str, dst: str, ttl: int = 64) -> bytes:
    return udp_packet(ip_address(src), ip_address(dst), 40000, 4342, PAYLOAD, ttl=ttl)


def errors(verdicts: object) -> int:
    """How many ICMP errors the verdicts (or the data path's actions) carry."""
    items = verdicts if isinstance(verdicts, list) else [verdicts]
    return sum(1 for v in items if isinstance(v, Drop) and v.icmp is not None)


# --- never about what does not name one host -------------------------------------------------

@pytest.mark.parametrize("src", ["224.0.0.1", "255.255.255.255", "127.0.0.1", "0.0.0.0", "240.0.0.1",
                                 "ff02::1", "::1", "::"])
@pytest.mark.parametrize("case", ["no-route", "ttl-expired"])
def test_no_icmp_about_a_non_unicast_source(src: str, case: str) -> None:
    """RFC 1812 §4.3.2.7 / §5.3.7 and RFC 4443 §2.4(e.6): the error would go nowhere or everywhere."""
    v6 = ":" in src
    unrouted, routed = ("3fff::1", "2001:db8::1") if v6 else ("192.168.1.1", "10.1.1.1")
    dst = unrouted if case == "no-route" else routed
    fw = forwarder(Clock())
    verdict = fw.forward(datagram(src, dst, ttl=1 if case == "ttl-expired" else 64), "gre-x")
    assert verdict == Drop(case)  # and no ICMP error in it
    assert fw.counters["icmp-suppressed"] == 1
    assert fw.counters["icmp-suppressed:non-unicast-source"] == 1
    assert fw.counters["icmp-queued"] == 0


@pytest.mark.parametrize(("src", "dst"), [("192.0.2.7", "224.0.0.1"), ("192.0.2.7", "255.255.255.255"),
                                          ("2001:db8:ffff::1", "ff02::1")])
def test_no_icmp_about_a_packet_to_multicast_or_broadcast(src: str, dst: str) -> None:
    """RFC 1812 §4.3.2.7 and RFC 4443 §2.4(e.3)."""
    fw = forwarder(Clock())
    assert fw.forward(datagram(src, dst), "gre-x") == Drop("no-route")
    assert fw.counters["icmp-suppressed:non-unicast-destination"] == 1


def test_a_unicast_source_still_gets_its_error() -> None:
    fw = forwarder(Clock())
    sent = errors(fw.forward(datagram("192.0.2.7", "192.168.1.1"), "gre-x"))
    sent += errors(fw.forward(datagram("2001:db8:ffff::1", "3fff::1"), "gre-x"))
    assert sent == 2
    assert fw.counters["icmp-queued"] == 2 and fw.counters["icmp-suppressed"] == 0


def _v4(proto: int, payload: bytes, *, src: str = "192.0.2.7", frag: int = 0) -> bytes:
    head = bytearray(ipv4_header(IPv4Address(src), IPv4Address("10.1.1.1"), proto, len(payload)))
    head[6:8] = struct.pack("!H", frag)
    head[10:12] = b"\0\0"
    head[10:12] = struct.pack("!H", checksum(bytes(head)))
    return bytes(head) + payload


def _v6(next_header: int, payload: bytes) -> bytes:
    return ip_header(IPv6Address("2001:db8:ffff::1"), IPv6Address("2001:db8::1"), next_header, len(payload)) \
        + payload


def test_rules_on_the_offending_packet() -> None:
    """RFC 1812 §4.3.2.7 (ICMP errors, non-first fragments, bad headers), RFC 4443 §2.4(e.1), (e.2)."""
    udp = struct.pack("!HHHH", 40000, 4342, 8, 0)
    assert forbidden(_v4(17, udp)) is None
    assert forbidden(_v4(1, bytes((3, 1)) + bytes(6))) == icmp.ABOUT_ICMP_ERROR  # Destination Unreachable
    assert forbidden(_v4(1, bytes((11, 0)) + bytes(6))) == icmp.ABOUT_ICMP_ERROR  # Time Exceeded
    assert forbidden(_v4(1, bytes((42, 0)) + bytes(6))) == icmp.ABOUT_ICMP_ERROR  # unknown: maybe an error
    assert forbidden(_v4(1, b"")) == icmp.ABOUT_ICMP_ERROR  # cannot tell
    assert forbidden(_v4(1, bytes((8, 0)) + bytes(6))) is None  # Echo Request is not an error
    assert forbidden(_v4(17, udp, frag=0x2000)) is None  # first fragment (MF set, offset 0)
    assert forbidden(_v4(17, udp, frag=0x0001)) == icmp.FRAGMENT
    bad = bytearray(_v4(17, udp))
    bad[11] ^= 0xFF
    assert forbidden(bytes(bad)) == icmp.INVALID_HEADER  # RFC 1812 §5.2.2
    assert forbidden(_v6(17, udp)) is None
    assert forbidden(_v6(58, bytes((1, 0)) + bytes(6))) == icmp.ABOUT_ICMP_ERROR  # (e.1)
    assert forbidden(_v6(58, bytes((137, 0)) + bytes(6))) == icmp.ABOUT_ICMP_ERROR  # (e.2) Redirect
    assert forbidden(_v6(58, bytes((128, 0)) + bytes(6))) is None  # Echo Request
    first = bytes((17, 0, 0, 1)) + bytes(4)
    later = bytes((17, 0, 0x05, 0x01)) + bytes(4)
    assert forbidden(_v6(44, first + udp)) is None
    assert forbidden(_v6(44, later + udp)) == icmp.FRAGMENT
    assert forbidden(b"\x50" + bytes(39)) == icmp.INVALID_HEADER


# --- never faster than configured ------------------------------------------------------------

def test_per_destination_bucket() -> None:
    limits = IcmpLimits(rate=1000, burst=1000, per_destination_rate=1, per_destination_burst=6)
    limiter = IcmpRateLimiter(limits)
    a, b = b"\xc0\x00\x02\x07", b"\xc0\x00\x02\x08"
    assert [limiter.allow(a, 0.0) for _ in range(8)] == [True] * 6 + [False] * 2
    assert limiter.allow(b, 0.0)  # another destination has its own bucket
    assert not limiter.allow(a, 0.5)
    assert limiter.allow(a, 1.0)
    assert not limiter.allow(a, 1.0)
    assert not limiter.allow(a, -5.0)  # a clock stepping back mints nothing


def test_global_bucket_caps_spoofed_sources() -> None:
    limiter = IcmpRateLimiter(IcmpLimits(rate=10, burst=20, max_destinations=100))
    sent = sum(limiter.allow(i.to_bytes(4, "big"), 0.0) for i in range(1000))
    assert sent == 20
    assert sum(limiter.allow(i.to_bytes(4, "big"), 1.0) for i in range(1000, 2000)) == 10
    assert len(limiter) <= 100


def test_a_refused_destination_keeps_its_tokens() -> None:
    limiter = IcmpRateLimiter(IcmpLimits(rate=1, burst=1, per_destination_burst=2))
    assert limiter.allow(b"a", 0.0)
    assert not limiter.allow(b"b", 0.0)  # global bucket empty; b's bucket untouched and not stored
    assert len(limiter) == 1
    assert limiter.allow(b"b", 1.0)


def test_destination_table_is_bounded() -> None:
    limiter = IcmpRateLimiter(IcmpLimits(rate=1e9, burst=10**9, max_destinations=64))
    for i in range(10_000):
        limiter.allow(i.to_bytes(4, "big"), i * 1e-6)
    assert len(limiter) == 64 and limiter.evicted == 10_000 - 64


def test_ipv6_sources_share_a_bucket_per_64() -> None:
    """One host owns a /64: rotating its interface identifier must not buy fresh tokens."""
    fw = forwarder(Clock(), IcmpLimits(rate=1000, burst=1000, per_destination_burst=3))
    sent = sum(errors(fw.forward(datagram(f"2001:db8:ffff::{i + 1:x}", "3fff::1"), "gre-x"))
               for i in range(10))
    assert sent == 3
    assert fw.counters["icmp-suppressed:rate-limit"] == 7


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        IcmpLimits(rate=0)
    with pytest.raises(ValueError):
        IcmpLimits(per_destination_burst=0)


def test_gre_fuzz_at_full_speed_gets_at_most_the_configured_rate() -> None:
    """100,000 packets in one second from random sources: at most burst + rate errors leave."""
    clock = Clock()
    limits = IcmpLimits(rate=100, burst=50)
    fw = forwarder(clock, limits)
    rng = random.Random(11)
    sent = 0
    for i in range(100_000):
        clock.now = i * 1e-5
        src = IPv4Address(rng.getrandbits(32))
        dst = "10.1.1.1" if i % 2 else "192.168.0.1"  # time exceeded or unreachable
        sent += errors(fw.forward(datagram(str(src), dst, ttl=1), "gre-x"))
    assert sent <= limits.burst + limits.rate * 1.0
    assert sent >= limits.burst  # it still answers
    suppressed = fw.counters["icmp-suppressed"]
    assert sent + suppressed == 100_000
    assert fw.counters["icmp-suppressed:rate-limit"] + fw.counters["icmp-suppressed:non-unicast-source"] \
        == suppressed
    assert len(fw.icmp_limiter) <= limits.max_destinations


def test_without_a_clock_only_the_burst_is_ever_sent() -> None:
    fw = forwarder(None, IcmpLimits(burst=4))
    sent = sum(errors(fw.forward(datagram(f"192.0.2.{i + 1}", "192.168.0.1"), "gre-x")) for i in range(20))
    assert sent == 4


NODE = """
[node]
name = "a"
asn = 65001
router_id = "192.0.2.1"
[eid]
accept = ["153.16.0.0/12"]
"""


def test_icmp_section_of_the_node_config() -> None:
    from alt_router.node.config import ConfigError, parse_config  # noqa: PLC0415

    assert parse_config(NODE).icmp == IcmpLimits()
    cfg = parse_config(NODE + "[icmp]\nrate = 20\nburst = 10\nper_destination_rate = 0.5\n"
                              "per_destination_burst = 3\nmax_destinations = 100\n")
    assert cfg.icmp == IcmpLimits(20.0, 10, 0.5, 3, 100)
    with pytest.raises(ConfigError) as err:
        parse_config(NODE + "[icmp]\nrate = 0\nburst = 0\nper_second = 1\n")
    text = str(err.value)
    assert "icmp.rate" in text and "icmp.burst" in text and "icmp.per_second: unknown key" in text


def test_gre_fuzz_through_the_dataplane_is_rate_limited() -> None:
    """Random ALT datagrams and garbage off a GRE tunnel at full speed: ICMP out stays within the limits."""
    from alt_router.gre.config import TunnelConfig  # noqa: PLC0415
    from alt_router.gre.dataplane import Dataplane  # noqa: PLC0415

    clock = Clock()
    limits = IcmpLimits(rate=100, burst=50)
    fw = forwarder(clock, limits)
    tunnel = TunnelConfig(name="gre-x", local=IPv4Address("198.51.100.1"), remote=IPv4Address("198.51.100.2"))
    dp = Dataplane([tunnel], hook=fw.hook, fast_hook=fw.fast_forward)
    outer = ipv4_header(IPv4Address("198.51.100.2"), IPv4Address("198.51.100.1"), 47, 0)
    rng = random.Random(3)
    sent = 0
    for i in range(20_000):
        clock.now = i * 5e-5  # 20,000 packets in one second
        if i % 4 == 0:
            inner = bytes((0x45,)) + rng.randbytes(rng.randrange(0, 80))  # garbage
        else:
            src = IPv4Address(rng.getrandbits(32))
            inner = datagram(str(src), "192.168.0.1" if i % 2 else "10.1.1.1", ttl=1 + (i % 3 == 0))
        sent += errors(dp.receive_ipv4_fast(outer + b"\x00\x00\x08\x00" + inner))
    assert 0 < sent <= limits.burst + limits.rate * 1.0
