"""``alt-router lab up|status|down|demo``: a whole ALT in network namespaces on one machine.

    alt-router lab up TOPOLOGY.toml      check every node config, build it, wait for BGP, register ETRs
    alt-router lab status TOPOLOGY|NAME  what runs, peers up, routes; explains leftovers
    alt-router lab down TOPOLOGY|NAME    remove everything (also what a crashed `up` left)
    alt-router lab demo [--name NAME]    the bundled ALT: up, lig, lig --trace, down
    alt-router lab generate --levels L --fanout F --sites N [-o FILE]
                                         write a hierarchical, aggregating ALT topology (no root needed)

Needs root.  Exit status: 0 done (``status``: converged), 1 failed or degraded,
2 usage or topology error, 3 (``status``) no such lab.  The topology format is
in docs/lab.md; the state of a lab lives in /run/alt-router/lab/NAME.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from alt_router.lab.alt_runner import (
    STATE_ROOT,
    LabDir,
    down,
    probe_node,
    status_lines,
    torn_down_on_exit,
    up,
)
from alt_router.lab.alt_topology import AltTopology, AltTopologyError
from alt_router.lab.generate import GenerateError, generate
from alt_router.lab.netns import NetnsError
from alt_router.lab.processes import LabError, run_in_netns
from alt_router.lab.topology import TopologyError, check_lab_name, netns_name
from alt_router.node.control import query

DEMO_PICTURE = r"""
                 +----------------------+
                 |  core   AS 65000     |      ALT nodes: alt-router run
                 |  (transit)           |      (ExaBGP + ALT RIB + GRE)
                 +----------------------+
                GRE key 1 /        \ GRE key 2       BGP over each tunnel carries
                         /          \                the EID-prefix aggregates
   +----------------------+        +----------------------+
   |  mr     AS 65001     |        |  ms     AS 65002     |
   |  Map-Resolver        |        |  Map-Server          |
   |  153.17.0.0/16       |        |  153.16.0.0/16       |
   +----------------------+        +----------------------+
        ^ 1. Map-Request (ECM)          | 3. Map-Request (ECM) ^ Map-Register
        |                               v                      | 153.16.1.0/24
   +---------+                     +---------+-----------------+
   |  itr    | <-- 4. Map-Reply -- |  etr    |
   |  (lig)  |     (underlay)      |         |
   +---------+                     +---------+
      2. mr -> core -> ms: the Map-Request rides the ALT as a datagram, hop by hop
      underlay: one segment, 10.0.0.0/24
"""


def demo_topology_path() -> Path:
    return Path(str(resources.files("alt_router").joinpath("data/demo.toml")))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lab",
        help="build, watch and remove a whole ALT in network namespaces (root)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--state-root", type=Path, default=STATE_ROOT, help=f"where lab state lives ({STATE_ROOT})"
    )
    lsub = p.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    u = lsub.add_parser("up", help="build the ALT of TOPOLOGY.toml and wait for BGP to converge")
    u.add_argument("topology", type=Path, help="ALT lab topology (TOML, docs/lab.md)")
    u.add_argument("--name", type=lab_name_arg, default=None, help="lab name instead of the file's `name`")
    u.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for convergence (60)")
    s = lsub.add_parser("status", help="show what runs: processes, peers up, routes")
    s.add_argument("lab", help="topology file or lab name")
    d = lsub.add_parser("down", help="remove the lab: processes, namespaces, links, state")
    d.add_argument("lab", help="topology file or lab name")
    m = lsub.add_parser("demo", help="the bundled ALT: up, register an ETR, lig (--trace), down")
    m.add_argument("--topology", type=Path, default=None, help="another topology with an [alt.demo] table")
    m.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for convergence (60)")
    add_name_option(m)
    g = lsub.add_parser(
        "generate", help="write the topology of a hierarchical ALT with aggregation (lab/generate.py)"
    )
    g.add_argument("--levels", type=int, required=True, help="depth of the ALT tree (root = level 0)")
    g.add_argument("--fanout", type=int, required=True, help="children of every non-leaf ALT node")
    g.add_argument("--sites", type=int, required=True, help="Map-Server sites, spread over the leaves")
    g.add_argument("--frr-transits", type=int, default=0, help="parent-child links through FRR (0)")
    g.add_argument("--bird-transits", type=int, default=0, help="parent-child links through BIRD (0)")
    g.add_argument("--map-resolvers", type=int, default=1, help="Map-Resolver nodes (1)")
    g.add_argument("--no-aggregation", action="store_true", help="no [[eid.aggregates]] (to compare)")
    g.add_argument("--name", type=lab_name_arg, default="altgen", help="lab name (altgen)")
    g.add_argument("-o", "--output", type=Path, default=None, help="file to write (default: stdout)")
    p.set_defaults(func=run)


def lab_name_arg(text: str) -> str:
    """A lab name as argparse type: checked with the topology's own rule, so errors read the same."""
    try:
        check_lab_name(text, "--name")
    except TopologyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_name_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name", type=lab_name_arg, default=None,
        help="lab name (default: the topology's, `demo`); another name runs beside an existing demo lab",
    )


