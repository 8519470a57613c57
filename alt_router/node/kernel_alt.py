"""FRR-integrated mode's ALT data path (edge, issue 10): the kernel forwards ALT datagrams.

In this mode FRR is the ALT's BGP speaker and zebra installs the ALT routes into the node's
network namespace (or a VRF).  alt_router runs no forwarder: a transit node's GRE engine has no
inner hook, so a decapsulated ALT datagram goes into its TUN and the kernel routes it (TTL
decremented, ICMP Time Exceeded sent by the kernel, RFC 1812 §5.3.1).  What is left here:

- ``KernelRoutes``: the Map-Resolver's one route lookup (``AltRoutes``): the node's own
  prefixes (local), else the RIB (filled from the kernel's table by netlink, read here only),
  else no route;
- ``KernelAltSender``: the Map-Resolver's ALT datagram, built with the ITR's source address
  (RFC 6836 §3.3), into the kernel's routing table through a raw socket that includes the IP
  header; a destination the kernel cannot route is counted (``alt-no-route``), never raised;
- ``LocalRoutes``: ``local`` routes in the ALT's table (main, or the ``[frr] vrf``'s; protocol
  ``ALT_ROUTE_PROTO``) for the Map-Server's site prefixes and aggregates and the ALT-attached
  ETR's EID-prefixes, so that the kernel delivers ALT datagrams to them to the node's wildcard
  UDP 4342 socket.  That table, not the local one: a longer route a peer announces inside one
  of them must still win by longest-prefix match (RFC 6836 §6.1);
- the receive side: ``IP_PKTINFO``/``IPV6_RECVPKTINFO`` (and the TTL) on that socket, and
  ``local_datagram``, which rebuilds the ALT datagram a Map-Server gets in the userspace mode
  (the ITR's address and port from the packet, the EID as destination) for the node's
  ``dispatch`` as the same ``Local`` event the GRE engine produces;
- ``enable_forwarding``: ``net.ipv4.ip_forward`` and ``net.ipv6.conf.all.forwarding`` in the
  node's network namespace.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv6Address, ip_network
from pathlib import Path
from typing import Any, Final

from alt_router.alt.forwarder import LOCAL
from alt_router.gre.dataplane import Local
from alt_router.gre.userspace import run_netlink
from alt_router.inet import InetError, udp_packet
from alt_router.rib import Rib
from alt_router.rib.table import DualTable
from alt_router.types import IPAddress, Prefix

log = logging.getLogger(__name__)

ALT_ROUTE_PROTO: Final = 250
"""The route protocol (``rtm_protocol``) of the local routes this module installs; a reader of
the kernel's ALT table (the RIB from netlink) ignores routes with it."""
KERNEL: Final = "<kernel>"
"""``SendAlt.route`` in this mode: the kernel's routing table decides the next hop."""

RT_TABLE_MAIN: Final = 254
RT_TABLE_COMPAT: Final = 252
RTN_LOCAL: Final = 2
SO_BINDTODEVICE: Final = getattr(socket, "SO_BINDTODEVICE", 25)
# rtnetlink, for the one dump LocalRoutes makes (its routes only: the kernel filters).
SOL_NETLINK: Final = 270
NETLINK_GET_STRICT_CHK: Final = 12
NLM_F_REQUEST: Final = 0x01
NLM_F_DUMP: Final = 0x300
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
RTM_NEWROUTE: Final = 24
RTM_GETROUTE: Final = 26
RTA_DST: Final = 1
RTA_TABLE: Final = 15
DUMP_TIMEOUT: Final = 10.0
_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")
RT_SCOPE_HOST: Final = 254
# Linux values; Python's socket module lacks the IPv4 ones.
IP_PKTINFO: Final = getattr(socket, "IP_PKTINFO", 8)
IP_RECVTTL: Final = getattr(socket, "IP_RECVTTL", 12)
IP_TTL: Final = socket.IP_TTL
IPV6_RECVPKTINFO: Final = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO: Final = getattr(socket, "IPV6_PKTINFO", 50)
IPV6_RECVHOPLIMIT: Final = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT: Final = getattr(socket, "IPV6_HOPLIMIT", 52)
ANCILLARY_SIZE: Final = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(4)
# What the kernel says when it has no route (or the route leads nowhere): ``alt-no-route``.
NO_ROUTE_ERRNOS: Final = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN})
SENDER_COUNTERS: Final = ("alt-sent", "alt-no-route", "alt-send-error")
FORWARDING_SYSCTLS: Final = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")


