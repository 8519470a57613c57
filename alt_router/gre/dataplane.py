"""The GRE data path's decisions, sans-IO: demultiplex, decapsulate, hook, encapsulate, count.

The edge (``userspace.py``) feeds it what the raw sockets and TUN devices read
and carries out the actions it returns.  Received inner packets go through an
optional *hook* before anything is written anywhere, so a forwarder (the ALT
datagram path) can look at a packet that arrived on one tunnel and send it out
of another in the same pass, without a trip through the kernel.

A hook's ``Local`` verdicts and its ``Drop`` verdicts that carry an ICMP error are events for
the node, not work for the data path: they come back among the actions as they are, and the
edge hands them on (``Engine(events=...)``) without looking inside.

The ``*_fast`` entry points are the same decisions for the common case (a tunnel
without checksums or sequence numbers, a hook that forwards), returned as a plain
``(kind, tunnel, bytes)`` tuple instead of a list of action objects: at 100,000
packets a second CPython cannot afford an allocated dataclass, a list and an
``isinstance`` chain per packet.  Anything out of the ordinary falls through to
the general path, so drops, counters and hook semantics are the same either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from alt_router.gre import header as gre
from alt_router.gre.config import TunnelConfig, check_set
from alt_router.inet import PROTO_GRE, InetError, parse_ip
from alt_router.types import IPAddress

log = logging.getLogger(__name__)

# Drop reasons beyond the header codec's (see alt_router.gre.header).
UNKNOWN_REMOTE: Final = "unknown-remote"
WRONG_KEY: Final = "wrong-key"
BAD_OUTER: Final = "bad-outer-header"
INNER_MISMATCH: Final = "inner-mismatch"
TUN_WRITE_ERROR: Final = "tun-write-error"
TUN_READ_ERROR: Final = "tun-read-error"
UNDERLAY_SEND_ERROR: Final = "underlay-send-error"
UNKNOWN_TUNNEL: Final = "unknown-tunnel"
HOOK_ERROR: Final = "hook-error"
TOO_BIG: Final = "too-big"


def _worth_logging(n: int) -> bool:
    """Occurrences 1, 2, 3, 10, 100, 1000...: a bug every packet hits cannot flood the log (no clock)."""
    if n <= 3:
        return True
    while n % 10 == 0:
        n //= 10
    return n == 1


# --- What a hook may decide about a decapsulated inner packet -------------------------------

@dataclass(frozen=True, slots=True)
class Deliver:
    """Write the packet into the receiving tunnel's TUN (the default)."""


@dataclass(frozen=True, slots=True)
class Drop:
    """Drop the packet, counted under ``reason``.

    ``icmp`` is the ICMP error to send about it (a whole IP packet, for the underlay), already
    allowed by the hook's rules and rate limits, or None.  A Drop with an error is an event the
    edge hands to the node (``Engine(events=...)``), as ``Local`` is.
    """

    reason: str
    icmp: bytes | None = None


@dataclass(frozen=True, slots=True)
class Forward:
    """Encapsulate ``packet`` (already rewritten, e.g. TTL decremented) into tunnel ``tunnel``."""

    tunnel: str
    packet: bytes


@dataclass(frozen=True, slots=True)
class Local:
    """``packet`` is for this node (an ALT datagram for its Map-Server or ETR).

    ``tunnel`` is where it arrived ("" for a datagram built on this node).  It says what
    happened, not whom to call: the edge hands it to the node's one dispatcher.
    """

    tunnel: str
    packet: bytes


Verdict = Deliver | Drop | Forward | Local
Event = Local | Drop
"""The verdicts the node, not the data path, carries out: a local delivery and an ICMP error."""
DELIVER: Final = Deliver()
InnerHook = Callable[[TunnelConfig, bytes], Verdict]
FastHook = Callable[[bytes, int, str], tuple[str, bytes] | None]
"""A hook's common case: ``fast_hook(packet, offset, tunnel_name)`` sees the inner packet at
``packet[offset:]`` and returns ``(tunnel, new_inner)`` when it would return ``Forward`` (and has
counted it), or None, having counted nothing, to have the full hook decide."""


