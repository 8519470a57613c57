"""A running lab: builds a Topology into namespaces, runs commands in them, tears it all down."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

from alt_router.lab import netns as nl
from alt_router.lab.processes import (
    LabError,
    ProcessHandle,
    run_in_netns,
    spawn_in_netns,
)
from alt_router.lab.topology import Topology, bridge_port_name

log = logging.getLogger(__name__)

BRIDGE_NAME = "br0"

# Labs that are built and not yet torn down, for atexit and SIGTERM.
_LIVE: list[Lab] = []
_LIVE_LOCK = threading.Lock()
# The process that installed the atexit/SIGTERM hooks: only it tears its labs down (see on_sigterm).
_OWNER_PID = 0


class Lab:
    """Build ``topology`` on ``__enter__`` (or ``build()``), tear it down on ``__exit__`` (or ``teardown()``).

    Teardown also runs at interpreter exit and on SIGTERM, and is idempotent.
    """

    def __init__(
        self, topology: Topology, *, workdir: str | Path | None = None, start_processes: bool = True
    ) -> None:
        self.topology = topology
        self._workdir = Path(workdir) if workdir is not None else None
        self._start_processes = start_processes
        self._processes: list[ProcessHandle] = []
        self._cleanups: list[Callable[[], None]] = []
        self._built = False

    # --- naming ---------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.topology.name

    @property
    def workdir(self) -> Path:
        """Where process logs and daemon configs go; kept after teardown for post-mortems."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"alt-router-lab-{self.name}-"))
        self._workdir.mkdir(parents=True, exist_ok=True)
        return self._workdir

    def netns(self, host: str) -> str:
        try:
            self.topology.host(host)
        except KeyError:
            raise LabError(f"lab {self.name} has no host {host!r}") from None
        return self.topology.netns(host)

    # --- lifecycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.build()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.teardown()

    def build(self) -> None:
        if self._built:
            return
        removed = nl.remove_lab(self.name)
        if removed:
            log.warning("lab %s: removed leftovers of an earlier run: %s", self.name, ", ".join(removed))
        _register(self)
        self._built = True
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise

    def _build(self) -> None:
        topo = self.topology
        for ns in topo.all_netns():
            nl.create_netns(ns)
        for host in topo.hosts:
            ns = topo.netns(host.name)
            # Before any interface exists, so IPv6 addresses are usable at once (no DAD wait) on every
            # interface created later; forwarding before routes so a router host routes from the start.
            settings = [
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
            ]
            if host.forwarding:
                settings += [("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1")]
            nl.set_sysctls(ns, [*settings, *host.sysctls])
            nl.configure_interface(ns, "lo", addresses=host.loopbacks)
        for seg in topo.segments:
            sw = topo.segment_netns(seg.name)
            # The bridge only switches; no IPv6 of its own, so no RS/MLD chatter in captures.
            nl.set_sysctls(
                sw, [("net.ipv6.conf.all.disable_ipv6", "1"), ("net.ipv6.conf.default.disable_ipv6", "1")]
            )
            nl.add_bridge(sw, BRIDGE_NAME)
            nl.configure_interface(sw, BRIDGE_NAME, mtu=seg.mtu)
            for member in seg.members:
                port = bridge_port_name(member.host)
                nl.add_veth(sw, port, topo.netns(member.host), member.ifname)
                nl.configure_interface(sw, port, mtu=seg.mtu, master=BRIDGE_NAME)
                nl.configure_interface(
                    topo.netns(member.host), member.ifname, addresses=member.addresses, mtu=seg.mtu
                )
        for link in topo.links:
            ns_a, ns_b = topo.netns(link.a.host), topo.netns(link.b.host)
            nl.add_veth(ns_a, link.a.ifname, ns_b, link.b.ifname)
            nl.configure_interface(ns_a, link.a.ifname, addresses=link.a.addresses, mtu=link.mtu)
            nl.configure_interface(ns_b, link.b.ifname, addresses=link.b.addresses, mtu=link.mtu)
        for host in topo.hosts:
            for route in host.routes:
                nl.add_route(topo.netns(host.name), route)
        if self._start_processes:
            for proc in topo.processes:
                self.spawn(proc.host, proc.argv, name=proc.name)
        log.info("lab %s is up: %s", self.name, ", ".join(topo.all_netns()))

    def teardown(self) -> None:
        """Stop processes, kill anything else running in the namespaces, delete them. Idempotent."""
        if not self._built:
            return
        errors: list[str] = []
        for proc in reversed(self._processes):
            try:
                proc.stop()
            except Exception as exc:
                errors.append(f"stopping {proc.name}: {exc}")
        self._processes.clear()
        try:
            nl.remove_lab(self.name)
        except Exception as exc:
            errors.append(str(exc))
        for cleanup in reversed(self._cleanups):
            try:
                cleanup()
            except Exception as exc:
                errors.append(f"clean-up {cleanup!r}: {exc}")
        self._cleanups.clear()
        self._built = False
        _unregister(self)
        if errors:
            raise LabError(f"lab {self.name} teardown incomplete: {'; '.join(errors)}")
        log.info("lab %s is down", self.name)

    def add_cleanup(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` at teardown, after every process in the lab is gone (last added, first run)."""
        self._cleanups.append(callback)

    @staticmethod
    def cleanup_stale(name: str) -> list[str]:
        """Remove what a crashed run of lab ``name`` left behind; returns the namespaces removed."""
        return nl.remove_lab(name)

    # --- running things -------------------------------------------------------------------------------------

    def exec(
        self,
        host: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``host``'s namespace and wait; text output. ``check`` raises CommandError."""
        return run_in_netns(
            self.netns(host), argv, check=check, timeout=timeout, input=input, env=env, cwd=cwd
        )

    def spawn(
        self,
        host: str,
        argv: Sequence[str],
        *,
        name: str | None = None,
        log: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> ProcessHandle:
        """Start ``argv`` in ``host``'s namespace; output goes to ``log`` (default workdir/HOST-NAME.log)."""
        if not self._built:
            raise LabError(f"lab {self.name} is not built")
        pname = name or Path(argv[0]).name
        log_path = Path(log) if log is not None else self.workdir / f"{host}-{pname}.log"
        handle = spawn_in_netns(self.netns(host), host, argv, name=pname, log_path=log_path, env=env, cwd=cwd)
        self._processes.append(handle)
        return handle

    @property
    def processes(self) -> tuple[ProcessHandle, ...]:
        return tuple(self._processes)

    def process(self, name: str, host: str | None = None) -> ProcessHandle:
        for proc in self._processes:
            if proc.name == name and (host is None or proc.host == host):
                return proc
        raise LabError(f"lab {self.name} has no process {name!r}" + (f" on {host}" if host else ""))


# --- atexit / SIGTERM ---------------------------------------------------------------------------------------


def _register(lab: Lab) -> None:
    global _OWNER_PID
    with _LIVE_LOCK:
        if lab not in _LIVE:
            _LIVE.append(lab)
        # Per process: a child forked after the hooks were installed builds its own labs.
        if os.getpid() != _OWNER_PID:
            _OWNER_PID = os.getpid()
            atexit.register(teardown_all)
            _install_sigterm()


def _unregister(lab: Lab) -> None:
    with _LIVE_LOCK, contextlib.suppress(ValueError):
        _LIVE.remove(lab)


def teardown_all() -> None:
    """Tear down every lab this process built and has not torn down yet."""
    if os.getpid() != _OWNER_PID:
        return  # a forked child (pyroute2's netns helper) owns none of the labs it inherited
    with _LIVE_LOCK:
        labs = list(reversed(_LIVE))
    for lab in labs:
        try:
            lab.teardown()
        except Exception:
            log.exception("lab %s: teardown failed", lab.name)


def _install_sigterm() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; atexit still covers normal exit
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != _OWNER_PID:
            # A child forked from this process inherits the handler: pyroute2's NetNS forks one
            # to open its socket in the namespace and SIGTERMs it when that is slow (a busy
            # machine).  Raising SystemExit there unwound into the parent's copied stack, and the
            # child went on running the rest of the test suite inside the namespace.
            os._exit(128 + signum)
        teardown_all()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
