"""FRR-integrated mode's data path (node/kernel_alt.py, issue 10) without a kernel: the pure parts.

RFC 6836 §3.3 (the ALT datagram keeps the ITR's source address and port), §6.1 (longest match
between our own prefixes and the ALT's routes), RFC 1812 §5.3.1 (the kernel decrements the TTL).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_network
from pathlib import Path
from typing import Any

import pytest

from alt_router.alt.forwarder import LOCAL
from alt_router.gre.dataplane import Local
from alt_router.inet import parse_ip, parse_udp
from alt_router.lisp import ECM, EidRecord, MapRequest
from alt_router.node import kernel_alt as ka
from alt_router.node.config import parse_config
from alt_router.node.core import NodeCore
from alt_router.node.mapping import NodeMapping
from alt_router.rib import AnnouncedRoute, Update
from alt_router.types import Prefix
from tests.node.test_node_mapping import CONFIG

ITR = IPv4Address("192.0.2.7")
EID = IPv4Address("153.16.1.9")


def rib_with(*prefixes: str) -> Any:
    core = NodeCore(parse_config(CONFIG))
    core.rib.peer_up("b", 0.0)
    core.rib.apply(Update("b", announce=tuple(
        AnnouncedRoute(ip_network(p), IPv4Address("10.255.1.2"), (65002,)) for p in prefixes)), 0.0)
    return core.rib


def test_the_constant_helper_e_ignores() -> None:
    assert ka.ALT_ROUTE_PROTO == 250  # "alt_router" in /etc/iproute2/rt_protos.d, beside zebra's 186-196


def test_route_is_local_kernel_or_none_by_longest_match() -> None:
    routes = ka.KernelRoutes(rib_with("153.16.0.0/12", "153.16.9.0/24"), IPv4Address("10.255.1.1"), None)
    routes.set_local([ip_network("153.16.0.0/16")])
    assert routes.route(IPv4Address("153.16.1.9")) == LOCAL  # our /16 beats the ALT's /12
    assert routes.route(IPv4Address("153.16.9.1")) == ka.KERNEL  # a peer's /24 inside it wins
    assert routes.route(IPv4Address("153.20.0.1")) == ka.KERNEL
    assert routes.route(IPv4Address("10.0.0.1")) is None  # a negative Map-Reply
    assert routes.is_local(IPv4Address("153.16.9.1")) and not routes.is_local(IPv4Address("153.20.0.1"))
    before = routes.generation
    routes.set_local([])
    assert routes.generation != before and routes.local_prefixes() == []


def test_destination_info_reads_pktinfo_and_ttl() -> None:
    pktinfo4 = struct.pack("@i4s4s", 3, bytes(4), EID.packed)
    ttl = struct.pack("@i", 61)
    assert ka.destination_info([(socket.IPPROTO_IP, ka.IP_PKTINFO, pktinfo4),
                                (socket.IPPROTO_IP, ka.IP_TTL, ttl)]) == (EID, 61)
    v6 = IPv6Address("2001:db8:1::9")
    assert ka.destination_info([(socket.IPPROTO_IPV6, ka.IPV6_PKTINFO, v6.packed + struct.pack("@I", 3)),
                                (socket.IPPROTO_IPV6, ka.IPV6_HOPLIMIT, ttl)]) == (v6, 61)
    assert ka.destination_info([]) == (None, None)
    assert ka.destination_info([(socket.IPPROTO_IP, ka.IP_PKTINFO, b"short")]) == (None, None)


def test_local_datagram_rebuilds_what_the_itr_sent() -> None:
    """RFC 6836 §3.3: the Map-Server reads the ITR's address and port from the datagram."""
    event = ka.local_datagram(b"map-request", ITR, 50001, EID, dport=4342, ttl=61)
    assert isinstance(event, Local) and event.tunnel == ""
    ip = parse_ip(event.packet)
    udp = parse_udp(ip)
    assert (ip.src, ip.dst, ip.ttl, udp.sport, udp.dport) == (ITR, EID, 61, 50001, 4342)
    assert udp.checksum_ok and udp.payload == b"map-request"
    assert ka.local_datagram(b"x", ITR, 1, IPv6Address("2001:db8::1"), dport=4342, ttl=None) is None
    assert ka.local_datagram(bytes(70000), ITR, 1, EID, dport=4342, ttl=None) is None


def test_route_spec_is_a_local_route_in_the_main_table() -> None:
    spec = ka.route_spec(ip_network("153.16.0.0/16"), 1)
    assert spec == {"dst": "153.16.0.0", "dst_len": 16, "family": socket.AF_INET, "type": 2, "table": 254,
                    "proto": 250, "scope": 254, "oif": 1}
    assert ka.route_spec(ip_network("2001:db8::/32"), 1)["family"] == socket.AF_INET6


