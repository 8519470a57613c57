"""Run ExaBGP as a supervised child: restart with exponential backoff, log to the state dir, stop on shutdown.

ExaBGP runs in its own session (process group) with its pid in ``exabgp.pid``
in the state directory, so it outlives the daemon that started it: a daemon
killed with SIGKILL leaves the BGP sessions up, and its successor *adopts* the
running ExaBGP from the pidfile instead of starting a second one.  Exit of the
child (or of an adopted ExaBGP, which is not our child) is watched with a
pidfd, so there is no polling.

``Backoff`` is the pure restart policy; ``ExabgpSupervisor`` is the asyncio edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

PIDFILE = "exabgp.pid"
LOGFILE = "exabgp.log"
OUTFILE = "exabgp.out"


class SupervisorError(RuntimeError):
    """ExaBGP could not be started or stopped."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before restart number ``failures`` (1-based): initial * factor**(failures-1), capped.

    A child that stayed up ``stable_after`` seconds is considered healthy and
    the count starts again, so one crash a day restarts at once.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    stable_after: float = 60.0

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return min(self.maximum, self.initial * self.factor ** (failures - 1))


class RestartTracker:
    """Counts consecutive quick exits and answers how long to wait before the next start (pure)."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.failures = 0
        self.restarts = 0

    def on_exit(self, started_at: float, now: float) -> float:
        if now - started_at >= self.backoff.stable_after:
            self.failures = 0
        self.failures += 1
        self.restarts += 1
        return self.backoff.delay(self.failures)


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def process_matches(pid: int, needles: Sequence[str]) -> bool:
    """Is ``pid`` alive (not a zombie) with every string of ``needles`` in its command line?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]:
        return False
    return all(n in cmdline for n in needles)


# What ExaBGP logs (ExaBGP 5.0, `exabgp env` lists every option).  Its INFO level writes a line
# per route our API announces or withdraws ("route added to ..."; category ``processes``) and,
# with ``statistics``, counter lines per message received: 1.6 MB for a few thousand route
# events.  WARNING keeps what an operator needs from ExaBGP itself -- refused API commands
# (ERROR, with the parser's reason), lost TCP sessions, notifications, configuration errors --
# while session up/down and route counts are in the node's own log and API.  The per-message
# categories are off by name as well, so raising the level for a debugging session does not
# bring the per-update flood back.
EXABGP_LOG_ENV: Final = {
    "exabgp.log.level": "WARNING",
    "exabgp.log.all": "false",
    "exabgp.log.packets": "false",
    "exabgp.log.message": "false",
    "exabgp.log.routes": "false",
    "exabgp.log.rib": "false",
    "exabgp.log.parser": "false",
    "exabgp.log.timers": "false",
    "exabgp.log.statistics": "false",
}


def exabgp_env(state_dir: Path, name: str) -> dict[str, str]:
    """ExaBGP settings we depend on (see docs/operations.md)."""
    return {
        **EXABGP_LOG_ENV,
        # As root ExaBGP would otherwise drop to 'nobody' and lose access to the state dir.
        "exabgp.daemon.user": "root",
        "exabgp.daemon.daemonize": "false",
        "exabgp.log.destination": str(state_dir / LOGFILE),
        # The named-pipe CLI would look for pipes shared by every instance on the host.
        "exabgp.api.cli": "false",
        "exabgp.api.pipename": f"alt-router-{name}",
        # If the bridge dies ExaBGP starts a new one, which reconnects to us.
        "exabgp.api.respawn": "true",
    }