class KernelRoutes:
    """The Map-Resolver's route lookup (``mapping.map_resolver.AltRoutes``) without a forwarder.

    ``route`` answers ``LOCAL`` when one of the node's own prefixes is at least as long as the
    RIB's best match (as ``AltForwarder.route`` does), ``KERNEL`` when the RIB has a route (the
    kernel then picks the next hop from the same table), else None (a negative Map-Reply).
    """

    def __init__(self, rib: Rib, router_v4: IPv4Address | None, router_v6: IPv6Address | None) -> None:
        self.rib = rib
        self.router_v4 = router_v4
        self.router_v6 = router_v6
        self._local: DualTable[bool] = DualTable()
        self._gen = 0

    @property
    def generation(self) -> tuple[int, int]:
        return self.rib.stream.last_seq, self._gen

    def set_local(self, prefixes: Iterable[Prefix]) -> None:
        self._local = DualTable()
        for prefix in prefixes:
            self._local.insert(prefix, True)
        self._gen += 1

    def local_prefixes(self) -> list[Prefix]:
        return [p for p, _ in self._local]

    def is_local(self, address: IPAddress) -> bool:
        """Is ``address`` inside one of the node's own prefixes (a datagram for its Map-Server/ETR)?"""
        return self._local.lookup(address) is not None

    def route(self, address: IPAddress) -> str | None:
        hit = self._local.lookup(address)
        path = self.rib.lookup(address)
        if hit is not None and (path is None or path.prefix.prefixlen <= hit[0].prefixlen):
            return LOCAL
        return None if path is None else KERNEL


class KernelAltSender:
    """ALT datagrams (whole IP packets) into the kernel's routing table, one raw socket per family.

    ``IPPROTO_RAW`` means the header is the caller's (``IP_HDRINCL``, and the same for IPv6 on
    Linux), so the datagram leaves with the ITR's source address and the TTL the resolver set.
    """

    def __init__(self, *, vrf: str | None = None,
                 socket_factory: Callable[[int, int, int], socket.socket] = socket.socket) -> None:
        # ``[frr] vrf``: the sockets are bound to the VRF device, so the kernel looks the EID up
        # in the VRF's table (where zebra installs the ALT), not in the main one.
        self.vrf = vrf
        self._socket_factory = socket_factory
        self._socks: dict[int, socket.socket | None] = {}
        self.counters: dict[str, int] = dict.fromkeys(SENDER_COUNTERS, 0)

    def _socket(self, version: int) -> socket.socket | None:
        if version not in self._socks:
            family = socket.AF_INET if version == 4 else socket.AF_INET6
            sock: socket.socket | None = None
            try:
                sock = self._socket_factory(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
                if version == 4:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
                if self.vrf is not None:
                    sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.vrf.encode())
                sock.setblocking(False)
                self._socks[version] = sock
            except OSError as exc:
                where = f" in VRF {self.vrf}" if self.vrf is not None else ""
                log.error("no raw IPv%d socket%s: ALT datagrams of that family are not sent: %s",
                          version, where, exc)
                if sock is not None:
                    sock.close()
                self._socks[version] = None
        return self._socks[version]

    def send(self, packet: bytes) -> str:
        """Send one ALT datagram; the counter it was counted under (``alt-sent`` when it left)."""
        version = packet[0] >> 4 if packet else 0
        sock = self._socket(version) if version in (4, 6) else None
        if sock is None:
            return self._count("alt-send-error")
        dst = IPv4Address(packet[16:20]) if version == 4 else IPv6Address(packet[24:40])
        try:
            sock.sendto(packet, (str(dst), 0))
        except OSError as exc:
            return self._count("alt-no-route" if exc.errno in NO_ROUTE_ERRNOS else "alt-send-error")
        return self._count("alt-sent")

    def _count(self, name: str) -> str:
        self.counters[name] += 1
        return name

    def close(self) -> None:
        for sock in self._socks.values():
            if sock is not None:
                sock.close()
        self._socks.clear()


