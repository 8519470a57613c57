"""The node daemon, asyncio edge: tunnels, ExaBGP under supervision, the bridge socket, status and control.

Start order: GRE tunnels (one per peer), the bridge and control sockets, then
ExaBGP (started or adopted, see ``alt_router.bgp.supervisor``).  Stop order is
the reverse: ExaBGP first (it closes every session with a Cease, which is what
withdraws our prefixes at the peers), then the sockets, then the tunnels.

State directory (``[node].state_dir``), documented in docs/operations.md::

    alt-router.pid     this daemon          exabgp.conf   rendered ExaBGP config
    exabgp.pid         ExaBGP (adoptable)   exabgp.log    ExaBGP's log
    exabgp.out         ExaBGP + bridge stdout/stderr
    bridge.sock        ExaBGP's bridge connects here
    control.sock       JSON-lines queries (``query()``)
    status.json        snapshot, every STATUS_INTERVAL s and on SIGUSR1
    announcements.json run-time announcements, re-announced after a restart

Plug-in points for the mapping cores: ``hook`` is the GRE engine's inner-packet
hook (the ALT datagram forwarder; it forces the userspace data path), and a
Map-Server calls ``Node.announce`` / ``Node.withdraw`` with the prefixes of its
registered sites.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alt_router.api.http import ApiConfigError, ApiServer
from alt_router.api.http import start as start_api
from alt_router.bgp.bridge import MAX_LINE, SOCKET_NAME
from alt_router.bgp.exabgp_config import exabgp_stop_grace, render_exabgp_config
from alt_router.bgp.supervisor import Backoff, ExabgpSupervisor, exabgp_env, process_matches, read_pidfile
from alt_router.bgp.supervisor import terminate as terminate_exabgp
from alt_router.gre.config import TunnelConfig
from alt_router.gre.dataplane import InnerHook
from alt_router.gre.tunnel import Tunnels, make_tunnels
from alt_router.gre.userspace import Engine
from alt_router.node.config import ApiSection, ConfigError, NodeConfig, PeerConfig, load_config
from alt_router.node.core import NodeCore, NodeError, Prefix, as_prefix
from alt_router.node.mapping import NodeMapping
from alt_router.node.reload import ReloadPlan
from alt_router.node.reload import plan as reload_plan
from alt_router.node.view import DaemonView
from alt_router.rib import EventStream

log = logging.getLogger(__name__)

PIDFILE = "alt-router.pid"
CONTROL_SOCKET = "control.sock"
STATUS_FILE = "status.json"
ANNOUNCEMENTS_FILE = "announcements.json"
EXABGP_CONFIG = "exabgp.conf"
STATUS_INTERVAL = 2.0
GC_FREEZE_STEP = 50_000
# SIGTERM must stop the node within 3 s (systemd's and operators' patience), whatever the table
# size: the node waits this long for ExaBGP, which then finishes closing its sessions on its own
# (ExabgpSupervisor.stop).
EXABGP_STOP_WAIT = 2.0
# The GRE data-plane thread (docs/architecture.md, "Data-plane thread") needs the GIL back after
# every syscall; while the event loop runs Python flat out, it waits up to one switch interval
# each time.  CPython's 5 ms made a packet across a busy node cost ~15 ms (p90, 3 syscalls);
# 1 ms brings that to ~1 ms, and costs nothing while the data-plane thread is idle (nobody asks
# for the GIL then).
SWITCH_INTERVAL = 0.001
# Set to 1 to enable the control command ``debug-stall`` (tests only: it freezes the event loop).
DEBUG_ENV = "ALT_ROUTER_DEBUG"
MAX_DEBUG_STALL = 120.0


class DaemonError(RuntimeError):
    """The node cannot start (another daemon runs on the state dir, a tunnel cannot be made...)."""


def tunnel_name(peer: PeerConfig, index: int) -> str:
    """``alt-<peer>`` when that is a valid interface name, else ``alt<index>``."""
    name = f"alt-{peer.name}"
    return name if len(name) <= 15 and all(c.isalnum() or c in "-_" for c in name) else f"alt{index}"


def tunnel_config(peer: PeerConfig, name: str) -> TunnelConfig:
    addresses = tuple(a for a in (peer.tunnel.local_ipv4, peer.tunnel.local_ipv6) if a is not None)
    return TunnelConfig(name=name, local=peer.underlay.local, remote=peer.underlay.remote, key=peer.key,
                        addresses=addresses)


def tunnel_configs(config: NodeConfig) -> list[TunnelConfig]:
    return [tunnel_config(peer, tunnel_name(peer, i)) for i, peer in enumerate(config.peers)]


def bridge_command(state_dir: Path) -> str:
    # The bridge module directly, not the CLI: it starts in a quarter of the time and memory.
    return f"{sys.executable} -m alt_router.bgp.bridge --socket {state_dir / SOCKET_NAME}"


def exabgp_config_text(config: NodeConfig) -> str:
    return render_exabgp_config(config, bridge_command(config.node.state_dir))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
        # Every node forwards ALT datagrams (and runs its MR/MS/ETR roles) unless a test brings
        # its own hook; kernel GRE cannot run a hook, see docs/mapping.md.
        self.mapping: NodeMapping | None = None
        # Peer name -> tunnel name; a reload keeps the names of the peers it keeps.
        self.tunnel_names = {p.name: tunnel_name(p, i) for i, p in enumerate(config.peers)}
        if hook is None:
            self.mapping = NodeMapping(
                config, self.core.rib, self.tunnel_names,
                announce=self.announce, withdraw=self.withdraw,
            )
            if config.node.tunnel_mode != "kernel":
                self.hook = self.mapping.hook
        self.tunnels: Tunnels | None = None
        self.exabgp_config = config.exabgp.config or self.state_dir / EXABGP_CONFIG
        argv = exabgp_argv or [config.exabgp.binary, str(self.exabgp_config)]
        self.supervisor = ExabgpSupervisor(
            argv, self.state_dir, env=exabgp_env(self.state_dir, config.node.name), backoff=backoff,
            adopt_match=("exabgp", str(self.exabgp_config)), on_exit=self._on_exabgp_exit,
        )
        self._bridge: asyncio.StreamWriter | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.api: ApiServer | None = None
        self.dropped_commands = 0
        self._frozen_routes = 0

    @property
    def rib(self) -> Any:
        return self.core.rib

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._claim_pidfile()
        self._load_announcements()
        try:
            if self.with_tunnels and self.config.peers:
                self.tunnels = make_tunnels(
                    tunnel_configs(self.config), self.config.node.tunnel_mode, self.hook
                )
                # Netlink work runs in a helper thread inside open(); fine to call from the loop.
                self.tunnels.open()
                if isinstance(self.tunnels, Engine):
                    if self.mapping is not None and self.hook == self.mapping.hook:
                        self.tunnels.dataplane.fast_hook = self.mapping.fast_hook
                    self._start_dataplane(self.tunnels)
            if self.mapping is not None:
                # Registrations do not survive a restart, so neither do the announcements they made.
                for prefix in self.mapping.site_prefixes() & set(self.core.dynamic):
                    self.withdraw(prefix)
                self.mapping.start(asyncio.get_running_loop(),
                                   self.tunnels if isinstance(self.tunnels, Engine) else None)
            self._servers.append(await self._unix_server(SOCKET_NAME, self._serve_bridge))
            self._servers.append(await self._unix_server(CONTROL_SOCKET, self._serve_control))
            await self._start_api()
            await self._prepare_exabgp_config()
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
        """Clean stop: ExaBGP (Cease to every peer), sockets, tunnels, pidfiles."""
        await self.supervisor.stop(grace=exabgp_stop_grace(len(self.core.rib)), wait=EXABGP_STOP_WAIT)
        if self.api is not None:
            await self.api.stop()
            self.api = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None
        for server in self._servers:
            server.close()
        self._servers.clear()
        for name in (SOCKET_NAME, CONTROL_SOCKET):
            (self.state_dir / name).unlink(missing_ok=True)
        if self.mapping is not None:
            self.mapping.stop()
        if self.tunnels is not None:
            self.tunnels.close()
            self.tunnels = None
        with contextlib.suppress(OSError):
            self.write_status()
        if read_pidfile(self.state_dir / PIDFILE) == os.getpid():
            (self.state_dir / PIDFILE).unlink(missing_ok=True)
        log.info("node %s stopped", self.config.node.name)

    def _claim_pidfile(self) -> None:
        path = self.state_dir / PIDFILE
        other = read_pidfile(path)
        if other is not None and other != os.getpid() and process_matches(other, ("alt",)):
            raise DaemonError(f"another alt-router (pid {other}) runs on {self.state_dir}")
        write_atomic(path, f"{os.getpid()}\n")

    async def _prepare_exabgp_config(self) -> None:
        if self.config.exabgp.config is not None:
            if not self.config.exabgp.config.is_file():
                raise DaemonError(f"ExaBGP config {self.config.exabgp.config} does not exist")
            return
        text = exabgp_config_text(self.config)
        path = self.state_dir / EXABGP_CONFIG
        try:
            old = path.read_text()
        except FileNotFoundError:
            old = None
        if old == text:
            return
        pid = read_pidfile(self.supervisor.pidfile)
        if old is not None and pid is not None and process_matches(pid, ("exabgp", str(path))):
            # The running ExaBGP was started from a different config: do not adopt it.
            log.warning("the node config changed since ExaBGP pid %d started; restarting it", pid)
            await terminate_exabgp(pid, 5.0)
        write_atomic(path, text)

    async def _unix_server(
        self, name: str, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    ) -> asyncio.AbstractServer:
        path = self.state_dir / name
        path.unlink(missing_ok=True)  # a socket file left by a killed daemon
        server = await asyncio.start_unix_server(handler, str(path), limit=MAX_LINE)
        path.chmod(0o600)
        return server

    # --- ExaBGP via the bridge --------------------------------------------------------------

    def send(self, commands: list[str]) -> None:
        if not commands:
            return
        writer = self._bridge
        if writer is None or writer.is_closing():
            # Nothing is lost: a new bridge connection gets the complete desired state again.
            self.dropped_commands += len(commands)
            return
        writer.write("".join(c + "\n" for c in commands).encode())

    async def _serve_bridge(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._bridge is not None:
            log.warning("a second bridge connected; dropping the first")
            self._bridge.close()
        self._bridge = writer
        log.info("ExaBGP bridge connected")
        self.send(self.core.on_bridge_connected())
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    break
                except asyncio.LimitOverrunError as exc:
                    self.core.counters["oversize-lines"] += 1
                    await reader.readexactly(exc.consumed)
                    continue
                if self._bridge is not writer:
                    # Superseded (the bridge reconnected after we fell behind, see bgp/bridge.py):
                    # what this connection still holds is older than the new one's replay.
                    break
                self.send(self.core.on_line(line, self.clock()))
                self._freeze_routes()
                if writer.transport.get_write_buffer_size() > 1 << 20:
                    await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.warning("bridge connection error: %s", exc)
        finally:
            if self._bridge is writer:
                self._bridge = None
            writer.close()
            log.info("ExaBGP bridge disconnected")

    def _freeze_routes(self) -> None:
        # Routes live long: without this every full GC pass re-walks each one, which cost
        # about a third of a 1M-route ingest.  Frozen objects are still freed by refcount.
        routes = len(self.core.rib)
        if routes >= self._frozen_routes + GC_FREEZE_STEP:
            gc.freeze()
            self._frozen_routes = routes

    def _on_exabgp_exit(self, pid: int, status: int | None) -> None:
        self.send(self.core.on_exabgp_exit(self.clock()))

    # --- run-time announcements -----------------------------------------------------------------

    def announce(self, prefix: str | Prefix) -> bool:
        """Originate ``prefix`` to every peer; True if it was not announced already."""
        p = as_prefix(prefix)
        known = p in self.core.dynamic or p in self.core.static
        self.send(self.core.announce(p))
        self._save_announcements()
        return not known

    def withdraw(self, prefix: str | Prefix) -> bool:
        """Stop originating ``prefix``; True if it was announced at run time before."""
        was = as_prefix(prefix) in self.core.dynamic
        self.send(self.core.withdraw(prefix))
        self._save_announcements()
        return was

    def _save_announcements(self) -> None:
        write_atomic(self.state_dir / ANNOUNCEMENTS_FILE,
                     json.dumps([str(p) for p in self.core.dynamic], indent=1) + "\n")

    def _load_announcements(self) -> None:
        path = self.state_dir / ANNOUNCEMENTS_FILE
        try:
            items = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except ValueError as exc:
            log.error("ignoring %s: %s", path, exc)
            return
        for item in items if isinstance(items, list) else []:
            try:
                self.core.announce(item)
            except NodeError as exc:
                log.error("ignoring an entry of %s: %s", path, exc)

    async def _start_api(self) -> None:
        # Monitoring must not take routing down: a port in use is logged, not fatal.
        cfg = self.config.api
        try:
            self.api = await start_api(DaemonView(self), str(cfg.listen), cfg.port, cfg.token,
                                       **api_limits(cfg))
        except ApiConfigError as exc:
            log.error("monitoring API not started: %s", exc)

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
            eid=dataclasses.replace(self.config.eid, announce=new.eid.announce),
            peers=tuple(next((n for n in new.peers if n.name == p.name), p) if p.name in keep else p
                        for p in peers),
            map_server=new.map_server if todo.sites is not None else self.config.map_server,
        )
        self.config = applied
        self.send(self.core.set_peers(applied, self.clock()))
        if todo.sites is not None and self.mapping is not None:
            self.mapping.set_sites(todo.sites)
        if applied.exabgp.config is None:
            self.core.static = frozenset(applied.eid.announce)
            self._prepare_exabgp_config_text()
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

    def _apply_peers(self, todo: ReloadPlan, new: NodeConfig) -> ReloadPlan:
        """Make the new peers' tunnels (all or none); the plan, less peers that cannot be added."""
        if not todo.peers_added:
            return todo
        index = {p.name: i for i, p in enumerate(new.peers)}
        names: dict[str, str] = {}
        taken = set(self.tunnel_names.values())
        for peer in todo.peers_added:
            name = tunnel_name(peer, index[peer.name])
            j = index[peer.name]
            while name in taken:  # the index-based fallback name of a peer removed earlier
                j += 1
                name = f"alt{j}"
            taken.add(name)
            names[peer.name] = name
        made: list[str] = []
        if self.with_tunnels and self.tunnels is not None and not isinstance(self.tunnels, Engine):
            raise RuntimeError("the running tunnels are kernel GRE")
        try:
            for peer in todo.peers_added:
                if not self.with_tunnels:
                    continue
                engine = self.tunnels if isinstance(self.tunnels, Engine) else None
                if engine is not None:
                    engine.add_tunnel(tunnel_config(peer, names[peer.name]))
                else:
                    self._start_tunnels_for(tunnel_config(peer, names[peer.name]))
                made.append(names[peer.name])
        except BaseException:
            for name in made:
                self._remove_tunnel_named(name)
            raise
        self.tunnel_names.update(names)
        if self.mapping is not None:
            self.mapping.set_tunnels(self.tunnel_names)
        return todo

    def _start_tunnels_for(self, config: TunnelConfig) -> None:
        # The node had no peer, so no engine yet: start one like start() does.
        engine = make_tunnels([config], self.config.node.tunnel_mode, self.hook)
        engine.open()
        self.tunnels = engine
        if isinstance(engine, Engine):
            if self.mapping is not None and self.hook == self.mapping.hook:
                engine.dataplane.fast_hook = self.mapping.fast_hook
                self.mapping.tunnel_sender = engine
            with contextlib.suppress(RuntimeError):
                self._start_dataplane(engine)

    @staticmethod
    def _start_dataplane(engine: Engine) -> None:
        # Its own thread, not the event loop: BGP crosses these tunnels, and its keepalives must
        # not wait for a loop busy with a Map-Register flood or slow API clients.  Local
        # deliveries come back to the loop through the engine's bounded hand-off.
        sys.setswitchinterval(SWITCH_INTERVAL)
        engine.start(asyncio.get_running_loop())

    def _remove_tunnel(self, peer: str) -> None:
        name = self.tunnel_names.pop(peer, None)
        if self.mapping is not None:
            self.mapping.set_tunnels(self.tunnel_names)
        if name is not None:
            self._remove_tunnel_named(name)

    def _remove_tunnel_named(self, name: str) -> None:
        if isinstance(self.tunnels, Engine):
            self.tunnels.remove_tunnel(name)

    def _prepare_exabgp_config_text(self) -> None:
        write_atomic(self.state_dir / EXABGP_CONFIG, exabgp_config_text(self.config))

    # --- status and control ---------------------------------------------------------------------

    def status(self, *, routes: bool = True) -> dict[str, Any]:
        snap = self.core.snapshot(self.clock(), routes=routes)
        snap["pid"] = os.getpid()
        snap["exabgp"] = {
            "pid": self.supervisor.pid, "adopted": self.supervisor.adopted,
            "restarts": self.supervisor.restarts, "last_exit": self.supervisor.last_exit,
            "config": str(self.exabgp_config),
        }
        snap["bridge_connected"] = self._bridge is not None
        snap["dropped_commands"] = self.dropped_commands
        if self.tunnels is not None:
            snap["tunnels"] = {"mode": self.tunnels.mode, **self.tunnels.stats()}
        if self.mapping is not None:
            snap["mapping"] = self.mapping.status()
        return snap

    def write_status(self) -> Path:
        path = self.state_dir / STATUS_FILE
        write_atomic(path, json.dumps(self.status_file(), indent=1, sort_keys=True, default=str) + "\n")
        return path

    def status_file(self) -> dict[str, Any]:
        """What status.json holds: ``status()`` with totals in place of the route and registration
        lists, so writing it every STATUS_INTERVAL costs the same whatever the table sizes (the
        lists are paged: ``/v1/routes``, ``/v1/registrations``)."""
        snap = self.status(routes=False)
        mapping = snap.get("mapping")
        if isinstance(mapping, dict) and isinstance(mapping.get("registrations"), list):
            mapping["registrations"] = len(mapping["registrations"])
        return snap

    async def _status_loop(self) -> None:
        while True:
            try:
                self.write_status()
            except OSError as exc:
                log.warning("cannot write %s: %s", STATUS_FILE, exc)
            await asyncio.sleep(STATUS_INTERVAL)

    def control(self, request: Any) -> dict[str, Any]:
        """Answer one control request (a JSON object with ``cmd``)."""
        if not isinstance(request, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        cmd = request.get("cmd")
        try:
            if cmd == "status":
                return {"ok": True, **self.status(routes=bool(request.get("routes", True)))}
            if cmd == "announce":
                return {"ok": True, "changed": self.announce(str(request.get("prefix")))}
            if cmd == "withdraw":
                return {"ok": True, "changed": self.withdraw(str(request.get("prefix")))}
            if cmd == "lookup":
                path = self.core.rib.lookup(str(request.get("address")))
                if path is None:
                    return {"ok": True, "route": None}
                return {"ok": True, "route": {"prefix": str(path.prefix), "peer": path.peer,
                                              "next_hop": str(path.next_hop), "as_path": list(path.as_path)}}
            if cmd == "registrations":
                return {"ok": True, "registrations": self.mapping.registrations() if self.mapping else []}
            if cmd == "dump":
                return {"ok": True, "path": str(self.write_status())}
            if cmd == "debug-stall" and os.environ.get(DEBUG_ENV) == "1":
                return self._debug_stall(request.get("seconds", 1.0))
        except NodeError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown cmd {cmd!r}"}

    @staticmethod
    def _debug_stall(seconds: object) -> dict[str, Any]:
        if not isinstance(seconds, int | float):
            return {"ok": False, "error": "seconds must be a number"}
        stall = min(MAX_DEBUG_STALL, max(0.0, float(seconds)))
        # Answer first, then stall: the caller's query must not wait out the stall.
        asyncio.get_running_loop().call_soon(_stall, stall)
        return {"ok": True, "stalling": stall}

    async def _serve_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    break
                try:
                    answer = self.control(json.loads(line))
                except ValueError as exc:
                    answer = {"ok": False, "error": f"not JSON: {exc}"}
                writer.write(json.dumps(answer, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def api_limits(cfg: ApiSection) -> dict[str, Any]:
    """The ``[api]`` limits as ``ApiServer`` keywords."""
    return {"max_connections": cfg.max_connections, "header_timeout": cfg.header_timeout,
            "keepalive_timeout": cfg.keepalive_timeout, "max_stream_clients": cfg.stream_clients,
            "queue_size": cfg.stream_queue}


def _stall(seconds: float) -> None:
    """Keep the event loop (and the GIL, between switches) busy in Python for ``seconds``.

    The ``debug-stall`` control command: what a Map-Register flood does to the loop, on demand,
    so a test can show that BGP does not depend on it.
    """
    log.warning("debug-stall: blocking the event loop for %.1fs", seconds)
    end = time.monotonic() + seconds
    spins = 0
    while time.monotonic() < end:
        spins += 1
    log.warning("debug-stall: done (%d spins)", spins)


def query(state_dir: Path, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one control request to the daemon running on ``state_dir`` (blocking client)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(state_dir / CONTROL_SOCKET))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer


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
