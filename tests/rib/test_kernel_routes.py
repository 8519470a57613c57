"""The kernel route decoder (FRR mode, issue 10) on hand-built rtnetlink messages.

Layouts follow RFC 3549 §2.3.2 (netlink message header: length, type, flags, sequence, pid),
§3.1.1 (the route service module: rtmsg, then route attributes) and linux
include/uapi/linux/rtnetlink.h (attribute numbers, rtnexthop for RTA_MULTIPATH, rtvia).
"""

from __future__ import annotations

import random
import socket
import struct
from ipaddress import IPv4Address, IPv6Address, ip_network

import pytest

from alt_router.rib import Rib
from alt_router.rib.events import RouteChange
from alt_router.rib.kernel_routes import (
    IFF_UP,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_MULTI,
    NLM_F_REPLACE,
    NLMSG_DONE,
    NLMSG_ERROR,
    RTA_DST,
    RTA_GATEWAY,
    RTA_MULTIPATH,
    RTA_OIF,
    RTA_PRIORITY,
    RTA_TABLE,
    RTA_VIA,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTPROT_BGP,
    KernelRouteDecoder,
    dump_links_request,
    dump_routes_request,
)
from alt_router.rib.paths import Path, PeerInfo

AF4, AF6 = socket.AF_INET, socket.AF_INET6
RTN_UNICAST, RTN_BLACKHOLE = 1, 6
RTPROT_STATIC, ALT_ROUTE_PROTO = 4, 250
RTA_UNKNOWN = 99
RTA_CACHEINFO = 12
B_ADDR = IPv4Address("10.255.0.2")


# --- message builders (native byte order, as the kernel writes them) ---------------------------