# --- local routes ---------------------------------------------------------------------------------

def route_spec(prefix: Prefix, oif: int, table: int = RT_TABLE_MAIN) -> dict[str, Any]:
    """pyroute2's arguments for the ``local`` route of ``prefix`` (``ip route add local P dev lo
    table main proto 250``; in a VRF: ``dev <vrf> table <its table>``)."""
    return {
        "dst": str(prefix.network_address), "dst_len": prefix.prefixlen,
        "family": socket.AF_INET if prefix.version == 4 else socket.AF_INET6,
        "type": RTN_LOCAL, "table": table, "proto": ALT_ROUTE_PROTO, "scope": RT_SCOPE_HOST,
        "oif": oif,
    }


def local_routes_request(seq: int, table: int) -> bytes:
    """RTM_GETROUTE dump of the ``local`` routes of protocol ``ALT_ROUTE_PROTO`` in ``table``.

    With NETLINK_GET_STRICT_CHK (linux 4.20+) the kernel sends only those, so the dump costs
    nothing however large the ALT table next to them is; without it, ``parse_local_routes``
    filters a dump of everything.
    """
    rtmsg = _RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, table if table < 256 else RT_TABLE_COMPAT,
                        ALT_ROUTE_PROTO, 0, RTN_LOCAL, 0)
    attr = _RTATTR.pack(8, RTA_TABLE) + struct.pack("=I", table)
    length = _NLMSGHDR.size + len(rtmsg) + len(attr)
    return _NLMSGHDR.pack(length, RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + rtmsg + attr


def parse_local_routes(data: bytes, table: int, found: set[Prefix]) -> bool:
    """Add the prefixes of our ``local`` routes in ``table`` found in ``data`` (netlink messages)
    to ``found``; True once the dump is done.  ``OSError`` for a netlink error message."""
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, kind = _NLMSGHDR.unpack_from(data, off)[:2]
        if length < _NLMSGHDR.size or off + length > len(data):
            break
        body = off + _NLMSGHDR.size
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            err = -struct.unpack_from("=i", data, body)[0]
            if err:
                raise OSError(err, f"route dump: {errno.errorcode.get(err, err)}")
        elif kind == RTM_NEWROUTE and length >= _NLMSGHDR.size + _RTMSG.size:
            family, dst_len, _, _, rtm_table, proto, _, rtype, _ = _RTMSG.unpack_from(data, body)
            if proto == ALT_ROUTE_PROTO and rtype == RTN_LOCAL and family in (socket.AF_INET,
                                                                               socket.AF_INET6):
                dst = b"\0" * (4 if family == socket.AF_INET else 16)
                at, end = body + _RTMSG.size, off + length
                while at + _RTATTR.size <= end:
                    rta_len, rta_type = _RTATTR.unpack_from(data, at)
                    if rta_len < _RTATTR.size:
                        break
                    if rta_type == RTA_DST:
                        dst = bytes(data[at + 4:at + rta_len])
                    elif rta_type == RTA_TABLE and rta_len >= 8:
                        rtm_table = struct.unpack_from("=I", data, at + 4)[0]
                    at += (rta_len + 3) & ~3
                address = IPv4Address(dst) if len(dst) == 4 else IPv6Address(dst)
                if rtm_table == table:
                    found.add(ip_network(f"{address}/{dst_len}"))
        off += (length + 3) & ~3
    return False


def dump_local_routes(table: int) -> set[Prefix]:
    """Our ``local`` routes in ``table``, both families (from a crashed run, too), by one dump."""
    found: set[Prefix] = set()
    kind = socket.SOCK_RAW | socket.SOCK_CLOEXEC
    with socket.socket(socket.AF_NETLINK, kind, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(DUMP_TIMEOUT)
        with contextlib.suppress(OSError):  # an old kernel dumps everything; parse_local_routes filters
            sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        sock.bind((0, 0))
        sock.send(local_routes_request(1, table))
        while not parse_local_routes(sock.recv(1 << 20), table, found):
            pass
    return found


def vrf_table(ipr: Any, vrf: str) -> tuple[int, int]:
    """The interface index and routing table id of the kernel VRF ``vrf`` (``ipr``: pyroute2 IPRoute).

    ``ValueError`` if there is no such interface or it is not a VRF.
    """
    found = ipr.link_lookup(ifname=vrf)
    if not found:
        raise ValueError(f"[frr] vrf {vrf!r}: no such interface (create it first: "
                         f"ip link add {vrf} type vrf table <id>; ip link set {vrf} up)")
    index = found[0]
    info = ipr.get_links(index)[0].get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    table = data.get_attr("IFLA_VRF_TABLE") if data is not None else None
    if kind != "vrf" or table is None:
        raise ValueError(f"[frr] vrf {vrf!r} is a {kind or 'plain'} interface, not a kernel VRF")
    return int(index), int(table)


class LocalRoutes:
    """The node's ``local`` routes, kept equal to a set of prefixes.

    In the main table through ``lo``; with ``vrf`` (``[frr] vrf``) in that VRF's table through
    the VRF device, next to the ALT routes zebra installs there, so longest-prefix match
    between them still holds (RFC 6836 §6.1).  ``netlink`` runs ``work(ipr)`` with an IPRoute
    (``gre.userspace.run_netlink``: a helper thread, so it can be called from the event loop).
    Each change is a diff against what the kernel has, read by ``dump`` (``dump_local_routes``:
    our routes only, never the ALT table, which may hold a million); what a crashed run left
    behind (our protocol, not wanted) goes at the first one.
    """

    def __init__(self, netlink: Callable[[Callable[[Any], Any]], Any] = run_netlink, *,
                 vrf: str | None = None,
                 dump: Callable[[int], set[Prefix]] = dump_local_routes) -> None:
        self._netlink = netlink
        self._dump = dump
        self.vrf = vrf
        self.table = RT_TABLE_MAIN
        self.installed: set[Prefix] = set()
        self.errors = 0

    def set(self, prefixes: Iterable[Prefix]) -> None:
        wanted = set(prefixes)

        def work(ipr: Any) -> set[Prefix]:
            if self.vrf is None:
                oif, self.table = ipr.link_lookup(ifname="lo")[0], RT_TABLE_MAIN
            else:
                oif, self.table = vrf_table(ipr, self.vrf)
            present = self._dump(self.table)
            for prefix in sorted(present - wanted, key=str):
                self._change(ipr, "del", prefix, oif)
            for prefix in sorted(wanted - present, key=str):
                self._change(ipr, "add", prefix, oif)
            return self._dump(self.table)

        try:
            self.installed = self._netlink(work)
        except (OSError, ValueError) as exc:
            self.errors += 1
            log.error("kernel local routes not updated: %s", exc)
            return
        missing = wanted - self.installed
        if missing:
            log.error("kernel local routes missing for %s", ", ".join(sorted(map(str, missing))))

    def _change(self, ipr: Any, command: str, prefix: Prefix, oif: int) -> None:
        try:
            ipr.route(command, **route_spec(prefix, oif, self.table))
        except Exception as exc:  # pyroute2's NetlinkError and friends: count and go on
            self.errors += 1
            log.error("ip route %s local %s table %d proto %d: %s", command, prefix, self.table,
                      ALT_ROUTE_PROTO, exc)
            return
        done = "added" if command == "add" else "removed"
        log.info("%s kernel local route %s (table %d, proto %d)", done, prefix, self.table, ALT_ROUTE_PROTO)

    def clear(self) -> None:
        """Remove the routes installed (at stop).  Nothing installed: no netlink at all, since a
        stop is bounded; a crashed run's leftovers go at the next run's first ``set``."""
        if self.installed:
            self.set(())


# --- receiving ALT datagrams on the UDP 4342 socket --------------------------------------------------

def enable_destination_info(sock: socket.socket) -> None:
    """Ask the kernel for each datagram's destination address and TTL (hop limit)."""
    if sock.family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)


def destination_info(ancdata: Iterable[tuple[int, int, bytes]]) -> tuple[IPAddress | None, int | None]:
    """The destination address (``in_pktinfo.ipi_addr``, ``in6_pktinfo.ipi6_addr``) and TTL from
    ``recvmsg``'s ancillary data; None for what is missing."""
    dst: IPAddress | None = None
    ttl: int | None = None
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            dst = IPv4Address(data[8:12])
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 16:
            dst = IPv6Address(data[:16])
        elif (level, kind) in ((socket.IPPROTO_IP, IP_TTL), (socket.IPPROTO_IPV6, IPV6_HOPLIMIT)) \
                and len(data) >= 4:
            ttl = struct.unpack("@i", data[:4])[0]
    return dst, ttl


def local_datagram(
    payload: bytes, src: IPAddress, sport: int, dst: IPAddress, *, dport: int, ttl: int | None,
) -> Local | None:
    """The ALT datagram the kernel delivered, rebuilt as the GRE engine would have handed it over.

    The source address and port are the ITR's (the Map-Resolver sent the datagram with them,
    RFC 6836 §3.3); the TTL is what arrived (the kernel decremented it at each hop).  None if
    it cannot be rebuilt (a family mismatch, a payload too long): the caller counts it.
    """
    if src.version != dst.version:
        return None
    try:
        packet = udp_packet(src, dst, sport, dport, payload, ttl=64 if ttl is None else ttl)
    except InetError:
        return None
    return Local("", packet)


# --- forwarding ---------------------------------------------------------------------------------------

def enable_forwarding(proc_sys: Path = Path("/proc/sys"), tunnels: Iterable[str] | None = None) -> list[str]:
    """Turn on IPv4 and IPv6 forwarding in this network namespace, loosen a strict IPv4
    ``rp_filter``; the settings changed.

    The kernel forwards the ALT datagrams in this mode, so it must route between the tunnels
    (and answer TTL expiry with ICMP Time Exceeded, RFC 1812 §5.3.1).  A setting that cannot
    be written is logged, not fatal: the node may run where an operator set it already.

    An ALT datagram keeps the ITR's source address (RFC 6836 §3.3), which the node reaches over
    the underlay, not over the tunnel the datagram came in on: strict reverse-path filtering
    (``rp_filter`` = 1, RFC 3704 §2.2) drops it.  The kernel applies the larger of ``all`` and
    the device's value, so ``all``, ``default`` (tunnels a reload adds) and the tunnels
    (``tunnels``; None: the devices named as node/tunnels.py names them) go from 1 to 2, loose
    (RFC 3704 §2.4); a setting of 0 or 2 is the operator's and stays.
    """
    changed: list[str] = []
    for name in FORWARDING_SYSCTLS:
        path = proc_sys / name
        try:
            if path.read_text().strip() == "1":
                continue
            path.write_text("1\n")
        except OSError as exc:
            log.error("cannot enable forwarding (%s): %s; the kernel will not forward ALT datagrams",
                      name.replace("/", "."), exc)
            continue
        changed.append(name.replace("/", "."))
    if changed:
        log.info("kernel ALT forwarding: set %s = 1 in this network namespace", ", ".join(changed))
    return changed + _loosen_rp_filter(proc_sys, tunnels)


RP_STRICT, RP_LOOSE = "1", "2"


def _is_tunnel_name(name: str) -> bool:
    """node/tunnels.py's tunnel_name: ``alt-<peer>``, or ``alt<index>`` when that is not a valid name."""
    return name.startswith("alt-") or (name.startswith("alt") and name[3:].isdigit())


def _loosen_rp_filter(proc_sys: Path, tunnels: Iterable[str] | None) -> list[str]:
    conf = proc_sys / "net/ipv4/conf"
    if tunnels is None:
        try:
            tunnels = sorted(p.name for p in conf.iterdir() if _is_tunnel_name(p.name))
        except OSError:
            tunnels = []
    changed: list[str] = []
    for device in ("all", "default", *tunnels):
        path = conf / device / "rp_filter"
        try:
            if path.read_text().strip() != RP_STRICT:
                continue
            path.write_text(f"{RP_LOOSE}\n")
        except OSError as exc:
            if path.exists():
                log.error("cannot loosen rp_filter on %s: %s; ALT datagrams arriving there from "
                          "ITRs reached over the underlay are dropped", device, exc)
            continue
        changed.append(f"net.ipv4.conf.{device}.rp_filter")
    if changed:
        log.warning("kernel ALT forwarding: strict reverse-path filtering drops ALT datagrams (their "
                    "source is the ITR): set %s = 2 (loose) in this network namespace", ", ".join(changed))
    return changed
