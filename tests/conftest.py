"""Shared test fixtures.

Tests that need an outside tool (tshark, FRR, BIRD) or root + namespaces skip
with the reason on a developer's machine that lacks them, but in CI (CI=true,
where .ci/run has installed everything) a missing tool is a failure: a suite
that silently skips its interop tests proves nothing.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Labs get this per-run suffix so that a test lab never collides with an operator's lab of the
# same name (``demo``) or with another run of the suite on the same machine.
RUN_TAG = f"x{os.getpid():x}"


def run_lab_name(base: str) -> str:
    """``base`` made unique to this test run (lab names are ``[a-z][a-z0-9]*``)."""
    return f"{base}{RUN_TAG}"


def require(condition: bool, reason: str) -> None:
    """Skip (developer machine) or fail (CI) when ``condition`` does not hold."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_tool(name: str, path: str | None = None) -> str:
    found = path if path and os.access(path, os.X_OK) else shutil.which(name)
    require(found is not None, f"{name} is not installed")
    assert found is not None
    return found


@pytest.fixture
def root() -> None:
    require(os.geteuid() == 0, "needs root for network namespaces")
