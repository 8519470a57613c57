"""The kernel's ALT routes as RIB changes: rtnetlink messages in, ``(key, int key, Via | None)`` out.

FRR mode (issue 10): bgpd chooses the ALT routes, zebra installs them in the kernel table of the
node's namespace (or of a kernel VRF), and ``node/kernel_rib.py`` reads that table back through
netlink so the API and the Map-Resolver see the same RIB as in the ExaBGP mode.  This module is the
pure half: it decodes the rtnetlink messages of RFC 3549 §3 (the layout of linux
``include/uapi/linux/{netlink,rtnetlink,if_link}.h``: ``nlmsghdr``, then ``rtmsg`` or ``ifinfomsg``,
then ``rtattr``s) and turns each ALT route into a change for ``Rib.apply_kernel_routes``: its
prefix as canonical text and as an int (``rib/kernel_loc.py``), and a ``Via`` (peer, gateway and
the time it was read) that every route of one ``feed`` through the same next hop shares, so a
million routes make no object each beyond their transient text key.

An ALT route is a unicast route of protocol ``RTPROT_BGP`` (186, what zebra installs BGP routes
with) in the configured table.  Every other route is counted and ignored, among them the ``local``
routes (protocol 250) the node installs for its Map-Server's site prefixes.  The output interface
(a tunnel device) names the BGP peer through ``peer_of_ifname``; a route over an interface without
a peer is still an ALT route, attributed to a peer named like the interface.  An ECMP route
(``RTA_MULTIPATH``) is taken at its first next hop and counted (``ecmp``).  A route zebra installs
through a kernel nexthop object (``RTA_NH_ID``) still carries its interface and gateway while
``net.ipv4.nexthop_compat_mode`` is 1, the default; with 0 it has neither, and is counted
(``no-interface``) and attributed to a peer named "kernel".

Why a hand-written decoder rather than pyroute2's: the table is a million routes, and both the
initial dump and zebra's installs arrive as one message per route.  bench/kernel_rib.py, 200,000
``RTM_NEWROUTE`` /24s from a dump, CPU time per message on this (loaded, 2-core) machine: pyroute2
0.9.7's parser 110 us, this decoder 9.4 us; at pyroute2's rate a million routes would take about
two minutes of one of the two cores FRR needs.  Most messages take the fast path (``_Shape``): a
route message of a layout seen before is read with two ``struct`` calls instead of a walk over
its attributes.
"""

from __future__ import annotations

import operator
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import Any

from alt_router.rib.kernel_loc import Hop, Via, path_of
from alt_router.rib.paths import NO_ATTRIBUTES, Attributes, Path
from alt_router.types import IPAddress

# linux/netlink.h
NLMSG_HDRLEN = 16
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_DUMP_INTR = 0x10
NLM_F_REPLACE = 0x100
NLM_F_DUMP = 0x300
# linux/rtnetlink.h
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTMSG_LEN = 12
RTN_UNICAST = 1
RTPROT_BGP = 186
RT_TABLE_COMPAT = 252
RT_TABLE_MAIN = 254
RTM_F_CLONED = 0x200
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_MULTIPATH = 9
RTA_TABLE = 15
RTA_VIA = 18
RTA_NH_ID = 30
RTNEXTHOP_LEN = 8
RTMGRP_LINK = 0x1
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
# linux/if_link.h, linux/if.h
IFINFOMSG_LEN = 16
IFLA_IFNAME = 3
IFF_UP = 0x1

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_IFINFO = struct.Struct("=BxHiII")
_RTNEXTHOP = struct.Struct("=HBBi")

_HOSTMASK4 = tuple((1 << (32 - n)) - 1 for n in range(33))
_HOSTMASK6 = tuple((1 << (128 - n)) - 1 for n in range(129))
_SUFFIX4 = tuple(f"/{n}" for n in range(33))
_SUFFIX6 = tuple(f"/{n}" for n in range(129))
# Attributes whose size is fixed: a message that says otherwise is malformed.
_FIXED_SIZES = {RTA_OIF: 8, RTA_TABLE: 8, RTA_PRIORITY: 8, RTA_NH_ID: 8}
# The fast path's defaults for a gateway and an interface its layout lacks.
_PAD: tuple[bytes, int] = (b"", 0)
# Route message layouts remembered for the fast path (zebra's routes come in a handful).
MAX_SHAPES = 64
_UNSPECIFIED: dict[int, IPAddress] = {AF_INET: IPv4Address(0), AF_INET6: IPv6Address(0)}

