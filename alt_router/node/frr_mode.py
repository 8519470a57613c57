"""The FRR-mode parts of a node (edge; ``[node] bgp = "frr"``, issue 10).

In this mode the node's own FRR (``alt_router.bgp.frr.FrrSupervisor``: zebra + bgpd, pathspace
``-N``) is the ALT's BGP speaker and zebra installs the ALT routes in the kernel table of the
node's network namespace (or of ``[frr] vrf``); the kernel forwards ALT datagrams.  The node:

* renders FRR's config from its own and supervises the two daemons;
* mirrors the kernel's ALT routes into its ``Rib`` (``alt_router.node.kernel_rib.KernelRib``,
  netlink), which feeds the API and the Map-Resolver's "is there a route";
* polls FRR's summary JSON every ``POLL_INTERVAL`` seconds (one vtysh run: cheap) and marks each
  configured peer up or down in the Rib, so ``/v1/peers`` and the status show session state;
* sends run-time originations (the Map-Server's site prefixes, ``alt-router announce``) to bgpd
  through vtysh.

``Node`` (node/daemon.py) holds one ``FrrMode`` in this mode and does not start ExaBGP or its
bridge; its GRE tunnels get no inner hook, so decapsulated packets go to the TUN devices and the
kernel routes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import struct
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from ipaddress import ip_address
from typing import Any, Protocol

from alt_router.bgp.frr import KILL_WAIT, FrrError, FrrSupervisor
from alt_router.bgp.frr_config import ESTABLISHED
from alt_router.bgp.supervisor import Backoff
from alt_router.gre.userspace import run_netlink
from alt_router.node.config import NodeConfig
from alt_router.node.kernel_alt import vrf_table
from alt_router.rib import Rib
from alt_router.rib.rib import Output
from alt_router.types import IPAddress, Prefix

log = logging.getLogger(__name__)

FRR_DIR = "frr"  # under the node's state_dir
POLL_INTERVAL = 2.0
MAIN_TABLE = 254


def vrf_setup(ipr: Any, vrf: str, ifnames: Iterable[str]) -> int:
    """Enslave the tunnels ``ifnames`` to the kernel VRF ``vrf``; its routing table id.

    ``ipr`` is a pyroute2 IPRoute.  The VRF itself is the operator's (docs/deploy.md: ``ip link add
    alt type vrf table 100``): its table is where zebra installs the ALT routes and the kernel
    looks them up for datagrams arriving on the enslaved tunnels.
    """
    try:
        index, table = vrf_table(ipr, vrf)
    except ValueError as exc:
        raise FrrError(str(exc)) from exc
    for name in ifnames:
        links = ipr.link_lookup(ifname=name)
        if not links:
            raise FrrError(f"tunnel {name} does not exist; cannot put it in VRF {vrf}")
        ipr.link("set", index=links[0], master=index)
    log.info("FRR mode: tunnels %s in VRF %s (table %d)", ", ".join(ifnames) or "(none)", vrf, table)
    return table


TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_TCP_ESTABLISHED = "01"
_BGP_PORT = 179


def _proc_address(text: str) -> IPAddress:
    # /proc/net/tcp prints each 32-bit word of the address as a host-order hex number.
    host, _, _port = text.partition(":")
    words = [int(host[i:i + 8], 16) for i in range(0, len(host), 8)]
    address = ip_address(b"".join(struct.pack("=I", w) for w in words))
    # An IPv4 session accepted on an IPv6 socket shows as ::ffff:a.b.c.d.
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def bgp_sessions(remotes: Collection[IPAddress], tables: Iterable[str] = TCP_TABLES) -> int:
    """How many established TCP connections (of this network namespace) there are to port 179 of
    one of ``remotes`` or from it: the node's BGP sessions over its tunnels."""
    count = 0
    for table in tables:
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != _TCP_ESTABLISHED:
                continue
            local, remote = fields[1], fields[2]
            ports = {int(local.rpartition(":")[2], 16), int(remote.rpartition(":")[2], 16)}
            if _BGP_PORT in ports and _proc_address(remote) in remotes:
                count += 1
    return count


class KernelRibReader(Protocol):
    """What the node needs of ``alt_router.node.kernel_rib.KernelRib``."""

    async def start(self) -> None: ...
    def stop(self) -> None: ...
    def counters(self) -> dict[str, int]: ...


KernelRibFactory = Callable[[Rib, Callable[[str], "str | None"]], KernelRibReader]