def run(args: argparse.Namespace) -> int:
    if args.lab_command == "generate":
        return cmd_generate(args)
    if os.geteuid() != 0:
        print("alt-router lab: needs root (network namespaces, TUN devices, raw sockets)", file=sys.stderr)
        return 2
    try:
        if args.lab_command == "up":
            return cmd_up(args.topology, args.state_root, args.timeout, sys.stdout, name=args.name)
        if args.lab_command == "status":
            lines, status = status_lines(lab_name(args.lab), args.state_root)
            print("\n".join(lines))
            return status
        if args.lab_command == "down":
            down(lab_name(args.lab), args.state_root, out=sys.stdout)
            return 0
        return cmd_demo(
            args.topology or demo_topology_path(), args.state_root, args.timeout, sys.stdout, name=args.name
        )
    except TopologyError as exc:  # AltTopologyError included
        print(f"alt-router lab: {exc}", file=sys.stderr)
        return 2
    except (LabError, NetnsError, OSError) as exc:
        print(f"alt-router lab: {exc}", file=sys.stderr)
        return 1


def cmd_generate(args: argparse.Namespace) -> int:
    try:
        gen = generate(
            args.levels, args.fanout, args.sites, frr_transits=args.frr_transits,
            bird_transits=args.bird_transits, map_resolvers=args.map_resolvers, name=args.name,
            aggregation=not args.no_aggregation,
        )
    except GenerateError as exc:
        print(f"alt-router lab generate: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(gen.text)
    else:
        args.output.write_text(gen.text)
        print(f"wrote {args.output}: {gen.speakers} BGP speakers ({len(gen.nodes)} ALT nodes, "
              f"{len(gen.transits)} transits, {len(gen.map_resolvers)} Map-Resolver(s))")
    return 0


def lab_name(text: str) -> str:
    """A topology file's lab name, or ``text`` itself when it is not a file."""
    path = Path(text)
    if path.is_file():
        return AltTopology.from_toml(path).name
    if "/" in text or text.endswith(".toml"):
        raise AltTopologyError(f"{text}: no such topology file")
    return text


def cmd_up(path: Path, root: Path, timeout: float, out: TextIO, *, name: str | None = None) -> int:
    alt = AltTopology.from_toml(path, name=name)
    ld, converged = up(alt, root=root, source=str(path.resolve()), out=out, timeout=timeout)
    out.write(
        f"lab {alt.name}: {'up' if converged else 'up but NOT converged'}; state in {ld.path}\n"
        f"  alt-router lab status {alt.name}    alt-router lab down {alt.name}\n"
    )
    return 0 if converged else 1


def rib_lines(alt: AltTopology, ld: LabDir) -> list[str]:
    lines: list[str] = []
    for node in alt.nodes:
        try:
            answer = query(ld.node_state(node.host), {"cmd": "status"}, timeout=5)
        except (OSError, ValueError) as exc:
            lines.append(f"  {node.host}: cannot ask the node ({exc})")
            continue
        routes: dict[str, Any] = answer.get("routes", {})
        origin = ", ".join(answer.get("originated", [])) or "nothing"
        lines.append(f"  {node.host} (AS {node.asn}) originates {origin}; ALT RIB:")
        for prefix in sorted(routes, key=lambda p: (":" in p, p)):
            r = routes[prefix]
            path = " ".join(str(a) for a in r.get("as_path", []))
            lines.append(
                f"      {prefix:<20} via {r.get('peer', '?'):<6} next hop {r.get('next_hop', '?'):<16} "
                f"AS path {path}"
            )
    return lines


def cmd_demo(path: Path, root: Path, timeout: float, out: TextIO, *, name: str | None = None) -> int:
    alt = AltTopology.from_toml(path, name=name)
    if alt.demo is None:
        raise AltTopologyError(f"{path}: no [alt.demo] table (eid, itr, map_resolver)")
    demo = alt.demo
    if path == demo_topology_path():
        out.write(DEMO_PICTURE + "\n")
    with torn_down_on_exit(alt.name, root, out):
        ld, converged = up(alt, root=root, source=str(path), out=out, timeout=timeout)
        out.write(
            "\nThe ALT RIBs (learned over BGP on the GRE tunnels):\n" + "\n".join(rib_lines(alt, ld)) + "\n"
        )
        if not converged:
            out.write("\nThe ALT did not converge; see the logs above. Tearing down.\n")
            return 1
        mr = str(alt.underlay(demo.itr, demo.map_resolver)[1])
        lig = [sys.executable, "-m", "alt_router.cli", "lig", str(demo.eid), "-m", mr, "-t", "3"]
        out.write(f"\n$ alt-router lig {demo.eid} -m {mr}          (on {demo.itr})\n")
        out.flush()
        first = run_in_netns(netns_name(alt.name, demo.itr), lig, check=False, timeout=30)
        if first.returncode == 2:
            # A busy machine can lose the first exchange (ETR or ExaBGP still starting): one retry.
            out.write(_indent(first.stdout + first.stderr) + "    (no reply; asking once more)\n")
            first = run_in_netns(netns_name(alt.name, demo.itr), lig, check=False, timeout=30)
        out.write(_indent(first.stdout + first.stderr))
        out.write(f"\n$ alt-router lig {demo.eid} -m {mr} --trace  (on {demo.itr})\n")
        out.flush()
        trace = run_in_netns(
            netns_name(alt.name, demo.itr), [*lig, "--trace", "--max-hops", "8"], check=False, timeout=60
        )
        out.write(_indent(trace.stdout + trace.stderr))
        if first.returncode == 0:
            out.write(
                f"\n{demo.eid} resolved end to end: {demo.itr} -> Map-Resolver {demo.map_resolver} -> "
                "ALT -> Map-Server -> ETR -> Map-Reply to the ITR.\n\nTearing the lab down.\n"
            )
            return 0
        out.write("\n" + _why_no_reply(alt, ld, first.returncode) + "\n\nTearing the lab down.\n")
        return 1


def _why_no_reply(alt: AltTopology, ld: LabDir, code: int) -> str:
    assert alt.demo is not None
    view = probe_node(alt.demo.map_resolver, ld.node_state(alt.demo.map_resolver))
    try:
        status = query(ld.node_state(alt.demo.map_resolver), {"cmd": "status", "routes": False}, timeout=5)
    except (OSError, ValueError):
        status = {}
    if code == 2 and view.reachable and not any("map_resolver" in k or "mapping" in k for k in status):
        return (
            "Resolution is PENDING: the ALT converged, but this build's daemon does not run the "
            "Map-Resolver/Map-Server roles yet (no map_resolver in the node's status), so nobody "
            "answered on UDP 4342."
        )
    kind = "a negative Map-Reply" if code == 1 else "no Map-Reply"
    return (
        f"lig got {kind}. Look at the node logs in {ld.logs} and the ETR's registration "
        f"(alt-router lab status {alt.name} while the lab is up)."
    )


def _indent(text: str) -> str:
    return "".join(f"    {line}\n" for line in text.splitlines())
