"""Building, watching and removing an ALT lab that outlives the command that built it (edge).

``up`` builds the namespaces (``Lab``), writes each node's config, starts the
processes detached (their own sessions, logs in the state dir) and records
everything in ``STATE_ROOT/NAME/state.json`` so ``status`` and ``down`` work
from any other process, after a crash of ``up`` included: the namespaces'
``ar-NAME-`` prefix finds what the state file does not know about.

State directory ``/run/alt-router/lab/NAME``::

    state.json        what was built: hosts, nodes, processes (pid + start time), phase
    nodes/HOST/       node config (HOST.toml) and its [node].state_dir (control.sock, exabgp.log ...)
    frr-HOST/         FRR's run directory (owned by the frr user): zebra + bgpd configs and vty sockets
    bird-HOST/        BIRD's config and control socket (bird.ctl)
    logs/HOST-NAME.log  one per process; kept by ``down`` for the post-mortem
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from alt_router.lab import lab as lab_module
from alt_router.lab import netns as nl
from alt_router.lab.alt_topology import AltTopology, AltTopologyError
from alt_router.lab.lab import Lab
from alt_router.lab.processes import LabError, run_in_netns, spawn_in_netns
from alt_router.lab.topology import netns_name
from alt_router.node.config import NodeConfig, parse_config
from alt_router.node.config_check import CheckError, check_config_text
from alt_router.node.control import query

log = logging.getLogger(__name__)

STATE_ROOT = Path("/run/alt-router/lab")
STATE_FILE = "state.json"
FRR_DIR = Path("/usr/lib/frr")
FRR_USER = "frr"
POLL_INTERVAL = 0.5
NETNS_GONE_TIMEOUT = 15.0
DAEMON_START_TIMEOUT = 10.0
ROUTER_SYSCTLS = (
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
)


@dataclass(slots=True)
class ProcRecord:
    host: str
    name: str
    pid: int
    start: int  # /proc start time: a recycled pid is not our process
    log: str
    argv: list[str]


@dataclass(slots=True)
class LabState:
    name: str
    source: str
    phase: str  # building | up | converged | failed
    started: float
    netns: list[str]
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    processes: list[ProcRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LabState:
        data = json.loads(text)
        procs = [ProcRecord(**p) for p in data.pop("processes", [])]
        return cls(**data, processes=procs)


class LabDir:
    """The state directory of lab ``name`` under ``root``."""

    def __init__(self, name: str, root: Path = STATE_ROOT) -> None:
        self.name = name
        self.path = root / name

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def node_dir(self, host: str) -> Path:
        return self.path / "nodes" / host

    def node_state(self, host: str) -> Path:
        return self.node_dir(host) / "state"

    def node_config(self, host: str) -> Path:
        return self.node_dir(host) / f"{host}.toml"

    def frr_dir(self, host: str) -> Path:
        return self.path / f"frr-{host}"

    def bird_dir(self, host: str) -> Path:
        return self.path / f"bird-{host}"

    def load(self) -> LabState | None:
        try:
            return LabState.from_json(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError) as exc:
            raise LabError(
                f"{self.state_file} is damaged ({exc}); `alt-router lab down {self.name}` "
                "removes the lab anyway"
            ) from exc

    def save(self, state: LabState) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        os.replace(tmp, self.state_file)


# --- processes --------------------------------------------------------------------------------------------


def proc_start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[19])


def alive(rec: ProcRecord) -> bool:
    return proc_start_time(rec.pid) == rec.start


def _spawn(ld: LabDir, state: LabState, host: str, name: str, argv: list[str]) -> ProcRecord:
    log_path = ld.logs / f"{host}-{name}.log"
    handle = spawn_in_netns(netns_name(ld.name, host), host, argv, name=name, log_path=log_path)
    # The handle's Popen is dropped: the process belongs to the lab now, not to this command.
    start = proc_start_time(handle.pid) or 0
    rec = ProcRecord(host, name, handle.pid, start, str(log_path), list(argv))
    state.processes.append(rec)
    ld.save(state)
    return rec


def stop_processes(records: list[ProcRecord], grace: float = 8.0) -> None:
    """SIGTERM every live recorded process group, then SIGKILL what is left after ``grace`` seconds."""
    live = [r for r in records if alive(r)]
    for rec in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(rec.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        for rec in live:
            # Our own children must be reaped or they stay zombies that look alive.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(rec.pid, os.WNOHANG)
        live = [r for r in live if alive(r)]
        time.sleep(0.05)
    for rec in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(rec.pid, signal.SIGKILL)


# --- leftovers --------------------------------------------------------------------------------------------


def leftovers(name: str, root: Path = STATE_ROOT) -> list[str]:
    """What an earlier run of lab ``name`` left behind, one description per item."""
    ld = LabDir(name, root)
    found = [f"namespace {n}" for n in nl.stale_netns(name)]
    try:
        state = ld.load()
    except LabError:
        state = None
        found.append(f"damaged state file {ld.state_file}")
    if state is not None:
        found.append(f"state file {ld.state_file} (phase {state.phase})")
        found += [f"{p.name} on {p.host} (pid {p.pid})" for p in state.processes if alive(p)]
    return found


def _remove_namespaces(name: str, timeout: float = NETNS_GONE_TIMEOUT) -> list[str]:
    """Remove lab ``name``'s namespaces and return only once none is listed any more.

    A process that was still starting when its namespace's processes were killed (a restarted
    node, an ExaBGP helper) can keep a removal from completing; then the removal is repeated.
    """
    removed: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            removed += [n for n in nl.remove_lab(name) if n not in removed]
        except nl.NetnsError as exc:
            if time.monotonic() >= deadline:
                raise
            log.info("lab %s: %s; trying again", name, exc)
        left = nl.stale_netns(name)
        if not left:
            return removed
        if time.monotonic() >= deadline:
            raise LabError(f"lab {name}: namespaces still present after {timeout:g} s: {', '.join(left)}")
        time.sleep(POLL_INTERVAL)


def down(name: str, root: Path = STATE_ROOT, *, out: TextIO | None = None) -> list[str]:
    """Remove lab ``name``: processes, namespaces (and with them every link and tunnel), state. Idempotent.

    Returns what was removed; logs stay in STATE_ROOT/NAME/logs.
    """
    ld = LabDir(name, root)
    removed: list[str] = []
    try:
        state = ld.load()
    except LabError:
        state = None
    if state is not None:
        live = [p for p in state.processes if alive(p)]
        # Nodes first and together: each stops its ExaBGP (Cease to every peer) and removes its tunnels.
        stop_processes(live)
        removed += [f"{p.name} on {p.host}" for p in live]
    removed += [f"namespace {n}" for n in _remove_namespaces(name)]
    if ld.path.exists():
        gone = [child for child in ld.path.iterdir() if child.name != "logs"]
        for child in gone:
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        if gone:
            removed.append(f"state in {ld.path}")
    if out is not None:
        if removed:
            out.write(f"lab {name}: removed " + ", ".join(removed) + "\n")
            if ld.logs.exists():
                out.write(f"lab {name}: logs kept in {ld.logs}\n")
        else:
            out.write(f"lab {name}: nothing to remove\n")
    return removed


# --- up ---------------------------------------------------------------------------------------------------


def _frr_rundir(path: Path) -> Path:
    # bgpd drops to the frr user before it creates its vty socket.
    path.mkdir(parents=True, exist_ok=True)
    entry = pwd.getpwnam(FRR_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o755)
    return path


def _detach(lab: Lab) -> None:
    """Keep ``lab`` built after this process exits (its atexit/SIGTERM hooks would tear it down)."""
    lab_module._unregister(lab)
    lab._built = False


def up(
    alt: AltTopology,
    *,
    root: Path = STATE_ROOT,
    source: str = "",
    out: TextIO,
    timeout: float = 60.0,
    etr_timeout: float = 20.0,
) -> tuple[LabDir, bool]:
    """Build ``alt`` and wait for BGP to converge; returns (state dir, converged).

    Every node config is checked first, as ``alt-router check`` would (``NodeConfigError`` names
    the node, the file and the key), before anything is removed or built.  Leftovers of an earlier
    run are removed next (and said so).  If building fails or is interrupted, everything built so
    far is removed again.
    """
    name = alt.name
    ld = LabDir(name, root)
    check_node_configs(alt, ld)
    old = leftovers(name, root)
    if old:
        out.write(f"lab {name}: removing leftovers of an earlier run first: {', '.join(old)}\n")
        down(name, root)
    shutil.rmtree(ld.logs, ignore_errors=True)
    ld.path.mkdir(parents=True, exist_ok=True)
    ld.path.chmod(0o755)
    state = LabState(name, source, "building", time.time(), list(alt.topology.all_netns()))
    ld.save(state)
    try:
        _build(alt, ld, state, out)
        converged = wait_converged(alt, ld, state, out, timeout)
        state.phase = "converged" if converged else "up"
        ld.save(state)
        if converged and alt.etrs:
            _start_etrs(alt, ld, state, out, etr_timeout)
    except BaseException:
        out.write(f"lab {name}: build failed; removing what was built\n")
        _tail_logs(ld, state, out)
        down(name, root)
        raise
    return ld, converged


class NodeConfigError(AltTopologyError):
    """A node config the lab generated would be refused by ``alt-router check`` (and ``run``)."""


def check_node_configs(alt: AltTopology, ld: LabDir) -> None:
    """Run ``alt-router check`` on every node config ``alt`` generates; raise NodeConfigError if any fails.

    The texts are checked under the file names they will get, so the messages name those files.
    """
    problems = []
    for node in alt.nodes:
        text = alt.node_config(node.host, ld.node_state(node.host))
        try:
            check_config_text(text, str(ld.node_config(node.host)))
        except CheckError as exc:
            problems.append(f"node {node.host}: {exc}")
            continue
        if node.bgp == "frr":
            problems += [f"node {node.host}: {p}" for p in _frr_missing(parse_config(text))]
    if problems:
        raise NodeConfigError(
            f"lab {alt.name}: {len(problems)} node config(s) would not start; nothing was built\n"
            + "\n".join(problems)
        )


def _frr_missing(config: NodeConfig) -> list[str]:
    """What a ``bgp = "frr"`` node would fail to start without: FRR's daemons and its user."""
    missing = [f"bgp = \"frr\" needs {path} (is FRR installed? [frr] bin_dir)"
               for path in (config.frr.bin_dir / "zebra", config.frr.bin_dir / "bgpd")
               if not os.access(path, os.X_OK)]
    try:
        pwd.getpwnam(FRR_USER)
    except KeyError:
        missing.append(f"bgp = \"frr\" needs the {FRR_USER!r} user (is FRR installed?)")
    return missing


