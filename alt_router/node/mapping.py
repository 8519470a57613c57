"""The node's mapping roles at the asyncio edge: UDP 4342, the ALT forwarder, ICMP, timers.

Every ALT node forwards ALT datagrams: ``NodeMapping.hook`` (the forwarder's) is the
userspace GRE engine's inner-packet hook, so a Map-Request arriving over one tunnel is
decapsulated, routed on the ALT RIB and re-encapsulated into the next tunnel in
one pass.  On top of that a node may run the Map-Resolver, the Map-Server and
an ETR (``[map_resolver]``, ``[map_server]``, ``[etr]``); they share one UDP
socket per address family on port 4342 and the message type says which role
gets a datagram:

    ECM with the E bit         -> ETR (else the Map-Resolver)
    ECM from an ETR's MS       -> ETR, if for its EID (RFC 9301 leaves E reserved: ``Etr.owns_ecm``)
    ECM                        -> Map-Resolver (else the ETR)
    Map-Register               -> Map-Server
    Map-Request, Map-Notify    -> ETR

Anything else, or a message for a role the node does not run, is a counted
drop.  ``NodeMapping.dispatch`` is the one place where what the cores decided is
carried out (docs/mapping.md), whether it came from a role or from the data path:
``SendUdp`` from the role's socket; ``SendAlt`` into the tunnel the resolver's one
route lookup picked (``SendAlt.route``), or to the local Map-Server when that was
``LOCAL``; ``SendIp`` out of a raw socket over the underlay; ``Announce``/``Withdraw``
into BGP and the forwarder's local prefixes; and the data path's events, handed over
by the GRE engine on the event loop: ``Local(tunnel, packet)`` to the Map-Server or
the ALT-attached ETR, ``Drop(reason, icmp=...)`` whose ICMP error goes out like ``SendIp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Final, Protocol

from alt_router.alt.forwarder import LOCAL, AltForwarder
from alt_router.gre.dataplane import Drop, FastHook, InnerHook, Local
from alt_router.inet import InetError, parse_ip, parse_udp
from alt_router.lisp import LISP_CONTROL_PORT, LispDecodeError, MapRequest, MessageType, decode
from alt_router.logsummary import LogSummary
from alt_router.mapping.actions import Action, Announce, SendAlt, SendIp, SendUdp, Withdraw
from alt_router.mapping.etr import Etr, EtrMappingConfig, EtrRloc, MapServerTarget, initial_nonce
from alt_router.mapping.map_resolver import AltRoutes, MapResolver
from alt_router.mapping.map_server import ALGORITHMS, MapServer, Registration, Site
from alt_router.node.config import EtrSection, MapResolverSection, NodeConfig, SiteConfig
from alt_router.node.etr_state import NonceStore, nonce_path
from alt_router.node.kernel_alt import (
    ANCILLARY_SIZE,
    KernelAltSender,
    KernelRoutes,
    LocalRoutes,
    destination_info,
    enable_destination_info,
    enable_forwarding,
    local_datagram,
)
from alt_router.node.ms_state import MapServerNonceStore, nonce_table_path
from alt_router.node.tunnels import tunnel_names
from alt_router.rib import Rib
from alt_router.sockdrops import RX_BUFFER_OVERFLOW, socket_drops
from alt_router.types import IPAddress, Prefix

log = logging.getLogger(__name__)

RECV_SIZE: Final = 65535
BATCH: Final = 64
PEER_CACHE: Final = 4096  # source addresses parsed once (cleared when full: a flood of sources)
# Dropped datagrams are logged once per (reason, source), then summed up every DROP_LOG_INTERVAL
# seconds; past DROP_LOG_SOURCES sources in an interval the rest share one line.  At most
# about 3 lines a second, whatever is sent to port 4342.
DROP_LOG_INTERVAL: Final = 10.0
DROP_LOG_SOURCES: Final = 32
_ECM_E_BIT: Final = 0x02  # draft "to ETR", set by a Map-Server (bit 6, reserved in RFC 9301 §5.8)

EDGE_COUNTERS: Final = (
    "received", "sent", "send-error", "malformed", "no-role", "to-mr", "to-ms", "to-etr",
    "alt-sent", "alt-local", "alt-dropped", "icmp-sent", "icmp-send-error",
)
# FRR-integrated mode only: ALT datagrams the kernel could not route, or that could not be sent or
# rebuilt (node/kernel_alt.py).
KERNEL_ALT_COUNTERS: Final = ("alt-no-route", "alt-send-error", "alt-unbuildable")


class TunnelSender(Protocol):
    """What the edge needs from the GRE data path: ``alt_router.gre.userspace.Engine`` is one."""

    def send(self, tunnel_name: str, inner_packet: bytes) -> None: ...


Event = Action | Local | Drop
"""What ``NodeMapping.dispatch`` carries out: a role's action or an event of the data path."""