# Counter names (``KernelRouteDecoder.counters``); the edge adds its own (overflow, dumps, ...).
COUNTERS = (
    "messages",         # netlink messages decoded
    "route-messages",   # RTM_NEWROUTE + RTM_DELROUTE
    "alt-routes",       # RTM_NEWROUTE of an ALT route (dump or event)
    "alt-deletes",      # RTM_DELROUTE of an ALT route
    "other-protocol",   # a route not installed by zebra for BGP (e.g. the node's local site routes)
    "other-table",      # a route of another table
    "other-type",       # a BGP route that is not unicast (blackhole, unreachable, ...)
    "other-family",
    "cloned",           # a route cache entry (RTM_F_CLONED), not a table route
    "ecmp",             # a multipath route, taken at its first next hop
    "no-peer",          # an ALT route over an interface without a BGP peer (named after the interface)
    "no-interface",     # an ALT route without an output interface (e.g. a nexthop-object route)
    "unknown-interface",  # an interface index no link message has named yet
    "link-messages",
    "truncated",        # a message or attribute that runs past its container: dropped
    "bad-prefix",       # a destination whose length does not fit its family
    "other-messages",
    "errors",           # NLMSG_ERROR with a nonzero error
)


@dataclass(slots=True)
class Decoded:
    """What one ``feed`` found, in message order."""

    # (canonical prefix, its int key ``network << 8 | length``, the route's via or None: withdrawn)
    changes: list[tuple[str, int, Via | None]] = field(default_factory=list)
    # Sequence numbers whose dump ended (NLMSG_DONE) or failed (NLMSG_ERROR, with the errno).
    done: list[int] = field(default_factory=list)
    errors: list[tuple[int, int]] = field(default_factory=list)
    # A dump message flagged NLM_F_DUMP_INTR: the table changed under the dump.
    interrupted: bool = False
    # An interface that carried ALT routes went down or away.  The kernel flushes its IPv4 routes
    # without a RTM_DELROUTE each, so only a fresh dump shows what is left.
    links_lost: bool = False
    # (ifindex, gateway, family) -> the Via of this batch: shared by its routes through that hop.
    vias: dict[tuple[int, bytes, int], Via] = field(default_factory=dict)

    def paths(self) -> list[tuple[str, Path | None]]:
        """``changes`` as (prefix, Path or None): what the API would show (tests, tools)."""
        return [(key, None if via is None else path_of(key, via)) for key, _, via in self.changes]