def node_argv(config: Path, state_dir: Path) -> list[str]:
    """A lab node: ``alt-router run`` under the restart keeper (alt_router/lab/restart.py)."""
    return [
        sys.executable, "-m", "alt_router.lab.restart", "--state-dir", str(state_dir), "--",
        sys.executable, "-m", "alt_router.cli", "run", "-c", str(config),
    ]


def _build(alt: AltTopology, ld: LabDir, state: LabState, out: TextIO) -> None:
    topo = alt.topology
    out.write(
        f"lab {alt.name}: {len(topo.hosts)} hosts, {len(topo.links)} links, {len(topo.segments)} "
        f"segments, {len(alt.nodes)} ALT nodes, {len(alt.tunnels)} GRE tunnels\n"
    )
    lab = Lab(topo, workdir=ld.logs, start_processes=False)
    lab.build()
    _detach(lab)
    for proc in topo.processes:
        _spawn(ld, state, proc.host, proc.name, list(proc.argv))
    for router in alt.routers:
        # A transit forwards ALT datagrams by its kernel table (RFC 6836 §3: an ALT router routes
        # them like any BGP router); loose source checks, since replies take other paths.
        nl.set_sysctls(topo.netns(router.host), ROUTER_SYSCTLS)
        for ends in alt.tunnels_of(router.host):
            _spawn(ld, state, router.host, f"tunnel-{ends.remote}", alt.tunnel_argv(ends))
    for node in alt.nodes:
        ld.node_dir(node.host).mkdir(parents=True, exist_ok=True)
        config = ld.node_config(node.host)
        config.write_text(alt.node_config(node.host, ld.node_state(node.host)))
        config.chmod(0o600)  # site keys and MD5 passwords
        if node.bgp == "frr":
            _prepare_frr_node(alt, ld, node.host)
        state.nodes[node.host] = {
            "config": str(config),
            "state_dir": str(ld.node_state(node.host)),
            "roles": list(node.roles),
            "expected": sorted(alt.expected_routes(node.host)),
            "bgp": node.bgp,
        }
        _spawn(ld, state, node.host, "alt-router", node_argv(config, ld.node_state(node.host)))
        speaker = "its own FRR (zebra + bgpd), kernel forwarding" if node.bgp == "frr" else "ExaBGP"
        out.write(
            f"  {node.host:<10} alt-router node AS {node.asn} ({', '.join(node.roles)}), "
            f"{len(alt.tunnels_of(node.host))} GRE tunnel(s), BGP by {speaker}\n"
        )
    for router in alt.routers:
        _wait_tunnel_addresses(alt, ld, state, router.host)
        if router.daemon == "bird":
            _start_bird(alt, ld, state, router.host)
            out.write(f"  {router.host:<10} BIRD AS {router.asn} (kernel export, forwarding)\n")
        else:
            _start_frr(alt, ld, state, router.host)
            out.write(f"  {router.host:<10} FRR zebra + bgpd AS {router.asn} (forwarding)\n")
    state.phase = "up"
    ld.save(state)


