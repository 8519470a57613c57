"""Shared test fixtures.

Tests that need an outside tool (tshark, FRR, BIRD) or root + namespaces skip
with the reason on a developer's machine that lacks them, but in CI (CI=true,
where .ci/run has installed everything) a missing tool is a failure: a suite
that silently skips its interop tests proves nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

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


# The host's own forwarding switches: a test that flips them (a node or zebra started outside its
# namespace) would change what every later namespace inherits, and a later test fails far from the
# cause.  Checked around every test; restored, and the test that changed them fails.
_HOST_SYSCTLS = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")


def _read_sysctls() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in _HOST_SYSCTLS:
        try:
            with open(path, encoding="ascii") as f:
                out[path] = f.read().strip()
        except OSError:
            pass
    return out


@pytest.fixture(autouse=True)
def _host_sysctls_unchanged() -> Iterator[None]:
    before = _read_sysctls()
    yield
    after = _read_sysctls()
    changed = {p: (before[p], v) for p, v in after.items() if p in before and v != before[p]}
    for path, (was, _now) in changed.items():
        try:
            with open(path, "w", encoding="ascii") as f:
                f.write(was)
        except OSError:
            pass
    assert not changed, f"this test changed the host's sysctls (restored): {changed}"