class KernelRouteDecoder:
    """Decodes rtnetlink route and link messages into RIB changes.  Pure; keeps the interface names.

    ``peer_of_ifname(name)`` names the BGP peer behind a tunnel device (None: no peer);
    ``peer_address(peer, family)`` gives that peer's tunnel address for the ``Path`` (None: the
    route's gateway stands in).  ``table`` is the kernel table of the ALT (254 ``main`` in the
    node's own namespace, or the VRF's table id).
    """

    def __init__(
        self, peer_of_ifname: Callable[[str], str | None], *, table: int = RT_TABLE_MAIN,
        peer_address: Callable[[str, int], IPAddress | None] | None = None,
        attributes: Attributes = NO_ATTRIBUTES,
    ) -> None:
        if not 0 < table < 1 << 32:
            raise ValueError(f"kernel table must be 1..4294967295, not {table}")
        self.table = table
        self.peer_of_ifname = peer_of_ifname
        self.peer_address = peer_address
        self.attributes = attributes
        self.counters: Counter[str] = Counter({name: 0 for name in COUNTERS})
        # ifindex -> (name, up)
        self.links: dict[int, tuple[str, bool]] = {}
        # (ifindex, gateway bytes, family) -> (peer, peer address, next hop): the per-route work of
        # naming the peer and building addresses, done once per next hop instead of once per route.
        self._via: dict[tuple[int, bytes, int], Hop] = {}
        # Interfaces some ALT route went out of (a link lost among them asks for a resync).
        self._used: set[int] = set()
        # (message length << 16 | message type) -> the layout of ALT routes of that size and type.
        self._shapes: dict[int, _Shape] = {}

    def forget_peers(self) -> None:
        """Drop the cached interface-to-peer answers (the node's peers changed)."""
        self._via.clear()

    def feed(self, data: bytes | bytearray | memoryview, now: float) -> Decoded:
        """Decode every whole message in ``data`` (one or more netlink datagrams back to back, each
        starting 4-byte aligned).  Never raises on bad input: a truncated message is counted and the
        rest of ``data`` dropped, since nothing after it can be framed."""
        out = Decoded()
        changes = out.changes
        counters = self.counters
        unpack_hdr = _NLMSGHDR.unpack_from
        shapes = self._shapes
        ntop = socket.inet_ntop
        suffix4, suffix6 = _SUFFIX4, _SUFFIX6
        hostmask4, hostmask6 = _HOSTMASK4, _HOSTMASK6
        from_bytes = int.from_bytes
        via_cache = self._via
        vias = out.vias
        slow = self._slow
        end = len(data)
        off = 0
        messages = routes = deletes = 0
        while off < end:
            if off + NLMSG_HDRLEN > end:
                counters["truncated"] += 1
                break
            length, mtype, flags, seq, _pid = unpack_hdr(data, off)
            mend = off + length
            if length < NLMSG_HDRLEN or mend > end:
                counters["truncated"] += 1
                break
            messages += 1
            body = off + NLMSG_HDRLEN
            off += (length + 3) & ~3
            # The fast path: a route message laid out like an ALT route seen before (see _Shape).
            shape = shapes.get(length << 16 | mtype)
            if shape is None or shape.check(data, body) != shape.expected:
                slow(data, mtype, flags, seq, body, mend, out, now)
                continue
            if flags & NLM_F_DUMP_INTR:
                out.interrupted = True
            dst_len, rflags, dst, gateway, oif = shape.pick(shape.values(data, body) + _PAD)
            net = from_bytes(dst, "big")
            if shape.v6:
                if dst_len > 128 or net & hostmask6[dst_len]:
                    counters["bad-prefix"] += 1
                    continue
                key = ntop(AF_INET6, dst)
                # inet_ntop writes RFC 5952 text like ipaddress does, except for the dotted forms.
                key = key + suffix6[dst_len] if "." not in key else _key6(dst, dst_len)
            else:
                if dst_len > 32 or net & hostmask4[dst_len]:
                    counters["bad-prefix"] += 1
                    continue
                key = ntop(AF_INET, dst) + suffix4[dst_len]
            if shape.delete:
                deletes += 1
                changes.append((key, net << 8 | dst_len, None))
                continue
            if rflags & RTM_F_CLONED:
                counters["cloned"] += 1
                continue
            routes += 1
            hop_key = (oif, gateway, shape.family)
            via = vias.get(hop_key)
            if via is None:
                hop = via_cache.get(hop_key)
                if hop is None:
                    hop = self._resolve(oif, gateway, shape.family, shape.family)
                via = vias[hop_key] = (hop, now)
            changes.append((key, net << 8 | dst_len, via))
        counters["messages"] += messages
        counters["route-messages"] += routes + deletes
        counters["alt-routes"] += routes
        counters["alt-deletes"] += deletes
        return out

    def _slow(  # noqa: PLR0917 - one call per message off the fast path
        self, data: bytes | bytearray | memoryview, mtype: int, flags: int, seq: int, body: int, mend: int,
        out: Decoded, now: float,
    ) -> None:
        counters = self.counters
        if mtype in (RTM_NEWROUTE, RTM_DELROUTE):
            if flags & NLM_F_DUMP_INTR:
                out.interrupted = True
            change = self._route(data, mtype, flags, body, mend, now, out.vias)
            if change is not None:
                counters["route-messages"] += 1
                counters["alt-deletes" if change[2] is None else "alt-routes"] += 1
                out.changes.append(change)
        elif mtype in (RTM_NEWLINK, RTM_DELLINK):
            counters["link-messages"] += 1
            if self._link(data, body, mend, mtype == RTM_NEWLINK):
                out.links_lost = True
        elif mtype == NLMSG_DONE:
            out.done.append(seq)
        elif mtype == NLMSG_ERROR:
            if body + 4 > mend:
                counters["truncated"] += 1
                return
            errno = -_I32.unpack_from(data, body)[0]
            if errno:
                counters["errors"] += 1
                out.errors.append((seq, errno))
        else:
            counters["other-messages"] += 1

    def _route(  # noqa: PLR0917
        self, data: bytes | bytearray | memoryview, mtype: int, flags: int, body: int, mend: int, now: float,
        vias: dict[tuple[int, bytes, int], Via],
    ) -> tuple[str, int, Via | None] | None:
        """The general decoder of one route message; learns its layout for the fast path."""
        counters = self.counters
        if body + RTMSG_LEN > mend:
            counters["truncated"] += 1
            return None
        family, dst_len, _src_len, _tos, rtm_table, protocol, _scope, rtype, rflags = (
            _RTMSG.unpack_from(data, body))
        # Another protocol's route that replaced one in place (NLM_F_REPLACE) ends the BGP route
        # there without a RTM_DELROUTE: read it far enough to withdraw its prefix.
        replaced = protocol != RTPROT_BGP
        if replaced and not (mtype == RTM_NEWROUTE and flags & NLM_F_REPLACE):
            counters["other-protocol"] += 1
            return None
        if family == AF_INET:
            alen = 4
        elif family == AF_INET6:
            alen = 16
        else:
            counters["other-family"] += 1
            return None
        if dst_len > alen * 8:
            counters["bad-prefix"] += 1
            return None
        # RTA_TABLE is authoritative when present (tables above 255 have RT_TABLE_COMPAT in rtmsg).
        table = rtm_table
        dst = b""
        oif = 0
        gateway = b""
        gw_family = family
        multipath = simple = False
        layout: list[tuple[int, int, int]] = []
        a = body + RTMSG_LEN
        while a + 4 <= mend:
            size, atype = _RTATTR.unpack_from(data, a)
            aend = a + size
            if size < 4 or aend > mend:
                counters["truncated"] += 1
                return None
            layout.append((a - body, size, atype))
            kind = atype & 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
            if kind in _FIXED_SIZES and size != _FIXED_SIZES[kind]:
                counters["truncated"] += 1
                return None
            if kind == RTA_DST:
                dst = bytes(data[a + 4:aend])
            elif kind == RTA_OIF:
                oif = _U32.unpack_from(data, a + 4)[0]
            elif kind == RTA_GATEWAY:
                gateway = bytes(data[a + 4:aend])
            elif kind == RTA_TABLE:
                table = _U32.unpack_from(data, a + 4)[0]
            elif kind == RTA_VIA:
                if size < 6:
                    counters["truncated"] += 1
                    return None
                # struct rtvia: a family, then the address (an IPv4 next hop of an IPv6 route)
                gw_family = _U16.unpack_from(data, a + 4)[0]
                gateway = bytes(data[a + 6:aend])
                simple = True  # not a layout the fast path knows: it reads no rtvia
            elif kind == RTA_MULTIPATH:
                multipath = simple = True
                first = self._first_nexthop(data, a + 4, aend)
                if first is None:
                    counters["truncated"] += 1
                    return None
                if not oif:
                    oif, nh_gateway, nh_family = first
                    if nh_gateway:
                        gateway, gw_family = nh_gateway, nh_family
            elif kind == RTA_NH_ID:
                simple = True
            a += (size + 3) & ~3
        if table != self.table:
            counters["other-table"] += 1
            return None
        if (len(dst) != alen) if dst else dst_len:
            counters["bad-prefix"] += 1
            return None
        net = int.from_bytes(dst, "big") if dst else 0
        ikey = net << 8 | dst_len
        if family == AF_INET:
            if net & _HOSTMASK4[dst_len]:
                counters["bad-prefix"] += 1
                return None
            key = (socket.inet_ntop(AF_INET, dst) if dst else "0.0.0.0") + _SUFFIX4[dst_len]
        else:
            if net & _HOSTMASK6[dst_len]:
                counters["bad-prefix"] += 1
                return None
            key = _key6(dst, dst_len)
        if replaced:
            counters["other-protocol"] += 1
            return key, ikey, None
        if mtype == RTM_DELROUTE:
            if dst and not simple:
                self._learn(mtype, mend - body, data, body, layout, family)
            return key, ikey, None
        if rtype != RTN_UNICAST:
            # A BGP route zebra made a blackhole is not a way into the ALT; if it replaced a
            # unicast one, that one is gone.
            counters["other-type"] += 1
            return key, ikey, None
        if rflags & RTM_F_CLONED:
            counters["cloned"] += 1
            return None
        if multipath:
            counters["ecmp"] += 1
        if dst and not simple:
            self._learn(mtype, mend - body, data, body, layout, family)
        hop_key = (oif, gateway, gw_family)
        via = vias.get(hop_key)
        if via is None:
            hop = self._via.get(hop_key)
            if hop is None:
                hop = self._resolve(oif, gateway, gw_family, family)
            via = vias[hop_key] = (hop, now)
        return key, ikey, via

    def _learn(  # noqa: PLR0917
        self, mtype: int, size: int, data: bytes | bytearray | memoryview, body: int,
        layout: list[tuple[int, int, int]], family: int,
    ) -> None:
        """Remember the layout of an accepted ALT route message for the fast path of ``feed``."""
        if len(self._shapes) >= MAX_SHAPES:
            return
        shape = _Shape.build(mtype, data, body, layout, family)
        if shape is not None:
            self._shapes[(size + NLMSG_HDRLEN) << 16 | mtype] = shape

    # --- helpers off the per-route path -----------------------------------------------------

    @staticmethod
    def _first_nexthop(
        data: bytes | bytearray | memoryview, start: int, end: int,
    ) -> tuple[int, bytes, int] | None:
        """(ifindex, gateway, gateway family) of the first ``rtnexthop`` of an RTA_MULTIPATH."""
        if start + RTNEXTHOP_LEN > end:
            return None
        nh_len, _flags, _hops, ifindex = _RTNEXTHOP.unpack_from(data, start)
        nh_end = start + nh_len
        if nh_len < RTNEXTHOP_LEN or nh_end > end:
            return None
        gateway = b""
        family = 0
        a = start + RTNEXTHOP_LEN
        while a + 4 <= nh_end:
            alen, atype = _RTATTR.unpack_from(data, a)
            if alen < 4 or a + alen > nh_end:
                return None
            atype &= 0x3FFF
            if atype == RTA_GATEWAY:
                gateway = bytes(data[a + 4:a + alen])
            elif atype == RTA_VIA and alen >= 6:
                family = _U16.unpack_from(data, a + 4)[0]
                gateway = bytes(data[a + 6:a + alen])
            a += (alen + 3) & ~3
        if gateway and not family:
            family = AF_INET if len(gateway) == 4 else AF_INET6
        return ifindex, gateway, family

    def _resolve(
        self, oif: int, gateway: bytes, gw_family: int, family: int,
    ) -> Hop:
        counters = self.counters
        if not oif:
            counters["no-interface"] += 1
            name = "kernel"
            peer = None
        else:
            link = self.links.get(oif)
            if link is None:
                counters["unknown-interface"] += 1
                name = f"if{oif}"
            else:
                name = link[0]
            peer = self.peer_of_ifname(name)
            self._used.add(oif)
        if peer is None:
            counters["no-peer"] += 1
        next_hop = _address(gateway, gw_family) or _UNSPECIFIED[family]
        owner = peer if peer is not None else name
        address = self.peer_address(owner, family) if peer is not None and self.peer_address else None
        hop: Hop = (owner, address if address is not None else next_hop, next_hop, owner, self.attributes)
        if not oif or oif in self.links:
            # Only a settled answer is cached: an unnamed interface gets its name from a later message.
            self._via[(oif, gateway, gw_family)] = hop
        return hop

    def _link(self, data: bytes | bytearray | memoryview, body: int, end: int, new: bool) -> bool:
        """Record an interface's name and state; True if one that carried ALT routes was lost."""
        if body + IFINFOMSG_LEN > end:
            self.counters["truncated"] += 1
            return False
        _family, _type, index, flags, _change = _IFINFO.unpack_from(data, body)
        name = None
        a = body + IFINFOMSG_LEN
        while a + 4 <= end:
            alen, atype = _RTATTR.unpack_from(data, a)
            if alen < 4 or a + alen > end:
                self.counters["truncated"] += 1
                return False
            if atype & 0x3FFF == IFLA_IFNAME:
                name = bytes(data[a + 4:a + alen]).split(b"\0", 1)[0].decode("utf-8", "replace")
            a += (alen + 3) & ~3
        old = self.links.get(index)
        used = index in self._used
        if not new:
            self.links.pop(index, None)
            self._drop_cached(index)
            return used
        if name is None:
            if old is None:
                return False
            name = old[0]
        up = bool(flags & IFF_UP)
        self.links[index] = (name, up)
        if old is None:
            return False
        if old[0] != name:
            self._drop_cached(index)
        # Gone down: the kernel has flushed the IPv4 routes through it, without a message each.
        return old[1] and not up and used

    def _drop_cached(self, index: int) -> None:
        for via_key in [k for k in self._via if k[0] == index]:
            del self._via[via_key]