def _prepare_frr_node(alt: AltTopology, ld: LabDir, host: str) -> None:
    """What a ``bgp = "frr"`` node needs in its namespace before it starts (issue 10).

    Its kernel forwards the ALT datagrams, as a transit's does (RFC 6836 §3; ``ROUTER_SYSCTLS``:
    loose source checks, since replies take other paths).  Its FRR daemons drop to the frr user
    before they write their pid files and vty sockets under the node's state dir, so every
    directory down to it must be searchable by that user; the node makes and chowns its own FRR
    directory inside.
    """
    nl.set_sysctls(alt.topology.netns(host), ROUTER_SYSCTLS)
    state_dir = ld.node_state(host)
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        make_searchable(state_dir, ld.path)
    except LabError as exc:
        raise LabError(f"{host}: FRR (user {FRR_USER}) cannot reach the node's state dir: {exc}") from None


def make_searchable(path: Path, own: Path) -> None:
    """Make ``path`` and every directory above it searchable by other users (the frr user).

    Directories at or below ``own`` (the lab's) get read and search bits for group and others;
    above it nothing is changed: LabError names the first one others cannot search.
    """
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if mode & 0o001:
            continue
        if directory == own or own in directory.parents:
            directory.chmod(mode | 0o055)  # readable and searchable, not writable
        else:
            raise LabError(f"{directory} is not searchable by others (choose another --state-root)")