# --- What the edge must do --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class WriteTun:
    tunnel: str
    packet: bytes


@dataclass(frozen=True, slots=True)
class SendUnderlay:
    """Send ``datagram`` (GRE header + inner packet, no outer IP header) from local to remote."""

    tunnel: str
    local: IPAddress
    remote: IPAddress
    ttl: int
    datagram: bytes


Action = WriteTun | SendUnderlay | Local | Drop
"""``Local`` and ``Drop`` (with an ICMP error) are the hook's events, passed on as they are."""

# What the fast entry points return instead of a list of actions: ``(kind, tunnel, data)``.
TO_UNDERLAY: Final = 0  # data is a GRE datagram, as in SendUnderlay
TO_TUN: Final = 1  # data is an inner packet, as in WriteTun
Fast = tuple[int, str, bytes]


@dataclass(slots=True)
class Counters:
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    drops: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def as_dict(self) -> dict[str, object]:
        return {
            "rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
            "tx_packets": self.tx_packets, "tx_bytes": self.tx_bytes,
            "drops": dict(sorted(list(self.drops.items()))),
        }


class Dataplane:
    """Per-process GRE state for any number of tunnels over both address families."""

    def __init__(
        self,
        tunnels: Iterable[TunnelConfig],
        hook: InnerHook | None = None,
        fast_hook: FastHook | None = None,
    ) -> None:
        self.tunnels: dict[str, TunnelConfig] = {t.name: t for t in check_set(tunnels)}
        self.hook = hook
        # Only consulted by the fast entry points, and only together with ``hook``.
        self.fast_hook = fast_hook
        self.counters: dict[str, Counters] = {}
        # Packets that match no tunnel at all are counted here.
        self.unmatched = Counters()
        self._by_endpoints: dict[tuple[IPAddress, IPAddress], dict[int | None, TunnelConfig]] = {}
        self._next_seq: dict[str, int] = {}
        # Fast path: without checksum or sequence numbers a tunnel's GRE header
        # is a constant per protocol type, so it is prepended and matched as bytes.
        self._fixed: dict[str, dict[int, bytes]] = {}
        self._packed: dict[tuple[bytes, bytes], tuple[IPAddress, IPAddress]] = {}
        # The fast paths' tables.  Receive: remote, local and the constant GRE header, as the
        # bytes they are on the wire (for IPv4, outer header bytes 12-20 followed by GRE),
        # to (tunnel, GRE header length, inner IP version, counters).  Send: the two
        # constant headers, the MTU and the counters.
        self._rx: dict[bytes, tuple[str, int, int, Counters]] = {}
        self._tx: dict[str, tuple[bytes, bytes, int, Counters]] = {}
        for t in self.tunnels.values():
            self._index(t)

    # -- tunnels at run time (a config reload) -----------------------------------------------

    def add_tunnel(self, tunnel: TunnelConfig) -> None:
        """Serve one more tunnel; TunnelConfigError if its name or (local, remote, key) is taken."""
        check_set([*self.tunnels.values(), tunnel])
        self.tunnels[tunnel.name] = tunnel
        self._index(tunnel)

    def remove_tunnel(self, name: str) -> TunnelConfig | None:
        """Stop serving tunnel ``name`` (its counters go with it); the removed config, if it existed."""
        t = self.tunnels.pop(name, None)
        if t is None:
            return None
        del self.counters[name], self._next_seq[name]
        same = self._by_endpoints[(t.local, t.remote)]
        del same[t.key]
        if not same:
            del self._by_endpoints[(t.local, t.remote)]
            del self._packed[(t.local.packed, t.remote.packed)]
        if self._fixed.pop(name, None) is not None:
            del self._tx[name]
            self._rx = {k: v for k, v in self._rx.items() if v[0] != name}
        return t

    def _index(self, t: TunnelConfig) -> None:
        counters = self.counters[t.name] = Counters()
        self._next_seq[t.name] = 0
        self._by_endpoints.setdefault((t.local, t.remote), {})[t.key] = t
        self._packed[(t.local.packed, t.remote.packed)] = (t.local, t.remote)
        if t.checksum or t.sequence:
            return
        fixed = self._fixed[t.name] = {
            proto: gre.encode(gre.GreHeader(proto, t.key), b"") for proto in gre.PROTOCOLS
        }
        self._tx[t.name] = (fixed[gre.PROTO_IPV4], fixed[gre.PROTO_IPV6], t.mtu, counters)
        for proto, version in ((gre.PROTO_IPV4, 4), (gre.PROTO_IPV6, 6)):
            head = fixed[proto]
            self._rx[t.remote.packed + t.local.packed + head] = (t.name, len(head), version, counters)

    # -- receive ---------------------------------------------------------------------------

    def receive_ipv4(self, packet: bytes) -> list[Action]:
        """A packet from a raw IPv4 socket: the kernel hands us the outer header too."""
        # The kernel has already checked the outer header; only find where GRE starts.
        if len(packet) >= 20 and packet[0] >> 4 == 4 and packet[9] == PROTO_GRE:
            ihl = (packet[0] & 0x0F) * 4
            endpoints = self._packed.get((packet[16:20], packet[12:16]))
            if endpoints is not None and ihl >= 20:
                return self.receive(endpoints[0], endpoints[1], packet[ihl:])
        try:
            outer = parse_ip(packet, verify_checksum=False)
        except InetError:
            self.unmatched.drop(BAD_OUTER)
            return []
        if outer.version != 4 or outer.proto != PROTO_GRE:
            self.unmatched.drop(BAD_OUTER)
            return []
        return self.receive(outer.dst, outer.src, outer.payload)

    def receive(self, local: IPAddress, remote: IPAddress, datagram: bytes) -> list[Action]:
        """A GRE datagram (outer IP header already removed) that ``remote`` sent to ``local``."""
        candidates = self._by_endpoints.get((local, remote))
        if candidates is None:
            self.unmatched.drop(UNKNOWN_REMOTE)
            return []
        # Until the key is known, header errors are charged to the tunnel these
        # endpoints most plausibly belong to, so operators see them per peer.
        first = next(iter(candidates.values()))
        for candidate in candidates.values():
            fixed = self._fixed.get(candidate.name)
            if fixed is None:
                continue
            for proto, prefix in fixed.items():
                if datagram.startswith(prefix) and len(datagram) > len(prefix):
                    inner = datagram[len(prefix):]
                    if (inner[0] >> 4) == (4 if proto == gre.PROTO_IPV4 else 6):
                        counters = self.counters[candidate.name]
                        counters.rx_packets += 1
                        counters.rx_bytes += len(inner)
                        return self._apply_hook(candidate, inner)
        try:
            hdr, inner = gre.decode(datagram)
        except gre.GreError as exc:
            self.counters[first.name].drop(exc.reason)
            return []
        tunnel = candidates.get(hdr.key)
        if tunnel is None:
            self.counters[first.name].drop(WRONG_KEY)
            return []
        counters = self.counters[tunnel.name]
        if tunnel.checksum and not hdr.checksum:
            # RFC 2784 §2.5 lets a receiver insist on checksums it was configured for.
            counters.drop(gre.BAD_CHECKSUM)
            return []
        if not inner or (inner[0] >> 4) != (4 if hdr.protocol == gre.PROTO_IPV4 else 6):
            counters.drop(INNER_MISMATCH)
            return []
        counters.rx_packets += 1
        counters.rx_bytes += len(inner)
        return self._apply_hook(tunnel, inner)

    def receive_ipv4_fast(self, packet: bytes) -> Fast | list[Action]:
        """``receive_ipv4``, answering the common case with a ``Fast`` tuple."""
        # Outer header without options, GRE, and the K bit says how long the constant header is.
        # The forwarding case is written out in full: every call saved here is a few percent.
        if len(packet) > 20 and packet[0] == 0x45 and packet[9] == PROTO_GRE:
            entry = self._rx.get(packet[12:28] if packet[20] & 0x20 else packet[12:24])
            if entry is not None:
                name, hlen, version, counters = entry
                offset = 20 + hlen
                size = len(packet) - offset
                if size > 0 and packet[offset] >> 4 == version:
                    counters.rx_packets += 1
                    counters.rx_bytes += size
                    if self.hook is None:
                        # No forwarder (the FRR-integrated mode): every inner packet goes to its
                        # TUN and the kernel routes it, so this is that mode's whole per-packet work.
                        return TO_TUN, name, packet[offset:]
                    fast = self.fast_hook
                    if fast is not None:
                        decided = fast(packet, offset, name)
                        if decided is not None:
                            target, inner = decided
                            tx = self._tx.get(target)
                            if tx is not None and 0 < len(inner) <= tx[2]:
                                version = inner[0] >> 4
                                if version == 4 or version == 6:  # noqa: PLR1714 (cheaper than a set)
                                    out = tx[3]
                                    out.tx_packets += 1
                                    out.tx_bytes += len(inner)
                                    return TO_UNDERLAY, target, (tx[0] if version == 4 else tx[1]) + inner
                            return self._forward_slow(name, target, inner)
                    return self._inner(name, packet, offset)
        return self.receive_ipv4(packet)

    def receive_fast(self, local: bytes, remote: bytes, datagram: bytes) -> Fast | list[Action]:
        """``receive`` with packed addresses (an IPv6 raw socket's pktinfo and source), fast."""
        if len(datagram) > 4:
            entry = self._rx.get(remote + local + (datagram[:8] if datagram[0] & 0x20 else datagram[:4]))
            if entry is not None:
                name, offset, version, counters = entry
                size = len(datagram) - offset
                if size > 0 and datagram[offset] >> 4 == version:
                    counters.rx_packets += 1
                    counters.rx_bytes += size
                    fast = self.fast_hook
                    if fast is not None and self.hook is not None:
                        decided = fast(datagram, offset, name)
                        if decided is not None:
                            return self._forward_slow(name, decided[0], decided[1])
                    return self._inner(name, datagram, offset)
        endpoints = self._packed.get((local, remote))
        if endpoints is None:
            self.unmatched.drop(UNKNOWN_REMOTE)
            return []
        return self.receive(endpoints[0], endpoints[1], datagram)

    def _inner(self, name: str, packet: bytes, offset: int) -> Fast | list[Action]:
        """The inner packet at ``packet[offset:]``, received and counted on tunnel ``name``: the full hook."""
        if self.hook is None:
            return TO_TUN, name, packet[offset:]
        return self._apply_hook(self.tunnels[name], packet[offset:])

    def _forward_slow(self, name: str, target: str, inner: bytes) -> Fast | list[Action]:
        """The fast hook's ``(target, inner)`` for a packet from ``name``, handled as ``Forward`` is."""
        if target not in self.tunnels:
            self.counters[name].drop(UNKNOWN_TUNNEL)
            return []
        return self.encapsulate_fast(target, inner)

    def _apply_hook(self, tunnel: TunnelConfig, inner: bytes) -> list[Action]:
        if self.hook is None:
            return [WriteTun(tunnel.name, inner)]
        try:
            verdict = self.hook(tunnel, inner)
        except Exception:
            counters = self.counters[tunnel.name]
            counters.drop(HOOK_ERROR)
            if _worth_logging(counters.drops[HOOK_ERROR]):
                log.exception("inner-packet hook failed on tunnel %s (%d so far); dropping the packet",
                              tunnel.name, counters.drops[HOOK_ERROR])
            return []
        if isinstance(verdict, Deliver):
            return [WriteTun(tunnel.name, inner)]
        if isinstance(verdict, Drop):
            self.counters[tunnel.name].drop(verdict.reason)
            return [] if verdict.icmp is None else [verdict]
        if isinstance(verdict, Forward):
            if verdict.tunnel not in self.tunnels:
                self.counters[tunnel.name].drop(UNKNOWN_TUNNEL)
                return []
            return self.encapsulate(verdict.tunnel, verdict.packet)
        return [verdict]

    # -- send ------------------------------------------------------------------------------

    def encapsulate_fast(self, name: str, inner: bytes) -> Fast | list[Action]:
        """``encapsulate``, answering the common case with a ``Fast`` tuple."""
        tx = self._tx.get(name)
        if tx is not None and inner:
            version = inner[0] >> 4
            if (version == 4 or version == 6) and len(inner) <= tx[2]:  # noqa: PLR1714 (cheaper than a set)
                counters = tx[3]
                counters.tx_packets += 1
                counters.tx_bytes += len(inner)
                return TO_UNDERLAY, name, (tx[0] if version == 4 else tx[1]) + inner
        return self.encapsulate(name, inner)

    def tx_fast(self, name: str) -> tuple[bytes, bytes, int, Counters] | None:
        """``encapsulate_fast``'s table for an edge that builds datagrams in its own buffers.

        For tunnel ``name`` without checksums or sequence numbers: its GRE header for an IPv4
        and for an IPv6 inner packet (the same length), its inner MTU and its counters.  The
        edge may send an inner packet of version 4 or 6 and at most that MTU behind the
        header, counting it as ``encapsulate_fast`` does; anything else goes to
        ``encapsulate_fast``.  None: the tunnel has no such fixed header (or does not exist).
        """
        return self._tx.get(name)

    def action_for(self, fast: Fast) -> Action:
        """The action a ``Fast`` tuple stands for."""
        kind, name, data = fast
        if kind == TO_TUN:
            return WriteTun(name, data)
        t = self.tunnels[name]
        return SendUnderlay(name, t.local, t.remote, t.ttl, data)

    def encapsulate(self, name: str, inner: bytes) -> list[Action]:
        """An inner packet to send out of tunnel ``name`` (read from its TUN, injected, or forwarded)."""
        tunnel = self.tunnels.get(name)
        if tunnel is None:
            self.unmatched.drop(UNKNOWN_TUNNEL)
            return []
        counters = self.counters[name]
        try:
            protocol = gre.protocol_for(inner)
        except gre.GreError as exc:
            counters.drop(exc.reason)
            return []
        if len(inner) > tunnel.mtu:
            # Only injected or forwarded packets can get here (the TUN MTU stops the rest);
            # the DF-marked outer packet would not pass the underlay anyway.
            counters.drop(TOO_BIG)
            return []
        fixed = self._fixed.get(name)
        if fixed is not None:
            datagram = fixed[protocol] + inner
            counters.tx_packets += 1
            counters.tx_bytes += len(inner)
            return [SendUnderlay(name, tunnel.local, tunnel.remote, tunnel.ttl, datagram)]
        sequence = None
        if tunnel.sequence:
            sequence = self._next_seq[name]
            self._next_seq[name] = (sequence + 1) & 0xFFFFFFFF
        datagram = gre.encode(gre.GreHeader(protocol, tunnel.key, sequence, tunnel.checksum), inner)
        counters.tx_packets += 1
        counters.tx_bytes += len(inner)
        return [SendUnderlay(name, tunnel.local, tunnel.remote, tunnel.ttl, datagram)]

    # -- edge feedback ---------------------------------------------------------------------

    def failed(self, action: WriteTun | SendUnderlay, reason: str) -> None:
        """The edge could not carry out ``action``: count it against its tunnel, undoing the tx count."""
        counters = self.counters.get(action.tunnel, self.unmatched)
        if isinstance(action, SendUnderlay):
            counters.tx_packets -= 1
            counters.tx_bytes -= len(action.datagram) - self._gre_len(action.tunnel)
        counters.drop(reason)

    def _gre_len(self, name: str) -> int:
        t = self.tunnels[name]
        return gre.header_length(key=t.key is not None, csum=t.checksum, seq=t.sequence)

    def stats(self) -> dict[str, object]:
        # Another thread may ask while the data-plane thread counts: iterate over copies
        # (``list``/``dict`` of a dict are single C calls under the GIL).
        return {
            "tunnels": {name: c.as_dict() for name, c in list(self.counters.items())},
            "unmatched": self.unmatched.as_dict(),
        }
