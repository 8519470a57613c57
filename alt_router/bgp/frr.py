"""The node's own FRR instance (zebra + bgpd) as supervised children (edge; ``[node] bgp = "frr"``).

The instance runs in the node's network namespace with ``-N <pathspace>`` and every path given
explicitly under ``<state_dir>/frr`` (config files, pid files, ``-z zserv.api``, ``--vty_socket``),
and ``-P 0`` (no TCP vty): so it coexists with an operator's FRR for the underlay, whose files are
under /etc/frr and /var/run/frr.  The daemons drop to the ``frr`` user before they create their
sockets, so that directory is owned by frr:frr (FRR 8.4 refuses ``-u root``: root is not in
frrvty), and every directory above it must be traversable by frr.

zebra starts first (bgpd without zebra installs nothing in the kernel), then bgpd with the same
``-z``.  A daemon that dies is restarted after a backoff (``Backoff``, per daemon); when zebra
dies bgpd is stopped and both start again in that order, since a bgpd that lost zebra keeps its
sessions but its routes are gone from the kernel until it re-registers.  Nothing here blocks the
event loop: processes are asyncio subprocesses, readiness is polled with ``asyncio.sleep``.

Prefixes originated at run time (the Map-Server's site prefixes) are added and removed with
vtysh, and are also part of every bgpd config written from then on, so a bgpd restart keeps them.

vtysh is run with ``--vty_socket`` only: in FRR 8.4, ``-N`` together with ``--vty_socket`` makes
vtysh look for the sockets in a ``<pathspace>`` subdirectory of that directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alt_router.bgp.frr_config import (
    FrrConfig,
    FrrSpeaker,
    as_path,
    bgpd_changes,
    network_commands,
    originated,
    peer_states,
    render_frr_config,
    show_vrf,
)
from alt_router.bgp.supervisor import Backoff, RestartTracker, process_matches, read_pidfile
from alt_router.types import Prefix

log = logging.getLogger(__name__)

FRR_USER = "frr"
DAEMONS = ("zebra", "bgpd")
READY_TIMEOUT = 15.0
STOP_GRACE = 3.0
# stop() returns within about this long (SIGTERM, then SIGKILL): the node must stop within 3 s of
# SIGTERM (node/daemon.py), and after FRR it still deletes its tunnels (the kernel flushes the
# routes through them) and the process exits.
STOP_WAIT = 1.0
# After SIGKILL, how long stop() waits for the kernel to reap a daemon (it frees the memory first);
# one not reaped by then is left to the child watcher.
KILL_WAIT = 0.2
VTYSH_TIMEOUT = 10.0
_POLL = 0.05


class FrrError(RuntimeError):
    """The node's FRR instance could not be started, stopped or queried."""