class FakeRoute(dict[str, Any]):
    def __init__(self, prefix: Prefix, proto: int = ka.ALT_ROUTE_PROTO) -> None:
        super().__init__(type=ka.RTN_LOCAL, proto=proto, dst_len=prefix.prefixlen)
        self.dst = str(prefix.network_address)

    def get_attr(self, name: str) -> str:
        return self.dst


class FakeIpr:
    """Just enough of pyroute2's IPRoute: the main table's routes of our protocol."""

    def __init__(self, present: list[Prefix]) -> None:
        self.routes = {p: FakeRoute(p) for p in present}
        self.calls: list[tuple[str, str]] = []

    def link_lookup(self, ifname: str) -> list[int]:
        return [1]

    def get_routes(self, family: int, table: int, proto: int) -> list[FakeRoute]:
        want = 4 if family == socket.AF_INET else 6
        return [r for p, r in self.routes.items() if p.version == want]

    def route(self, command: str, **spec: Any) -> None:
        prefix = ip_network(f"{spec['dst']}/{spec['dst_len']}")
        self.calls.append((command, str(prefix)))
        if command == "add":
            self.routes[prefix] = FakeRoute(prefix)
        else:
            del self.routes[prefix]


def test_local_routes_follow_the_wanted_set_and_remove_what_a_crash_left() -> None:
    ipr = FakeIpr([ip_network("10.9.0.0/16")])  # from a previous run that was killed

    def netlink(work: Callable[[Any], Any]) -> Any:
        return work(ipr)

    routes = ka.LocalRoutes(netlink)
    routes.set([ip_network("153.16.0.0/16"), ip_network("2001:db8::/32")])
    assert ipr.calls == [("del", "10.9.0.0/16"), ("add", "153.16.0.0/16"), ("add", "2001:db8::/32")]
    assert routes.installed == {ip_network("153.16.0.0/16"), ip_network("2001:db8::/32")}
    ipr.calls.clear()
    routes.set([ip_network("153.16.0.0/16")])
    assert ipr.calls == [("del", "2001:db8::/32")]
    routes.clear()
    assert routes.installed == set() and ipr.routes == {}


def test_enable_forwarding_sets_both_families_once(tmp_path: Path) -> None:
    for name in ka.FORWARDING_SYSCTLS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0\n")
    assert ka.enable_forwarding(tmp_path) == ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"]
    assert all((tmp_path / n).read_text() == "1\n" for n in ka.FORWARDING_SYSCTLS)
    assert ka.enable_forwarding(tmp_path) == []
    assert ka.enable_forwarding(tmp_path / "missing") == []  # logged, not raised


class FakeSender:
    def __init__(self, answer: str = "alt-sent") -> None:
        self.sent: list[bytes] = []
        self.answer = answer

    def send(self, packet: bytes) -> str:
        self.sent.append(packet)
        return self.answer

    def close(self) -> None:
        pass


def kernel_node(*routes: str) -> NodeMapping:
    config = parse_config(CONFIG)
    return NodeMapping(config, rib_with(*routes), {"b": "alt-b"}, announce=lambda p: None,
                       withdraw=lambda p: None, clock=lambda: 100.0, kernel_alt=True)


def ecm(eid: IPv4Address) -> bytes:
    request = MapRequest(7, ITR, (ITR,), (EidRecord(eid, 32),))
    return ECM(request, ITR, eid, source_port=50000, ttl=64).encode()


def test_kernel_mode_has_no_forwarder_and_no_hook() -> None:
    mapping = kernel_node()
    assert mapping.forwarder is None and mapping.hook is None and mapping.fast_hook is None
    assert "forwarder" not in mapping.status()


@pytest.mark.parametrize("answer", ["alt-sent", "alt-no-route", "alt-send-error"])
def test_the_resolver_sends_through_the_kernel_and_counts_what_it_says(answer: str) -> None:
    mapping = kernel_node("153.17.0.0/16")
    sender = mapping.kernel_sender = FakeSender(answer)  # type: ignore[assignment]
    mapping.receive(ecm(IPv4Address("153.17.2.3")), ITR, 50000)
    [packet] = sender.sent
    ip = parse_ip(packet)
    assert (ip.src, ip.dst, ip.ttl) == (ITR, IPv4Address("153.17.2.3"), 63)  # RFC 6836 §3.3
    assert mapping.counters[answer] == 1


def test_a_resolver_datagram_for_our_own_site_is_the_same_local_event() -> None:
    mapping = kernel_node("153.16.0.0/12")
    mapping._sync_kernel_local()  # what start() does (without installing routes: no loop)
    sender = mapping.kernel_sender = FakeSender()  # type: ignore[assignment]
    mapping.receive(ecm(EID), ITR, 50000)
    assert sender.sent == [] and mapping.counters["alt-local"] == 1
    assert mapping.ms is not None and mapping.ms.counters["alt-received"] == 1
    assert mapping.status()["local_prefixes"] == ["153.16.1.0/24"]