def router_addresses(config: NodeConfig) -> tuple[IPv4Address | None, IPv6Address | None]:
    """The addresses ICMP errors come from: the node's first tunnel (inner) address of each family.

    A traceroute shows a router by an interface address; a tunnel address names
    the node uniquely within the ALT, which the router-id alone cannot do for IPv6.
    """
    v4 = next((p.tunnel.local_ipv4.ip for p in config.peers if p.tunnel.local_ipv4 is not None),
              config.node.router_id)
    v6 = next((p.tunnel.local_ipv6.ip for p in config.peers if p.tunnel.local_ipv6 is not None), None)
    return v4, v6


def role_for(data: bytes, *, mr: bool, ms: bool, etr: bool) -> str | None:
    """Which role gets a datagram received on port 4342: "mr", "ms", "etr" or None."""
    kind = data[0] >> 4
    if kind == MessageType.ENCAPSULATED_CONTROL_MESSAGE:
        if len(data) < 4:
            return None
        to_etr = bool(data[0] & _ECM_E_BIT)
        if to_etr and etr:
            return "etr"
        if mr:
            return "mr"
        return "etr" if etr else None
    if kind == MessageType.MAP_REGISTER:
        return "ms" if ms else None
    if kind in (MessageType.MAP_REQUEST, MessageType.MAP_NOTIFY):
        return "etr" if etr else None
    return None


def _family(addr: IPAddress) -> int:
    return addr.version


def etr_inputs(
    section: EtrSection, map_server_port: int = LISP_CONTROL_PORT
) -> tuple[list[EtrMappingConfig], list[MapServerTarget]]:
    """The ETR core's own input types from the node's ``[etr]`` section (the core never sees node config)."""
    mappings = [
        EtrMappingConfig(
            m.eid_prefix, tuple(EtrRloc(r.address, r.priority, r.weight, r.local) for r in m.rlocs), m.ttl
        )
        for m in section.mappings
    ]
    servers = [
        MapServerTarget(s.address, s.key, ALGORITHMS[s.algorithm], map_server_port,
                        truncated_auth=s.auth_length == "truncated")
        for s in section.map_servers
    ]
    return mappings, servers


def map_resolver_from_config(
    forwarder: AltRoutes, rib: Rib, section: MapResolverSection, config: NodeConfig, port: int
) -> MapResolver:
    return MapResolver(
        forwarder, lambda: (p.prefix for p in rib.routes()),
        rate=section.rate_limit, burst=section.rate_burst,
        global_rate=section.global_rate_limit, global_burst=section.global_rate_burst,
        max_prefixes=section.rate_limit_prefixes, outage_negative_ttl=section.outage_negative_ttl,
        eid_space=config.eid.accept, port=port,
    )


