"""Ingest benchmark: BIRD originates N IPv4 /24 EID prefixes to an alt-router node and to FRR bgpd.

    sudo python bench/ingest.py [--prefixes 1000000]

Namespaces: ``s`` runs BIRD (and ``alt-router tunnel`` with two userspace GRE
tunnels), ``n`` runs ``alt-router run``, ``f`` runs FRR bgpd; both BGP sessions
ride userspace GRE so the two receivers see the same path.  Reported:

* time from BIRD's start until the last prefix is in the node's LPM table
  (control socket) vs until FRR's summary shows all of them received;
* peak RSS of alt-router + ExaBGP + bridge vs bgpd (sampled every 0.5 s);
* LPM lookups/s on a table of N prefixes, through ``alt_router.rib.table.LpmTable``
  (the RIB's table type) in this process, and through pytricia directly.

Targets: time <= 1.2x FRR, memory <= 1.0x bgpd, >= 1,000,000 lookups/s.
Needs root, exabgp, bird, FRR.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alt_router.lab import Lab, Topology, wait_until
from alt_router.lab.daemons import start_bird, start_frr
from alt_router.node.daemon import query
from alt_router.rib.table import LpmTable

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


def prefixes(n: int) -> list[str]:
    return [f"{IPv4Address(BASE + (i << 8))}/24" for i in range(n)]


def node_toml(state_dir: Path) -> str:
    return f"""
[node]
name = "n"
asn = 65001
router_id = "192.0.2.1"
tunnel_mode = "userspace"
state_dir = "{state_dir}"
max_prefix = 10000000
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


def children(pid: int | None) -> list[int]:
    if not pid:
        return []
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def lookups_per_second(nets: list[str], count: int = 1_000_000) -> tuple[float, float]:
    table: LpmTable[int] = LpmTable(4)
    for i, p in enumerate(nets):
        table.insert(p, i)
    rnd = random.Random(1)
    span = len(nets) << 8
    addrs = [str(IPv4Address(BASE + rnd.randrange(span))) for _ in range(count)]
    start = time.perf_counter()
    for a in addrs:
        table.lookup(a)
    api_rate = count / (time.perf_counter() - start)
    tree = table._tree
    get_key = tree.get_key
    start = time.perf_counter()
    for a in addrs:
        get_key(a)
    raw_rate = count / (time.perf_counter() - start)
    return api_rate, raw_rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefixes", type=int, default=1_000_000)
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    n = args.prefixes
    nets = prefixes(n)
    work = Path(tempfile.mkdtemp(prefix="alt-router-ingest-"))
    with Lab(Topology.from_toml(TOPOLOGY), workdir=work) as lab:
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
        start_bird(lab, "s", asn=65100, router_id="10.255.1.1", peers=[], config=bird_conf(nets))
        done: dict[str, float] = {}
        peak = {"alt": 0, "frr": 0}
        bgpd_pid = frr.bgpd.pid
        deadline = t0 + args.timeout
        while len(done) < 2 and time.monotonic() < deadline:
            st = _status(state)
            if st:
                exa = st["exabgp"]["pid"]
                peak["alt"] = max(peak["alt"], rss_kb(st["pid"]) + rss_kb(exa)
                                  + sum(rss_kb(c) for c in children(exa)))
                if "alt" not in done and st["rib"]["routes"] >= n:
                    done["alt"] = time.monotonic() - t0
            peak["frr"] = max(peak["frr"], rss_kb(bgpd_pid))
            if "frr" not in done and _frr_received(frr) >= n:
                done["frr"] = time.monotonic() - t0
            time.sleep(0.5)
        api_rate, raw_rate = lookups_per_second(nets)
        result = {
            "prefixes": n,
            "alt_router_seconds": done.get("alt"), "frr_seconds": done.get("frr"),
            "alt_router_peak_rss_mb": round(peak["alt"] / 1024, 1),
            "bgpd_peak_rss_mb": round(peak["frr"] / 1024, 1),
            "lpm_lookups_per_s_api": round(api_rate), "lpm_lookups_per_s_pytricia": round(raw_rate),
        }
        if done.get("alt") and done.get("frr"):
            result["time_ratio"] = round(done["alt"] / done["frr"], 2)
        if peak["frr"]:
            result["memory_ratio"] = round(peak["alt"] / peak["frr"], 2)
        print(json.dumps(result, indent=1))
    return 0


def _status(state: Path) -> dict[str, object] | None:
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


if __name__ == "__main__":
    sys.exit(main())
