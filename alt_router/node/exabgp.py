"""The node's side of ExaBGP (edge): the config file it renders for it, and the bridge connection.

ExaBGP runs as a supervised child (``alt_router.bgp.supervisor``) and talks to the node through
the bridge (``alt_router.bgp.bridge``), which connects to ``bridge.sock`` in the state directory.
``BridgeLink`` is the node's end: lines in go to the ``NodeCore``, commands out go back.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from alt_router.bgp.bridge import SOCKET_NAME
from alt_router.bgp.exabgp_config import render_exabgp_config
from alt_router.bgp.supervisor import ExabgpSupervisor, process_matches, read_pidfile
from alt_router.bgp.supervisor import terminate as terminate_exabgp
from alt_router.node.config import NodeConfig
from alt_router.node.core import NodeCore
from alt_router.node.state import EXABGP_CONFIG, DaemonError, write_atomic

log = logging.getLogger(__name__)

GC_FREEZE_STEP = 50_000


def bridge_command(state_dir: Path) -> str:
    # The bridge module directly, not the CLI: it starts in a quarter of the time and memory.
    return f"{sys.executable} -m alt_router.bgp.bridge --socket {state_dir / SOCKET_NAME}"


def exabgp_config_text(config: NodeConfig) -> str:
    return render_exabgp_config(config, bridge_command(config.node.state_dir))


def write_exabgp_config(config: NodeConfig, state_dir: Path) -> None:
    write_atomic(state_dir / EXABGP_CONFIG, exabgp_config_text(config))


async def prepare_exabgp_config(config: NodeConfig, state_dir: Path, supervisor: ExabgpSupervisor) -> None:
    """Write exabgp.conf before ExaBGP starts; an ExaBGP still running an older one is stopped.

    An operator-supplied config (``[exabgp].config``) is used as is and only checked to exist.
    """
    if config.exabgp.config is not None:
        if not config.exabgp.config.is_file():
            raise DaemonError(f"ExaBGP config {config.exabgp.config} does not exist")
        return
    text = exabgp_config_text(config)
    path = state_dir / EXABGP_CONFIG
    try:
        old = path.read_text()
    except FileNotFoundError:
        old = None
    if old == text:
        return
    pid = read_pidfile(supervisor.pidfile)
    if old is not None and pid is not None and process_matches(pid, ("exabgp", str(path))):
        # The running ExaBGP was started from a different config: do not adopt it.
        log.warning("the node config changed since ExaBGP pid %d started; restarting it", pid)
        await terminate_exabgp(pid, 5.0)
    write_atomic(path, text)


class BridgeLink:
    """The bridge connection: ExaBGP's JSON lines into ``core``, its commands back to ExaBGP."""

    def __init__(self, core: NodeCore, clock: Callable[[], float]) -> None:
        self.core = core
        self.clock = clock
        self.writer: asyncio.StreamWriter | None = None
        self.dropped_commands = 0
        self._frozen_routes = 0

    @property
    def connected(self) -> bool:
        return self.writer is not None

    def send(self, commands: list[str]) -> None:
        if not commands:
            return
        writer = self.writer
        if writer is None or writer.is_closing():
            # Nothing is lost: a new bridge connection gets the complete desired state again.
            self.dropped_commands += len(commands)
            return
        writer.write("".join(c + "\n" for c in commands).encode())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.writer is not None:
            log.warning("a second bridge connected; dropping the first")
            self.writer.close()
        self.writer = writer
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
                if self.writer is not writer:
                    # Superseded (the bridge reconnected after we fell behind, see bgp/bridge.py):
                    # what this connection still holds is older than the new one's replay.
                    break
                self.send(self.core.on_line(line, self.clock()))
                self.freeze_routes()
                if writer.transport.get_write_buffer_size() > 1 << 20:
                    await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.warning("bridge connection error: %s", exc)
        finally:
            if self.writer is writer:
                self.writer = None
            writer.close()
            log.info("ExaBGP bridge disconnected")

    def freeze_routes(self) -> None:
        # Routes live long: without this every full GC pass re-walks each one, which cost
        # about a third of a 1M-route ingest.  Frozen objects are still freed by refcount.
        routes = len(self.core.rib)
        if routes >= self._frozen_routes + GC_FREEZE_STEP:
            gc.freeze()
            self._frozen_routes = routes
