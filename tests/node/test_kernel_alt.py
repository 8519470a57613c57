"""FRR-integrated mode's data path (node/kernel_alt.py, issue 10) without a kernel: the pure parts.

RFC 6836 §3.3 (the ALT datagram keeps the ITR's source address and port), §6.1 (longest match
between our own prefixes and the ALT's routes), RFC 1812 §5.3.1 (the kernel decrements the TTL).
"""

from __future__ import annotations

import errno
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


class FakeIpr:
    """Just enough of pyroute2's IPRoute: ``lo``, a VRF ``alt`` (table 100) and route changes."""

    def __init__(self, present: list[Prefix], table: int = ka.RT_TABLE_MAIN) -> None:
        self.tables: dict[int, set[Prefix]] = {table: set(present)}
        self.calls: list[tuple[str, str, int, int]] = []

    def link_lookup(self, ifname: str) -> list[int]:
        return {"lo": [1], "alt": [7]}.get(ifname, [])

    def get_links(self, index: int) -> list[Any]:
        return [Nla(IFLA_LINKINFO=Nla(IFLA_INFO_KIND="vrf", IFLA_INFO_DATA=Nla(IFLA_VRF_TABLE=100)))]

    def dump(self, table: int) -> set[Prefix]:
        return set(self.tables.get(table, ()))

    def route(self, command: str, **spec: Any) -> None:
        prefix = ip_network(f"{spec['dst']}/{spec['dst_len']}")
        assert spec["type"] == ka.RTN_LOCAL and spec["proto"] == ka.ALT_ROUTE_PROTO
        self.calls.append((command, str(prefix), spec["table"], spec["oif"]))
        table = self.tables.setdefault(spec["table"], set())
        if command == "add":
            table.add(prefix)
        else:
            table.remove(prefix)


class Nla:
    def __init__(self, **attrs: Any) -> None:
        self.attrs = attrs

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


def local_routes(ipr: FakeIpr, vrf: str | None = None) -> ka.LocalRoutes:
    def netlink(work: Callable[[Any], Any]) -> Any:
        return work(ipr)

    return ka.LocalRoutes(netlink, vrf=vrf, dump=ipr.dump)


def test_local_routes_follow_the_wanted_set_and_remove_what_a_crash_left() -> None:
    ipr = FakeIpr([ip_network("10.9.0.0/16")])  # from a previous run that was killed
    routes = local_routes(ipr)
    routes.set([ip_network("153.16.0.0/16"), ip_network("2001:db8::/32")])
    assert ipr.calls == [("del", "10.9.0.0/16", 254, 1), ("add", "153.16.0.0/16", 254, 1),
                         ("add", "2001:db8::/32", 254, 1)]
    assert routes.installed == {ip_network("153.16.0.0/16"), ip_network("2001:db8::/32")}
    ipr.calls.clear()
    routes.set([ip_network("153.16.0.0/16")])
    assert ipr.calls == [("del", "2001:db8::/32", 254, 1)]
    routes.clear()
    assert routes.installed == set() and ipr.tables == {254: set()}


def test_clearing_nothing_installed_makes_no_netlink_call() -> None:
    # At stop, with a full ALT table beside: a stop is bounded, so no work it does not need.
    def netlink(work: Callable[[Any], Any]) -> Any:
        raise AssertionError("no netlink call expected")

    ka.LocalRoutes(netlink).clear()


def test_local_routes_in_a_vrf_go_to_its_table_through_its_device() -> None:
    # [frr] vrf: zebra installs the ALT in the VRF's table, so the local routes go there too,
    # or a longer ALT route inside a site prefix would not win (RFC 6836 §6.1).
    ipr = FakeIpr([ip_network("10.9.0.0/16")], table=100)
    routes = local_routes(ipr, vrf="alt")
    routes.set([ip_network("153.16.0.0/16")])
    assert ipr.calls == [("del", "10.9.0.0/16", 100, 7), ("add", "153.16.0.0/16", 100, 7)]
    assert routes.table == 100 and routes.installed == {ip_network("153.16.0.0/16")}


def test_local_routes_without_the_vrf_count_an_error() -> None:
    routes = local_routes(FakeIpr([]), vrf="missing")
    routes.set([ip_network("153.16.0.0/16")])
    assert routes.errors == 1 and routes.installed == set()


