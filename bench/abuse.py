"""Abuse bench (issue 11): replay each attack on a real ALT lab and print one row per attack.

Builds the bundled demo ALT (itr, mr, core, ms, etr; ExaBGP over userspace GRE, hold time 9 s)
under a per-run name, with the monitoring API of ``mr``, ``core`` and ``ms`` on the underlay, then
runs each attack from ``alt_router.lab.attacks`` inside a lab namespace while it measures:

- alive: the attacked node's daemon is still the same process afterwards;
- flaps: BGP session resets seen anywhere in the ALT (every node's peers, ``since`` and ``up``),
  sampled every 0.5 s and compared before/after (must be 0);
- lig: the share of ``alt-router lig`` lookups from the ITR that resolved during the attack;
- RSS of the attacked node before, at its peak during, and after the attack (after its state had
  time to settle: ``--settle`` seconds);
- the node's counters that moved, and the bytes its logs (its own and ExaBGP's) grew.

``--scale`` multiplies every attack size (the defaults are the sizes of issue 11; the CI test uses
``alt_router.lab.attacks`` at a small fraction).  Needs root, ExaBGP and iproute2.

    python bench/abuse.py                    # every attack, full size (a few minutes)
    python bench/abuse.py --attack mr-flood --scale 0.2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from alt_router.commands.lab import demo_topology_path
from alt_router.lab import wait_until
from alt_router.lab.abuse import AbuseLab, Row, add_sources, attacks, run_attack, topology, tunnel_key
from alt_router.lab.alt_runner import down, up


def print_rows(rows: list[Row]) -> None:
    print()
    print(f"{'attack':<17} {'victim':<6} {'alive':<5} {'flaps':>5} {'lig ok':>9} "
          f"{'RSS before/peak/after MiB':>26} {'log bytes':>10}")
    for r in rows:
        rss = f"{r.rss_before / 1024:.0f} / {r.rss_peak / 1024:.0f} / {r.rss_after / 1024:.0f}"
        print(f"{r.attack:<17} {r.victim:<6} {'yes' if r.alive else 'NO':<5} {r.flaps:>5} "
              f"{r.lig_ok:>4}/{r.lig_total:<4} {rss:>26} {r.log_bytes:>10}")
    print()
    for r in rows:
        print(f"{r.attack}: attack {json.dumps(r.result)}")
        top = sorted(r.counters.items(), key=lambda kv: -abs(kv[1]))[:12]
        print(f"{'':>4}counters moved: " + (", ".join(f"{k}={v}" for k, v in top) or "none"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--attack", action="append", help="run only these (repeatable)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every attack size (default 1)")
    p.add_argument("--settle", type=float, default=15.0, help="seconds after an attack before 'after'")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("abuse: needs root (network namespaces)", file=sys.stderr)
        return 2
    demo = demo_topology_path().read_text()
    name = f"abuse{os.getpid():x}"
    root = Path(tempfile.mkdtemp(prefix="alt-abuse-"))
    print(f"abuse: building lab {name} (demo ALT, hold time 9 s); load average {os.getloadavg()[0]:.2f}")
    ld, converged = up(topology(name, demo), root=root, source="bench/abuse.py", out=sys.stdout, timeout=90)
    rows: list[Row] = []
    try:
        if not converged:
            print("abuse: the ALT did not converge", file=sys.stderr)
            return 1
        lab = AbuseLab(topology(name, demo), ld)
        sources = add_sources(lab, "itr", 200)
        table = attacks(args.scale, sources, tunnel_key(lab.alt, "mr", "core"))
        chosen = [a for a in table if not args.attack or a.name in args.attack]
        wait_until(lambda: lab.lig("153.16.1.7"), 30, what="a first lookup to resolve")
        for attack in chosen:
            print(f"abuse: {attack.name} against {attack.victim} from {attack.attacker} ...", flush=True)
            rows.append(run_attack(lab, attack, args.scale, args.settle))
            r = rows[-1]
            print(f"  alive={r.alive} flaps={r.flaps} lig={r.lig_ok}/{r.lig_total} "
                  f"rss={r.rss_before}->{r.rss_peak}->{r.rss_after} KiB log+{r.log_bytes} B", flush=True)
            if not r.alive:
                break
    finally:
        down(name, root)
    print_rows(rows)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=1, default=str))
    return 0 if all(r.alive and r.flaps == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