def rta(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + bytes(-size % 4)


def u32(value: int) -> bytes:
    return struct.pack("=I", value)


def nlmsg(mtype: int, body: bytes, *, flags: int = 0, seq: int = 0) -> bytes:
    size = 16 + len(body)
    return struct.pack("=IHHII", size, mtype, flags, seq, 0) + body + bytes(-size % 4)


def route(
    prefix: str, *, gateway: str | None = None, oif: int | None = 3, table: int = 254,
    protocol: int = RTPROT_BGP, rtype: int = RTN_UNICAST, mtype: int = RTM_NEWROUTE, rflags: int = 0,
    extra: bytes = b"", flags: int = 0, seq: int = 0, priority: int | None = 20,
) -> bytes:
    net = ip_network(prefix)
    family = AF4 if net.version == 4 else AF6
    body = struct.pack("=BBBBBBBBI", family, net.prefixlen, 0, 0, table if table < 256 else 252, protocol,
                       0, rtype, rflags)
    body += rta(RTA_TABLE, u32(table))
    if net.prefixlen:
        body += rta(RTA_DST, net.network_address.packed)
    if priority is not None:
        body += rta(RTA_PRIORITY, u32(priority))
    if gateway is not None:
        body += rta(RTA_GATEWAY, socket.inet_pton(family, gateway))
    if oif is not None:
        body += rta(RTA_OIF, u32(oif))
    return nlmsg(mtype, body + extra, flags=flags, seq=seq)


def link(index: int, name: str, *, up: bool = True, mtype: int = RTM_NEWLINK) -> bytes:
    body = struct.pack("=BxHiII", 0, 0xFFFE, index, IFF_UP if up else 0, 0)
    return nlmsg(mtype, body + rta(3, name.encode() + b"\0"))


def nexthop(ifindex: int, gateway: str) -> bytes:
    attrs = rta(RTA_GATEWAY, socket.inet_pton(AF6 if ":" in gateway else AF4, gateway))
    return struct.pack("=HBBi", 8 + len(attrs), 0, 0, ifindex) + attrs


PEERS = {"alt-b": "b", "alt-c": "c"}


def decoder(table: int = 254) -> KernelRouteDecoder:
    addresses = {("b", AF4): B_ADDR, ("b", AF6): IPv6Address("fd00::2")}
    dec = KernelRouteDecoder(PEERS.get, table=table, peer_address=lambda p, f: addresses.get((p, f)))
    dec.feed(link(3, "alt-b") + link(4, "alt-c") + link(5, "eth0"), 0.0)
    return dec


def only_change(dec: KernelRouteDecoder, data: bytes, now: float = 1.0) -> tuple[str, Path | None]:
    out = dec.feed(data, now)
    assert len(out.changes) == 1, out
    return out.paths()[0]


# --- routes ----------------------------------------------------------------------------------

def test_ipv4_bgp_route_becomes_a_path_of_the_interfaces_peer() -> None:
    dec = decoder()
    key, path = only_change(dec, route("153.16.1.0/24", gateway="10.255.0.2"), now=7.5)
    assert key == "153.16.1.0/24"
    assert path is not None
    assert (path.peer, path.next_hop_peer, path.peer_address, path.next_hop, path.learned_at) == (
        "b", "b", B_ADDR, B_ADDR, 7.5)
    assert dec.counters["alt-routes"] == 1


def test_ipv6_route_keys_are_ipaddress_text() -> None:
    dec = decoder()
    key, path = only_change(dec, route("2001:db8:0:1::/64", gateway="fe80::2", oif=4))
    assert key == "2001:db8:0:1::/64"
    assert path is not None and path.peer == "c" and path.next_hop == IPv6Address("fe80::2")
    # inet_ntop writes an IPv4-mapped prefix dotted; the RIB keys it as ipaddress does.
    key, _ = only_change(dec, route("::ffff:0:0/96", oif=3))
    assert key == str(ip_network("::ffff:0:0/96"))
    # Twice: the second goes through the learned layout and must say the same.
    assert only_change(dec, route("::ffff:0:0/96", oif=3))[0] == key


def test_the_fast_path_gives_what_the_general_decoder_gives() -> None:
    first, second = decoder(), decoder()
    messages = [route(f"153.16.{i}.0/24", gateway="10.255.0.2") for i in range(5)]
    messages += [route(f"2001:db8:{i}::/48", gateway="fe80::1", oif=4) for i in range(5)]
    messages += [route(f"153.16.{i}.0/24", mtype=RTM_DELROUTE) for i in range(3)]
    one_by_one = [c for m in messages for c in first.feed(m, 1.0).changes]
    at_once = second.feed(b"".join(messages), 1.0).changes
    assert one_by_one == at_once
    assert [k for k, _, _ in at_once][-3:] == ["153.16.0.0/24", "153.16.1.0/24", "153.16.2.0/24"]
    assert second.counters["alt-routes"] == 10 and second.counters["alt-deletes"] == 3


def test_delete_is_a_withdrawal() -> None:
    dec = decoder()
    assert only_change(dec, route("153.16.1.0/24", mtype=RTM_DELROUTE)) == ("153.16.1.0/24", None)
    assert dec.counters["alt-deletes"] == 1


def test_default_route_without_rta_dst() -> None:
    assert only_change(decoder(), route("0.0.0.0/0", gateway="10.255.0.2"))[0] == "0.0.0.0/0"


def test_multipath_takes_the_first_next_hop_and_counts_ecmp() -> None:
    dec = decoder()
    paths = rta(RTA_MULTIPATH, nexthop(4, "10.0.0.9") + nexthop(3, "10.255.0.2"))
    key, path = only_change(dec, route("153.16.2.0/24", oif=None, extra=paths))
    assert key == "153.16.2.0/24"
    assert path is not None and path.peer == "c" and path.next_hop == IPv4Address("10.0.0.9")
    assert dec.counters["ecmp"] == 1


def test_ipv6_route_with_an_ipv4_next_hop_via_rta_via() -> None:
    # RFC 5549 next hops: zebra installs "via inet 10.255.0.2" for an IPv6 route.
    via = rta(RTA_VIA, struct.pack("=H", AF4) + socket.inet_aton("10.255.0.2"))
    key, path = only_change(decoder(), route("2001:db8::/32", extra=via))
    assert key == "2001:db8::/32"
    assert path is not None and path.next_hop == B_ADDR and path.peer == "b"


def test_unknown_attributes_are_skipped() -> None:
    dec = decoder()
    extra = rta(RTA_UNKNOWN, b"\x01\x02\x03") + rta(RTA_CACHEINFO, bytes(32)) + rta(RTA_UNKNOWN | 0x8000, b"")
    key, path = only_change(dec, route("153.16.3.0/24", gateway="10.255.0.2", extra=extra))
    assert key == "153.16.3.0/24" and path is not None and path.peer == "b"
    assert dec.counters["truncated"] == 0


@pytest.mark.parametrize(("kwargs", "counter"), [
    ({"protocol": RTPROT_STATIC}, "other-protocol"),
    ({"protocol": ALT_ROUTE_PROTO, "rtype": 2}, "other-protocol"),  # the node's local site routes
    ({"table": 100}, "other-table"),
    ({"table": 1000}, "other-table"),
    ({"rflags": 0x200}, "cloned"),
])
def test_other_routes_are_counted_and_ignored(kwargs: dict[str, int], counter: str) -> None:
    dec = decoder()
    out = dec.feed(route("153.16.4.0/24", gateway="10.255.0.2", **kwargs), 0.0)
    assert out.changes == []
    assert dec.counters[counter] == 1
    assert dec.counters["alt-routes"] == 0


def test_another_protocols_route_replacing_a_bgp_route_withdraws_it() -> None:
    # ip route replace / zebra preferring a static route: one RTM_NEWROUTE with NLM_F_REPLACE,
    # no RTM_DELROUTE for the BGP route it displaced.
    dec = decoder()
    replace = route("153.16.4.0/24", gateway="10.255.0.2", protocol=RTPROT_STATIC, flags=NLM_F_REPLACE)
    assert only_change(dec, replace) == ("153.16.4.0/24", None)
    assert dec.counters["other-protocol"] == 1


def test_a_vrf_table_above_255_is_read_from_rta_table() -> None:
    dec = decoder(table=1000)
    assert only_change(dec, route("153.16.5.0/24", table=1000))[0] == "153.16.5.0/24"
    assert dec.feed(route("153.16.5.0/24", table=254), 0.0).changes == []


def test_a_bgp_blackhole_withdraws_the_prefix() -> None:
    dec = decoder()
    assert only_change(dec, route("153.16.6.0/24", oif=None, rtype=RTN_BLACKHOLE)) == ("153.16.6.0/24", None)
    assert dec.counters["other-type"] == 1


def test_interface_without_a_peer_or_a_name() -> None:
    dec = decoder()
    _, path = only_change(dec, route("153.16.7.0/24", gateway="192.0.2.1", oif=5))
    assert path is not None and path.peer == "eth0" and path.peer_address == IPv4Address("192.0.2.1")
    _, path = only_change(dec, route("153.16.8.0/24", oif=42))
    assert path is not None and path.peer == "if42" and path.next_hop == IPv4Address(0)
    _, path = only_change(dec, route("153.16.9.0/24", oif=None))
    assert path is not None and path.peer == "kernel"
    counts = dec.counters
    assert (counts["no-peer"], counts["unknown-interface"], counts["no-interface"]) == (3, 1, 1)
    # Once the interface is named, its routes are attributed to its peer.
    dec.feed(link(42, "alt-c"), 0.0)
    assert only_change(dec, route("153.16.8.0/24", oif=42))[1].peer == "c"  # type: ignore[union-attr]


@pytest.mark.parametrize("data", [
    route("153.16.1.0/24")[:-3],                                   # nlmsg_len past the buffer
    route("153.16.1.0/24")[:10],                                   # not even a header
    nlmsg(RTM_NEWROUTE, b"\x02\x18\x00"),                          # rtmsg cut short
    nlmsg(RTM_NEWROUTE, struct.pack("=BBBBBBBBI", AF4, 24, 0, 0, 254, RTPROT_BGP, 0, 1, 0)
          + struct.pack("=HH", 200, RTA_DST) + b"\x99\x10\x01\x00"),  # attribute past the message
    nlmsg(RTM_NEWROUTE, struct.pack("=BBBBBBBBI", AF4, 24, 0, 0, 254, RTPROT_BGP, 0, 1, 0)
          + struct.pack("=HH", 6, RTA_OIF) + b"\x01\x00"),           # RTA_OIF shorter than a u32
    route("153.16.1.0/24", oif=None, extra=rta(RTA_MULTIPATH, struct.pack("=HBBi", 40, 0, 0, 3))),
    route("153.16.1.0/24", extra=rta(RTA_VIA, b"\x02")),
    struct.pack("=IHHII", 8, RTM_NEWROUTE, 0, 0, 0),              # nlmsg_len below the header
])
def test_truncated_messages_are_counted_drops(data: bytes) -> None:
    dec = decoder()
    assert dec.feed(data, 0.0).changes == []
    assert dec.counters["truncated"] == 1


@pytest.mark.parametrize("data", [
    route("153.16.1.0/24")[:20] + struct.pack("=HH", 8, RTA_DST),
    nlmsg(RTM_NEWROUTE, struct.pack("=BBBBBBBBI", AF4, 24, 0, 0, 254, RTPROT_BGP, 0, 1, 0)
          + rta(RTA_DST, b"\x99\x10\x01")),                       # 3-byte IPv4 destination
    nlmsg(RTM_NEWROUTE, struct.pack("=BBBBBBBBI", AF4, 40, 0, 0, 254, RTPROT_BGP, 0, 1, 0)
          + rta(RTA_DST, b"\x99\x10\x01\x00")),                   # /40 in IPv4
    nlmsg(RTM_NEWROUTE, struct.pack("=BBBBBBBBI", AF4, 16, 0, 0, 254, RTPROT_BGP, 0, 1, 0)
          + rta(RTA_DST, b"\x99\x10\x01\x00")),                   # host bits set
])
def test_malformed_routes_never_raise(data: bytes) -> None:
    dec = decoder()
    assert dec.feed(data, 0.0).changes == []
    assert dec.counters["truncated"] + dec.counters["bad-prefix"] == 1


def test_a_learned_layout_still_checks_the_prefix_length() -> None:
    dec = decoder()
    good = route("153.16.1.0/24", gateway="10.255.0.2")
    dec.feed(good, 0.0)
    # Same size and layout, destination length 40: the fast path must refuse it, not index past /32.
    bad = bytearray(good)
    bad[17] = 40
    assert dec.feed(bytes(bad), 0.0).changes == []
    assert dec.counters["bad-prefix"] == 1
    # Same size, another protocol: not taken for an ALT route.
    other = bytearray(good)
    other[21] = RTPROT_STATIC
    assert dec.feed(bytes(other), 0.0).changes == []
    assert dec.counters["other-protocol"] == 1


def test_random_damage_never_raises() -> None:
    dec = decoder()
    stream = b"".join([route(f"153.16.{i}.0/24", gateway="10.255.0.2") for i in range(20)]
                      + [route("2001:db8::/32", oif=4), link(9, "alt-x"), nlmsg(NLMSG_DONE, u32(0), seq=5)])
    rnd = random.Random(3549)
    for _ in range(2000):
        data = bytearray(stream)
        for _ in range(rnd.randint(1, 8)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        dec.feed(bytes(data[:rnd.randint(0, len(data))]), 0.0)


# --- control messages and links -------------------------------------------------------------

def test_done_and_error_messages_are_reported_by_sequence() -> None:
    dec = decoder()
    data = (route("153.16.1.0/24", flags=NLM_F_MULTI | NLM_F_DUMP_INTR, seq=7)
            + nlmsg(NLMSG_DONE, u32(0), flags=NLM_F_MULTI, seq=7)
            + nlmsg(NLMSG_ERROR, struct.pack("=i", -16) + bytes(16), seq=8)
            + nlmsg(NLMSG_ERROR, struct.pack("=i", 0) + bytes(16), seq=9))
    out = dec.feed(data, 0.0)
    assert out.done == [7]
    assert out.errors == [(8, 16)]
    assert out.interrupted
    assert len(out.changes) == 1


def test_losing_an_interface_that_carried_routes_asks_for_a_resync() -> None:
    dec = decoder()
    assert not dec.feed(link(4, "alt-c", up=False), 0.0).links_lost  # no route used it yet
    dec.feed(link(4, "alt-c", up=True), 0.0)
    dec.feed(route("153.16.1.0/24", oif=3), 0.0)
    assert not dec.feed(link(3, "alt-b", up=True), 0.0).links_lost   # a flags update, still up
    assert dec.feed(link(3, "alt-b", up=False), 0.0).links_lost       # down: IPv4 routes flushed
    assert dec.feed(link(3, "alt-b", mtype=RTM_DELLINK), 0.0).links_lost
    assert 3 not in dec.links


def test_a_renamed_interface_is_attributed_anew() -> None:
    dec = decoder()
    assert only_change(dec, route("153.16.1.0/24", oif=3))[1].peer == "b"  # type: ignore[union-attr]
    dec.feed(link(3, "alt-c"), 0.0)
    assert only_change(dec, route("153.16.1.0/24", oif=3))[1].peer == "c"  # type: ignore[union-attr]


def test_dump_requests() -> None:
    req = dump_routes_request(5, 1000)
    size, mtype, flags, seq, _ = struct.unpack_from("=IHHII", req)
    assert (size, mtype, flags & NLM_F_DUMP, seq) == (len(req), RTM_GETROUTE, NLM_F_DUMP, 5)
    assert req[16 + 4] == 252 and req[16 + 5] == RTPROT_BGP  # RT_TABLE_COMPAT, filtered on bgp
    assert struct.unpack_from("=HHI", req, 28) == (8, RTA_TABLE, 1000)
    req = dump_links_request(6)
    assert struct.unpack_from("=IHHII", req)[:2] == (len(req), RTM_GETLINK)
    with pytest.raises(ValueError, match="kernel table"):
        KernelRouteDecoder(PEERS.get, table=0)


# --- Rib.apply_kernel ------------------------------------------------------------------------

def test_rib_apply_kernel_publishes_each_real_change() -> None:
    rib = Rib(65000, [], [PeerInfo("b", 65001, (B_ADDR,))])
    dec = decoder()
    first = dec.feed(route("153.16.1.0/24", gateway="10.255.0.2") + route("2001:db8::/32", oif=4), 1.0)
    assert rib.apply_kernel_routes(first.changes) == 2
    assert rib.lookup("153.16.1.9") == first.paths()[0][1]
    assert rib.lookup("2001:db8::1") == first.paths()[1][1]
    seq = rib.stream.last_seq
    # The same routes again (a resynchronising dump): nothing changes, learned_at is kept.
    again = dec.feed(route("153.16.1.0/24", gateway="10.255.0.2"), 2.0)
    assert rib.apply_kernel_routes(again.changes) == 0
    assert rib.stream.last_seq == seq
    assert rib.get("153.16.1.0/24").learned_at == 1.0  # type: ignore[union-attr]
    # A new next hop is a change, a delete a withdrawal, a delete of nothing no event.
    moved = dec.feed(route("153.16.1.0/24", oif=4, gateway="10.0.0.9"), 3.0)
    gone = dec.feed(route("2001:db8::/32", mtype=RTM_DELROUTE) + route("10.9.0.0/16", mtype=RTM_DELROUTE),
                    4.0)
    assert rib.apply_kernel_routes(moved.changes + gone.changes) == 2
    kinds = [(r.event.kind, r.event.key) for r in rib.stream.since(seq) if isinstance(r.event, RouteChange)]
    assert kinds == [("change", "153.16.1.0/24"), ("withdraw", "2001:db8::/32")]
    assert rib.lookup("153.16.1.9").peer == "c"  # type: ignore[union-attr]
    assert rib.lookup("2001:db8::1") is None
    assert len(rib) == 1 and rib.stats["kernel-changes"] == 4