class FrrSupervisor:
    """zebra then bgpd for the ALT, restarted when they die; vtysh for run-time changes and queries.

    ``speaker`` is the node's config (``frr_config.FrrSpeaker``), ``run_dir`` the instance's
    directory (created, owned by frr).  ``await start()`` returns once both daemons answer on
    their vty sockets (or raises ``FrrError``); ``await stop()`` stops both.
    """

    def __init__(
        self,
        speaker: FrrSpeaker,
        run_dir: Path,
        *,
        pathspace: str,
        bin_dir: Path = Path("/usr/lib/frr"),
        vtysh: str = "vtysh",
        vrf: str | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        user: str = FRR_USER,
        command_prefix: Sequence[str] = (),
    ) -> None:
        self.speaker = speaker
        self.run_dir = run_dir
        self.pathspace = pathspace
        self.bin_dir = bin_dir
        self.vtysh_binary = vtysh
        self.vrf = vrf
        self.clock = clock
        self.user = user
        # Put before each daemon's argv; it must exec the daemon (same pid), e.g. tests'
        # ``ip netns exec NS``: the node itself runs in its namespace and needs none.
        self.command_prefix = tuple(command_prefix)
        backoff = backoff or Backoff()
        self.trackers = {name: RestartTracker(backoff) for name in DAEMONS}
        self.originated: set[Prefix] = set()
        self.counters: dict[str, int] = {"vtysh-errors": 0, "start-failures": 0, "reloads": 0,
                                         "reload-live": 0, "reload-restart": 0, "stop-kills": 0}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._started_at: dict[str, float] = {}
        self._expected_exit: set[str] = set()
        self._rendered: set[Prefix] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._config_lock = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()

    # --- paths -------------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.run_dir / name

    @property
    def zserv(self) -> Path:
        return self.path("zserv.api")

    def pids(self) -> dict[str, int | None]:
        return {name: (p.pid if (p := self._procs.get(name)) and p.returncode is None else None)
                for name in DAEMONS}

    @property
    def restarts(self) -> dict[str, int]:
        """Per daemon: how many times it died (or zebra took it down) and was started again."""
        return {name: t.restarts for name, t in self.trackers.items()}

    def status(self) -> dict[str, Any]:
        return {"pids": self.pids(), "restarts": self.restarts, "run_dir": str(self.run_dir),
                "pathspace": self.pathspace, "vrf": self.vrf, "ready": self.ready.is_set(),
                "originated": sorted(str(p) for p in self.originated), **self.counters}

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._prepare_dir()
        await self._kill_stale()
        try:
            await self._start_missing()
        except BaseException:
            await self._terminate_all()
            raise
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name="frr-supervisor")

    async def stop(self, wait: float = STOP_WAIT, reap: float = KILL_WAIT) -> None:
        """Stop both daemons within ``wait`` seconds, whatever the table size.

        bgpd gets SIGTERM first (it sends every peer a Cease at once, then tears its table
        down), zebra once bgpd is gone or half of ``wait`` is over; whatever still runs when
        ``wait`` is over gets SIGKILL.  With a large table both would take many seconds to
        exit (bgpd frees every path, zebra removes every route from the kernel one by one),
        and nothing of that is needed: the peers have their Cease, the kernel flushes the
        routes through the tunnels when the node deletes them, and a zebra started later
        sweeps the routes of a killed predecessor (docs/deploy.md, "Stopping").
        """
        self._stopping = True
        self.ready.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._pending):
            task.cancel()
        await self._terminate_all(wait, reap)

    async def reload(self, speaker: FrrSpeaker) -> bool:
        """Apply a new config to the running bgpd; True if bgpd had to be restarted (sessions reset).

        The change between the config bgpd runs and the new one (``frr_config.bgpd_changes``,
        both rendered with the same run-time originations) goes through vtysh, so only the
        sessions it touches reset: a peer added, removed, or given a new password, hold time
        or max-prefix; a changed ``[eid].accept`` refreshes the routes of that family's
        sessions.  bgpd is restarted only for what it cannot change live (our ASN, VRF,
        router-id), or when vtysh refuses the change (bgpd would be half-configured); the log
        says which.  bgpd.conf is rewritten either way, so a later restart runs the new config.
        zebra's config holds nothing a reload changes.
        """
        new = render_frr_config(speaker, vrf=self.vrf, extra=self.originated).bgpd  # FrrConfigError first
        self.counters["reloads"] += 1
        async with self._config_lock:
            old = render_frr_config(self.speaker, vrf=self.vrf, extra=self.originated).bgpd
            self.speaker = speaker
            change = bgpd_changes(old, new)
            if change.empty:
                return False
            if not self._alive("bgpd"):
                return False  # the supervisor renders the new config when it starts bgpd
            reason = change.restart
            if reason is None and not self.ready.is_set():
                reason = "bgpd is still starting"
            if reason is None:
                try:
                    if change.configure:
                        await self.vtysh(*change.configure)
                except FrrError as exc:
                    reason = f"vtysh did not take the change live ({exc})"
            if reason is None:
                self._write("bgpd.conf", new)
                self.counters["reload-live"] += 1
                log.info("FRR reload: applied live through vtysh; sessions touched: %s%s",
                         ", ".join(change.touched) or "none",
                         " (inbound filters changed: routes refreshed)" if change.filters else "")
                if change.clear:
                    try:
                        await self.vtysh(*change.clear)
                    except FrrError as exc:
                        # The config is in; bgpd refreshes on its own (RFC 2918) or at the next reset.
                        self.counters["vtysh-errors"] += 1
                        log.error("FRR reload: session reset or route refresh failed: %s", exc)
                return False
            self.counters["reload-restart"] += 1
            log.warning("FRR reload: %s; restarting bgpd (every session resets)", reason)
            self._write("bgpd.conf", new)
            self._expected_exit.add("bgpd")
            await self._terminate("bgpd")
            return True

    def render(self) -> FrrConfig:
        return render_frr_config(self.speaker, vrf=self.vrf, extra=self.originated)

    def _prepare_dir(self) -> None:
        try:
            entry = pwd.getpwnam(self.user)
        except KeyError as exc:
            raise FrrError(f"FRR's user {self.user!r} does not exist (is FRR installed?)") from exc
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o755)
        if os.geteuid() == 0:
            os.chown(self.run_dir, entry.pw_uid, entry.pw_gid)
        for name in ("zebra.vty", "bgpd.vty", "zserv.api"):
            self.path(name).unlink(missing_ok=True)

    def _write(self, name: str, text: str) -> Path:
        path = self.path(name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o640)  # it holds the MD5 passwords
        if os.geteuid() == 0:
            entry = pwd.getpwnam(self.user)
            os.chown(tmp, entry.pw_uid, entry.pw_gid)
        os.replace(tmp, path)
        return path

    async def _kill_stale(self) -> None:
        """A previous node run killed with SIGKILL leaves its daemons, which hold our pid files."""
        for name in reversed(DAEMONS):
            pid = read_pidfile(self.path(f"{name}.pid"))
            if pid is not None and process_matches(pid, (name, str(self.run_dir))):
                log.warning("stopping a leftover %s (pid %d) of this node's FRR instance", name, pid)
                await _kill_pid(pid, STOP_GRACE)

    def _argv(self, name: str, config: Path) -> list[str]:
        argv = [*self.command_prefix, str(self.bin_dir / name), "-N", self.pathspace, "-f", str(config),
                "-i", str(self.path(f"{name}.pid")), "-z", str(self.zserv),
                "--vty_socket", str(self.run_dir), "-P", "0", "--log", "stdout"]
        return argv

    async def _spawn(self, name: str, text: str) -> None:
        config = self._write(f"{name}.conf", text)
        self.path(f"{name}.vty").unlink(missing_ok=True)
        argv = self._argv(name, config)
        with self.path(f"{name}.log").open("ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            out.flush()
            try:
                # Own session: a signal meant for the node's process group must not reach FRR.
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True)
            except OSError as exc:
                raise FrrError(f"cannot start {argv[0]}: {exc}") from exc
        self._procs[name] = proc
        self._started_at[name] = self.clock()
        vty = self.path(f"{name}.vty")
        deadline = self.clock() + READY_TIMEOUT
        while not vty.exists():
            if proc.returncode is not None or self.clock() > deadline:
                what = f"exited with status {proc.returncode}" if proc.returncode is not None else \
                    f"did not open {vty} within {READY_TIMEOUT:.0f}s"
                if proc.returncode is None:
                    await self._terminate(name)
                raise FrrError(f"{name} {what} (is {self.run_dir} reachable by user {self.user}?); "
                               f"log: {self.path(name + '.log')}: {self._log_tail(name)}")
            await asyncio.sleep(_POLL)
        log.info("FRR %s started, pid %d (pathspace %s)", name, proc.pid, self.pathspace)

    def _log_tail(self, name: str, lines: int = 5) -> str:
        try:
            text = self.path(f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-lines:])

    def _alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.returncode is None

    async def _start_missing(self) -> None:
        if not self._alive("zebra"):
            self.ready.clear()
            if self._alive("bgpd"):
                await self._terminate("bgpd")
            await self._spawn("zebra", self.render().zebra)
        if not self._alive("bgpd"):
            self.ready.clear()
            rendered = set(self.originated)
            await self._spawn("bgpd", self.render().bgpd)
            self._rendered = rendered
            self.ready.set()
            # Prefixes originated or withdrawn while bgpd was starting: apply the difference.
            for prefix in self.originated - rendered:
                self._queue(prefix, withdraw=False)
            for prefix in rendered - self.originated:
                self._queue(prefix, withdraw=True)

    async def _supervise(self) -> None:
        while not self._stopping:
            # After a failed start, try again (below) rather than wait on the one still running.
            if all(self._alive(name) for name in DAEMONS):
                waiters = {asyncio.ensure_future(self._procs[name].wait()): name for name in DAEMONS}
                done, rest = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for fut in rest:
                    fut.cancel()
                dead = [waiters[f] for f in done]
            else:
                dead = []
            if self._stopping:
                return
            if dead:
                self.ready.clear()
            delay = 0.0
            for name in dead:
                proc = self._procs[name]
                if name in self._expected_exit:
                    self._expected_exit.discard(name)
                    continue
                started = self._started_at.get(name, 0.0)
                delay = max(delay, self.trackers[name].on_exit(started, self.clock()))
                log.error("FRR %s (pid %d) exited with status %s; restart %d in %.1fs (log %s)", name,
                          proc.pid, proc.returncode, self.trackers[name].restarts, delay,
                          self.path(f"{name}.log"))
            if "zebra" in dead and self._alive("bgpd"):
                await self._terminate("bgpd")  # not waited on here: no one else sees this exit
            await asyncio.sleep(delay)
            try:
                await self._start_missing()
            except FrrError as exc:
                self.counters["start-failures"] += 1
                failed = "zebra" if not self._alive("zebra") else "bgpd"
                wait = self.trackers[failed].on_exit(self._started_at.get(failed, 0.0), self.clock())
                log.error("FRR restart failed: %s; next try in %.1fs", exc, wait)
                await asyncio.sleep(wait)

    async def _terminate(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            log.warning("FRR %s (pid %d) ignored SIGTERM for %.0fs; SIGKILL", name, proc.pid, STOP_GRACE)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def _terminate_all(self, wait: float = STOP_WAIT, reap: float = KILL_WAIT) -> None:
        """SIGTERM, then SIGKILL at ``wait``; then wait up to ``reap`` for the killed to be gone (0: do
        not: a node that exits next leaves them to the kernel and the child watcher)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        bgpd = self._procs.get("bgpd")
        if bgpd is not None and bgpd.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                bgpd.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bgpd.wait(), wait / 2)
        zebra = self._procs.get("zebra")
        if zebra is not None and zebra.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                zebra.send_signal(signal.SIGTERM)
        left = [(name, p) for name, p in self._procs.items() if p.returncode is None]
        if left:
            waits = asyncio.gather(*(p.wait() for _, p in left))
            try:
                await asyncio.wait_for(waits, max(0.0, deadline - loop.time()))
            except TimeoutError:
                for name, proc in left:
                    if proc.returncode is None:
                        self.counters["stop-kills"] += 1
                        log.warning("FRR %s (pid %d) still running %.1fs after SIGTERM; SIGKILL (its "
                                    "kernel routes go with the tunnels, or at zebra's next start)",
                                    name, proc.pid, wait)
                        with contextlib.suppress(ProcessLookupError):
                            proc.kill()
                if reap > 0:
                    reaped = asyncio.gather(*(p.wait() for _, p in left))
                    try:
                        await asyncio.wait_for(reaped, reap)
                    except TimeoutError:
                        log.warning("FRR daemons not reaped %.1fs after SIGKILL; not waiting", reap)
        self._procs.clear()

    # --- run-time originations -----------------------------------------------------------------

    def originate(self, prefix: Prefix) -> bool:
        """Announce ``prefix`` (a ``network`` statement); True if it was not originated already."""
        if prefix in self.originated:
            return False
        self.originated.add(prefix)
        self._queue(prefix, withdraw=False)
        return True

    def withdraw(self, prefix: Prefix) -> bool:
        """Stop originating ``prefix`` (a run-time one); True if it was originated at run time."""
        if prefix not in self.originated:
            return False
        self.originated.discard(prefix)
        self._queue(prefix, withdraw=True)
        return True

    def _queue(self, prefix: Prefix, *, withdraw: bool) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not started: the next config written holds it
        task = loop.create_task(self._apply(prefix, withdraw=withdraw))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _apply(self, prefix: Prefix, *, withdraw: bool) -> None:
        # One at a time, in call order (asyncio.Lock is FIFO): announce then withdraw stays so.
        async with self._config_lock:
            if not self.ready.is_set():
                return  # bgpd is (re)starting: _start_missing applies the difference when it is up
            if withdraw and prefix in originated(self.speaker, self.originated):
                return  # still originated for another reason (configured, or at run time)
            try:
                asn = self.speaker.node.asn
                await self.vtysh(*network_commands(asn, self.vrf, prefix, withdraw=withdraw))
            except FrrError as exc:
                self.counters["vtysh-errors"] += 1
                log.error("FRR: cannot %s %s: %s", "withdraw" if withdraw else "originate", prefix, exc)

    async def settle(self) -> None:
        """Wait until the run-time changes queued so far are applied (tests, reload)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # --- vtysh -------------------------------------------------------------------------------------

    async def vtysh(self, *commands: str, timeout: float = VTYSH_TIMEOUT) -> str:
        """Run vtysh against this instance; its output.  ``FrrError`` on failure or a ``%`` error line."""
        argv = [self.vtysh_binary, "--vty_socket", str(self.run_dir)]
        for command in commands:
            argv += ["-c", command]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise FrrError(f"cannot run {argv[0]}: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise FrrError(f"vtysh {' / '.join(commands)!r} took more than {timeout:.0f}s") from exc
        except asyncio.CancelledError:
            # A poll cancelled at stop: reap vtysh now, or its transport outlives the loop.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        text = out.decode(errors="replace")
        errors = [line for line in text.splitlines() if line.startswith("%")]
        if proc.returncode != 0 or errors:
            detail = " ".join(errors) or err.decode(errors="replace").strip() or text.strip()
            raise FrrError(f"vtysh {' / '.join(commands)!r} failed (status {proc.returncode}): "
                           f"{detail[:300]}")
        return text

    async def vtysh_json(self, command: str) -> Any:
        text = await self.vtysh(command)
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise FrrError(f"vtysh {command!r} did not answer JSON: {text[:200]!r}") from exc

    async def summary_json(self) -> dict[str, Any]:
        """``show bgp vrf <vrf|default> summary json``: every family's peers and their state."""
        data = await self.vtysh_json(f"show bgp {show_vrf(self.vrf)} summary json")
        if not isinstance(data, dict):
            raise FrrError(f"unexpected summary JSON: {str(data)[:200]}")
        return data

    async def peer_states(self) -> dict[str, str]:
        """Neighbor address -> BGP state (``Established``, ``Active``...)."""
        return peer_states(await self.summary_json())

    async def route_json(self, prefix: Prefix) -> dict[str, Any]:
        """``show bgp vrf X ipvN unicast <prefix> json``: the paths FRR has for ``prefix``."""
        vrf = show_vrf(self.vrf)
        data = await self.vtysh_json(f"show bgp {vrf} ipv{prefix.version} unicast {prefix} json")
        return data if isinstance(data, dict) else {}

    async def as_paths(self, prefix: Prefix) -> list[list[int]]:
        """The AS paths for ``prefix``, best first (the monitoring view's on-demand attribute)."""
        return as_path(await self.route_json(prefix))


async def _kill_pid(pid: int, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(_POLL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)

