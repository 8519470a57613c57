"""Ingest benchmark: BIRD originates N IPv4 /24 EID prefixes to an alt-router node and to FRR bgpd.

    sudo python bench/ingest.py [--prefixes 1000000]
    python bench/ingest.py --offline [--prefixes 1000000]    # no root: the daemon's pure path only

Namespaces: ``s`` runs BIRD (and ``alt-router tunnel`` with two userspace GRE
tunnels), ``n`` runs ``alt-router run``, ``f`` runs FRR bgpd; both BGP sessions
ride userspace GRE so the two receivers see the same path.  Reported:

* time from BIRD's start until the last prefix is in the node's LPM table
  (control socket) vs until FRR's summary shows all of them received;
* peak RSS of alt-router + ExaBGP + bridge vs bgpd (sampled every 0.5 s), and
  each process's own peak RSS and CPU seconds, so the split is visible;
* LPM lookups/s on a RIB of N prefixes (one ``Path`` each, as ingest makes
  them) through ``Rib.lookup_packed`` (the forwarder's call: the destination
  as the packet's own 4 bytes) with the default DIR-24-8 FIB and with
  ``fib="tree"``, and through pytricia directly; destinations uniform over the
  table, and from a working set of 4096 active ones.

``--mode frr`` (issue 10): ``n`` is an FRR-integrated node instead (``[node] bgp = "frr"``: its
own FRR bgpd + zebra speak BGP and install the routes in ``n``'s kernel table, the node reads them
back over netlink), and ``f`` runs FRR bgpd + zebra alone.  Reported: time from BIRD's start
until the last prefix is in ``n``'s kernel table and the node's RIB (the one ``/v1/routes``
serves, checked there at the end) vs until ``f``'s zebra has all of them in the kernel (its FIB
count); peak RSS of the whole node (alt-router + its bgpd + zebra, every process in ``n``) vs
``f``'s bgpd + zebra.  Targets: both ratios <= 1.2.

``--offline`` feeds ExaBGP-shaped JSON lines (1000 NLRI per line, as ExaBGP
writes BIRD's 4 KiB UPDATEs) straight into ``NodeCore.on_line`` and reports
prefixes/s and the RSS the RIB added: the part of the pipeline that is ours.

Targets: time <= 1.2x FRR, memory <= 1.0x bgpd, >= 1,000,000 lookups/s.
The live run needs root, exabgp, bird, FRR.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alt_router.rib.paths import NO_ATTRIBUTES, PeerInfo
from alt_router.rib.paths import Path as RibPath
from alt_router.rib.rib import Rib

TOPOLOGY = """
name = "ingest"
[hosts.s]
[hosts.n]
[hosts.f]
[[segments]]
name = "u"
members = [
  { host = "s", ifname = "eth0", addresses = ["10.50.0.1/24"] },
  { host = "n", ifname = "eth0", addresses = ["10.50.0.2/24"] },
  { host = "f", ifname = "eth0", addresses = ["10.50.0.3/24"] },
]
"""
BASE = int(IPv4Address("16.0.0.0"))
# BIRD fills 4096-byte UPDATEs: about 1000 /24 NLRI each, and ExaBGP writes one JSON line per UPDATE.
NLRI_PER_LINE = 1000
CLK_TCK = os.sysconf("SC_CLK_TCK")



def per_run(topology: str) -> str:
    """The lab topology under a name of this run's own: two runs at once (two people, or a test
    beside a bench) must not remove each other's namespaces."""
    return topology.replace('name = "ingest"', f'name = "ingest{os.getpid():x}"', 1)

def prefixes(n: int) -> list[str]:
    return [f"{IPv4Address(BASE + (i << 8))}/24" for i in range(n)]


def node_toml(state_dir: Path, bgp: str = "exabgp") -> str:
    # The FRR pathspace (-N) is machine-wide: name it for this bench, not just "n".
    frr = '[frr]\npathspace = "bench-ingest-n"\n' if bgp == "frr" else ""
    return f"""{frr}
[node]
name = "n"
asn = 65001
router_id = "192.0.2.1"
tunnel_mode = "userspace"
state_dir = "{state_dir}"
max_prefix = 10000000
bgp = "{bgp}"
[eid]
announce = []
accept = ["16.0.0.0/4"]
[[peers]]
name = "s"
asn = 65100
families = ["ipv4"]
[peers.underlay]
local = "10.50.0.2"
remote = "10.50.0.1"
[peers.tunnel]
local_ipv4 = "10.255.1.2/30"
remote_ipv4 = "10.255.1.1"
"""


