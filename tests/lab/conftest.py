"""Fixtures for lab tests: root + ``ip``, and a safety net that removes a lab's leftovers after the test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from alt_router.lab import remove_lab
from tests.conftest import RUN_TAG, require_tool, run_lab_name


@pytest.fixture
def netns_lab(root: None) -> Iterator[Callable[[str], str]]:
    """Returns a function that registers a lab name for forced clean-up after the test.

    The Lab context manager already tears down; this catches a test that fails
    between creating kernel objects by hand and handing them to a Lab.
    """
    require_tool("ip")
    names: list[str] = []

    def register(base: str) -> str:
        name = base if RUN_TAG in base else run_lab_name(base)
        names.append(name)
        remove_lab(name)  # a crashed earlier run of this very test
        return name

    yield register
    for name in names:
        remove_lab(name)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def netns_names() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()
