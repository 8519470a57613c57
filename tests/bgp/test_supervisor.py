"""The ExaBGP supervisor: the pure restart policy, and the edge with a stand-in child process."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from alt_router.bgp.supervisor import (
    Backoff,
    ExabgpSupervisor,
    RestartTracker,
    process_matches,
    read_pidfile,
)


def test_backoff_doubles_up_to_the_cap() -> None:
    b = Backoff(initial=0.5, factor=2.0, maximum=4.0)
    assert [b.delay(n) for n in range(0, 7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_quick_exits_back_off_and_a_stable_run_resets() -> None:
    t = RestartTracker(Backoff(initial=1.0, factor=2.0, maximum=60.0, stable_after=30.0))
    assert t.on_exit(started_at=0.0, now=1.0) == 1.0
    assert t.on_exit(started_at=2.0, now=3.0) == 2.0
    assert t.on_exit(started_at=5.0, now=6.0) == 4.0
    # Up for longer than stable_after: healthy again, restart at once-ish.
    assert t.on_exit(started_at=10.0, now=100.0) == 1.0
    assert t.restarts == 4


def test_pidfile_garbage_is_no_pid(tmp_path: Path) -> None:
    p = tmp_path / "exabgp.pid"
    assert read_pidfile(p) is None
    p.write_text("not a pid\n")
    assert read_pidfile(p) is None
    p.write_bytes(b"\xff\xfe")
    assert read_pidfile(p) is None
    p.write_text("123\n")
    assert read_pidfile(p) == 123


def test_process_matches_checks_the_command_line() -> None:
    assert process_matches(os.getpid(), ())
    assert not process_matches(os.getpid(), ("certainly-not-in-my-cmdline-xyz",))
    assert not process_matches(2**22 + 12345, ())


SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)", "fake-exabgp"]


def test_child_killed_is_restarted_and_stop_removes_it(tmp_path: Path) -> None:
    exits: list[int] = []

    async def scenario() -> None:
        sup = ExabgpSupervisor(SLEEPER, tmp_path, backoff=Backoff(initial=0.01, maximum=0.01),
                               adopt_match=("fake-exabgp",), on_exit=lambda pid, code: exits.append(pid))
        sup.start()
        first = sup.pid
        assert first is not None and read_pidfile(tmp_path / "exabgp.pid") == first
        os.kill(first, 9)
        for _ in range(500):
            if sup.pid not in (None, first):
                break
            await asyncio.sleep(0.01)
        second = sup.pid
        assert second not in (None, first)
        assert exits == [first] and sup.restarts == 1 and sup.last_exit == -9
        await sup.stop(grace=2)
        assert not process_matches(second, ())
        assert not (tmp_path / "exabgp.pid").exists()

    asyncio.run(scenario())


def test_a_live_process_from_the_pidfile_is_adopted_not_duplicated(tmp_path: Path) -> None:
    async def scenario() -> None:
        first = ExabgpSupervisor(SLEEPER, tmp_path, adopt_match=("fake-exabgp",))
        first.start()
        pid = first.pid
        first.detach()  # as if the daemon died
        second = ExabgpSupervisor(SLEEPER, tmp_path, adopt_match=("fake-exabgp",))
        second.start()
        assert second.pid == pid and second.adopted
        await second.stop(grace=2)
        assert pid is not None and not process_matches(pid, ())
        # Reap: it was the first supervisor's child.
        assert first._popen is not None
        first._popen.wait(5)

    asyncio.run(scenario())


def test_a_stale_pidfile_starts_a_new_process(tmp_path: Path) -> None:
    (tmp_path / "exabgp.pid").write_text(f"{os.getpid()}\n")  # alive, but not ExaBGP

    async def scenario() -> None:
        sup = ExabgpSupervisor(SLEEPER, tmp_path, adopt_match=("fake-exabgp",))
        sup.start()
        assert sup.pid != os.getpid() and not sup.adopted
        await sup.stop(grace=2)

    asyncio.run(scenario())


