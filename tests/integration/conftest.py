"""Integration fixtures: root, the tools, and forced removal of a lab's leftovers."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from alt_router.lab import remove_lab
from tests.conftest import RUN_TAG, require, require_tool, run_lab_name


@pytest.fixture(scope="module")
def lab_names() -> Iterator[Callable[[str], str]]:
    """Register a lab name: leftovers of a crashed earlier run are removed now and after the module."""
    require(os.geteuid() == 0, "needs root for network namespaces")
    require_tool("ip")
    require_tool("exabgp")
    names: list[str] = []

    def register(base: str) -> str:
        name = base if RUN_TAG in base else run_lab_name(base)
        names.append(name)
        remove_lab(name)
        return name

    yield register
    for name in names:
        remove_lab(name)


@pytest.fixture
def lab_root() -> Iterator[Path]:
    """A lab state root the frr user can traverse (pytest's tmp_path is root-only; zebra and bgpd
    drop to frr before they write their pid files and sockets)."""
    root = Path(tempfile.mkdtemp(prefix="alt-router-lab-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)