TUNNELS = """
mode = "userspace"
[[tunnel]]
name = "gre-n"
local = "10.50.0.1"
remote = "10.50.0.2"
addresses = ["10.255.1.1/30"]
[[tunnel]]
name = "gre-f"
local = "10.50.0.1"
remote = "10.50.0.3"
addresses = ["10.255.2.1/30"]
"""


def bird_conf(nets: list[str]) -> str:
    routes = "\n".join(f"  route {p} blackhole;" for p in nets)
    sessions = ""
    for i, (local, remote, asn) in enumerate((("10.255.1.1", "10.255.1.2", 65001),
                                               ("10.255.2.1", "10.255.2.2", 65002))):
        sessions += f"""
protocol bgp peer{i + 1} {{
  local {local} as 65100;
  neighbor {remote} as {asn};
  connect delay time 1;
  connect retry time 1;
  ipv4 {{ import none; export all; next hop self; }};
}}"""
    head = "router id 10.255.1.1;\nprotocol device {}\n"
    return f"{head}protocol static {{\n  ipv4;\n{routes}\n}}\n{sessions}\n"


FRR_CONF = """hostname f
router bgp 65002
 bgp router-id 10.255.2.2
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor 10.255.1.1 remote-as 65100
 neighbor 10.255.2.1 remote-as 65100
 neighbor 10.255.2.1 timers connect 1
 neighbor 10.255.2.1 disable-connected-check
 address-family ipv4 unicast
  neighbor 10.255.2.1 activate
 exit-address-family
!
"""


# --- process sampling ----------------------------------------------------------------------

def rss_kb(pid: int | None) -> int:
    if not pid:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of ``pid`` (0 once it is gone)."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int | None) -> list[int]:
    if not pid:
        return []
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


class Sampler:
    """Peak RSS and last CPU time per named process."""

    def __init__(self) -> None:
        self.peak_kb: dict[str, int] = {}
        self.cpu: dict[str, float] = {}

    def sample(self, name: str, pid: int | None) -> int:
        kb = rss_kb(pid)
        self.peak_kb[name] = max(self.peak_kb.get(name, 0), kb)
        cpu = cpu_seconds(pid)
        if cpu:
            self.cpu[name] = cpu
        return kb


# --- lookups -----------------------------------------------------------------------------

def lookups_per_second(nets: list[str], count: int = 1_000_000, working_set: int = 4096) -> dict[str, float]:
    """Lookups/s on a table of ``nets``: destinations uniform over the table (every lookup a cache
    miss in the tree), and drawn from ``working_set`` active destinations (a forwarder's usual day)."""
    hop = IPv4Address("10.255.1.1")
    peer = PeerInfo("s", 65100, (hop,))
    ribs = {kind: Rib(65001, [], [peer], fib=kind) for kind in ("dir24", "tree")}
    # One Path per prefix, as ingest builds them: what a lookup returns is a distinct object.
    paths = [RibPath.from_key(p, "s", hop, hop, "s", NO_ATTRIBUTES, 0.0) for p in nets]
    for rib in ribs.values():
        table = rib._loc.v4
        for p, path in zip(nets, paths, strict=True):
            table.set_key(p, path, new=True)
    rnd = random.Random(1)
    span = len(nets) << 8
    uniform = [(BASE + rnd.randrange(span)).to_bytes(4, "big") for _ in range(count)]
    active = uniform[:working_set]
    hot = [active[rnd.randrange(working_set)] for _ in range(count)]
    raw_get = ribs["tree"]._loc.v4._tree.get

    def rate(fn: Callable[[bytes], object], keys: list[bytes]) -> int:
        start = time.perf_counter()
        for k in keys:
            fn(k)
        return round(len(keys) / (time.perf_counter() - start))

    fib, tree = ribs["dir24"], ribs["tree"]
    out: dict[str, float] = {
        "lpm_lookups_per_s_rib_lookup_packed_uniform": rate(fib.lookup_packed, uniform),
        "lpm_lookups_per_s_rib_lookup_packed_working_set": rate(fib.lookup_packed, hot),
        "lpm_lookups_per_s_fib_lookup_packed_uniform": rate(fib._loc.v4.lookup_packed, uniform),
        "lpm_lookups_per_s_rib_tree_lookup_packed_uniform": rate(tree.lookup_packed, uniform),
        "lpm_lookups_per_s_rib_tree_lookup_packed_working_set": rate(tree.lookup_packed, hot),
        "lpm_lookups_per_s_pytricia_bytes_uniform": rate(raw_get, uniform),
    }
    out["lpm_fib_vs_tree_uniform"] = round(
        out["lpm_lookups_per_s_rib_lookup_packed_uniform"]
        / out["lpm_lookups_per_s_rib_tree_lookup_packed_uniform"], 2)
    return out