class ExabgpSupervisor:
    """Start (or adopt) ExaBGP, restart it when it dies, stop it on request."""

    def __init__(
        self,
        argv: Sequence[str],
        state_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        backoff: Backoff | None = None,
        adopt_match: Sequence[str] = ("exabgp",),
        on_start: Callable[[int, bool], None] | None = None,
        on_exit: Callable[[int, int | None], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.argv = list(argv)
        self.state_dir = state_dir
        self.env = dict(env or {})
        self.tracker = RestartTracker(backoff or Backoff())
        self.adopt_match = tuple(adopt_match)
        self.on_start = on_start
        self.on_exit = on_exit
        self.clock = clock
        self.pid: int | None = None
        self.adopted = False
        self.last_exit: int | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._exited: asyncio.Event | None = None

    @property
    def pidfile(self) -> Path:
        return self.state_dir / PIDFILE

    @property
    def restarts(self) -> int:
        return self.tracker.restarts

    def running(self) -> bool:
        return self.pid is not None and process_matches(self.pid, ())

    # --- lifecycle -------------------------------------------------------------------------

    def adopt_or_start(self) -> int:
        """Adopt a live ExaBGP named by the pidfile, else start one; returns its pid."""
        pid = read_pidfile(self.pidfile)
        if pid is not None and process_matches(pid, self.adopt_match):
            self.pid, self.adopted, self._popen = pid, True, None
            self._started_at = self.clock()
            log.info("adopted running ExaBGP pid %d (from %s)", pid, self.pidfile)
            if self.on_start is not None:
                self.on_start(pid, True)
            return pid
        if pid is not None:
            log.info("stale ExaBGP pidfile (pid %d is gone); starting a new ExaBGP", pid)
        return self._spawn()

    def _spawn(self) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(self.env)
        with (self.state_dir / OUTFILE).open("ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            out.flush()
            try:
                # Own session: a signal to the daemon's process group must not reach ExaBGP,
                # and ExaBGP must survive the daemon's death (see the module docstring).
                # Output goes to a file, not a pipe, for the same reason.
                self._popen = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True, close_fds=True,
                )
            except OSError as exc:
                raise SupervisorError(f"cannot start {self.argv[0]}: {exc}") from exc
        self.pid, self.adopted = self._popen.pid, False
        self._started_at = self.clock()
        tmp = self.pidfile.with_suffix(".tmp")
        tmp.write_text(f"{self.pid}\n")
        os.replace(tmp, self.pidfile)
        log.info("started ExaBGP pid %d: %s", self.pid, " ".join(self.argv))
        if self.on_start is not None:
            self.on_start(self.pid, False)
        return self.pid

    def start(self) -> None:
        """Adopt or start ExaBGP and watch it from the running loop until ``stop``."""
        self.adopt_or_start()
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="exabgp-supervisor")

    async def _wait_exit(self, pid: int) -> int | None:
        """Wait until ``pid`` exits; its exit status if it is our child."""
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            fd = -1
        if fd >= 0:
            done = loop.create_future()

            def ready() -> None:
                if not done.done():
                    done.set_result(None)

            loop.add_reader(fd, ready)
            try:
                await done
            finally:
                loop.remove_reader(fd)
                os.close(fd)
        popen = self._popen
        if popen is not None and popen.pid == pid:
            return popen.wait()
        return None

    async def _watch(self) -> None:
        while not self._stopping:
            pid = self.pid
            if pid is None:
                return
            self._exited = asyncio.Event()
            code = await self._wait_exit(pid)
            self._exited.set()
            self.last_exit = code
            self.pid = None
            if self._stopping:
                return
            delay = self.tracker.on_exit(self._started_at, self.clock())
            log.error("ExaBGP pid %d exited (status %s); restart %d in %.1fs (see %s)", pid, code,
                      self.tracker.restarts, delay, self.state_dir / LOGFILE)
            if self.on_exit is not None:
                self.on_exit(pid, code)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                self._spawn()
            except SupervisorError as exc:
                log.error("%s", exc)
                self.pid = None
                return

    async def stop(self, grace: float = 5.0, wait: float | None = None) -> None:
        """SIGTERM ExaBGP's process group (it closes its sessions with a Cease), SIGKILL after ``grace``.

        The caller waits at most ``wait`` seconds (all of ``grace`` by default).  An ExaBGP
        still closing its sessions then is left to finish on its own, with a detached
        reaper (``reap_later``) that SIGKILLs it once ``grace`` is over, and the pidfile
        stays: a daemon that must stop within seconds (systemd, an operator) does not wait
        for a large table's teardown, ExaBGP still gets its time to send every Cease, and
        a successor adopts it (and restarts it when it exits) rather than start a second one.
        """
        self._stopping = True
        pid = self.pid
        gone = True
        if pid is not None:
            waiter = asyncio.ensure_future(self._wait_exit(pid))
            _signal_group(pid, signal.SIGTERM)
            patience = grace if wait is None else min(wait, grace)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), patience)
            except TimeoutError:
                if patience < grace:
                    gone = False
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter
                    reap_later(pid, grace - patience)
                    log.warning("ExaBGP pid %d still closing its sessions after %.1fs; not waiting, it "
                                "gets SIGKILL in %.1fs if it has not exited", pid, patience, grace - patience)
                else:
                    log.warning("ExaBGP pid %d ignored SIGTERM for %.1fs; SIGKILL", pid, grace)
                    _signal_group(pid, signal.SIGKILL)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(waiter, grace)
            if gone:
                log.info("ExaBGP pid %d stopped", pid)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.pid = None
        if gone:
            self.pidfile.unlink(missing_ok=True)

    def detach(self) -> None:
        """Stop watching but leave ExaBGP running (a successor will adopt it)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            self._task = None


async def terminate(pid: int, grace: float) -> bool:
    """SIGTERM ``pid``'s process group and wait (without blocking the loop) up to ``grace`` s, then SIGKILL.

    True if it exited within ``grace``.  For a process that is not our child (an adopted
    ExaBGP); the exit is watched with a pidfd, as in ``ExabgpSupervisor``.
    """
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        done: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(fd, ready)
        try:
            _signal_group(pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(done, grace)
                return True
            except TimeoutError:
                _signal_group(pid, signal.SIGKILL)
                return False
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


# Run by ``reap_later`` in a detached interpreter: SIGKILL the process group of argv[1] if its
# leader has not exited after argv[2] seconds.  The pidfd pins the process, so a pid reused by
# then is never signalled.
_REAPER = """
import os, select, signal, sys
pid, delay = int(sys.argv[1]), float(sys.argv[2])
try:
    fd = os.pidfd_open(pid)
except OSError:
    sys.exit(0)
if not select.select([fd], [], [], delay)[0]:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
"""


def reap_later(pid: int, delay: float) -> None:
    """SIGKILL ``pid``'s process group in ``delay`` seconds unless it has exited, from a detached process."""
    try:
        subprocess.Popen(
            [sys.executable, "-c", _REAPER, str(pid), str(max(0.0, delay))],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )
    except OSError as exc:
        log.warning("cannot start a reaper for ExaBGP pid %d (%s): SIGKILL now", pid, exc)
        _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
