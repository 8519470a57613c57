"""The integration tests' harness: ``[alt]`` topologies from ``topologies/``, ``alt-router run`` in a
lab host, the topology's routers and ETRs started as ``alt-router lab up`` starts them, status polls
that compare JSON subsets."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alt_router.lab import Lab, ProcessHandle, json_mismatch, json_subset, wait_until
from alt_router.lab import netns as nl
from alt_router.lab.alt_runner import ROUTER_SYSCTLS, LabDir, router_tunnel_addresses
from alt_router.lab.alt_topology import AltTopology
from alt_router.lab.daemons import Bird, FrrBgpd, start_bird, start_frr
from alt_router.lab.processes import run_in_netns
from alt_router.lab.topology import netns_name
from alt_router.node.daemon import query

TOPOLOGIES = Path(__file__).parent / "topologies"


def alt_topology(file: str, name: str) -> AltTopology:
    """``topologies/FILE`` with its lab name replaced by ``name`` (from the ``lab_names`` fixture).

    Parsed by the code ``alt-router lab up`` uses, so node configs come from ``AltTopology.node_config``.
    """
    return AltTopology.from_toml(TOPOLOGIES / file, name=name)


def address_names(alt: AltTopology) -> dict[str, str]:
    """Every address in ``alt`` (underlay, and both inner ends of every tunnel) -> its host, for
    reading the hop lists of ``lig --trace``."""
    topo = alt.topology
    ends = [e for link in topo.links for e in (link.a, link.b)]
    ends += [e for segment in topo.segments for e in segment.members]
    names = {str(a.ip): e.host for e in ends for a in e.addresses}
    for t in alt.tunnels:
        for host in (t.a, t.b):
            inner = alt.ends(t, host)
            names[inner.inner4_local.split("/")[0]] = host
            names[inner.inner6_local.split("/")[0]] = host
    return names


class RunningLab:
    """An ALT lab built by ``alt-router lab up`` (``alt_runner.up``): its nodes run detached, each
    queried over the control socket in the lab's state directory."""

    def __init__(self, alt: AltTopology, ld: LabDir) -> None:
        self.alt = alt
        self.ld = ld

    def query(self, host: str, request: dict[str, Any], timeout: float = 5) -> dict[str, Any]:
        return query(self.ld.node_state(host), request, timeout=timeout)

    def status(self, host: str, routes: bool = True) -> dict[str, Any]:
        return self.query(host, {"cmd": "status", "routes": routes})

    def routes(self, host: str) -> set[str]:
        try:
            return set(self.status(host).get("routes", {}))
        except (OSError, ValueError):
            return set()

    def node_pid(self, host: str) -> int:
        return int((self.ld.node_state(host) / "alt-router.pid").read_text())

    def py(self, host: str, code: str, timeout: float = 20) -> Any:
        """Run ``code`` in ``host``'s namespace; it prints one JSON document."""
        result = run_in_netns(netns_name(self.alt.name, host), [sys.executable, "-c", textwrap.dedent(code)],
                              check=False, timeout=timeout)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


