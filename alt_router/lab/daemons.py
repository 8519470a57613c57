"""FRR bgpd (+zebra), BIRD 2 and ExaBGP running inside lab hosts (edge).

Each runner writes its config, starts the daemon in the foreground under
``Lab.spawn`` (so teardown stops it and its log lands in the lab's workdir) and
offers polling helpers built on ``wait_until``.  Rendering and parsing are in
``daemon_text``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from alt_router.lab.daemon_text import (
    BgpPeer,
    BirdProtocol,
    DaemonOutputError,
    bird_protocol_name,
    bird_protocols,
    bird_route_prefixes,
    exabgp_peer_states,
    exabgp_received_prefixes,
    frr_peer_states,
    frr_prefixes,
    parse_json_lines,
    render_bird,
    render_exabgp,
    render_frr_bgpd,
)
from alt_router.lab.lab import Lab
from alt_router.lab.processes import CommandError, LabError, ProcessHandle, wait_until

log = logging.getLogger(__name__)

FRR_DIR = Path("/usr/lib/frr")
FRR_USER = "frr"


def _diagnose(proc: ProcessHandle, extra: str = "") -> str:
    state = "running" if proc.running() else f"exited {proc.returncode}"
    return f"{proc.name} on {proc.host} ({state}); {extra}\n--- {proc.log_path} ---\n{proc.log_tail()}"


def _frr_runtime_dir() -> Path:
    # bgpd drops to the frr user before creating its vty socket, so the directory must be
    # reachable and writable by frr: a fresh one under /tmp, not the lab's (root-only) workdir.
    path = Path(tempfile.mkdtemp(prefix="alt-router-frr-"))
    entry = pwd.getpwnam(FRR_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o755)
    return path


class FrrBgpd:
    """FRR bgpd (optionally with zebra for kernel routes) in one lab host."""

    def __init__(self, lab: Lab, host: str, config: str, *, zebra: bool = False) -> None:
        self.lab = lab
        self.host = host
        self.config = config
        self.zebra = zebra
        self.rundir = _frr_runtime_dir()
        lab.add_cleanup(self._remove_rundir)
        self.processes: list[ProcessHandle] = []

    def start(self) -> FrrBgpd:
        entry = pwd.getpwnam(FRR_USER)
        conf = self.rundir / "bgpd.conf"
        conf.write_text(self.config)
        # The run directory goes at teardown; keep a copy of the config next to the logs.
        (self.lab.workdir / f"{self.host}-bgpd.conf").write_text(self.config)
        os.chown(conf, entry.pw_uid, entry.pw_gid)
        common = ["--vty_socket", str(self.rundir), "-P", "0", "--log", "stdout"]
        bgpd = [str(FRR_DIR / "bgpd"), "-f", str(conf), "-i", str(self.rundir / "bgpd.pid"), *common]
        if self.zebra:
            zconf = self.rundir / "zebra.conf"
            zconf.write_text("hostname zebra\n!\n")
            os.chown(zconf, entry.pw_uid, entry.pw_gid)
            zserv = str(self.rundir / "zserv.api")
            self.processes.append(
                self.lab.spawn(
                    self.host,
                    [
                        str(FRR_DIR / "zebra"),
                        "-f",
                        str(zconf),
                        "-i",
                        str(self.rundir / "zebra.pid"),
                        "-z",
                        zserv,
                        *common,
                    ],
                    name="zebra",
                )
            )
            zebra_proc = self.processes[-1]
            # bgpd started before zebra listens would run without kernel routes until it retries.
            wait_until(
                lambda: (self.rundir / "zebra.vty").exists() or not zebra_proc.running(),
                10,
                what=f"zebra vty socket on {self.host}",
                on_timeout=lambda: _diagnose(zebra_proc),
            )
            if not zebra_proc.running():
                raise LabError(f"zebra on {self.host} exited at start\n{_diagnose(zebra_proc)}")
            bgpd += ["-z", zserv]
        else:
            bgpd.append("-Z")
        self.processes.append(self.lab.spawn(self.host, bgpd, name="bgpd"))
        wait_until(
            lambda: (self.rundir / "bgpd.vty").exists() or not self.bgpd.running(),
            10,
            what=f"bgpd vty socket on {self.host}",
        )
        if not self.bgpd.running():
            raise LabError(f"bgpd on {self.host} exited at start\n{_diagnose(self.bgpd)}")
        return self

    @property
    def bgpd(self) -> ProcessHandle:
        return self.processes[-1]

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self._remove_rundir()

    def _remove_rundir(self) -> None:
        shutil.rmtree(self.rundir, ignore_errors=True)

    def vtysh(self, *commands: str, timeout: float = 10.0) -> str:
        argv = ["vtysh", "--vty_socket", str(self.rundir)]
        for command in commands:
            argv += ["-c", command]
        return self.lab.exec(self.host, argv, timeout=timeout).stdout

    def vtysh_json(self, command: str) -> Any:
        text = self.vtysh(command)
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DaemonOutputError(
                f"vtysh {command!r} on {self.host} did not return JSON: {text[:200]}"
            ) from exc

    def peer_states(self) -> dict[str, str]:
        return frr_peer_states(self.vtysh_json("show bgp summary json"))

    def prefixes(self, family: str = "ipv4") -> set[str]:
        return frr_prefixes(self.vtysh_json(f"show bgp {family} unicast json"))

    def wait_established(self, peer: str, timeout: float = 20.0) -> None:
        wait_until(
            lambda: self.peer_states().get(peer) == "Established",
            timeout,
            what=f"FRR on {self.host}: session with {peer} Established",
            on_timeout=lambda: _diagnose(self.bgpd, f"peers: {self._safe(self.peer_states)}"),
        )

    def wait_prefix(self, prefix: str, timeout: float = 20.0) -> None:
        family = "ipv6" if ":" in prefix else "ipv4"
        wait_until(
            lambda: prefix in self.prefixes(family),
            timeout,
            what=f"FRR on {self.host}: prefix {prefix}",
            on_timeout=lambda: _diagnose(self.bgpd, f"table: {self._safe(lambda: self.prefixes(family))}"),
        )

    @staticmethod
    def _safe(fn: Any) -> Any:
        try:
            return fn()
        except (LabError, DaemonOutputError) as exc:
            return f"<{exc}>"


def start_frr(
    lab: Lab,
    host: str,
    *,
    asn: int,
    router_id: str,
    peers: Sequence[BgpPeer],
    networks: Iterable[str] = (),
    zebra: bool = False,
    config: str | None = None,
) -> FrrBgpd:
    """Start bgpd in ``host`` with a rendered config (or ``config`` verbatim)."""
    text = config if config is not None else render_frr_bgpd(asn, router_id, peers, networks, hostname=host)
    return FrrBgpd(lab, host, text, zebra=zebra).start()


class Bird:
    """BIRD 2 in one lab host, in the foreground, with a private control socket."""

    def __init__(self, lab: Lab, host: str, config: str, workdir: Path) -> None:
        self.lab = lab
        self.host = host
        self.config = config
        self.workdir = workdir
        self.socket = workdir / "bird.ctl"
        self.process: ProcessHandle | None = None

    def start(self) -> Bird:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "bird.conf"
        conf.write_text(self.config)
        proc = self.lab.spawn(self.host, ["bird", "-f", "-c", str(conf), "-s", str(self.socket)], name="bird")
        self.process = proc
        wait_until(
            lambda: self.socket.exists() or not proc.running(), 10, what=f"BIRD control socket on {self.host}"
        )
        if not proc.running():
            raise LabError(f"BIRD on {self.host} exited at start\n{_diagnose(proc)}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def birdc(self, command: str, timeout: float = 10.0) -> str:
        return self.lab.exec(
            self.host, ["birdc", "-s", str(self.socket), *command.split()], timeout=timeout
        ).stdout

    def protocols(self) -> dict[str, BirdProtocol]:
        return bird_protocols(self.birdc("show protocols"))

    def routes(self) -> set[str]:
        return bird_route_prefixes(self.birdc("show route"))

    def wait_established(self, protocol: str = bird_protocol_name(0), timeout: float = 20.0) -> None:
        def up() -> bool:
            proto = self.protocols().get(protocol)
            return proto is not None and "Established" in proto.info

        wait_until(
            up,
            timeout,
            what=f"BIRD on {self.host}: {protocol} Established",
            on_timeout=lambda: self._diag(self.birdc("show protocols all " + protocol)),
        )

    def wait_route(self, prefix: str, timeout: float = 20.0) -> None:
        wait_until(
            lambda: prefix in self.routes(),
            timeout,
            what=f"BIRD on {self.host}: route {prefix}",
            on_timeout=lambda: self._diag(self.birdc("show route")),
        )

    def _diag(self, text: str) -> str:
        return _diagnose(self.process, text) if self.process is not None else text


def start_bird(
    lab: Lab,
    host: str,
    *,
    asn: int,
    router_id: str,
    peers: Sequence[BgpPeer],
    networks: Iterable[str] = (),
    config: str | None = None,
    workdir: Path | None = None,
) -> Bird:
    text = config if config is not None else render_bird(asn, router_id, peers, networks)
    return Bird(lab, host, text, workdir or lab.workdir / f"{host}-bird").start()


class ExaBGP:
    """ExaBGP in one lab host; its API process logs every JSON message to ``api_log``."""

    def __init__(self, lab: Lab, host: str, config: str, workdir: Path) -> None:
        self.lab = lab
        self.host = host
        self.config = config
        self.workdir = workdir
        self.api_log = workdir / "api.jsonl"
        self.log = workdir / "exabgp.log"
        self.process: ProcessHandle | None = None

    @staticmethod
    def api_run(api_log: Path) -> str:
        """The ``run`` line of the logging API process (for hand-written configs)."""
        return f"{sys.executable} -m alt_router.lab.exabgp_api_log {api_log}"

    def start(self) -> ExaBGP:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api_log.touch()
        conf = self.workdir / "exabgp.conf"
        conf.write_text(self.config)
        env = {
            "exabgp.daemon.user": "root",
            "exabgp.daemon.daemonize": "false",
            "exabgp.log.destination": str(self.log),
            # No named-pipe CLI: it would look for pipes shared by every instance on the machine.
            "exabgp.api.cli": "false",
            "exabgp.api.pipename": f"alt-router-{self.lab.name}-{self.host}",
            # Give up on a dead API process instead of respawning it forever.
            "exabgp.api.respawn": "false",
        }
        self.process = self.lab.spawn(self.host, ["exabgp", str(conf)], name="exabgp", env=env)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def messages(self) -> list[dict[str, Any]]:
        return parse_json_lines(self.api_log.read_text(errors="replace"))[0]

    def peer_states(self) -> dict[str, str]:
        return exabgp_peer_states(self.messages())

    def received_prefixes(self, peer: str | None = None) -> set[str]:
        return exabgp_received_prefixes(self.messages(), peer)

    def wait_established(self, peer: str, timeout: float = 20.0) -> None:
        wait_until(
            lambda: self.peer_states().get(peer) == "up",
            timeout,
            what=f"ExaBGP on {self.host}: session with {peer} up",
            on_timeout=self._diag,
        )

    def wait_prefix(self, prefix: str, timeout: float = 20.0) -> None:
        wait_until(
            lambda: prefix in self.received_prefixes(),
            timeout,
            what=f"ExaBGP on {self.host}: prefix {prefix}",
            on_timeout=self._diag,
        )

    def _diag(self) -> str:
        log_tail = ""
        with contextlib.suppress(FileNotFoundError):
            log_tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        api = "\n".join(self.api_log.read_text(errors="replace").splitlines()[-10:])
        head = _diagnose(self.process) if self.process is not None else ""
        return f"{head}\n--- {self.log} ---\n{log_tail}\n--- {self.api_log} ---\n{api}"


def start_exabgp(
    lab: Lab,
    host: str,
    *,
    asn: int,
    router_id: str,
    peers: Sequence[BgpPeer],
    routes: Iterable[str] = (),
    config: str | None = None,
    workdir: Path | None = None,
) -> ExaBGP:
    """Start ExaBGP in ``host``; a rendered config includes the logging API process."""
    wdir = workdir or lab.workdir / f"{host}-exabgp"
    text = config
    if text is None:
        text = render_exabgp(asn, router_id, peers, routes, api_run=ExaBGP.api_run(wdir / "api.jsonl"))
    return ExaBGP(lab, host, text, wdir).start()


__all__ = [
    "Bird",
    "CommandError",
    "ExaBGP",
    "FrrBgpd",
    "start_bird",
    "start_exabgp",
    "start_frr",
]