def router_tunnel_addresses(alt: AltTopology, host: str) -> set[str]:
    """The inner addresses router ``host``'s tunnel processes configure (IPv6 too if it carries it)."""
    ipv6 = "ipv6" in alt.router(host).families
    return {
        a.split("/")[0]
        for e in alt.tunnels_of(host)
        for a in (e.inner4_local, *((e.inner6_local,) if ipv6 else ()))
    }


def _wait_tunnel_addresses(alt: AltTopology, ld: LabDir, state: LabState, host: str) -> None:
    """Return once every tunnel of router ``host`` has its TUN device up with its inner address.

    zebra started while an address is being added can miss it for good (seen with FRR 8.4: the
    interface known, the address not, and bgpd resetting the session with "nexthop_set failed"
    for ever), so FRR and BIRD start only on finished interfaces.
    """
    wanted = router_tunnel_addresses(alt, host)
    ns = alt.topology.netns(host)
    deadline = time.monotonic() + DAEMON_START_TIMEOUT * 3
    while True:
        shown = run_in_netns(ns, ["ip", "-o", "addr", "show"], check=False).stdout
        missing = {a for a in wanted if f" {a}/" not in shown}
        if not missing:
            return
        tunnels = [p for p in state.processes if p.host == host and p.name.startswith("tunnel-")]
        dead = [p for p in tunnels if not alive(p)]
        if dead or time.monotonic() > deadline:
            why = "; ".join(f"{p.name} exited:\n{_tail(Path(p.log))}" for p in dead) or "timed out"
            raise LabError(f"{host}: tunnel addresses {', '.join(sorted(missing))} not configured ({why})")
        time.sleep(0.1)


