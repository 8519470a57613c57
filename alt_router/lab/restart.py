"""Keep one lab node daemon running, the way systemd keeps ``alt-router@.service`` running (edge).

``alt-router lab up`` starts every node as::

    python -m alt_router.lab.restart --state-dir NODE_STATE_DIR -- python -m alt_router.cli run -c NODE.toml

and records this process (not the daemon) in the lab's state file.  What it copies from
contrib/alt-router@.service:

- ``Restart=on-failure``: a daemon killed by a signal or exiting non-zero is started again; a clean
  exit ends the keeper too.  Clean is what systemd calls clean: status 0 (the daemon's answer to a
  SIGTERM sent straight to it), or death by SIGHUP, SIGINT, SIGTERM or SIGPIPE.
- ``RestartSec=2``: the first restart waits 2 s.  Repeated quick failures back off (2, 4, 8 ... 30 s,
  ``Backoff``), and a daemon that stayed up a minute starts the count again, so a crash loop does not
  spin while one crash a day restarts at once.
- ``KillMode=mixed``: when the daemon dies, what it leaves in its "control group" is killed before
  the restart.  Here that is its ExaBGP, which runs in its own session (bgp/supervisor.py) and would
  otherwise outlive it: SIGTERM to its process group (its API helpers included), then SIGKILL after
  ``ORPHAN_GRACE`` seconds.  The new daemon then starts a fresh ExaBGP.
- ``KillSignal=SIGTERM``/``TimeoutStopSec=20``: SIGTERM or SIGINT to the keeper is passed to the
  daemon (which stops its ExaBGP and tunnels), and the daemon gets SIGKILL after ``STOP_TIMEOUT``.
  SIGHUP is passed on too (``ExecReload``).

The daemon runs in a session of its own, so a signal meant for it reaches it exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from alt_router.bgp.supervisor import PIDFILE, Backoff, RestartTracker, process_matches, read_pidfile
from alt_router.node.logging import setup

log = logging.getLogger("alt_router.lab.restart")

# contrib/alt-router@.service: RestartSec=2, then doubling; TimeoutStopSec=20.
RESTART_BACKOFF = Backoff(initial=2.0, factor=2.0, maximum=30.0, stable_after=60.0)
STOP_TIMEOUT = 20.0
ORPHAN_GRACE = 3.0


def _alive(pid: int) -> bool:
    return process_matches(pid, ())


def kill_orphaned_exabgp(state_dir: Path, *, grace: float = ORPHAN_GRACE) -> int | None:
    """Stop the ExaBGP a dead daemon left running (pid from ``exabgp.pid``); returns its pid, if any.

    Only a process whose command line names ExaBGP and this node's state directory is touched: a
    recycled pid is left alone.
    """
    pid = read_pidfile(state_dir / PIDFILE)
    if pid is None or not process_matches(pid, ("exabgp", str(state_dir))):
        return None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    # Its API helpers share its process group; whatever is still there now gets no second chance.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return pid


# systemd.service(5), Restart=: these exits never count as failures.
CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})


def clean_exit(code: int) -> bool:
    return code == 0 or (code < 0 and -code in CLEAN_SIGNALS)


def describe_exit(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"


class Keeper:
    """Runs ``argv`` until told to stop; restarts it after a failure (see the module docstring)."""

    def __init__(
        self,
        argv: Sequence[str],
        state_dir: Path,
        *,
        backoff: Backoff = RESTART_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.argv = list(argv)
        self.state_dir = state_dir
        self.tracker = RestartTracker(backoff)
        self.clock = clock
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGHUP:
            self.stopping = True
        child = self.child
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    def run(self) -> int:
        while True:
            started = self.clock()
            self.child = subprocess.Popen(self.argv, start_new_session=True)
            log.info("started %s as pid %d", " ".join(self.argv[-3:]), self.child.pid)
            code = self._wait(self.child)
            if self.stopping or clean_exit(code):
                log.info("the daemon %s: not restarting it (Restart=on-failure)", describe_exit(code))
                return 0 if clean_exit(code) else code
            orphan = kill_orphaned_exabgp(self.state_dir)
            delay = self.tracker.on_exit(started, self.clock())
            log.warning(
                "the daemon %s%s; restart %d in %.1f s",
                describe_exit(code),
                f", stopped its orphaned ExaBGP pid {orphan}" if orphan else "",
                self.tracker.restarts,
                delay,
            )
            deadline = self.clock() + delay
            while not self.stopping and self.clock() < deadline:
                time.sleep(0.1)
            if self.stopping:
                return code

    def _wait(self, child: subprocess.Popen[bytes]) -> int:
        stop_deadline: float | None = None
        while True:
            try:
                return child.wait(0.2)
            except subprocess.TimeoutExpired:
                pass
            if self.stopping:
                stop_deadline = stop_deadline or self.clock() + STOP_TIMEOUT
                if self.clock() > stop_deadline:
                    log.warning("the daemon ignored SIGTERM for %.0f s: SIGKILL", STOP_TIMEOUT)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.pid, signal.SIGKILL)
                    kill_orphaned_exabgp(self.state_dir, grace=0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alt_router.lab.restart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, required=True, help="the node's [node].state_dir")
    parser.add_argument("command", nargs="+", help="the daemon's command line (after --)")
    args = parser.parse_args(argv)
    setup(logging.INFO, stream=sys.stdout)  # the node's log file, in the node's own logfmt
    keeper = Keeper(args.command, args.state_dir)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, keeper.on_signal)
    code = keeper.run()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