class RunningNode:
    """``alt-router run`` in a lab host, with the config ``alt`` gives it, queried over its control socket.

    ``env`` is added to the daemon's environment (e.g. ALT_ROUTER_DEBUG for the debug commands).
    """

    def __init__(
        self, lab: Lab, alt: AltTopology, host: str, workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.lab = lab
        self.host = host
        self.env = env
        self.state_dir = workdir / f"{host}-state"
        self.config = workdir / f"{host}.toml"
        self.configure(alt)
        self.process: ProcessHandle | None = None
        self.starts = 0

    def configure(self, alt: AltTopology) -> None:
        """Write the config from ``alt`` (a running node reads it again on SIGHUP)."""
        self.config.write_text(alt.node_config(self.host, self.state_dir))

    def start(self) -> RunningNode:
        self.starts += 1
        self.process = self.lab.spawn(
            self.host, [sys.executable, "-m", "alt_router.cli", "run", "-c", str(self.config)],
            name=f"alt-router-{self.starts}", log=self.lab.workdir / f"{self.host}-alt-router.log",
            env=self.env,
        )
        wait_until(self._answers, 20, what=f"alt-router on {self.host} answering",
                   on_timeout=self.diag)
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if not self.process.running():
            raise AssertionError(f"alt-router on {self.host} exited:\n{self.diag()}")
        try:
            return bool(self.query({"cmd": "status", "routes": False}).get("ok"))
        except (OSError, ValueError):
            return False

    def query(self, request: dict[str, Any]) -> dict[str, Any]:
        return query(self.state_dir, request, timeout=10)

    def status(self) -> dict[str, Any]:
        return self.query({"cmd": "status"})

    def safe_status(self) -> dict[str, Any]:
        try:
            return self.status()
        except (OSError, ValueError) as exc:
            return {"error": str(exc)}

    def routes(self) -> set[str]:
        try:
            return set(self.status().get("routes", {}))
        except (OSError, ValueError):
            return set()

    def wait_routes(
        self, expected: Iterable[str], timeout: float = 30, *, absent: Sequence[str] = ()
    ) -> None:
        want = set(expected)

        def ok() -> bool:
            have = self.routes()
            return want <= have and not (set(absent) & have)

        wait_until(ok, timeout, interval=0.3, what=f"routes {sorted(want)} (without {list(absent)}) "
                   f"on {self.host}", on_timeout=self.diag)

    def wait_json(
        self, expected: Any, timeout: float = 30, *, request: dict[str, Any] | None = None, what: str = ""
    ) -> dict[str, Any]:
        """Wait until the answer to ``request`` (``status``) contains ``expected`` (``json_subset``)."""
        req = request or {"cmd": "status"}

        def answer() -> dict[str, Any]:
            try:
                return self.query(req)
            except (OSError, ValueError) as exc:
                return {"error": str(exc)}

        def why() -> str:
            return f"{json_mismatch(answer(), expected)}\n{self.diag()}"

        def matched() -> dict[str, Any] | None:
            doc = answer()
            return doc if json_subset(doc, expected) else None

        return wait_until(matched, timeout, interval=0.3, on_timeout=why,
                          what=what or f"{req['cmd']} on {self.host} to contain {expected}")

    def exabgp_pid(self) -> int | None:
        pid = self.safe_status().get("exabgp", {}).get("pid")
        return int(pid) if pid else None

    def diag(self) -> str:
        parts = [json.dumps(self.safe_status(), indent=1, default=str)[:6000]]
        if self.process is not None:
            parts.append(f"--- {self.process.log_path} ---\n{self.process.log_tail(40)}")
        exa = self.state_dir / "exabgp.log"
        if exa.exists():
            parts.append(f"--- {exa} ---\n" + "\n".join(exa.read_text(errors="replace").splitlines()[-30:]))
        out = self.state_dir / "exabgp.out"
        if out.exists():
            parts.append(f"--- {out} ---\n" + "\n".join(out.read_text(errors="replace").splitlines()[-20:]))
        return "\n".join(parts)


@dataclass
class LabAlt:
    """Everything of an ``[alt]`` topology running in a ``Lab``: nodes, routers' daemons, ETRs."""

    lab: Lab
    alt: AltTopology
    nodes: dict[str, RunningNode]
    frr: dict[str, FrrBgpd] = field(default_factory=dict)
    bird: dict[str, Bird] = field(default_factory=dict)
    etrs: dict[str, ProcessHandle] = field(default_factory=dict)

    def diag(self) -> str:
        return "\n".join(f"=== {h}\n{n.diag()}" for h, n in self.nodes.items())


def start_alt(lab: Lab, alt: AltTopology, workdir: Path) -> LabAlt:
    """Start ``alt`` in ``lab`` the way ``alt-router lab up`` does (alt_runner._build), from the
    topology alone: the routers' tunnels, every node, the routers' daemons (FRR with zebra, BIRD
    exporting into the kernel), then the ``[alt.etrs]`` ETRs.  Returns once each process is up;
    what BGP and the ETRs then do is for the test to wait for.
    """
    tunnels: dict[str, list[ProcessHandle]] = {}
    for router in alt.routers:
        # Transits forward ALT datagrams by their kernel table (RFC 6836 §3).
        nl.set_sysctls(lab.netns(router.host), ROUTER_SYSCTLS)
        tunnels[router.host] = [lab.spawn(router.host, alt.tunnel_argv(ends), name=f"tunnel-{ends.remote}")
                                for ends in alt.tunnels_of(router.host)]
    nodes = {n.host: RunningNode(lab, alt, n.host, workdir).start() for n in alt.nodes}
    started = LabAlt(lab, alt, nodes)
    for router in alt.routers:
        _wait_tunnels(lab, alt, router.host, tunnels[router.host])
        if router.daemon == "frr":
            started.frr[router.host] = start_frr(
                lab, router.host, asn=router.asn, router_id=str(router.router_id), peers=[],
                config=alt.frr_config(router.host), zebra=True)
        else:
            started.bird[router.host] = start_bird(
                lab, router.host, asn=router.asn, router_id=str(router.router_id), peers=[],
                config=alt.bird_config(router.host))
    for etr in alt.etrs:
        started.etrs[etr.host] = lab.spawn(etr.host, alt.etr_argv(etr), name="etr")
    return started


def _wait_tunnels(lab: Lab, alt: AltTopology, host: str, procs: list[ProcessHandle]) -> None:
    """Until router ``host``'s TUNs have their inner addresses: zebra started while an address is
    being added can miss it for good (alt_runner._wait_tunnel_addresses)."""
    wanted = router_tunnel_addresses(alt, host)

    def ready() -> bool:
        if not all(p.running() for p in procs):
            raise AssertionError("\n".join(p.log_tail() for p in procs if not p.running()))
        shown = lab.exec(host, ["ip", "-o", "addr", "show"]).stdout
        return all(f" {a}/" in shown for a in wanted)

    wait_until(ready, 30, what=f"the tunnels of {host} with addresses {sorted(wanted)}",
               on_timeout=lambda: "\n".join(p.log_tail() for p in procs))