def _start_frr(alt: AltTopology, ld: LabDir, state: LabState, host: str) -> None:
    """zebra, then bgpd on zebra's socket: bgpd's best routes reach the kernel and are forwarded by."""
    rundir = _frr_rundir(ld.frr_dir(host))
    entry = pwd.getpwnam(FRR_USER)
    conf = rundir / "bgpd.conf"
    conf.write_text(alt.frr_config(host))
    zconf = rundir / "zebra.conf"
    zconf.write_text(f"hostname {host}\n!\n")
    for path in (conf, zconf):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    zserv = str(rundir / "zserv.api")
    common = ["-z", zserv, "--vty_socket", str(rundir), "-P", "0", "--log", "stdout"]
    zebra = _spawn(
        ld, state, host, "zebra",
        [str(FRR_DIR / "zebra"), "-f", str(zconf), "-i", str(rundir / "zebra.pid"), *common],
    )
    # bgpd started before zebra listens runs without kernel routes until it reconnects.
    deadline = time.monotonic() + DAEMON_START_TIMEOUT
    while not Path(zserv).exists() and alive(zebra) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not alive(zebra):
        raise LabError(f"zebra on {host} exited at start:\n{_tail(Path(zebra.log))}")
    argv = [str(FRR_DIR / "bgpd"), "-f", str(conf), "-i", str(rundir / "bgpd.pid"), *common]
    _spawn(ld, state, host, "bgpd", argv)
    state.nodes[host] = {"frr": str(rundir), "roles": ["frr"]}
    ld.save(state)


def _start_bird(alt: AltTopology, ld: LabDir, state: LabState, host: str) -> None:
    """BIRD 2 in the foreground with its own control socket; it exports into the kernel table."""
    rundir = ld.bird_dir(host)
    rundir.mkdir(parents=True, exist_ok=True)
    conf = rundir / "bird.conf"
    conf.write_text(alt.bird_config(host))
    argv = ["bird", "-f", "-c", str(conf), "-s", str(rundir / "bird.ctl")]
    _spawn(ld, state, host, "bird", argv)
    state.nodes[host] = {"bird": str(rundir), "roles": ["bird"]}
    ld.save(state)