def default_kernel_rib(rib: Rib, peer_of_ifname: Callable[[str], str | None], *, table: int,
                       clock: Callable[[], float]) -> KernelRibReader | None:
    """``KernelRib`` (node/kernel_rib.py), or None (logged) where it cannot be loaded (no pyroute2)."""
    try:
        module: Any = importlib.import_module("alt_router.node.kernel_rib")
    except ImportError as exc:
        log.error("FRR mode without the kernel RIB reader (the API and the Map-Resolver see no ALT "
                  "routes): %s", exc)
        return None
    routes: KernelRibReader = module.KernelRib(rib, peer_of_ifname, table=table, clock=clock)
    return routes


class FrrMode:
    """The node's FRR instance, its kernel RIB reader and the peer-state poll; one per node."""

    def __init__(
        self,
        config: NodeConfig,
        rib: Rib,
        tunnel_names: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        poll_interval: float = POLL_INTERVAL,
        kernel_rib: KernelRibFactory | None = None,
        table: int = MAIN_TABLE,
        with_tunnels: bool = True,
        netlink: Callable[[Callable[[Any], int]], int] = run_netlink,
    ) -> None:
        self.config = config
        self.rib = rib
        # The node's one record of peer -> tunnel name (node/tunnels.py): read, never copied.
        self.tunnel_names = tunnel_names
        self.clock = clock
        self.poll_interval = poll_interval
        self.table = table
        self.with_tunnels = with_tunnels
        self.netlink = netlink
        self.supervisor = FrrSupervisor(
            config, config.node.state_dir / FRR_DIR, pathspace=config.frr_pathspace,
            bin_dir=config.frr.bin_dir, vtysh=config.frr.vtysh, vrf=config.frr.vrf, backoff=backoff,
        )
        self._kernel_rib_factory = kernel_rib
        self.kernel_routes: KernelRibReader | None = None
        self.states: dict[str, str] = {}
        self.counters: dict[str, int] = {"polls": 0, "poll-errors": 0, "reload-errors": 0}
        self._task: asyncio.Task[None] | None = None
        self._reloads: set[asyncio.Task[None]] = set()

    def peer_of_ifname(self, ifname: str) -> str | None:
        """The peer whose tunnel is ``ifname`` (the kernel route's output device)."""
        return next((peer for peer, name in self.tunnel_names.items() if name == ifname), None)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, originated: Iterable[Prefix] = ()) -> None:
        """Start FRR (with ``originated``: run-time prefixes kept across a node restart), then the
        kernel RIB reader and the peer-state poll.  ``FrrError`` if FRR does not come up."""
        self.supervisor.originated |= set(originated)
        vrf = self.config.frr.vrf
        if vrf is not None:
            # Blocks the loop for one netlink round trip, at start only.
            names = list(self.tunnel_names.values()) if self.with_tunnels else []
            self.table = self.netlink(lambda ipr: vrf_setup(ipr, vrf, names))
        await self.supervisor.start()
        if self._kernel_rib_factory is not None:
            self.kernel_routes = self._kernel_rib_factory(self.rib, self.peer_of_ifname)
        else:
            self.kernel_routes = default_kernel_rib(self.rib, self.peer_of_ifname, table=self.table,
                                                    clock=self.clock)
        if self.kernel_routes is not None:
            await self.kernel_routes.start()
        self._task = asyncio.get_running_loop().create_task(self._poll_loop(), name="frr-peer-poll")
        log.info("FRR mode: FRR instance %s in %s; ALT routes from kernel table %d",
                 self.config.frr_pathspace, self.supervisor.run_dir, self.table)

    async def stop(self, reap: float = KILL_WAIT) -> None:
        """Stop the kernel RIB reader, then FRR (``FrrSupervisor.stop``; ``reap``: how long to wait
        for daemons it had to SIGKILL to be gone)."""
        log.info("FRR mode: stopping (kernel RIB reader, then bgpd and zebra)")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._reloads):
            task.cancel()
        # Stop reading the kernel first: zebra removing a large table while it stops would
        # otherwise queue a delete event per route for this loop, and stopping is bounded.
        if self.kernel_routes is not None:
            self.kernel_routes.stop()
            self.kernel_routes = None
        # bgpd's Cease withdraws our prefixes at the peers; within FrrSupervisor.stop's bound.
        await self.supervisor.stop(reap=reap)

    def sessions_open(self) -> int:
        """The BGP sessions with the node's peers that are still established in the kernel (a stop
        closes the tunnels once bgpd's Cease has ended them)."""
        remotes = {peer.tunnel.session[1] for peer in self.config.peers}
        return bgp_sessions(remotes)

    def freeze(self) -> None:
        """SIGSTOP FRR's daemons during a ``stop`` that they outlast (a large table), once bgpd has
        had its SIGTERM's Cease out: their teardown (bgpd freeing every path, zebra deleting
        every kernel route) is useless then and took the CPU and the kernel's routing lock from
        the node's closing of its tunnels, doubling it.  ``stop``'s SIGKILL follows."""
        for pid in self.supervisor.pids().values():
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)

    # --- peer states -------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self.poll_interval)

    async def poll(self) -> list[Output]:
        """Read FRR's peer states once and apply them; FRR not answering counts as every peer down
        only while bgpd is down (a slow vtysh is a poll error, not a session loss)."""
        self.counters["polls"] += 1
        try:
            states = await self.supervisor.peer_states()
        except FrrError as exc:
            self.counters["poll-errors"] += 1
            if self.supervisor.ready.is_set():
                log.debug("FRR peer poll failed: %s", exc)
                return []
            states = {}
        return self.apply_states(states)

    def apply_states(self, states: Mapping[str, str]) -> list[Output]:
        """Mark each configured peer up (its session is Established in FRR) or down in the Rib."""
        self.states = dict(states)
        now = self.clock()
        out: list[Output] = []
        for peer in self.config.peers:
            remote = str(peer.tunnel.session[1])
            state = states.get(remote, "not in FRR's summary")
            status = self.rib.peer(peer.name)
            if status is None:
                continue
            if state == ESTABLISHED and not status.up:
                log.info("FRR: session with %s (%s) established", peer.name, remote)
                out += self.rib.peer_up(peer.name, now)
            elif state != ESTABLISHED and status.up:
                log.warning("FRR: session with %s (%s) is %s", peer.name, remote, state)
                out += self.rib.peer_down(peer.name, f"FRR: {state}", now)
        return out

    # --- originations, reload, status ----------------------------------------------------------

    def announce(self, prefix: Prefix) -> bool:
        return self.supervisor.originate(prefix)

    def withdraw(self, prefix: Prefix) -> bool:
        return self.supervisor.withdraw(prefix)

    def reload(self, config: NodeConfig) -> None:
        """Apply a reloaded config: FRR's is re-rendered and the difference sent to bgpd through
        vtysh (only the sessions it touches reset); bgpd restarts for what it cannot change live."""
        self.config = config
        vrf = config.frr.vrf
        if vrf is not None and self.with_tunnels:
            names = list(self.tunnel_names.values())
            try:
                self.netlink(lambda ipr: vrf_setup(ipr, vrf, names))  # tunnels a reload added
            except (FrrError, OSError) as exc:
                self.counters["reload-errors"] += 1
                log.error("FRR reload: tunnels not put in VRF %s: %s", vrf, exc)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.supervisor.speaker = config
            return
        task = loop.create_task(self._reload(config))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self, config: NodeConfig) -> None:
        try:
            await self.supervisor.reload(config)
        except (FrrError, OSError, ValueError) as exc:
            self.counters["reload-errors"] += 1
            log.error("FRR reload failed, FRR keeps its previous config: %s", exc)

    async def as_paths(self, prefix: Prefix) -> list[list[int]]:
        """The AS paths FRR has for ``prefix`` (best first): the monitoring view's on-demand attribute."""
        return await self.supervisor.as_paths(prefix)

    def flat_counters(self) -> dict[str, int]:
        """The ``frr`` component of ``/v1/counters`` and ``/metrics`` (``name:label`` for per-daemon ones)."""
        out = {**self.counters, **self.supervisor.counters}
        out.update({f"restarts:{name}": n for name, n in self.supervisor.restarts.items()})
        return out

    async def lookup_detail(self, prefix: Prefix) -> dict[str, Any]:
        """BGP attributes the kernel does not hold, from FRR on demand: the AS paths, best first."""
        try:
            return {"as_paths": await self.as_paths(prefix)}
        except FrrError as exc:
            return {"as_paths": None, "as_paths_error": str(exc)}

    def status(self) -> dict[str, Any]:
        out = self.supervisor.status()
        out["sessions"] = dict(self.states)
        out["counters"] = dict(self.counters)
        if self.kernel_routes is not None:
            out["kernel_rib"] = self.kernel_routes.counters()
        return out