# --- offline: the daemon's pure path -------------------------------------------------------

def exabgp_lines(nets: list[str], per_line: int = NLRI_PER_LINE) -> list[bytes]:
    """ExaBGP 5.0 JSON update lines carrying ``nets``, as the node's bridge relays them."""
    neighbor = {"address": {"local": "10.255.1.2", "peer": "10.255.1.1"},
                "asn": {"local": 65001, "peer": 65100}, "router-id": "192.0.2.1", "direction": "receive"}
    out = []
    for i in range(0, len(nets), per_line):
        as_path = {"0": {"element": "as-sequence", "value": [65100]}}
        update = {"attribute": {"origin": "igp", "as-path": as_path},
                  "announce": {"ipv4 unicast": {"10.255.1.1": [{"nlri": p} for p in nets[i:i + per_line]]}}}
        msg = {"exabgp": "5.0.0", "time": 1.0, "host": "s", "pid": 1, "ppid": 1, "counter": i // per_line,
               "type": "update", "neighbor": {**neighbor, "message": {"update": update}}}
        out.append(json.dumps(msg).encode() + b"\n")
    return out


def offline(n: int) -> dict[str, object]:
    from alt_router.node.config import parse_config  # noqa: PLC0415 - the live run does not need it
    from alt_router.node.core import NodeCore  # noqa: PLC0415

    lines = exabgp_lines(prefixes(n))
    core = NodeCore(parse_config(node_toml(Path("/nonexistent"))))
    up = {"type": "state", "neighbor": {"address": {"local": "10.255.1.2", "peer": "10.255.1.1"},
                                        "asn": {"local": 65001, "peer": 65100}, "state": "up"}}
    core.on_line(json.dumps(up), 0.0)
    gc.collect()
    base = rss_kb(os.getpid())
    start = time.perf_counter()
    commands = 0
    for line in lines:
        commands += len(core.on_line(line, 1.0))
    seconds = time.perf_counter() - start
    del lines
    gc.collect()
    return {
        "prefixes": n, "routes": len(core.rib), "seconds": round(seconds, 2),
        "prefixes_per_s": round(n / seconds), "commands": commands,
        "rib_rss_mb": round((rss_kb(os.getpid()) - base) / 1024, 1),
        "rib_bytes_per_route": round((rss_kb(os.getpid()) - base) * 1024 / max(n, 1)),
    }


# --- live ---------------------------------------------------------------------------------