def _start_etrs(alt: AltTopology, ld: LabDir, state: LabState, out: TextIO, timeout: float) -> None:
    recs = {}
    for etr in alt.etrs:
        recs[etr.host] = _spawn(ld, state, etr.host, "etr", alt.etr_argv(etr))
        state.nodes.setdefault(etr.host, {"roles": ["etr"]})
    ld.save(state)
    deadline = time.monotonic() + timeout
    pending = {e.host: e for e in alt.etrs}
    while pending and time.monotonic() < deadline:
        for host, etr in list(pending.items()):
            rec = recs[host]
            text = Path(rec.log).read_text(errors="replace") if Path(rec.log).exists() else ""
            if "registered with Map-Server" in text:
                eids = ", ".join(str(e) for e in etr.eids)
                out.write(f"  {host:<10} ETR registered {eids} with the Map-Server on {etr.map_server}\n")
                del pending[host]
            elif not alive(rec):
                out.write(f"  {host:<10} ETR exited:\n{_tail(Path(rec.log))}\n")
                del pending[host]
        time.sleep(0.2)
    for host, etr in pending.items():
        out.write(
            f"  {host:<10} ETR: no Map-Notify from the Map-Server on {etr.map_server} within "
            f"{timeout:g} s (is the Map-Server role running? see {ld.node_state(etr.map_server)})\n"
        )


# --- convergence ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeProbe:
    """One node's answer to ``status``, boiled down to what convergence needs."""

    host: str
    reachable: bool
    peers_up: int
    peers: int
    routes: frozenset[str]
    error: str = ""
    # An FRR-mode node's FRR instance (its status "frr": pids, restarts per daemon); None otherwise.
    frr: dict[str, Any] | None = None

    def missing(self, expected: set[str]) -> set[str]:
        return expected - self.routes

    def converged(self, expected: set[str]) -> bool:
        return self.reachable and self.peers_up == self.peers and not self.missing(expected)


def probe_node(host: str, state_dir: Path, timeout: float = 2.0) -> NodeProbe:
    try:
        answer = query(state_dir, {"cmd": "status"}, timeout=timeout)
    except (OSError, ValueError) as exc:
        return NodeProbe(host, False, 0, 0, frozenset(), f"control socket: {exc}")
    peers = answer.get("peers", {})
    up = sum(1 for p in peers.values() if isinstance(p, dict) and p.get("up"))
    frr = answer.get("frr")
    return NodeProbe(host, True, up, len(peers), frozenset(answer.get("routes", {})),
                     frr=frr if isinstance(frr, dict) else None)


