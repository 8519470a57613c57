"""The node daemon (edge): ``Node`` composes the parts below and runs them on one asyncio loop.

Start order: GRE tunnels (one per peer), the bridge and control sockets, then
ExaBGP (started or adopted, see ``alt_router.bgp.supervisor``).  Stop order is
the reverse: ExaBGP first (it closes every session with a Cease, which is what
withdraws our prefixes at the peers), then the sockets, then the tunnels.

The parts, one module each:

    node/core.py      NodeCore: ExaBGP lines in, ExaBGP commands out, RIB updated (pure)
    node/mapping.py   NodeMapping: the MR/MS/ETR roles and the ALT forwarder, on sockets and timers
    node/tunnels.py   tunnel names and the one function that opens and wires the GRE tunnels
    node/exabgp.py    exabgp.conf, and BridgeLink: the connection from ExaBGP's bridge
    node/control.py   control.sock: the request handler and ``query()``, its blocking client
    node/state.py     the state directory's files (pidfile, status.json, announcements.json)
    node/view.py      the monitoring API's window onto the node
    bgp/supervisor.py ExaBGP as a supervised child, stopped without blocking the loop
    node/frr_mode.py  [node] bgp = "frr": the node's own FRR instead of ExaBGP and the bridge,
                      the kernel's ALT routes read into the RIB, session states polled from FRR

Plug-in points for the mapping cores: ``hook`` is the GRE engine's inner-packet
hook (the ALT datagram forwarder; it forces the userspace data path), and a
Map-Server calls ``Node.announce`` / ``Node.withdraw`` with the prefixes of its
registered sites.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alt_router.api.http import ApiConfigError, ApiServer
from alt_router.api.http import start as start_api
from alt_router.bgp.bridge import SOCKET_NAME
from alt_router.bgp.exabgp_config import exabgp_stop_grace
from alt_router.bgp.supervisor import Backoff, ExabgpSupervisor, exabgp_env
from alt_router.gre.dataplane import InnerHook
from alt_router.gre.tunnel import Tunnels
from alt_router.node import control, state
from alt_router.node.config import ApiSection, ConfigError, NodeConfig, load_config
from alt_router.node.control import CONTROL_SOCKET, DEBUG_ENV, query, unix_server
from alt_router.node.core import NodeCore, NodeError, as_prefix
from alt_router.node.exabgp import BridgeLink, prepare_exabgp_config, write_exabgp_config
from alt_router.node.frr_mode import FrrMode
from alt_router.node.mapping import NodeMapping
from alt_router.node.reload import ReloadPlan
from alt_router.node.reload import plan as reload_plan
from alt_router.node.state import EXABGP_CONFIG, STATUS_FILE, STATUS_INTERVAL, DaemonError
from alt_router.node.tunnels import PeerTunnels, tunnel_names
from alt_router.node.view import DaemonView
from alt_router.rib import EventStream, PeerInfo
from alt_router.rib.policy import ImportPolicy
from alt_router.types import Prefix

# Callers (the CLI, the lab, benchmarks, tests) import these from here.
__all__ = ["DEBUG_ENV", "DaemonError", "Node", "api_limits", "query", "serve"]

log = logging.getLogger(__name__)

# SIGTERM must stop the node within 3 s (systemd's and operators' patience), whatever the table
# size: the node waits this long for ExaBGP, which then finishes closing its sessions on its own
# (ExabgpSupervisor.stop).
EXABGP_STOP_WAIT = 2.0
# FRR mode: the tunnels stay up after bgpd's SIGTERM until its Cease has ended every BGP session
# over them (bgpd sends it as soon as it handles the signal), at least FRR_CEASE_MIN (a small
# table's daemons exit by then) and at most FRR_CEASE_GRACE; then they close while FRR has the
# rest of its 1 s to exit, so the kernel's flush of a large table through them overlaps that.
FRR_CEASE_MIN = 0.1
FRR_CEASE_GRACE = 0.3


class Node:
    """One ALT node.  ``await node.run()`` until ``node.request_stop()`` (or SIGTERM via ``serve``)."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        hook: InnerHook | None = None,
        with_tunnels: bool = True,
        exabgp_argv: list[str] | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.state_dir = config.node.state_dir
        self.hook = hook
        self.with_tunnels = with_tunnels
        self.clock = clock
        self.stream = EventStream()
        self.core = NodeCore(config, self.stream)
        self.bridge = BridgeLink(self.core, clock)
        # Every node forwards ALT datagrams (and runs its MR/MS/ETR roles) unless a test brings
        # its own hook; kernel GRE cannot run a hook, see docs/mapping.md.
        self.mapping: NodeMapping | None = None
        names = tunnel_names(config.peers)
        fast_hook = events = None
        # [node] bgp = "frr" (node/frr_mode.py): FRR speaks BGP and the kernel forwards.
        self.frr: FrrMode | None = None
        if hook is None:
            self.mapping = NodeMapping(
                config, self.core.rib, names,
                announce=self.announce, withdraw=self.withdraw, kernel_alt=config.node.bgp == "frr",
            )
            self.core.watch_aggregates(self.mapping.set_discard)
            if config.node.tunnel_mode != "kernel" and config.node.bgp != "frr":
                self.hook, fast_hook = self.mapping.hook, self.mapping.fast_hook
                events = self.mapping.dispatch  # the forwarder's Local/ICMP events, on the loop
        # The tunnels and their names (peer -> tunnel), the one record of them: a reload keeps
        # the names of the peers it keeps.
        self.gre = PeerTunnels(config.peers, config.node.tunnel_mode, self.hook, fast_hook,
                               events=events, enabled=with_tunnels)
        self.gre.names = names  # the very dict the mapping roles were given
        if config.node.bgp == "frr":
            self.frr = FrrMode(config, self.core.rib, names, clock=clock, backoff=backoff,
                               with_tunnels=with_tunnels)
        self.exabgp_config = config.exabgp.config or self.state_dir / EXABGP_CONFIG
        argv = exabgp_argv or [config.exabgp.binary, str(self.exabgp_config)]
        self.supervisor = ExabgpSupervisor(
            argv, self.state_dir, env=exabgp_env(self.state_dir, config.node.name), backoff=backoff,
            adopt_match=("exabgp", str(self.exabgp_config)), on_exit=self._on_exabgp_exit,
        )
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.api: ApiServer | None = None

    @property
    def rib(self) -> Any:
        return self.core.rib

    @property
    def tunnels(self) -> Tunnels | None:
        return self.gre.running

    @property
    def tunnel_names(self) -> dict[str, str]:
        """Peer name -> tunnel name: the one record of them (node/tunnels.py)."""
        return self.gre.names

    def send(self, commands: list[str]) -> None:
        if self.frr is None:  # FRR mode has no ExaBGP to command
            self.bridge.send(commands)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state.claim_pidfile(self.state_dir)
        self._load_announcements()
        try:
            self.gre.open(self.config.peers)
            if self.mapping is not None:
                # Registrations do not survive a restart, so neither do the announcements they made.
                for prefix in self.mapping.site_prefixes() & set(self.core.dynamic):
                    self.withdraw(prefix)
                self.mapping.start(asyncio.get_running_loop(), self.gre.engine)
            if self.frr is None:
                self._servers.append(await unix_server(self.state_dir / SOCKET_NAME, self.bridge.serve))
            self._servers.append(await unix_server(
                self.state_dir / CONTROL_SOCKET, functools.partial(control.serve, self.control)))
            await self._start_api()
            if self.frr is not None:
                await self.frr.start(self.core.dynamic)
            else:
                await prepare_exabgp_config(self.config, self.state_dir, self.supervisor)
                self.supervisor.start()
        except BaseException:
            await self.stop()
            raise
        self._tasks.append(asyncio.get_running_loop().create_task(self._status_loop()))
        log.info("node %s (AS %d) running; state in %s", self.config.node.name, self.config.node.asn,
                 self.state_dir)

    async def run(self) -> None:
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.stop()

    def request_stop(self) -> None:
        self._stop.set()

    async def stop(self) -> None:
        """Clean stop: ExaBGP or FRR (Cease to every peer), sockets, tunnels, pidfiles."""
        # Each step's duration goes in the final log line: a stop is bounded (3 s whatever the
        # table size), and the line says which step to look at when one is not.
        t0 = mark = time.monotonic()
        steps: list[str] = []

        def step(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            steps.append(f"{name} {now - mark:.2f}s")
            mark = now

        if self.frr is not None:
            # No wait for SIGKILLed daemons to be gone: the node exits next (and the lab's and the
            # tests' event loops reap them on their own).
            frr_stop = asyncio.ensure_future(self.frr.stop(reap=0.0))
            ceased = False
            while not frr_stop.done() and not ceased and time.monotonic() - t0 < FRR_CEASE_GRACE:
                await asyncio.wait({frr_stop}, timeout=0.02)
                ceased = time.monotonic() - t0 >= FRR_CEASE_MIN and not self.frr.sessions_open()
            if ceased:
                # The Cease (and FIN) left bgpd's socket for the TUN device: give the tunnels'
                # thread a moment to send them on.
                await asyncio.wait({frr_stop}, timeout=0.02)
            if not frr_stop.done():
                # Blocks the loop for the flush (FRR's timers fire late: SIGKILL right after).
                self.frr.freeze()
                self.gre.close()
                step("bgp grace+tunnels")
            await frr_stop
        else:
            await self.supervisor.stop(grace=exabgp_stop_grace(len(self.core.rib)), wait=EXABGP_STOP_WAIT)
        step("bgp")
        if self.api is not None:
            await self.api.stop()
            self.api = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.bridge.close()
        for server in self._servers:
            server.close()
        self._servers.clear()
        for name in (SOCKET_NAME, CONTROL_SOCKET):
            (self.state_dir / name).unlink(missing_ok=True)
        if self.mapping is not None:
            self.mapping.stop()
        step("api+sockets")
        self.gre.close()
        step("tunnels")
        with contextlib.suppress(OSError):
            self.write_status()
        state.release_pidfile(self.state_dir)
        step("status")
        log.info("node %s stopped in %.2fs (%s)", self.config.node.name, time.monotonic() - t0,
                 ", ".join(steps))

    def _on_exabgp_exit(self, pid: int, status: int | None) -> None:
        self.send(self.core.on_exabgp_exit(self.clock()))

    async def _start_api(self) -> None:
        # Monitoring must not take routing down: a port in use is logged, not fatal.
        cfg = self.config.api
        try:
            self.api = await start_api(DaemonView(self), str(cfg.listen), cfg.port, cfg.token,
                                       **api_limits(cfg))
        except ApiConfigError as exc:
            log.error("monitoring API not started: %s", exc)

    # --- run-time announcements -----------------------------------------------------------------

    def announce(self, prefix: str | Prefix) -> bool:
        """Originate ``prefix`` to every peer; True if it was not announced already."""
        p = as_prefix(prefix)
        known = p in self.core.dynamic or p in self.core.static
        self.send(self.core.announce(p))
        if self.frr is not None and p not in self.core.static:
            self.frr.announce(p)
        state.save_announcements(self.state_dir, self.core.dynamic)
        return not known

    def withdraw(self, prefix: str | Prefix) -> bool:
        """Stop originating ``prefix``; True if it was announced at run time before."""
        was = as_prefix(prefix) in self.core.dynamic
        self.send(self.core.withdraw(prefix))
        if self.frr is not None:
            self.frr.withdraw(as_prefix(prefix))
        state.save_announcements(self.state_dir, self.core.dynamic)
        return was

    def _load_announcements(self) -> None:
        for item in state.load_announcements(self.state_dir):
            try:
                self.core.announce(item)
            except NodeError as exc:
                log.error("ignoring an entry of %s: %s", self.state_dir / state.ANNOUNCEMENTS_FILE, exc)

    # --- SIGHUP: reload the config -----------------------------------------------------------------

    def reload(self, new: NodeConfig | None = None) -> ReloadPlan:
        """Apply a changed config where that can be done live (``alt_router.node.reload``); log the rest."""
        try:
            if new is None:
                new = load_config(self.config.source)
        except ConfigError as exc:
            log.error("reload refused, still running the previous config: %s", exc)
            return ReloadPlan(restart=("config invalid",))
        # The state dir may come from `run --state-dir`; it cannot change while running anyway.
        new = dataclasses.replace(new, node=dataclasses.replace(new.node, state_dir=self.state_dir))
        todo = reload_plan(self.config, new)
        try:
            todo = self._apply_peers(todo, new)
        except (OSError, ValueError, RuntimeError) as exc:
            log.error("reload: peer changes not applied, still running the previous peers: %s", exc)
            todo = dataclasses.replace(todo, peers_added=(), peers_removed=(), peers_updated=(),
                                       restart=(*todo.restart, f"peers not applied: {exc}"))
        keep = {p.name for p in todo.peers_added} | {p.name for p in todo.peers_updated}
        peers = tuple(p for p in self.config.peers if p.name not in todo.peers_removed) + todo.peers_added
        applied = dataclasses.replace(
            self.config,
            eid=dataclasses.replace(self.config.eid, announce=new.eid.announce,
                                    accept=self.config.eid.accept if todo.accept is None else todo.accept),
            peers=tuple(next((n for n in new.peers if n.name == p.name), p) if p.name in keep else p
                        for p in peers),
            map_server=new.map_server if todo.sites is not None else self.config.map_server,
        )
        self.config = applied
        self.send(self.core.set_peers(applied, self.clock()))
        if todo.sites is not None and self.mapping is not None:
            self.mapping.set_sites(todo.sites)
        if self.frr is not None:
            self._apply_frr_live(todo)
            self.core.static = frozenset(applied.eid.announce)
            self.frr.reload(applied)
        elif applied.exabgp.config is None:
            self.core.static = frozenset(applied.eid.announce)
            write_exabgp_config(self.config, self.state_dir)
        for name in todo.peers_removed:
            self._remove_tunnel(name)
        pid = self.supervisor.pid
        if pid is not None and (todo.live_changes or applied.exabgp.config is not None):
            # ExaBGP's reload: sessions whose neighbor is unchanged stay up, routes change by delta.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
            # ExaBGP may lose API-announced routes over a reload (exabgp#1126); re-send them.
            # The re-send is also what exports our routes to a new peer, once ExaBGP has
            # read its neighbor: twice, as nothing says when ExaBGP got to the signal.
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
                for delay in (1.0, 3.0):
                    loop.call_later(delay, lambda: self.send(self.core.on_bridge_connected()))
        log.log(logging.WARNING if todo.restart else logging.INFO, "reloaded %s: %s",
                self.config.source, todo.summary(),
                extra={"announced": len(todo.announce), "withdrawn": len(todo.withdraw),
                       "needs_restart": len(todo.restart)})
        return todo

    def _apply_frr_live(self, todo: ReloadPlan) -> None:
        """FRR mode: the node's own copies of what bgpd now takes live (``reload.FRR_LIVE_PEER_KEYS``,
        ``[eid].accept``), so ``/v1/peers``, the import policy and the Map-Resolver say what bgpd runs."""
        rib = self.core.rib
        for peer in todo.peers_updated:  # e.g. a new ASN; set_peers only looks at max_prefix
            rib.update_peer(PeerInfo(peer.name, peer.asn, peer.tunnel.remotes, peer.max_prefix))
        if todo.accept is not None:
            # bgpd drops what is now outside by route refresh; the Map-Resolver's negative replies
            # (RFC 9301 §8.4: 15 minutes, least-specific prefix) now treat only the new space as EIDs.
            rib.policy = ImportPolicy(rib.policy.local_asn, todo.accept, [s.info for s in rib.peers()])
            if self.mapping is not None and self.mapping.mr is not None:
                self.mapping.mr.set_eid_space(todo.accept)

    def _apply_peers(self, todo: ReloadPlan, new: NodeConfig) -> ReloadPlan:
        """Make the new peers' tunnels (all or none); the plan, less peers that cannot be added."""
        if not todo.peers_added:
            return todo
        had_engine = self.gre.engine is not None
        self.gre.add(todo.peers_added, {p.name: i for i, p in enumerate(new.peers)})
        if self.mapping is not None:
            if not had_engine and self.gre.engine is not None:
                self.mapping.tunnel_sender = self.gre.engine  # the first peer started the engine
            self.mapping.set_tunnels(self.tunnel_names)
        return todo

    def _remove_tunnel(self, peer: str) -> None:
        name = self.tunnel_names.pop(peer, None)
        if self.mapping is not None:
            self.mapping.set_tunnels(self.tunnel_names)
        if name is not None:
            self.gre.remove_named(name)

    # --- status and control ---------------------------------------------------------------------

    def status(self, *, routes: bool = True) -> dict[str, Any]:
        snap = self.core.snapshot(self.clock(), routes=routes)
        snap["pid"] = os.getpid()
        snap["exabgp"] = {
            "pid": self.supervisor.pid, "adopted": self.supervisor.adopted,
            "restarts": self.supervisor.restarts, "last_exit": self.supervisor.last_exit,
            "config": str(self.exabgp_config),
        }
        if self.frr is not None:
            snap["frr"] = self.frr.status()
        snap["bridge_connected"] = self.bridge.connected
        snap["dropped_commands"] = self.bridge.dropped_commands
        if self.tunnels is not None:
            snap["tunnels"] = {"mode": self.tunnels.mode, **self.tunnels.stats()}
        if self.mapping is not None:
            snap["mapping"] = self.mapping.status()
        return snap

    def status_file(self) -> dict[str, Any]:
        """What status.json holds (``state.status_totals``)."""
        return state.status_totals(self.status(routes=False))

    def write_status(self) -> Path:
        return state.write_status(self.state_dir, self.status_file())

    async def _status_loop(self) -> None:
        while True:
            try:
                self.write_status()
            except OSError as exc:
                log.warning("cannot write %s: %s", STATUS_FILE, exc)
            await asyncio.sleep(STATUS_INTERVAL)

    def route(self, address: str) -> dict[str, Any] | None:
        """The control command ``lookup``: the best route for ``address``."""
        path = self.core.rib.lookup(address)
        if path is None:
            return None
        return {"prefix": str(path.prefix), "peer": path.peer, "next_hop": str(path.next_hop),
                "as_path": list(path.as_path)}

    def registrations(self) -> list[dict[str, Any]]:
        return self.mapping.registrations() if self.mapping else []

    def control(self, request: Any) -> dict[str, Any]:
        """Answer one control request (a JSON object with ``cmd``)."""
        return control.answer(self, request)


def api_limits(cfg: ApiSection) -> dict[str, Any]:
    """The ``[api]`` limits as ``ApiServer`` keywords."""
    return {"max_connections": cfg.max_connections, "header_timeout": cfg.header_timeout,
            "keepalive_timeout": cfg.keepalive_timeout, "max_stream_clients": cfg.stream_clients,
            "queue_size": cfg.stream_queue}


async def serve(node: Node) -> int:
    """Run ``node`` until SIGTERM/SIGINT; SIGUSR1 writes status.json; SIGHUP reloads the config."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, node.request_stop)
    loop.add_signal_handler(signal.SIGINT, node.request_stop)
    loop.add_signal_handler(signal.SIGUSR1, lambda: log.info("status written to %s", node.write_status()))
    loop.add_signal_handler(signal.SIGHUP, node.reload)
    try:
        await node.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    return 0