class NodeMapping:
    """The ALT forwarder and the node's mapping roles; ``start``/``stop`` inside the node's loop.

    ``tunnels`` maps peer name to tunnel name.  ``announce``/``withdraw``
    originate a prefix in BGP (``Node.announce``/``Node.withdraw``).

    ``kernel_alt`` (FRR-integrated mode, issue 10): the kernel forwards ALT datagrams.  There is
    no ``forwarder`` and ``hook``/``fast_hook`` are None (the GRE engine is opened without a hook,
    ``open_tunnels(..., hook=None)``); the Map-Resolver's lookup reads ``rib`` (which the node fills
    from the kernel's table) and its datagrams go into the kernel's table through a raw socket;
    the node's own prefixes get ``local`` routes, and ALT datagrams the kernel delivers to UDP 4342
    become the same ``Local`` event (node/kernel_alt.py).
    """

    def __init__(
        self,
        config: NodeConfig,
        rib: Rib,
        tunnels: Mapping[str, str],
        *,
        announce: Callable[[Prefix], object],
        withdraw: Callable[[Prefix], object],
        port: int = LISP_CONTROL_PORT,
        clock: Callable[[], float] = time.monotonic,
        kernel_alt: bool = False,
    ) -> None:
        self.config = config
        self.port = port
        self.clock = clock
        self._announce = announce
        self._withdraw = withdraw
        v4, v6 = router_addresses(config)
        self.kernel_alt = kernel_alt
        self.forwarder: AltForwarder | None = None
        self.kernel_routes: KernelRoutes | None = None
        self.kernel_sender: KernelAltSender | None = None
        self.local_routes: LocalRoutes | None = None
        # What the GRE engine is built with (node/tunnels.py, ``open_tunnels``): the forwarder
        # decides, and its events come back to ``dispatch`` on the loop.
        self.hook: InnerHook | None = None
        self.fast_hook: FastHook | None = None
        routes: AltRoutes
        if kernel_alt:
            routes = self.kernel_routes = KernelRoutes(rib, v4, v6)
            # [frr] vrf: the ALT's table is the VRF's, for the local routes and the resolver's sends.
            self.kernel_sender = KernelAltSender(vrf=config.frr.vrf)
            self.local_routes = LocalRoutes(vrf=config.frr.vrf)
        else:
            routes = self.forwarder = AltForwarder.for_rib(
                rib, tunnels, router_v4=v4, router_v6=v6, icmp_limits=config.icmp, clock=clock,
            )
            self.hook = self.forwarder.hook
            self.fast_hook = self.forwarder.fast_forward
        self.mr: MapResolver | None = None
        self.ms: MapServer | None = None
        self.ms_nonces: MapServerNonceStore | None = None
        self.etr: Etr | None = None
        if config.map_resolver.enabled:
            self.mr = map_resolver_from_config(routes, rib, config.map_resolver, config, port)
        if config.map_server.enabled:
            section = config.map_server
            self.ms = MapServer(
                [site_from_config(s) for s in section.sites], port=port, aggregates=config.eid.announce,
                max_per_site=section.max_registrations_per_site,
                max_per_source=section.max_registrations_per_source,
                routed_inside=lambda prefix: (path.prefix for path in rib.covered(prefix)),
            )
            self.ms_nonces = MapServerNonceStore(nonce_table_path(config.node.state_dir))
            self.ms_nonces.load(self.ms, clock())
            if self.forwarder is not None:
                self.forwarder.set_served(self._ms_prefixes())  # no data-plane thread yet
        self.nonce_store: NonceStore | None = None
        if config.etr.enabled:
            # RFC 9301 §5.6: Map-Register nonces keep increasing across restarts.
            self.nonce_store = NonceStore(nonce_path(config.node.state_dir))
            mappings, servers = etr_inputs(config.etr)
            self.etr = Etr(
                mappings, servers, register_interval=config.etr.register_interval,
                proxy_reply=config.etr.proxy_reply, port=port,
                last_nonce=initial_nonce(self.nonce_store.saved, time.time()),
            )
        self.counters: Counter[str] = Counter(dict.fromkeys(EDGE_COUNTERS, 0))
        if kernel_alt:
            self.counters.update(dict.fromkeys(KERNEL_ALT_COUNTERS, 0))
        self.drop_log = LogSummary(DROP_LOG_INTERVAL, DROP_LOG_SOURCES)
        self._drop_flush_at: float | None = None
        self.tunnel_sender: TunnelSender | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: dict[int, socket.socket] = {}
        self._peers: dict[Any, tuple[IPAddress, int]] = {}  # recvfrom's peer -> (address, port)
        self._texts: dict[IPAddress, str] = {}  # an address -> its text, for sendto
        self._raw: dict[int, socket.socket | None] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def roles(self) -> list[str]:
        return [name for name, role in (("map-resolver", self.mr), ("map-server", self.ms), ("etr", self.etr))
                if role is not None]

    def site_prefixes(self) -> set[Prefix]:
        """The Map-Server site prefixes announced only while registered."""
        if self.ms is None:
            return set()
        return {p for site in self.ms.sites.values() if not site.always_announce for p in site.prefixes}

    def set_tunnels(self, tunnels: Mapping[str, str]) -> None:
        """Peers added or removed by a config reload: the forwarder's peer-to-tunnel map."""
        if self.forwarder is not None:
            self._in_dataplane(self.forwarder.set_tunnels, tunnels)

    def set_discard(self, prefixes: Iterable[Prefix]) -> None:
        """The node's active aggregates changed (``NodeCore.watch_aggregates``): holes in them
        are no route for the forwarder (RFC 6836 §7.1, ``AltForwarder.set_discard``)."""
        if self.forwarder is not None:
            self._in_dataplane(self.forwarder.set_discard, list(prefixes))

    def _in_dataplane(self, fn: Callable[..., object], *args: object) -> None:
        """Run a change to the forwarder where its packet decisions run, and wait for it.

        With a data-plane thread (``Engine.start``) the forwarder's cache and local prefixes
        have that thread as their only writer (docs/architecture.md, "Data-plane thread"):
        a change made beside a decision in flight could leave a stale cache entry behind.
        """
        call = getattr(self.tunnel_sender, "call", None)
        if call is None:
            fn(*args)
        else:
            call(fn, *args)

    def set_sites(self, sites: tuple[SiteConfig, ...]) -> None:
        """Map-Server sites changed by a config reload: carry out the announcements that follow."""
        if self.ms is not None:
            self.execute(self.ms.set_sites([site_from_config(s) for s in sites], self.clock()))
            self._serve_ms_prefixes()
            self._reschedule()

    def set_aggregates(self, prefixes: Iterable[Prefix]) -> None:
        """``[eid].announce`` changed by a reload: the Map-Server's 15-minute negative space follows."""
        if self.ms is not None:
            self.ms.set_aggregates(prefixes)
            self._serve_ms_prefixes()

    def _ms_prefixes(self) -> list[Prefix]:
        """The Map-Server answers for its aggregates and every site, registered or not (RFC 9301 §8.3)."""
        if self.ms is None:
            return []
        return [*self.ms.aggregates(), *(p for site in self.ms.sites.values() for p in site.prefixes)]

    def _serve_ms_prefixes(self) -> None:
        if self.forwarder is not None:
            self._in_dataplane(self.forwarder.set_served, self._ms_prefixes())
        else:
            self._sync_kernel_local()

    def _sync_kernel_local(self) -> None:
        """FRR-integrated mode: the node's own prefixes, for the resolver and as kernel ``local`` routes.

        The Map-Server's aggregates and sites (as ``_serve_ms_prefixes``) and the ALT-attached
        ETR's EID-prefixes.  The routes are installed once the node runs (``start``).
        """
        if self.kernel_routes is None or self.local_routes is None:
            return
        prefixes = [*self._ms_prefixes(), *self.alt_attached_prefixes()]
        self.kernel_routes.set_local(prefixes)
        if self._loop is not None:
            self.local_routes.set(prefixes)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, tunnel_sender: TunnelSender | None) -> None:
        """Open the role sockets (if any role runs), announce ``always_announce`` sites, arm timers."""
        self._loop = loop
        self.tunnel_sender = tunnel_sender
        if self.kernel_alt:
            # rp_filter on the tunnels by their names (tunnels a reload adds get ``default``'s).
            enable_forwarding(tunnels=tunnel_names(self.config.peers).values())
            self._sync_kernel_local()
        elif tunnel_sender is None and self.config.peers:
            log.warning("ALT datagrams are not forwarded by this process: the tunnels are not userspace "
                        "(see docs/mapping.md, kernel GRE mode)")
        if self.roles:
            self._open_sockets()
            log.info("mapping roles %s listening on UDP %d (%s)", ", ".join(self.roles), self.port,
                     ", ".join(str(s.getsockname()[0]) for s in self._udp.values()))
        if self.ms is not None:
            self.execute(self.ms.start())
        for prefix in self.alt_attached_prefixes():
            # RFC 6836 §4: an ETR attached to the ALT originates its own EID-prefixes there (a
            # run-time origination, so an [[eid.aggregates]] covering them sees a contributor).
            if self.forwarder is not None:
                self._in_dataplane(self.forwarder.add_local, prefix)
            self._announce(prefix)
            log.info("announcing %s into the ALT (ALT-attached ETR)", prefix)
        self._reschedule()

    def alt_attached_prefixes(self) -> list[Prefix]:
        """The ETR's EID-prefixes when it is ALT-attached (``[etr] alt_attached``), else none."""
        if self.etr is None or not self.config.etr.alt_attached:
            return []
        return [m.eid_prefix for m in self.config.etr.mappings]

    def stop(self) -> None:
        if self.ms is not None and self.ms_nonces is not None:
            self.ms_nonces.maybe_save(self.ms, self.clock(), force=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for sock in self._udp.values():
            if self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_reader(sock.fileno())
            sock.close()
        self._udp.clear()
        for raw in self._raw.values():
            if raw is not None:
                raw.close()
        self._raw.clear()
        if self.local_routes is not None and self._loop is not None:
            self.local_routes.clear()
        if self.kernel_sender is not None:
            self.kernel_sender.close()
        self.tunnel_sender = None

    def _open_sockets(self) -> None:
        listen = self.config.map_resolver.listen
        binds: dict[int, str] = {4: "0.0.0.0", 6: "::"}
        if not listen.is_unspecified:
            binds[listen.version] = str(listen)
        assert self._loop is not None
        for version, host in binds.items():
            family = socket.AF_INET if version == 4 else socket.AF_INET6
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                if version == 6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                sock.bind((host, self.port))
            except OSError as exc:
                sock.close()
                if version == 6 and not self._udp:
                    raise
                # An IPv4 node without IPv6 (or the reverse) still serves the other family.
                log.warning("cannot listen on [%s]:%d: %s", host, self.port, exc)
                continue
            if self.kernel_alt:
                # ALT datagrams to our EIDs arrive here too (local routes): their destination says so.
                enable_destination_info(sock)
            sock.setblocking(False)
            self._udp[version] = sock
            self._loop.add_reader(sock.fileno(), self._on_readable, sock)
        if not self._udp:
            raise OSError(f"no UDP socket on port {self.port}")

    # --- ALT datagrams for this node ------------------------------------------------------------

    def _local(self, packet: bytes) -> None:
        """An ALT datagram for one of our local (Map-Server or ALT-attached ETR) prefixes."""
        self.counters["alt-local"] += 1
        if self.etr is not None and self.config.etr.alt_attached and self._to_attached_etr(packet):
            return
        if self.ms is None:
            return
        self.execute(self.ms.handle_alt(packet, self.clock()))

    def _to_attached_etr(self, packet: bytes) -> bool:
        """Answer an ALT datagram for one of the ALT-attached ETR's EIDs; False if it is not for it.

        RFC 6836 §4 (and §3.1): the ALT delivers the Map-Request to the ETR, which answers with
        an authoritative Map-Reply straight to the ITR-RLOC (RFC 9301 §5.5), at the port the
        request came from; no Map-Server in between.
        """
        assert self.etr is not None
        try:
            ip = parse_ip(packet)
            udp = parse_udp(ip)
        except InetError:
            return False  # the Map-Server (if any) counts it as malformed
        if not any(m.prefix.version == ip.dst.version and ip.dst in m.prefix for m in self.etr.mappings):
            return False
        self.counters["to-etr"] += 1
        self.counters["alt-to-etr"] += 1
        if not udp.checksum_ok:
            self.etr.counters["malformed"] += 1
            return True
        try:
            msg = decode(udp.payload)
        except LispDecodeError:
            self.etr.counters["malformed"] += 1
            return True
        if not isinstance(msg, MapRequest):
            self.etr.counters["unexpected"] += 1
            return True
        self.etr.counters["alt-received"] += 1
        self.execute(self.etr.reply(msg, udp.sport, ip.src.version))
        return True

    # --- UDP 4342 ----------------------------------------------------------------------------

    def _on_readable(self, sock: socket.socket) -> None:
        kernel = self.kernel_routes
        ancdata: list[tuple[int, int, bytes]] = []
        for _ in range(BATCH):
            try:
                if kernel is None:
                    data, peer = sock.recvfrom(RECV_SIZE)
                else:
                    data, ancdata, _flags, peer = sock.recvmsg(RECV_SIZE, ANCILLARY_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # ICMP port unreachable for an earlier send shows up here (ECONNREFUSED): not fatal.
                self.counters["recv-error"] += 1
                self._note_drop("recv-error", f"UDP {self.port}", exc.strerror or exc)
                continue
            # One address object per peer, not per datagram: parsing the text costs more than
            # the look-up, and the Map-Server keeps the object in each of the peer's registrations.
            known = self._peers.get(peer)
            if known is None:
                try:
                    src = IPv4Address(peer[0]) if sock.family == socket.AF_INET else \
                        IPv6Address(peer[0].split("%", 1)[0])
                except ValueError:
                    self.counters["malformed"] += 1
                    self._note_drop("malformed", peer[0], "unparsable source address")
                    continue
                if len(self._peers) >= PEER_CACHE:
                    self._peers.clear()
                known = self._peers[peer] = (src, peer[1])
            if kernel is not None:
                dst, ttl = destination_info(ancdata)
                if dst is not None and kernel.is_local(dst):
                    self._kernel_local(data, known[0], known[1], dst, ttl)
                    continue
            self.receive(data, known[0], known[1])
        self._reschedule()

    def _kernel_local(self, data: bytes, src: IPAddress, sport: int, dst: IPAddress, ttl: int | None) -> None:
        """FRR-integrated mode: an ALT datagram the kernel delivered to one of our EIDs."""
        self.counters["received"] += 1
        event = local_datagram(data, src, sport, dst, dport=self.port, ttl=ttl)
        if event is None:
            self.counters["alt-unbuildable"] += 1
            self._note_drop("alt-unbuildable", src, f"ALT datagram to {dst} cannot be rebuilt")
            return
        self.dispatch(event)

    def receive(self, data: bytes, src: IPAddress, sport: int) -> None:
        """One datagram received on port 4342 from ``src``:``sport``."""
        self.counters["received"] += 1
        if not data:
            self.counters["malformed"] += 1
            self._note_drop("malformed", src, "empty datagram")
            return
        role = role_for(data, mr=self.mr is not None, ms=self.ms is not None, etr=self.etr is not None)
        if role == "mr" and self.etr is not None and self.etr.owns_ecm(data, src):
            # An RFC 9301 Map-Server leaves the E bit clear (reserved there): its ECM for one of our
            # ETR's EIDs is for the ETR, else the Map-Resolver would send it back into the ALT.
            role = "etr"
        now = self.clock()
        actions: list[Action]
        if role == "mr" and self.mr is not None:
            self.counters["to-mr"] += 1
            actions = self.mr.handle(data, src, sport, now)
        elif role == "ms" and self.ms is not None:
            self.counters["to-ms"] += 1
            actions = self.ms.handle_register(data, src, sport, now)
        elif role == "etr" and self.etr is not None:
            self.counters["to-etr"] += 1
            actions = self.etr.handle(data, src, sport, now)
        else:
            self.counters["no-role"] += 1
            self._note_drop("no-role", src, f"LISP type {data[0] >> 4}, roles: {self.roles}")
            return
        self.execute(actions)

    def _note_drop(self, reason: str, source: object, detail: object) -> None:
        """Log a dropped datagram: the first per (reason, source) now, the rest in a summary line."""
        now = self.clock()
        if self.drop_log.note(reason, source, now):
            log.info("dropped a datagram (%s) from %s: %s; more like it are summed up every %.0fs",
                     reason, source, detail, DROP_LOG_INTERVAL)
        if self._drop_flush_at is None:
            self._drop_flush_at = now + DROP_LOG_INTERVAL
            self._reschedule()

    def _flush_drop_log(self, now: float, *, force: bool = False) -> None:
        if self._drop_flush_at is None or (now < self._drop_flush_at and not force):
            return
        self._drop_flush_at = None
        for line in self.drop_log.flush(now, force=True):
            log.info("dropped %s", line)

    def edge_counters(self) -> dict[str, int]:
        """The UDP 4342 edge's counters, with the kernel's receive-buffer drops of its sockets.

        One plain dict for status.json and the API: ``no-role``, ``malformed``, ``send-error``,
        ``recv-error``, ``rx-buffer-overflow`` (datagrams the kernel dropped because the
        process did not read fast enough) and the traffic counters.
        """
        out = dict(self.counters)
        out[RX_BUFFER_OVERFLOW] = socket_drops(self._udp.values())
        return out

    # --- carrying out the cores' actions -------------------------------------------------------

    def execute(self, actions: Iterable[Event]) -> None:
        for action in actions:
            self.dispatch(action)

    def dispatch(self, event: Event) -> None:
        """Carry out one decision: a role's action, or an event the GRE engine handed over.

        The one place both kinds end (``Engine(events=node_mapping.dispatch)``), on the loop.
        """
        if isinstance(event, SendUdp):
            self._send_udp(event)
        elif isinstance(event, SendAlt):
            self._send_alt(event)
        elif isinstance(event, Local):
            self._local(event.packet)
        elif isinstance(event, SendIp):
            self._send_ip(event.packet)
        elif isinstance(event, Drop):
            if event.icmp is not None:
                self._send_ip(event.icmp)
        elif isinstance(event, Announce):
            if self.forwarder is not None:
                self._in_dataplane(self.forwarder.add_local, event.prefix)
            self._announce(event.prefix)
            log.info("announcing %s (Map-Server site registered)", event.prefix)
        elif isinstance(event, Withdraw):
            if self.forwarder is not None:
                self._in_dataplane(self.forwarder.remove_local, event.prefix)
            self._withdraw(event.prefix)
            log.info("withdrawing %s (no live registration)", event.prefix)

    def _send_udp(self, action: SendUdp) -> None:
        sock = self._udp.get(_family(action.dst))
        if sock is None:
            self.counters["send-error"] += 1
            return
        try:
            # The text of an address is made in Python each time: once per peer is enough.
            text = self._texts.get(action.dst)
            if text is None:
                if len(self._texts) >= PEER_CACHE:
                    self._texts.clear()
                text = self._texts[action.dst] = str(action.dst)
            sock.sendto(action.payload, (text, action.dport))
        except OSError as exc:
            self.counters["send-error"] += 1
            self._note_drop("send-error", action.dst, exc.strerror or exc)
            return
        self.counters["sent"] += 1

    def _send_alt(self, action: SendAlt) -> None:
        """The resolver's ALT datagram, where its route lookup said: no second lookup here."""
        if action.route == LOCAL:
            self.dispatch(Local("", action.packet))
            return
        if self.kernel_sender is not None:
            # FRR-integrated mode: the kernel's table routes it (alt-sent, alt-no-route, alt-send-error).
            self.counters[self.kernel_sender.send(action.packet)] += 1
            return
        sender = self.tunnel_sender
        if sender is None:
            self.counters["alt-dropped"] += 1
            return
        # From the loop the engine queues it for its data-plane thread (a full queue drops it,
        # counted there as send-queue-full, as a full socket buffer would).
        self.counters["alt-sent"] += 1
        sender.send(action.route, action.packet)

    def _send_ip(self, packet: bytes) -> None:
        """A whole IP packet (ICMP error) over the underlay, from a raw socket that includes the header."""
        version = packet[0] >> 4 if packet else 0
        if version not in (4, 6):
            self.counters["icmp-send-error"] += 1
            return
        if version not in self._raw:
            try:
                family = socket.AF_INET if version == 4 else socket.AF_INET6
                # IPPROTO_RAW implies header-included for both families on Linux.
                self._raw[version] = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
            except OSError as exc:
                log.warning("no raw IPv%d socket, ICMP errors will not be sent: %s", version, exc)
                self._raw[version] = None
        raw = self._raw[version]
        if raw is None:
            self.counters["icmp-send-error"] += 1
            return
        dst = IPv4Address(packet[16:20]) if version == 4 else IPv6Address(packet[24:40])
        try:
            raw.sendto(packet, (str(dst), 0))
        except OSError as exc:
            self.counters["icmp-send-error"] += 1
            log.debug("ICMP to %s: %s", dst, exc)
            return
        self.counters["icmp-sent"] += 1

    # --- timers ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadlines = []
        if self.ms is not None:
            if (expiry := self.ms.next_deadline()) is not None:
                deadlines.append(expiry)
            if self.ms_nonces is not None and (save := self.ms_nonces.due(self.ms, self.clock())) is not None:
                deadlines.append(save)
        if self.etr is not None:
            deadlines.append(self.etr.next_deadline())
        if self.mr is not None and (summary := self.mr.next_deadline()) is not None:
            deadlines.append(summary)
        if self._drop_flush_at is not None:
            deadlines.append(self._drop_flush_at)
        return min(deadlines, default=None)

    def tick(self) -> None:
        now = self.clock()
        actions: list[Action] = []
        if self.ms is not None:
            actions += self.ms.tick(now)
            if self.ms_nonces is not None:
                self.ms_nonces.maybe_save(self.ms, now)
        if self.etr is not None:
            actions += self.etr.tick(now)
            if self.nonce_store is not None:
                self.nonce_store.save(self.etr.last_nonce)
        if self.mr is not None:
            actions += self.mr.tick(now)
        self._flush_drop_log(now)
        self.execute(actions)

    def _reschedule(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        deadline = self.next_deadline()
        if self._timer is not None:
            if deadline is not None and abs(self._timer.when() - self._loop_time(deadline)) < 1e-3:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = loop.call_at(self._loop_time(deadline), self._on_timer)

    def _loop_time(self, deadline: float) -> float:
        assert self._loop is not None
        return self._loop.time() + max(0.0, deadline - self.clock())

    def _on_timer(self) -> None:
        self._timer = None
        self.tick()
        self._reschedule()

    # --- status ------------------------------------------------------------------------------

    def registrations(self) -> list[dict[str, Any]]:
        if self.ms is None:
            return []
        now = self.clock()
        return [_registration_json(r, now) for r in self.ms.registrations()]

    def registrations_page(
        self, after: str | None = None, limit: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of registrations and the cursor of the next (``MapServer.registrations_page``).

        Raises ValueError for a cursor the Map-Server did not make.
        """
        if self.ms is None:
            return [], None
        now = self.clock()
        items, cursor = self.ms.registrations_page(after, limit)
        return [_registration_json(r, now) for r in items], cursor

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "roles": self.roles,
            "edge": self.edge_counters(),
        }
        if self.forwarder is not None:
            out["forwarder"] = self.forwarder.stats()
            out["local_prefixes"] = [str(p) for p in self.forwarder.local_prefixes()]
        if self.kernel_routes is not None and self.local_routes is not None:
            out["local_prefixes"] = [str(p) for p in self.kernel_routes.local_prefixes()]
            out["kernel_alt"] = {"local_routes": sorted(map(str, self.local_routes.installed)),
                                 "local_route_errors": self.local_routes.errors}
        if self.mr is not None:
            out["map_resolver"] = dict(self.mr.counters)
        if self.ms is not None:
            out["map_server"] = dict(self.ms.counters)
            # A count, not the list: the status never grows with the table (the list is paged).
            out["registrations"] = len(self.ms)
            out["map_server_state"] = self.ms.stats()
        if self.etr is not None:
            out["etr"] = dict(self.etr.counters)
        return out


def site_from_config(site: SiteConfig) -> Site:
    """The Map-Server core's own site type from a ``[[map_server.sites]]`` entry."""
    return Site(
        site.name, site.key, ALGORITHMS[site.algorithm], site.eid_prefixes, site.accept_more_specifics,
        site.always_announce, notify_to=site.notify_to, replay=site.replay,
    )


def _registration_json(r: Registration, now: float) -> dict[str, Any]:
    return {
        "site": r.site, "prefix": str(r.prefix), "etr": str(r.source), "port": r.source_port,
        "proxy_reply": r.proxy_reply, "xtr_id": r.xtr_id, "expires_in": round(r.expires - now, 1),
        "locators": [str(loc.address) for loc in r.record.locators],
        "requests_to": None if r.etr_address is None else str(r.etr_address),
    }
