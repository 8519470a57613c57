"""Processes inside lab namespaces: spawn with a log file, stop with SIGTERM then SIGKILL (edge)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class LabError(Exception):
    """A lab could not be built, a command in it failed, or a wait timed out."""


class LabTimeoutError(LabError):
    """``wait_until`` ran out of time."""


class CommandError(LabError):
    """A command run with ``check=True`` exited non-zero; ``result`` holds its output."""

    def __init__(self, message: str, result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(message)
        self.result = result


def netns_argv(netns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.1,
    what: str = "condition",
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that, or raise LabTimeoutError.

    ``on_timeout`` may return extra diagnostics (a log tail, a daemon's view)
    for the error message: a bare "timed out" in CI is not debuggable.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f"\n{on_timeout()}" if on_timeout is not None else ""
            raise LabTimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(interval)


def run_in_netns(
    netns: str,
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 30.0,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    full = netns_argv(netns, argv)
    try:
        result = subprocess.run(
            full,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=_merged_env(env),
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabTimeoutError(f"{' '.join(argv)} in {netns} did not finish within {timeout:.1f}s") from exc
    except OSError as exc:
        raise LabError(f"cannot run {' '.join(argv)} in {netns}: {exc}") from exc
    if check and result.returncode != 0:
        raise CommandError(
            f"{' '.join(argv)} in {netns} exited {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()[-2000:]}",
            result,
        )
    return result


def _merged_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    if env is None:
        return None
    merged = dict(os.environ)
    merged.update(env)
    return merged


@dataclass(eq=False)
class ProcessHandle:
    """A process the lab started and will stop on teardown."""

    name: str
    host: str
    argv: tuple[str, ...]
    log_path: Path
    popen: subprocess.Popen[bytes]
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def running(self) -> bool:
        return self.popen.poll() is None

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.read_log().splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        # Signal the whole session: `ip netns exec` execs the command, but the
        # command may have children (ExaBGP's API processes, shells).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM the process group, wait ``grace`` seconds, then SIGKILL. Idempotent."""
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s on %s ignored SIGTERM for %.1fs, sending SIGKILL", self.name, self.host, grace
                )
                self.signal(signal.SIGKILL)
                self.popen.wait(grace)
        # Children that survived their parent (same process group) get no second chance.
        self.signal(signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.popen.returncode


def spawn_in_netns(
    netns: str,
    host: str,
    argv: Sequence[str],
    *,
    name: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> ProcessHandle:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("ab")
    try:
        popen = subprocess.Popen(
            netns_argv(netns, argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=_merged_env(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        log_file.close()
        raise LabError(f"cannot start {name} ({' '.join(argv)}) in {netns}: {exc}") from exc
    log.debug("started %s on %s as pid %d: %s", name, host, popen.pid, " ".join(argv))
    return ProcessHandle(
        name=name, host=host, argv=tuple(argv), log_path=log_path, popen=popen, _log_file=log_file
    )