def wait_converged(
    alt: AltTopology,
    ld: LabDir,
    state: LabState,
    out: TextIO,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Poll every node's control socket until it has every peer up and every expected route."""
    start = clock()
    out.write(f"lab {alt.name}: waiting for BGP to converge (at most {timeout:g} s)\n")
    pending = {n.host: alt.expected_routes(n.host) for n in alt.nodes}
    views: dict[str, NodeProbe] = {}
    procs = {p.host: p for p in state.processes if p.name == "alt-router"}
    while pending:
        for host, expected in list(pending.items()):
            view = probe_node(host, ld.node_state(host))
            views[host] = view
            if view.converged(expected):
                out.write(
                    f"  {host:<10} converged after {clock() - start:4.1f} s: {view.peers_up}/{view.peers} "
                    f"peers up, {len(view.routes)} routes\n"
                )
                out.flush()
                del pending[host]
            elif host in procs and not alive(procs[host]):
                out.write(f"  {host:<10} alt-router exited:\n{_tail(Path(procs[host].log))}\n")
                return False
        if not pending:
            break
        if clock() - start > timeout:
            for host, expected in pending.items():
                v = views[host]
                why = v.error or (
                    f"{v.peers_up}/{v.peers} peers up, missing "
                    f"{', '.join(sorted(v.missing(expected))) or 'nothing'}"
                )
                out.write(f"  {host:<10} NOT converged after {timeout:g} s: {why}\n")
                if not v.reachable and host in procs:
                    # Its keeper is alive but the daemon is not answering: say why it keeps failing.
                    out.write(_tail(Path(procs[host].log), 8) + "\n")
            return False
        time.sleep(POLL_INTERVAL)
    out.write(f"lab {alt.name}: the ALT converged in {clock() - start:.1f} s\n")
    return True


# --- status -----------------------------------------------------------------------------------------------


def status_lines(name: str, root: Path = STATE_ROOT) -> tuple[list[str], int]:
    """A report on lab ``name`` and an exit status: 0 running and converged, 1 degraded, 3 not there."""
    ld = LabDir(name, root)
    try:
        state = ld.load()
    except LabError as exc:
        return [str(exc)], 1
    present = set(nl.stale_netns(name))
    if state is None:
        if present:
            return [
                f"lab {name}: no state file, but namespaces are left from a run that crashed or was "
                f"killed: {', '.join(sorted(present))}",
                f"  `alt-router lab down {name}` removes them",
            ], 1
        return [f"lab {name}: not running"], 3
    lines = [
        f"lab {name}: phase {state.phase}, started {time.strftime('%H:%M:%S', time.localtime(state.started))}"
        f" from {state.source or '?'}",
        f"  state {ld.path}, logs {ld.logs}",
    ]
    status = 0 if state.phase == "converged" else 1
    missing_ns = [n for n in state.netns if n not in present]
    if missing_ns:
        lines.append(
            f"  namespaces missing: {', '.join(missing_ns)} (half-built or partly removed lab; "
            f"`alt-router lab down {name}` cleans up)"
        )
        status = 1
    for rec in state.processes:
        running = alive(rec)
        text = f"  {rec.host:<10} {rec.name:<14} pid {rec.pid:<7} {'running' if running else 'NOT running'}"
        info = state.nodes.get(rec.host, {})
        if rec.name == "alt-router":
            restarts = _restarts(Path(rec.log))
            if restarts:
                text += f"  (daemon restarted {restarts}x, see {rec.log})"
        if rec.name == "alt-router" and running:
            view = probe_node(rec.host, Path(info["state_dir"]))
            expected = set(info.get("expected", []))
            if view.reachable:
                miss = view.missing(expected)
                text += f"  {view.peers_up}/{view.peers} peers up, {len(view.routes)} routes" + (
                    f", missing {', '.join(sorted(miss))}" if miss else ", all expected present"
                )
                if not view.converged(expected):
                    status = 1
            else:
                text += f"  ({view.error})"
                status = 1
            speaker = ["bgp by its own FRR"] if info.get("bgp") == "frr" else []
            text += f"  [{', '.join([*info.get('roles', []), *speaker])}]"
            if view.frr is not None:
                text += _frr_summary(view.frr)
        if not running:
            status = 1
            text += f"  (log {rec.log})"
        lines.append(text)
    return lines, status


def _frr_summary(frr: dict[str, Any]) -> str:
    """An FRR-mode node's FRR daemons: pids, and how often the node restarted each."""
    pids, restarts = frr.get("pids") or {}, frr.get("restarts") or {}
    parts = [f"{name} {'pid ' + str(pid) if pid else 'DOWN'}" for name, pid in pids.items()]
    again = [f"{name} {n}x" for name, n in restarts.items() if n]
    return f"  FRR: {', '.join(parts)}" + (f" (restarted {', '.join(again)})" if again else "")


def _restarts(log_path: Path) -> int:
    """How often the node's keeper restarted its daemon (alt_router/lab/restart.py logs each one)."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(
        1 for line in text.splitlines() if "logger=alt_router.lab.restart" in line and "; restart " in line
    )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"    ({path}: no log)"
    return "\n".join(f"    {line}" for line in text.splitlines()[-lines:])


def _tail_logs(ld: LabDir, state: LabState, out: TextIO) -> None:
    for rec in state.processes:
        if not alive(rec):
            out.write(f"--- {rec.log} ---\n{_tail(Path(rec.log))}\n")


@contextlib.contextmanager
def torn_down_on_exit(name: str, root: Path, out: TextIO) -> Iterator[None]:
    """Remove lab ``name`` when the block ends: normally, on an exception, on Ctrl-C or on SIGTERM."""
    previous = signal.getsignal(signal.SIGTERM)
    owner = os.getpid()

    def on_sigterm(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)  # a forked child (pyroute2's netns helper): never unwind into our stack
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        # A second Ctrl-C during the teardown must not leave half a lab behind.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            down(name, root, out=out)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, previous)
