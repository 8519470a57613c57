"""What the FRR netns tests of tests/bgp (and tests/integration) share: lab names, FRR's state
directory, and waiting on FRR's own answers."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from alt_router.lab import remove_lab
from tests.conftest import require, require_tool, run_lab_name


def frr_lab_name(prefix: str) -> Iterator[str]:
    """A per-run lab name (removed before and after) for a test that runs FRR in namespaces."""
    require(os.geteuid() == 0, "needs root for network namespaces")
    require_tool("ip")
    require_tool("bgpd", "/usr/lib/frr/bgpd")
    require_tool("zebra", "/usr/lib/frr/zebra")
    require_tool("vtysh")
    name = run_lab_name(prefix)
    remove_lab(name)
    yield name
    remove_lab(name)


def frr_state_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="alt-router-frr-"))
    root.chmod(0o755)  # zebra and bgpd run as frr and must reach their directory
    yield root
    shutil.rmtree(root, ignore_errors=True)


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 40.0,
                detail: Callable[[], Awaitable[Any]] | None = None) -> None:
    """Poll ``check`` (the async twin of alt_router.lab.wait_until) until true or ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            extra = await detail() if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {extra}")
        await asyncio.sleep(0.2)