class _Shape:
    """One layout of route message (its attributes in order, with their sizes) for the fast path.

    Learned from a message the general decoder accepted as an ALT route: ``check`` reads back the
    fields that made it one (family, table, protocol, type, every attribute header, RTA_TABLE's
    value) and the fast path takes a message of the same length and type only when they are
    ``expected``; ``values`` then reads the destination length, rtm_flags, RTA_DST, RTA_GATEWAY and
    RTA_OIF in two C calls, where the general decoder walks the attributes one by one.
    """

    __slots__ = ("check", "delete", "expected", "family", "pick", "v6", "values")

    def __init__(  # noqa: PLR0917
        self, check: struct.Struct, expected: tuple[int, ...], values: struct.Struct,
        pick: Callable[[tuple[Any, ...]], tuple[int, int, bytes, bytes, int]], family: int, delete: bool,
    ) -> None:
        self.check = check.unpack_from
        self.expected = expected
        self.values = values.unpack_from
        self.pick = pick
        self.family = family
        self.v6 = family == AF_INET6
        self.delete = delete

    @classmethod
    def build(
        cls, mtype: int, data: bytes | bytearray | memoryview, body: int, layout: list[tuple[int, int, int]],
        family: int,
    ) -> _Shape | None:
        rtm = _RTMSG.unpack_from(data, body)
        check = ["=B3xBBxB4x"]
        expected = [rtm[0], rtm[4], rtm[5], rtm[7]]
        values = ["=xB6xI"]
        fields: list[int] = []
        pos = vpos = RTMSG_LEN
        for offset, size, atype in layout:
            kind = atype & 0x3FFF
            if offset > pos:
                check.append(f"{offset - pos}x")
            check.append("HH")
            expected += [size, atype]
            pos = offset + 4
            if kind == RTA_TABLE:
                check.append("I")
                expected.append(_U32.unpack_from(data, body + offset + 4)[0])
                pos += 4
            if kind in (RTA_DST, RTA_GATEWAY, RTA_OIF):
                if offset + 4 > vpos:
                    values.append(f"{offset + 4 - vpos}x")
                values.append("I" if kind == RTA_OIF else f"{size - 4}s")
                fields.append(kind)
                vpos = offset + size
        if RTA_DST not in fields:
            return None
        n = 2 + len(fields)  # where _PAD's gateway and interface land
        index = [0, 1, 2 + fields.index(RTA_DST),
                 2 + fields.index(RTA_GATEWAY) if RTA_GATEWAY in fields else n,
                 2 + fields.index(RTA_OIF) if RTA_OIF in fields else n + 1]
        return cls(struct.Struct("".join(check)), tuple(expected), struct.Struct("".join(values)),
                   operator.itemgetter(*index), family, mtype == RTM_DELROUTE)