def _route_message(prefix: Prefix, *, proto: int = ka.ALT_ROUTE_PROTO, rtype: int = ka.RTN_LOCAL,
                   table: int = 254) -> bytes:
    family = socket.AF_INET if prefix.version == 4 else socket.AF_INET6
    rtmsg = struct.pack("=BBBBBBBBI", family, prefix.prefixlen, 0, 0, min(table, 252), proto, 254, rtype, 0)
    dst = prefix.network_address.packed
    attrs = struct.pack("=HH", 4 + len(dst), ka.RTA_DST) + dst
    attrs += struct.pack("=HHI", 8, ka.RTA_TABLE, table)
    body = rtmsg + attrs
    return struct.pack("=IHHII", 16 + len(body), ka.RTM_NEWROUTE, 2, 1, 0) + body


def test_the_dump_request_asks_the_kernel_for_our_local_routes_of_one_table_only() -> None:
    # A strict-checked dump (linux 4.20+) filtered on table, protocol and type: a million ALT
    # routes next to them are never sent (a full dump through pyroute2 took minutes to stop).
    request = ka.local_routes_request(5, 1000)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", request)
    assert (length, kind, flags, seq) == (len(request), ka.RTM_GETROUTE, ka.NLM_F_REQUEST | ka.NLM_F_DUMP, 5)
    family, _, _, _, table, proto, _, rtype, _ = struct.unpack_from("=BBBBBBBBI", request, 16)
    assert (family, table, proto, rtype) == (socket.AF_UNSPEC, ka.RT_TABLE_COMPAT, ka.ALT_ROUTE_PROTO,
                                             ka.RTN_LOCAL)
    assert struct.unpack_from("=HHI", request, 28) == (8, ka.RTA_TABLE, 1000)


def test_parsing_the_dump_keeps_our_local_routes_of_that_table() -> None:
    ours = [ip_network("153.16.0.0/16"), ip_network("2001:db8::/32")]
    data = b"".join(_route_message(p) for p in ours)
    data += _route_message(ip_network("10.1.0.0/16"), proto=186, rtype=1)  # an ALT route (old kernel)
    data += _route_message(ip_network("10.2.0.0/16"), table=100)  # another table
    found: set[Prefix] = set()
    assert not ka.parse_local_routes(data, 254, found)
    assert found == set(ours)
    assert ka.parse_local_routes(struct.pack("=IHHIIi", 20, ka.NLMSG_DONE, 2, 1, 0, 0), 254, found)
    error = struct.pack("=IHHIIi", 20, ka.NLMSG_ERROR, 0, 1, 0, -errno.EINVAL)
    with pytest.raises(OSError, match="EINVAL"):
        ka.parse_local_routes(error, 254, found)


class FakeRawSocket:
    def __init__(self, family: int, kind: int, proto: int) -> None:
        self.family = family
        self.options: list[tuple[int, int, Any]] = []
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def setsockopt(self, level: int, name: int, value: Any) -> None:
        self.options.append((level, name, value))

    def setblocking(self, flag: bool) -> None:
        pass

    def sendto(self, packet: bytes, address: tuple[str, int]) -> int:
        self.sent.append((packet, address))
        return len(packet)

    def close(self) -> None:
        pass


def test_the_resolvers_raw_sockets_are_bound_to_the_vrf() -> None:
    # In a VRF the EID must be looked up in the VRF's table (where zebra put the ALT).
    made: list[FakeRawSocket] = []

    def factory(family: int, kind: int, proto: int) -> Any:
        made.append(FakeRawSocket(family, kind, proto))
        return made[-1]

    sender = ka.KernelAltSender(vrf="alt", socket_factory=factory)
    packet = bytes([0x45]) + bytes(15) + IPv4Address("153.16.1.1").packed
    assert sender.send(packet) == "alt-sent"
    assert (socket.SOL_SOCKET, ka.SO_BINDTODEVICE, b"alt") in made[0].options
    assert made[0].sent[0][1] == ("153.16.1.1", 0)
    plain = ka.KernelAltSender(socket_factory=factory)
    plain.send(packet)
    assert all(name != ka.SO_BINDTODEVICE for _, name, _ in made[1].options)


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