def live(n: int, timeout: float, trace: bool = False) -> dict[str, object]:
    from alt_router.lab import Lab, Topology, wait_until  # noqa: PLC0415 - needs root and the lab tools
    from alt_router.lab.daemons import start_bird, start_frr  # noqa: PLC0415

    nets = prefixes(n)
    work = Path(tempfile.mkdtemp(prefix="alt-router-ingest-"))
    with Lab(Topology.from_toml(per_run(TOPOLOGY)), workdir=work) as lab:
        (work / "tunnels.toml").write_text(TUNNELS)
        cli = [sys.executable, "-m", "alt_router.cli"]
        lab.spawn("s", [*cli, "tunnel", "-c", str(work / "tunnels.toml")], name="tunnel")
        (work / "n.toml").write_text(node_toml(work / "n-state"))
        lab.spawn("n", [*cli, "run", "-c", str(work / "n.toml")], name="node")
        frr = start_frr(lab, "f", asn=65002, router_id="10.255.2.2", peers=[], config=FRR_CONF)
        lab.spawn("f", [*cli, "tunnel", "--mode", "userspace", "--name", "gre-s", "--local", "10.50.0.3",
                        "--remote", "10.50.0.1", "--address", "10.255.2.2/30"], name="tunnel")
        state = work / "n-state"
        wait_until(lambda: _status(state), 30, what="alt-router answering")
        t0 = time.monotonic()
        bird = start_bird(lab, "s", asn=65100, router_id="10.255.1.1", peers=[], config=bird_conf(nets))
        done: dict[str, float] = {}
        peak = {"alt": 0, "frr": 0}
        sampler = Sampler()
        bgpd_pid = frr.bgpd.pid
        deadline = t0 + timeout
        while len(done) < 2 and time.monotonic() < deadline:
            st = _status(state)
            if st:
                exa = st["exabgp"]["pid"]  # type: ignore[index]
                total = sampler.sample("alt-router", st["pid"]) + sampler.sample("exabgp", exa)  # type: ignore[arg-type]
                for child in children(exa):  # type: ignore[arg-type]
                    total += sampler.sample("bridge", child)
                peak["alt"] = max(peak["alt"], total)
                if "alt" not in done and st["rib"]["routes"] >= n:  # type: ignore[index]
                    done["alt"] = time.monotonic() - t0
            peak["frr"] = max(peak["frr"], sampler.sample("bgpd", bgpd_pid))
            for handle in lab.processes:
                if handle.name in ("bird", "tunnel"):
                    sampler.sample(f"{handle.host}-{handle.name}", handle.pid)
            frr_routes = _frr_received(frr)
            if "frr" not in done and frr_routes >= n:
                done["frr"] = time.monotonic() - t0
            if trace:
                alt_routes = st["rib"]["routes"] if st else None  # type: ignore[index]
                print(f"{time.monotonic() - t0:6.1f}s alt {alt_routes} frr {frr_routes}", file=sys.stderr)
            time.sleep(0.5)
        del bird
    result: dict[str, object] = {
        "prefixes": n,
        "alt_router_seconds": _round(done.get("alt")), "frr_seconds": _round(done.get("frr")),
        "alt_router_peak_rss_mb": round(peak["alt"] / 1024, 1),
        "bgpd_peak_rss_mb": round(peak["frr"] / 1024, 1),
        "peak_rss_mb": {k: round(v / 1024, 1) for k, v in sampler.peak_kb.items()},
        "cpu_seconds": {k: round(v, 1) for k, v in sampler.cpu.items()},
        "workdir": str(work),
    }
    if done.get("alt") and done.get("frr"):
        result["time_ratio"] = round(done["alt"] / done["frr"], 2)
    if peak["frr"]:
        result["memory_ratio"] = round(peak["alt"] / peak["frr"], 2)
    return result


def netns_rss_kb(netns: str, sampler: Sampler, prefix: str, skip: tuple[str, ...] = ()) -> int:
    """Summed RSS of every process in ``netns`` (each one sampled as PREFIX-COMM), less ``skip``.

    A whole FRR-mode node is alt-router, its zebra and its bgpd, whatever their pids are after a
    restart; the short-lived vtysh runs (the node's peer poll, this bench's) are not the node.
    """
    from alt_router.lab.netns import netns_pids  # noqa: PLC0415

    total = 0
    for pid in netns_pids(netns):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm in ("vtysh", "ip", *skip):  # "ip": an `ip netns exec vtysh` not yet exec'd
            continue
        total += sampler.sample(f"{prefix}-{comm}", pid)
    return total


def _zebra_fib(frr: object) -> int:
    """BGP routes zebra has installed in the kernel (``show ip route summary json``)."""
    try:
        summary = frr.vtysh_json("show ip route summary json")  # type: ignore[attr-defined]
    except Exception:
        return 0
    return _bgp_fib(summary)


def _bgp_fib(summary: dict[str, object]) -> int:
    routes = summary.get("routes", [])
    return sum(int(r.get("fib", 0)) for r in routes if "bgp" in str(r.get("type", "")))  # type: ignore[union-attr]


def _vtysh_json(lab: object, host: str, vty_dir: Path, command: str) -> dict[str, object]:
    try:
        out = lab.exec(host, ["vtysh", "--vty_socket", str(vty_dir), "-c", command],  # type: ignore[attr-defined]
                       check=False, timeout=30).stdout
        doc = json.loads(out)
    except Exception:
        return {}
    return doc if isinstance(doc, dict) else {}


