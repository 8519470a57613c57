"""The abuse harness (issue 11): a demo ALT with its APIs on the underlay, attacks run inside it,
and what each did to the node it targeted (edge).

Shared by ``bench/abuse.py`` (full-size attacks, a printed table) and the CI-sized integration
tests.  Measured per attack:

- alive: the attacked node's daemon is still the same process afterwards;
- flaps: BGP session resets seen anywhere in the ALT (every node's peers, ``since`` and ``up``),
  sampled every 0.5 s and compared before/after;
- lig: lookups from the ITR that resolved during the attack;
- RSS of the attacked node before, at its peak during, and after the attack;
- the node's drop/refusal counters that moved, and the bytes its logs (its own and ExaBGP's) grew.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alt_router.lab.alt_runner import LabDir
from alt_router.lab.alt_topology import AltTopology
from alt_router.lab.processes import run_in_netns
from alt_router.lab.topology import netns_name
from alt_router.node.control import query

TOKEN = "abuse-bench-token"
SITE_KEY = "demo-site1-key"
ADDR = {"itr": "10.0.0.1", "etr": "10.0.0.2", "mr": "10.0.0.11", "core": "10.0.0.12", "ms": "10.0.0.13"}
ALT_NODES = ("mr", "core", "ms")


def topology(name: str, demo_toml: str) -> AltTopology:
    """The bundled demo ALT (``demo_toml``) renamed, with the API of each ALT node on the underlay."""
    text = demo_toml.replace('name = "demo"', f'name = "{name}"')
    for host in ALT_NODES:
        api = f'extra = """\n[api]\nlisten = "{ADDR[host]}"\ntoken = "{TOKEN}"\n"""\n'
        text = text.replace(f"[alt.nodes.{host}]\n", f"[alt.nodes.{host}]\n{api}", 1)
    return AltTopology.from_toml(text)


@dataclass
class Attack:
    name: str
    attacker: str  # the lab host the traffic comes from
    victim: str  # the node whose RSS, counters and logs are watched
    argv: Callable[[float], list[str]]  # attack arguments for a scale
    also: tuple[str, Callable[[float], list[str]]] | None = None  # a second attack at the same time


@dataclass
class Row:
    attack: str
    victim: str
    alive: bool
    flaps: int
    lig_ok: int
    lig_total: int
    rss_before: int
    rss_peak: int
    rss_after: int
    log_bytes: int
    result: dict[str, Any]
    counters: dict[str, int] = field(default_factory=dict)


class AbuseLab:
    def __init__(self, alt: AltTopology, ld: LabDir) -> None:
        self.alt = alt
        self.ld = ld
        self.sources: list[str] = []  # extra addresses on the attacker (add_sources)

    def ns(self, host: str) -> str:
        return netns_name(self.alt.name, host)

    def pid(self, host: str) -> int:
        return int((self.ld.node_state(host) / "alt-router.pid").read_text())

    def status(self, host: str, timeout: float = 5.0) -> dict[str, Any]:
        return query(self.ld.node_state(host), {"cmd": "status", "routes": False}, timeout=timeout)

    def sessions(self) -> dict[tuple[str, str], tuple[bool, Any]]:
        out: dict[tuple[str, str], tuple[bool, Any]] = {}
        for host in ALT_NODES:
            try:
                peers = self.status(host, timeout=2.0).get("peers", {})
            except (OSError, ValueError):
                continue  # a busy node answers late: what counts is its neighbours' view
            for peer, p in peers.items():
                out[(host, peer)] = (bool(p.get("up")), p.get("since"))
        return out

    def log_bytes(self, host: str) -> int:
        files = [self.ld.logs / f"{host}-alt-router.log", self.ld.node_state(host) / "exabgp.log"]
        return sum(f.stat().st_size for f in files if f.exists())

    def lig(self, eid: str) -> bool:
        argv = [sys.executable, "-m", "alt_router.cli", "lig", eid, "-m", ADDR["mr"], "-t", "2"]
        return run_in_netns(self.ns("itr"), argv, check=False, timeout=30).returncode == 0

    def attack(self, host: str, argv: list[str], timeout: float) -> dict[str, Any]:
        result = run_in_netns(self.ns(host), [sys.executable, "-m", "alt_router.lab.attacks", *argv],
                              check=False, timeout=timeout)
        if result.returncode != 0:
            return {"error": result.stderr.strip()[-300:]}
        parsed: dict[str, Any] = json.loads(result.stdout)
        return parsed


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def flat_counters(status: dict[str, Any]) -> dict[str, int]:
    """Every integer in a status answer, by dotted path (the counters among them)."""
    out: dict[str, int] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, int):
            out[prefix] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)

    walk("", status)
    return out


def tunnel_key(alt: AltTopology, a: str, b: str) -> int:
    return next(t.key for t in alt.tunnels if {t.a, t.b} == {a, b})


def add_sources(lab: AbuseLab, host: str, count: int) -> list[str]:
    """``count`` extra addresses on ``host``'s underlay interface, each in a /24 of its own."""
    sources = []
    for i in range(count):
        addr = f"10.{100 + i // 250}.{i % 250}.{1 + (i // 250) % 250}"
        sources.append(addr)
    batch = "".join(f"addr add {a}/32 dev eth0\n" for a in sources)
    run_in_netns(lab.ns(host), ["ip", "-batch", "-"], input=batch, check=True, timeout=60)
    # Routes back to them, so that answers (and reflections) really leave the answering node.
    routes = "".join(f"route replace 10.{100 + j}.0.0/16 via {ADDR[host]}\n" for j in range(count // 250 + 1))
    for other in ("mr", "ms", "etr"):  # whoever may answer: MR (negative), MS (proxy), ETR
        run_in_netns(lab.ns(other), ["ip", "-batch", "-"], input=routes, check=True, timeout=60)
    return sources


def attacks(scale: float, sources: list[str], gre_key: int) -> list[Attack]:
    """The attacks of issue 11 at ``scale`` times their reported size.

    ``sources``: the MR flood's source addresses; ``gre_key``: the key of the mr-core tunnel.
    """
    def n(x: int) -> int:
        return max(1, int(x * scale))

    def seconds(x: float) -> float:
        return max(2.0, x * min(scale, 1.0))

    return [
        Attack("register-flood", "etr", "ms", lambda s: [
            "register-flood", "--target", ADDR["ms"], "--key", SITE_KEY, "--rloc", ADDR["etr"],
            "--count", str(n(60_000))]),
        Attack("register-refused", "etr", "ms", lambda s: [
            "register-refused", "--target", ADDR["ms"], "--count", str(n(160_000))]),
        # The route events alone first: what they cost the transit (its bounded event history fills)
        # is then not counted against the stream clients in the next row.
        Attack("route-churn", "etr", "core", lambda s: [
            "route-churn", "--target", ADDR["ms"], "--token", TOKEN, "--prefix", "153.19.0.0/16",
            "--count", str(n(3_000))]),
        # 200 stream clients that never read on a transit node while ~6,000 route events cross it.
        Attack("stream-clients", "itr", "core", lambda s: [
            "stream-clients", "--target", ADDR["core"], "--token", TOKEN, "--count", str(n(200)),
            "--duration", str(max(10.0, seconds(30)))],
            also=("etr", lambda s: [
                "route-churn", "--target", ADDR["ms"], "--token", TOKEN, "--prefix", "153.18.0.0/16",
                "--count", str(n(3_000))])),
        Attack("mr-flood", "itr", "mr", lambda s: [
            "mr-flood", "--target", ADDR["mr"], "--sources", ",".join(sources[: n(200)]), "--rate", "50",
            "--duration", str(seconds(20)), "--eid-space", "153.16.0.0/12"]),
        # From mr's underlay address with the mr-core tunnel's key, so the packets reach core's forwarder.
        Attack("gre-fuzz", "itr", "core", lambda s: [
            "gre-fuzz", "--target", ADDR["core"], "--count", str(n(100_000)), "--reply-to", ADDR["itr"],
            "--spoof", ADDR["mr"], "--gre-key", str(gre_key)]),
        Attack("half-open", "itr", "ms", lambda s: [
            "half-open", "--target", ADDR["ms"], "--count", str(n(1_000)),
            "--duration", "60"]),  # ends as soon as the server has closed every one
    ]



def run_attack(lab: AbuseLab, attack: Attack, scale: float, settle: float) -> Row:
    victim_pid = lab.pid(attack.victim)
    before_sessions = lab.sessions()
    rss_before = rss_kib(victim_pid)
    logs_before = lab.log_bytes(attack.victim)
    counters_before = flat_counters(lab.status(attack.victim))
    peak = [rss_before]
    flaps: set[tuple[str, str]] = set()
    lig = [0, 0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(victim_pid))
            for key, (up_now, since) in lab.sessions().items():
                was = before_sessions.get(key)
                if was is not None and (not up_now or since != was[1]):
                    flaps.add(key)
            done.wait(0.5)

    def lookups() -> None:
        while not done.is_set():
            lig[1] += 1
            lig[0] += lab.lig("153.16.1.7")

    threads = [threading.Thread(target=watch, daemon=True), threading.Thread(target=lookups, daemon=True)]
    also: list[dict[str, Any]] = []
    if attack.also is not None:
        host, make = attack.also
        threads.append(threading.Thread(
            target=lambda: also.append(lab.attack(host, make(scale), timeout=600)), daemon=True))
    for t in threads:
        t.start()
    result = lab.attack(attack.attacker, attack.argv(scale), timeout=600)
    if len(threads) > 2:
        threads[2].join(timeout=600)
        result["also"] = also[0] if also else None
    done.set()
    for t in threads:
        t.join(timeout=60)
    # Give the node time to drop what the attack left (slow clients, expired state), then look again.
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        peak[0] = max(peak[0], rss_kib(victim_pid))
        time.sleep(0.5)
    after_sessions = lab.sessions()
    for key, (up_now, since) in after_sessions.items():
        was = before_sessions.get(key)
        if was is not None and (not up_now or since != was[1]):
            flaps.add(key)
    alive = rss_kib(victim_pid) > 0 and lab.pid(attack.victim) == victim_pid
    counters_after = flat_counters(lab.status(attack.victim)) if alive else {}
    moved = {
        k: v - counters_before.get(k, 0)
        for k, v in counters_after.items()
        if v != counters_before.get(k, 0) and not k.endswith(("time", "since", "uptime", "pid", "seq"))
        and ("drop" in k or "refused" in k or "suppress" in k or "limit" in k or "cap" in k
             or "overflow" in k or "malformed" in k or "icmp" in k or "stream" in k or "expired" in k)
    }
    return Row(attack.name, attack.victim, alive, len(flaps), lig[0], lig[1], rss_before, peak[0],
               rss_kib(victim_pid), lab.log_bytes(attack.victim) - logs_before, result, moved)