def _key6(dst: bytes, dst_len: int) -> str:
    # ipaddress's text (RFC 5952), which is what the RIB keys IPv6 prefixes by; inet_ntop's
    # differs for the dotted forms (e.g. IPv4-mapped).  Host bits are checked by the caller.
    return str(IPv6Network((dst or bytes(16), dst_len)))


def _address(raw: bytes, family: int) -> IPAddress | None:
    if family == AF_INET and len(raw) == 4:
        return IPv4Address(raw)
    if family == AF_INET6 and len(raw) == 16:
        return IPv6Address(raw)
    return None


# --- request builders (the edge sends these) ------------------------------------------------------

def dump_routes_request(seq: int, table: int = RT_TABLE_MAIN) -> bytes:
    """RTM_GETROUTE dump of every family.  With NETLINK_GET_STRICT_CHK set on the socket the kernel
    (4.20+) filters on the protocol and table given here; without it they are ignored and the
    decoder filters."""
    rtmsg = _RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, table if table < 256 else RT_TABLE_COMPAT,
                        RTPROT_BGP, 0, 0, 0)
    attr = _RTATTR.pack(8, RTA_TABLE) + _U32.pack(table)
    length = NLMSG_HDRLEN + len(rtmsg) + len(attr)
    return _NLMSGHDR.pack(length, RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + rtmsg + attr


def dump_links_request(seq: int) -> bytes:
    """RTM_GETLINK dump: the interface names the routes' output interfaces refer to."""
    ifinfo = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    length = NLMSG_HDRLEN + len(ifinfo)
    return _NLMSGHDR.pack(length, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + ifinfo
