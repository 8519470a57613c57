"""A generated ALT of 30+ BGP speakers in the lab (issue 9 part 5): convergence, RIB sizes, hops, RSS.

    sudo python bench/alt_scale.py [--levels 3 --fanout 4 --sites 160 --frr-transits 3
                                    --bird-transits 3 --map-resolvers 3]

``alt-router lab generate``'s ALT (alt_router/lab/generate.py: a tree of aggregating ALT nodes,
Map-Server leaves, FRR and BIRD transits on parent-child links, Map-Resolvers at the root and
at leaves) is brought up with ``alt_router.lab.alt_runner.up`` and measured:

* time to converge (every ALT node with every peer up and every route the routing model says
  it must learn);
* RIB size per level, measured (node status, FRR ``vtysh``, BIRD ``birdc``) beside the model's
  figure with aggregation and without (``AltTopology.simulate_ribs`` on the same ALT generated
  with ``--no-aggregation``: RFC 6836 §7.1's point is the difference);
* Map-Request hops from ``lig --trace`` (from the ITR through each Map-Resolver to the ETR's
  EID) against the shortest path in the topology;
* lookup latency from every Map-Resolver (``lig`` to an EID under every leaf: the registered
  one answers from the ETR, the others with the Map-Server's negative reply);
* RSS per node (every process in the host's namespace: node + ExaBGP, zebra + bgpd, bird).

Needs root, exabgp, FRR (zebra, bgpd, vtysh), BIRD.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alt_router.lab.alt_runner import down, up
from alt_router.lab.alt_topology import AltTopology
from alt_router.lab.daemon_text import bird_route_prefixes, frr_prefixes
from alt_router.lab.generate import generate
from alt_router.lab.netns import netns_pids
from alt_router.lab.processes import run_in_netns
from alt_router.lab.topology import netns_name
from alt_router.node.daemon import query


class Tee(io.TextIOBase):
    def __init__(self, *outs: Any) -> None:
        self.outs = outs

    def write(self, text: str) -> int:
        for o in self.outs:
            o.write(text)
            o.flush()
        return len(text)


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def level_of(host: str, alt: AltTopology) -> str:
    if host.startswith("l"):
        return f"level {host[1]}"
    if host.startswith("mr"):
        return "Map-Resolver"
    return f"{alt.router(host).daemon.upper()} transit"


def measured_rib(alt: AltTopology, ld: Any, host: str) -> int | None:
    try:
        if host in {n.host for n in alt.nodes}:
            return len(query(ld.node_state(host), {"cmd": "status"}, timeout=20).get("routes", {}))
        router = alt.router(host)
        ns = netns_name(alt.name, host)
        if router.daemon == "frr":
            text = run_in_netns(ns, ["vtysh", "--vty_socket", str(ld.frr_dir(host)), "-c",
                                     "show bgp ipv4 unicast json"], timeout=30).stdout
            return len(frr_prefixes(json.loads(text)))
        sock = ld.bird_dir(host) / "bird.ctl"
        return len(bird_route_prefixes(run_in_netns(ns, ["birdc", "-s", str(sock), "show", "route"],
                                                    timeout=30).stdout))
    except (OSError, ValueError, KeyError) as exc:
        print(f"  ({host}: {exc})")
        return None


def lig(alt: AltTopology, mr: str, eid: str, *extra: str) -> tuple[int, dict[str, Any]]:
    address = str(alt.underlay("itr", mr)[1])
    argv = [sys.executable, "-m", "alt_router.cli", "lig", eid, "-m", address, "--json", "-t", "3", *extra]
    proc = run_in_netns(netns_name(alt.name, "itr"), argv, check=False, timeout=120)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        return proc.returncode, {"error": proc.stdout + proc.stderr}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--fanout", type=int, default=4)
    p.add_argument("--sites", type=int, default=160)
    p.add_argument("--frr-transits", type=int, default=3)
    p.add_argument("--bird-transits", type=int, default=3)
    p.add_argument("--map-resolvers", type=int, default=3)
    p.add_argument("--timeout", type=float, default=900.0, help="convergence timeout (s)")
    p.add_argument("--keep", action="store_true", help="leave the lab up")
    a = p.parse_args()
    if os.geteuid() != 0:
        print("bench/alt_scale.py: needs root", file=sys.stderr)
        return 2
    kw = {"frr_transits": a.frr_transits, "bird_transits": a.bird_transits,
          "map_resolvers": a.map_resolvers, "name": "altscale"}
    gen = generate(a.levels, a.fanout, a.sites, **kw)
    flat = generate(a.levels, a.fanout, a.sites, aggregation=False, **kw)
    alt = AltTopology.from_toml(gen.text)
    model = alt.simulate_ribs()
    model_flat = AltTopology.from_toml(flat.text).simulate_ribs()
    print(f"generated: {gen.speakers} BGP speakers ({len(gen.nodes)} ALT nodes in {a.levels} levels of "
          f"fanout {a.fanout}, {len(gen.transits)} transits {sorted(gen.transits.values())}, "
          f"{len(gen.map_resolvers)} Map-Resolvers), {a.sites} sites, {len(alt.tunnels)} GRE tunnels")
    root = Path(tempfile.mkdtemp(prefix="alt-router-scale-"))
    root.chmod(0o755)
    log = open(root / "up.out", "w")  # noqa: SIM115 - closed in finally
    out = cast(TextIO, Tee(sys.stdout, log))
    try:
        t0 = time.monotonic()
        ld, converged = up(alt, root=root, source="bench", out=out, timeout=a.timeout, etr_timeout=60)
        up_s = time.monotonic() - t0
        text = (root / "up.out").read_text()
        m = re.search(r"the ALT converged in ([0-9.]+) s", text)
        conv_s = float(m.group(1)) if m else float("nan")
        print(f"\nlab up returned after {up_s:.1f} s; converged: {converged} "
              f"(BGP convergence {conv_s:.1f} s after the last process started)")
        if not converged:
            return 1

        # RIB sizes per level.
        speakers = [n.host for n in alt.nodes] + [r.host for r in alt.routers]
        by_level: dict[str, list[tuple[int | None, int, int]]] = {}
        for host in speakers:
            got = measured_rib(alt, ld, host)
            by_level.setdefault(level_of(host, alt), []).append(
                (got, len(model.get(host, {})), len(model_flat.get(host, {}))))
        print("\nRIB size (IPv4 routes learned), mean per speaker of the level:")
        print(f"  {'level':<16} {'speakers':>8} {'measured':>10} {'model':>8} {'no aggregation':>15}")
        for level in sorted(by_level):
            rows = by_level[level]
            meas = [r[0] for r in rows if r[0] is not None]
            print(f"  {level:<16} {len(rows):>8} {statistics.mean(meas) if meas else float('nan'):>10.1f} "
                  f"{statistics.mean(r[1] for r in rows):>8.1f} {statistics.mean(r[2] for r in rows):>15.1f}")

        # Hops and latency from every Map-Resolver.
        assert alt.demo is not None
        target = str(alt.demo.eid)
        print(f"\nMap-Request hops to {target} (ETR behind {gen.etr_map_server}) and lookup latency:")
        print(f"  {'MR':<5} {'trace hops':>10} {'shortest':>9} {'path':<40} {'lig p50 ms':>11} {'max ms':>8} "
              f"{'answered':>9}")
        leaves = [n for n in gen.nodes if n.sites]
        for mr in gen.map_resolvers:
            status, doc = lig(alt, mr, target, "--trace", "--max-hops", "16")
            names = {}
            for t in alt.tunnels:
                for side in (t.a, t.b):
                    e = alt.ends(t, side)
                    names[e.inner4_local.split("/")[0]] = side
                    names[str(e.underlay_local)] = side
            hops = [names.get(h.get("router") or "", h.get("router") or "?") for h in doc.get("hops", [])
                    if h.get("router")]
            shortest = alt.shortest_hops(mr, gen.etr_map_server)
            rtts: list[float] = []
            answered = 0
            for leaf in leaves:
                eid = str(leaf.sites[-1].network_address + 1) if leaf.host != gen.etr_map_server else target
                _code, d = lig(alt, mr, eid)
                if d.get("replies"):
                    answered += 1
                    rtts.append(float(d["replies"][0]["rtt_ms"]))
            print(f"  {mr:<5} {len(hops):>10} {shortest if shortest is not None else '-':>9} "
                  f"{' '.join(hops)[:40]:<40} {statistics.median(rtts) if rtts else float('nan'):>11.2f} "
                  f"{max(rtts) if rtts else float('nan'):>8.2f} {answered:>4}/{len(leaves):<4}")
            if status != 0:
                print(f"        trace exit {status}: {json.dumps(doc)[:300]}")

        # RSS per node.
        print("\nRSS per host (every process in its namespace):")
        per_kind: dict[str, list[int]] = {}
        for host in speakers:
            kib = rss_kib(netns_pids(netns_name(alt.name, host)))
            kind = "ALT node" if host in {n.host for n in alt.nodes} else level_of(host, alt)
            per_kind.setdefault(kind, []).append(kib)
        total = 0
        for kind, values in sorted(per_kind.items()):
            total += sum(values)
            print(f"  {kind:<16} {len(values):>3} hosts: mean {statistics.mean(values) / 1024:6.1f} MiB, "
                  f"max {max(values) / 1024:6.1f} MiB")
        print(f"  all speakers: {total / 1024:.0f} MiB")
        return 0
    finally:
        if not a.keep:
            down(alt.name, root, out=out)
        log.close()
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