def live_frr(n: int, timeout: float, trace: bool = False) -> dict[str, object]:
    """``--mode frr``: BIRD into an FRR-integrated node and into FRR bgpd + zebra alone, same feed."""
    from alt_router.lab import Lab, Topology, wait_until  # noqa: PLC0415 - needs root and the lab tools
    from alt_router.lab.daemons import start_bird, start_frr  # noqa: PLC0415

    nets = prefixes(n)
    last = nets[-1]
    work = Path(tempfile.mkdtemp(prefix="alt-router-ingest-"))
    work.chmod(0o755)  # the node's FRR runs as the frr user under n-state/
    with Lab(Topology.from_toml(per_run(TOPOLOGY)), workdir=work) as lab:
        (work / "tunnels.toml").write_text(TUNNELS)
        cli = [sys.executable, "-m", "alt_router.cli"]
        lab.spawn("s", [*cli, "tunnel", "-c", str(work / "tunnels.toml")], name="tunnel")
        state = work / "n-state"
        (work / "n.toml").write_text(node_toml(state, bgp="frr"))
        node = lab.spawn("n", [*cli, "run", "-c", str(work / "n.toml")], name="node")
        frr = start_frr(lab, "f", asn=65002, router_id="10.255.2.2", peers=[], config=FRR_CONF, zebra=True)
        lab.spawn("f", [*cli, "tunnel", "--mode", "userspace", "--name", "gre-s", "--local", "10.50.0.3",
                        "--remote", "10.50.0.1", "--address", "10.255.2.2/30"], name="tunnel")
        wait_until(lambda: _status(state) or not node.running(), 60, what="the FRR-mode node answering",
                   on_timeout=node.log_tail)
        if not node.running():
            raise SystemExit(f"the FRR-mode node exited:\n{node.log_tail()}")
        ns_n, ns_f = lab.netns("n"), lab.netns("f")
        vty_n = state / "frr"
        t0 = time.monotonic()
        bird = start_bird(lab, "s", asn=65100, router_id="10.255.1.1", peers=[], config=bird_conf(nets))
        done: dict[str, float] = {}
        seen: dict[str, int] = {}
        deadline = t0 + timeout

        def node_rib() -> int:
            st = _status(state)
            return int(st["rib"]["routes"]) if st else 0  # type: ignore[index]

        def node_bgpd() -> int:
            summary = _vtysh_json(lab, "n", vty_n, "show bgp ipv4 unicast summary json")
            return int(summary.get("peers", {}).get("10.255.1.1", {}).get("pfxRcd", 0))  # type: ignore[attr-defined]

        # One poller per figure, each timing its own: a slow vtysh answer from one daemon under
        # load must not hold back the sampling of the others.  The node's bgpd and zebra figures
        # show where its time goes (BGP, the kernel, or reading the kernel back).
        watched: dict[str, Callable[[], int]] = {
            "node": node_rib,
            "node_bgpd": node_bgpd,
            "node_zebra": lambda: _bgp_fib(_vtysh_json(lab, "n", vty_n, "show ip route summary json")),
            "frr": lambda: _zebra_fib(frr),
            "frr_bgpd": lambda: _frr_received(frr),
        }

        def poll(name: str, count: Callable[[], int]) -> None:
            # zebra walks its whole table for a route summary: asked often, that slows the very
            # installation it measures (both zebras alike, but the figures are longer for it).
            interval = 1.0 if name in ("node_zebra", "frr") else 0.2
            while time.monotonic() < deadline and not {"node", "frr"} <= done.keys():
                seen[name] = count()
                if seen[name] >= n:
                    done[name] = time.monotonic() - t0
                    return
                time.sleep(interval)

        pollers = [threading.Thread(target=poll, args=item, daemon=True) for item in watched.items()]
        for thread in pollers:
            thread.start()
        peak = {"node": 0, "frr": 0}
        sampler = Sampler()
        while any(t.is_alive() for t in pollers):
            peak["node"] = max(peak["node"], netns_rss_kb(ns_n, sampler, "node"))
            peak["frr"] = max(peak["frr"], netns_rss_kb(ns_f, sampler, "frr", skip=("python3",)))
            if trace:
                print(f"{time.monotonic() - t0:6.1f}s {seen} done {done}", file=sys.stderr)
            time.sleep(0.5)
        # Visible in the monitoring API too: /v1/routes has the last prefix, and the whole table.
        api = lab.exec("n", [sys.executable, "-c", (
            "import json, urllib.request\n"
            f"u = 'http://127.0.0.1:8179/v1/routes?prefix={last}&limit=1'\n"
            "print(urllib.request.urlopen(u, timeout=30).read().decode())")], check=False, timeout=60)
        try:
            api_doc = json.loads(api.stdout)
        except ValueError:
            api_doc = {"error": api.stdout[-300:] + api.stderr[-300:]}
        kernel = lab.exec("n", ["ip", "-4", "route", "show", "proto", "bgp", "root", "16.0.0.0/4"],
                          check=False, timeout=120).stdout.count("\n")
        final = _status(state) or {}
        # SIGTERM must stop the node within 3 s whatever the table size (node/daemon.py).
        t_stop, wall_stop = time.monotonic(), time.time()
        node.signal(signal.SIGTERM)
        wait_until(lambda: not node.running(), 60, interval=0.02, what="the FRR-mode node stopping")
        stop_seconds = time.monotonic() - t_stop
        logged, message = _logged_at(node.read_log(), " stopped")
        stopped = f" (its stop logged at {logged - wall_stop:.2f} s: {message})" if logged else ""
        print(f"stop: {stop_seconds:.2f} s{stopped}", file=sys.stderr)
        left = lab.exec("n", ["ip", "-4", "route", "show", "proto", "bgp", "root", "16.0.0.0/4"],
                        check=False, timeout=120).stdout.count("\n")
        del bird
    result: dict[str, object] = {
        "mode": "frr",
        "node_stop_seconds": round(stop_seconds, 2),
        "node_kernel_routes_after_stop": left,
        "prefixes": n,
        "node_seconds": _round(done.get("node")),
        "node_bgpd_received_seconds": _round(done.get("node_bgpd")),
        "node_zebra_fib_seconds": _round(done.get("node_zebra")),
        "frr_zebra_fib_seconds": _round(done.get("frr")),
        "frr_bgpd_received_seconds": _round(done.get("frr_bgpd")),
        "node_peak_rss_mb": round(peak["node"] / 1024, 1),
        "frr_peak_rss_mb": round(peak["frr"] / 1024, 1),
        "peak_rss_mb": {k: round(v / 1024, 1) for k, v in sampler.peak_kb.items()},
        "cpu_seconds": {k: round(v, 1) for k, v in sampler.cpu.items()},
        "node_kernel_routes_at_end": kernel,
        "api_last_prefix": (api_doc.get("routes") or [None])[0] if isinstance(api_doc, dict) else api_doc,
        "node_status_at_end": {"rib": final.get("rib"), "frr": final.get("frr")},
        "workdir": str(work),
    }
    if done.get("node") and done.get("frr"):
        result["time_ratio"] = round(done["node"] / done["frr"], 2)
    if peak["frr"]:
        result["memory_ratio"] = round(peak["node"] / peak["frr"], 2)
    return result


