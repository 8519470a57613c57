"""Helpers for the node integration tests: node configs, ``alt-router run`` in a lab host, status polls."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alt_router.lab import Lab, ProcessHandle, json_mismatch, json_subset, wait_until
from alt_router.node.daemon import query

ACCEPT = ("153.16.0.0/12", "2001:db8::/32")


@dataclass(frozen=True)
class PeerSpec:
    name: str
    asn: int
    local: str  # underlay
    remote: str
    inner4: tuple[str, str]  # (local/len, remote)
    inner6: tuple[str, str] | None = None
    key: int | None = None
    md5: str | None = None
    max_prefix: int | None = None
    hold_time: int = 9


@dataclass(frozen=True)
class NodeSpec:
    host: str
    asn: int
    router_id: str
    announce: tuple[str, ...]
    peers: tuple[PeerSpec, ...]
    accept: tuple[str, ...] = ACCEPT
    extra: str = ""
    tags: dict[str, str] = field(default_factory=dict)


def node_toml(spec: NodeSpec, state_dir: Path) -> str:
    q = json.dumps
    lines = [
        "[node]", f"name = {q(spec.host)}", f"asn = {spec.asn}", f"router_id = {q(spec.router_id)}",
        'tunnel_mode = "userspace"', f"state_dir = {q(str(state_dir))}", "",
        "[eid]", f"announce = {q(list(spec.announce))}", f"accept = {q(list(spec.accept))}",
    ]
    for p in spec.peers:
        lines += ["", "[[peers]]", f"name = {q(p.name)}", f"asn = {p.asn}", f"hold_time = {p.hold_time}"]
        if p.key is not None:
            lines.append(f"key = {p.key}")
        if p.md5 is not None:
            lines.append(f"md5_password = {q(p.md5)}")
        if p.max_prefix is not None:
            lines.append(f"max_prefix = {p.max_prefix}")
        lines += ["[peers.underlay]", f"local = {q(p.local)}", f"remote = {q(p.remote)}", "[peers.tunnel]",
                  f"local_ipv4 = {q(p.inner4[0])}", f"remote_ipv4 = {q(p.inner4[1])}"]
        if p.inner6 is not None:
            lines += [f"local_ipv6 = {q(p.inner6[0])}", f"remote_ipv6 = {q(p.inner6[1])}"]
    return "\n".join(lines) + "\n" + spec.extra


class RunningNode:
    """``alt-router run`` in a lab host, queried over its control socket."""

    def __init__(self, lab: Lab, spec: NodeSpec, workdir: Path) -> None:
        self.lab = lab
        self.spec = spec
        self.state_dir = workdir / f"{spec.host}-state"
        self.config = workdir / f"{spec.host}.toml"
        self.config.write_text(node_toml(spec, self.state_dir))
        self.process: ProcessHandle | None = None
        self.starts = 0

    def start(self) -> RunningNode:
        self.starts += 1
        self.process = self.lab.spawn(
            self.spec.host, [sys.executable, "-m", "alt_router.cli", "run", "-c", str(self.config)],
            name=f"alt-router-{self.starts}", log=self.lab.workdir / f"{self.spec.host}-alt-router.log",
        )
        wait_until(self._answers, 20, what=f"alt-router on {self.spec.host} answering",
                   on_timeout=self.diag)
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if not self.process.running():
            raise AssertionError(f"alt-router on {self.spec.host} exited:\n{self.diag()}")
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
                   f"on {self.spec.host}", on_timeout=self.diag)

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
                          what=what or f"{req['cmd']} on {self.spec.host} to contain {expected}")

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
