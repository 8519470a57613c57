"""The lab's restart keeper behaves like contrib/alt-router@.service: Restart=on-failure with a
backoff, the dead daemon's ExaBGP (its own session, so it outlives the daemon) killed before the
restart (KillMode=mixed), a clean exit not restarted, SIGTERM passed on to the daemon."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from alt_router.bgp.supervisor import Backoff, process_matches
from alt_router.lab import wait_until
from alt_router.lab.restart import RESTART_BACKOFF, Keeper, kill_orphaned_exabgp

FAST = Backoff(initial=0.05, factor=2.0, maximum=0.2, stable_after=60.0)

# A stand-in daemon: each run appends to runs.txt; the first run starts a fake ExaBGP in a session
# of its own (pid in exabgp.pid, like bgp/supervisor.py) and dies of SIGKILL; later runs exit 0.
FAKE_DAEMON = textwrap.dedent("""
    import os, signal, subprocess, sys
    state = sys.argv[1]
    with open(os.path.join(state, "runs.txt"), "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    runs = open(os.path.join(state, "runs.txt")).read().split()
    if len(runs) == 1:
        exa = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "exabgp", state],
                               start_new_session=True)
        open(os.path.join(state, "exabgp.pid"), "w").write(f"{exa.pid}\\n")
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_the_unit_file_settings_are_what_the_keeper_copies() -> None:
    unit = (Path(__file__).resolve().parents[2] / "contrib" / "alt-router@.service").read_text()
    assert "Restart=on-failure" in unit and "RestartSec=2" in unit and "KillMode=mixed" in unit
    assert RESTART_BACKOFF.delay(1) == 2.0  # RestartSec=2, then backing off
    assert RESTART_BACKOFF.delay(2) == 4.0 and RESTART_BACKOFF.delay(10) == RESTART_BACKOFF.maximum


def test_a_killed_daemon_is_restarted_and_its_orphaned_exabgp_killed(tmp_path: Path) -> None:
    keeper = Keeper([sys.executable, "-c", FAKE_DAEMON, str(tmp_path)], tmp_path, backoff=FAST)
    assert keeper.run() == 0  # the second run exits cleanly: Restart=on-failure stops there
    runs = (tmp_path / "runs.txt").read_text().split()
    assert len(runs) == 2 and keeper.tracker.restarts == 1
    orphan = int((tmp_path / "exabgp.pid").read_text())
    assert not process_matches(orphan, ())


def test_only_an_exabgp_of_this_state_dir_is_killed(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "exabgp", "/elsewhere"],
                             start_new_session=True)
    try:
        (tmp_path / "exabgp.pid").write_text(f"{other.pid}\n")
        assert kill_orphaned_exabgp(tmp_path, grace=0.1) is None  # a recycled pid is not ours
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    assert kill_orphaned_exabgp(tmp_path / "missing") is None


def test_sigterm_to_the_keeper_stops_the_daemon_without_a_restart(tmp_path: Path) -> None:
    log = tmp_path / "keeper.log"
    ready = tmp_path / "ready"
    daemon = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); "
              f"open({str(ready)!r}, 'w').close(); time.sleep(60)")
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alt_router.lab.restart", "--state-dir", str(tmp_path), "--",
             sys.executable, "-c", daemon],
            stdout=fh, stderr=subprocess.STDOUT,
        )
    try:
        wait_until(ready.exists, 20, what="the daemon ready for SIGTERM", on_timeout=log.read_text)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
    finally:
        proc.kill()
        proc.wait()
    assert log.read_text().count("started") == 1
    assert "exited with status 0: not restarting it" in log.read_text()