def _logged_at(log_text: str, words: str) -> tuple[float | None, str]:
    """The time (epoch seconds) and message of the node's last logfmt line whose message has ``words``
    right after the node's name ("node n stopped in 1.20s (...)")."""
    from datetime import datetime  # noqa: PLC0415

    for line in reversed(log_text.splitlines()):
        start = line.find('msg="node ')
        if line.startswith("time=") and start >= 0:
            message = line[start + len('msg="'):].rstrip().removesuffix('"')
            rest = message.split(" ", 2)[2:]  # after "node NAME"
            if rest and f" {rest[0]}".startswith(words):
                stamp = line.split()[0][len("time="):].replace("Z", "+00:00")
                return datetime.fromisoformat(stamp).timestamp(), message
    return None, ""


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _status(state: Path) -> dict[str, object] | None:
    from alt_router.node.daemon import query  # noqa: PLC0415

    try:
        answer = query(state, {"cmd": "status", "routes": False}, timeout=30)
    except (OSError, ValueError):
        return None
    return answer if answer.get("ok") else None


def _frr_received(frr: object) -> int:
    try:
        summary = frr.vtysh_json("show bgp ipv4 unicast summary json")  # type: ignore[attr-defined]
        return int(summary.get("peers", {}).get("10.255.2.1", {}).get("pfxRcd", 0))
    except Exception:
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--prefixes", type=int, default=1_000_000)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--offline", action="store_true", help="only the daemon's pure path, no namespaces")
    ap.add_argument("--mode", choices=("exabgp", "frr"), default="exabgp",
                    help="the node's BGP speaker: ExaBGP (default) or its own FRR (issue 10)")
    ap.add_argument("--no-lookups", action="store_true", help="skip the LPM lookup measurement")
    ap.add_argument("--trace", action="store_true", help="print both route counts every sample (stderr)")
    args = ap.parse_args()
    if args.offline:
        result = offline(args.prefixes)
    elif args.mode == "frr":
        result = live_frr(args.prefixes, args.timeout, args.trace)
    else:
        result = live(args.prefixes, args.timeout, args.trace)
    if not args.no_lookups:
        result.update(lookups_per_second(prefixes(args.prefixes)))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
