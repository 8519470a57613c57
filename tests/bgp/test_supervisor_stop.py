"""Stopping ExaBGP never blocks the event loop and never holds the node past its own deadline."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

from alt_router.bgp.supervisor import ExabgpSupervisor, process_matches, read_pidfile, terminate
from alt_router.lab import wait_until

# An ExaBGP that takes its time over SIGTERM, as one with a large table does.
STUBBORN = [sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
            "fake-exabgp"]
PROMPT = [sys.executable, "-c", "import time; time.sleep(60)", "fake-exabgp"]


def ignores_sigterm(pid: int) -> bool:
    """Has ``pid`` set SIGTERM to SIG_IGN yet (the SigIgn mask in /proc/PID/status)?"""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def test_a_slow_exabgp_is_left_to_a_reaper_after_the_wait(tmp_path: Path) -> None:
    async def scenario() -> None:
        sup = ExabgpSupervisor(STUBBORN, tmp_path, adopt_match=("fake-exabgp",))
        sup.start()
        pid = sup.pid
        assert pid is not None
        assert await asyncio.to_thread(wait_until, lambda: ignores_sigterm(pid), 10)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        tick_task = asyncio.create_task(ticker())
        start = time.monotonic()
        await sup.stop(grace=3.0, wait=0.3)
        took = time.monotonic() - start
        tick_task.cancel()
        assert took < 2.0
        assert ticks >= 5  # the loop ran while it waited
        # Still closing: the pidfile stays, so a successor adopts it instead of starting another.
        assert process_matches(pid, ("fake-exabgp",))
        assert read_pidfile(tmp_path / "exabgp.pid") == pid
        # The reaper kills it once the grace is over.
        popen = sup._popen
        assert popen is not None
        assert await asyncio.to_thread(wait_until, lambda: popen.poll() is not None, 15)

    asyncio.run(scenario())


def test_a_prompt_exabgp_is_waited_for(tmp_path: Path) -> None:
    async def scenario() -> None:
        sup = ExabgpSupervisor(PROMPT, tmp_path, adopt_match=("fake-exabgp",))
        sup.start()
        pid = sup.pid
        assert pid is not None
        await sup.stop(grace=5.0, wait=2.0)
        assert not process_matches(pid, ())
        assert not (tmp_path / "exabgp.pid").exists()

    asyncio.run(scenario())


def test_terminate_does_not_block_the_loop(tmp_path: Path) -> None:
    proc = subprocess.Popen(STUBBORN, start_new_session=True)
    wait_until(lambda: ignores_sigterm(proc.pid), 10)

    async def scenario() -> bool:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        exited = await terminate(proc.pid, 0.3)
        task.cancel()
        assert ticks >= 5
        return exited

    assert asyncio.run(scenario()) is False  # it ignored SIGTERM and got SIGKILL
    assert proc.wait(10) == -9
