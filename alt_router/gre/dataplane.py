"""The GRE data path's decisions, sans-IO: demultiplex, decapsulate, hook, encapsulate, count.

The edge (``userspace.py``) feeds it what the raw sockets and TUN devices read
and carries out the actions it returns.  Received inner packets go through an
optional *hook* before anything is written anywhere, so a forwarder (the ALT
datagram path) can look at a packet that arrived on one tunnel and send it out
of another in the same pass, without a trip through the kernel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from alt_router.gre import header as gre
from alt_router.gre.config import IPAddress, TunnelConfig, check_set
from alt_router.inet import PROTO_GRE, InetError, parse_ip

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


# --- What a hook may decide about a decapsulated inner packet -------------------------------

@dataclass(frozen=True, slots=True)
class Deliver:
    """Write the packet into the receiving tunnel's TUN (the default)."""


@dataclass(frozen=True, slots=True)
class Drop:
    reason: str


@dataclass(frozen=True, slots=True)
class Forward:
    """Encapsulate ``packet`` (already rewritten, e.g. TTL decremented) into tunnel ``tunnel``."""

    tunnel: str
    packet: bytes


@dataclass(frozen=True, slots=True)
class Local:
    """Hand the packet to a local application: ``callback(tunnel_name, packet)``."""

    callback: Callable[[str, bytes], None]


Verdict = Deliver | Drop | Forward | Local
DELIVER: Final = Deliver()
InnerHook = Callable[[TunnelConfig, bytes], Verdict]


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


@dataclass(frozen=True, slots=True)
class CallLocal:
    callback: Callable[[str, bytes], None]
    tunnel: str
    packet: bytes


Action = WriteTun | SendUnderlay | CallLocal


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
            "drops": dict(sorted(self.drops.items())),
        }


class Dataplane:
    """Per-process GRE state for any number of tunnels over both address families."""

    def __init__(self, tunnels: Iterable[TunnelConfig], hook: InnerHook | None = None) -> None:
        self.tunnels: dict[str, TunnelConfig] = {t.name: t for t in check_set(tunnels)}
        self.hook = hook
        self.counters: dict[str, Counters] = {name: Counters() for name in self.tunnels}
        # Packets that match no tunnel at all are counted here.
        self.unmatched = Counters()
        self._by_endpoints: dict[tuple[IPAddress, IPAddress], dict[int | None, TunnelConfig]] = {}
        for t in self.tunnels.values():
            self._by_endpoints.setdefault((t.local, t.remote), {})[t.key] = t
        self._next_seq: dict[str, int] = dict.fromkeys(self.tunnels, 0)
        # Fast path: without checksum or sequence numbers a tunnel's GRE header
        # is a constant per protocol type, so it is prepended and matched as bytes.
        self._fixed: dict[str, dict[int, bytes]] = {
            t.name: {proto: gre.encode(gre.GreHeader(proto, t.key), b"") for proto in gre.PROTOCOLS}
            for t in self.tunnels.values() if not (t.checksum or t.sequence)
        }
        self._packed: dict[tuple[bytes, bytes], tuple[IPAddress, IPAddress]] = {
            (t.local.packed, t.remote.packed): (t.local, t.remote) for t in self.tunnels.values()
        }

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

    def _apply_hook(self, tunnel: TunnelConfig, inner: bytes) -> list[Action]:
        if self.hook is None:
            return [WriteTun(tunnel.name, inner)]
        try:
            verdict = self.hook(tunnel, inner)
        except Exception:
            log.exception("inner-packet hook failed on tunnel %s; dropping the packet", tunnel.name)
            self.counters[tunnel.name].drop(HOOK_ERROR)
            return []
        if isinstance(verdict, Deliver):
            return [WriteTun(tunnel.name, inner)]
        if isinstance(verdict, Drop):
            self.counters[tunnel.name].drop(verdict.reason)
            return []
        if isinstance(verdict, Forward):
            if verdict.tunnel not in self.tunnels:
                self.counters[tunnel.name].drop(UNKNOWN_TUNNEL)
                return []
            return self.encapsulate(verdict.tunnel, verdict.packet)
        return [CallLocal(verdict.callback, tunnel.name, inner)]

    # -- send ------------------------------------------------------------------------------

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

    def failed(self, action: Action, reason: str) -> None:
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
        return {
            "tunnels": {name: c.as_dict() for name, c in self.counters.items()},
            "unmatched": self.unmatched.as_dict(),
        }
