"""Aggregation in a three-level ALT, an ALT-attached ETR beside an MS-registered site, and what
FRR and BIRD peers see of the aggregates (RFC 6836 §3.1, §4, §7.1; RFC 4271 §5.1.6-§5.1.7, §9.2.2.2).

                       top (AS 65000) ---- frr (65100), bird (65200)
                      /              \\
         mid1 (65010)                  mid2 (65020)
         153.16.0.0/14 summary-only    153.20.0.0/14 summary-only, AS_SET
         ATOMIC_AGGREGATE              |
              |                        att (65021): ALT-attached ETR 153.20.1.0/24
         ms1 (65011): Map-Resolver + Map-Server, site 153.16.1.0/24 <- etr (registers)

``top`` carries only the two aggregates; ``lig`` from the ITR through ms1's Map-Resolver resolves
the MS-registered site (ms1's Map-Server forwards to the ETR) and the ALT-attached ETR's EID, whose
Map-Request crosses mid1, top and mid2 by the aggregates and is answered by att itself.  An EID in
a hole of mid2's aggregate is dropped at mid2 as no route, not sent back up.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alt_router.lab import wait_until
from alt_router.lab.alt_runner import LabDir, down, up
from alt_router.lab.processes import run_in_netns
from alt_router.lab.topology import netns_name
from alt_router.node.daemon import query
from tests.conftest import require_tool
from tests.integration.helpers import alt_topology

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# topologies/aggregation.toml; underlay addresses and prefixes as there.
U = {"itr": "10.62.0.1", "etr": "10.62.0.2", "top": "10.62.0.10", "mid1": "10.62.0.11",
     "mid2": "10.62.0.12", "ms1": "10.62.0.13", "att": "10.62.0.14", "frr": "10.62.0.20",
     "bird": "10.62.0.21"}
AGG1, AGG2 = "153.16.0.0/14", "153.20.0.0/14"
SITE, ATTACHED = "153.16.1.0/24", "153.20.1.0/24"


def _lig(name: str, eid: str, *args: str) -> tuple[int, dict[str, Any]]:
    argv = [sys.executable, "-m", "alt_router.cli", "lig", eid, "-m", U["ms1"], "--json", "-t", "2", *args]
    proc = run_in_netns(netns_name(name, "itr"), argv, check=False, timeout=60)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"lig {eid} exit {proc.returncode}: {proc.stdout}\n{proc.stderr}") from None


def _status(ld: LabDir, host: str) -> dict[str, Any]:
    try:
        return query(ld.node_state(host), {"cmd": "status"}, timeout=5)
    except (OSError, ValueError):
        return {}


def _resolves(name: str, eid: str, prefix: str, from_host: str) -> Callable[[], bool]:
    def check() -> bool:
        status, doc = _lig(name, eid, "-c", "1")
        if status != 0 or not doc.get("replies"):
            return False
        reply = doc["replies"][0]
        record = reply["records"][0]
        return bool(reply["from"] == U[from_host] and record["eid_prefix"] == prefix
                    and record["authoritative"] is True)
    return check



def test_three_level_alt_with_aggregates_an_attached_etr_and_frr_bird_peers(
    lab_names: Callable[[str], str], lab_root: Path
) -> None:
    require_tool("bgpd", "/usr/lib/frr/bgpd")
    require_tool("zebra", "/usr/lib/frr/zebra")
    require_tool("vtysh")
    require_tool("bird")
    name = lab_names("agg")
    alt = alt_topology("aggregation.toml", name)
    # The lab's own model: before the ETR registers, top holds mid2's aggregate and nothing else.
    assert alt.expected_routes("top") == {AGG2}
    out_path = lab_root / "up.out"
    with out_path.open("w") as out:
        try:
            ld, converged = up(alt, root=lab_root, source="test", out=out, timeout=90, etr_timeout=40)
            out.flush()
            assert converged, out_path.read_text()

            # (a) top carries only aggregates, with the aggregate attributes (its control socket).
            wait_until(lambda: set(_status(ld, "top").get("routes", {})) == {AGG1, AGG2}, 30,
                       what="top holding exactly the two aggregates",
                       on_timeout=lambda: _status(ld, "top").get("routes"))
            routes = _status(ld, "top")["routes"]
            assert routes[AGG1]["as_path"] == [65010] and routes[AGG2]["as_path"] == [65020]
            aggs = {a["prefix"]: a for a in _status(ld, "mid2")["aggregates"]}
            assert aggs[AGG2]["active"] and aggs[AGG2]["as_set_members"] == [65021]
            assert aggs[AGG2]["suppressed_sample"] == [ATTACHED]

            # (a)+(b) every EID resolves: the MS-registered site through ms1's Map-Server to the ETR,
            # the ALT-attached ETR's EID across mid1, top and mid2 by the aggregates, answered by att.
            wait_until(_resolves(name, "153.16.1.7", SITE, "etr"), 40, what="lig for the MS-registered site")
            wait_until(_resolves(name, "153.20.1.7", ATTACHED, "att"), 40,
                       what="lig for the ALT-attached ETR's EID")
            att = _status(ld, "att")["mapping"]
            assert att["etr"]["alt-received"] >= 1 and att["etr"]["map-reply"] >= 1

            # A hole in mid2's aggregate: dropped at mid2 as no route, never sent back to top.
            status, _ = _lig(name, "153.21.0.1", "-c", "1")
            assert status != 0
            wait_until(lambda: _status(ld, "mid2").get("mapping", {}).get("forwarder", {})
                       .get("counters", {}).get("no-route:aggregate", 0) >= 1, 20,
                       what="mid2 counting the hole as no-route:aggregate")
            assert _status(ld, "top")["mapping"]["forwarder"]["counters"]["loop"] == 0

            # (c) FRR sees the aggregates with their attributes (RFC 4271 §5.1.6, §5.1.7).
            frr_ns, frr_dir = netns_name(name, "frr"), str(ld.frr_dir("frr"))

            def frr_route(prefix: str) -> dict[str, Any]:
                text = run_in_netns(frr_ns, ["vtysh", "--vty_socket", frr_dir, "-c",
                                             f"show bgp ipv4 unicast {prefix} json"], check=False).stdout
                try:
                    paths = json.loads(text).get("paths") or [{}]
                except ValueError:
                    return {}
                return paths[0]  # type: ignore[no-any-return]

            wait_until(lambda: bool(frr_route(AGG2)) and bool(frr_route(AGG1)), 30,
                       what="FRR learning both aggregates", on_timeout=lambda: frr_route(AGG1))
            atomic = frr_route(AGG1)
            assert atomic.get("atomicAggregate") is True, atomic
            assert atomic.get("aggregatorAs") == 65010 and atomic.get("aggregatorId") == "192.0.2.11", atomic
            with_set = frr_route(AGG2)
            assert "{65021}" in with_set["aspath"]["string"] and "atomicAggregate" not in with_set, with_set
            assert with_set.get("aggregatorAs") == 65020 and with_set.get("aggregatorId") == "192.0.2.12"

            # ... and so does BIRD (BGP.atomic_aggr, BGP.aggregator, the AS_SET in BGP.as_path).
            bird_ns, ctl = netns_name(name, "bird"), str(ld.bird_dir("bird") / "bird.ctl")

            def bird_route(prefix: str) -> str:
                return run_in_netns(bird_ns, ["birdc", "-s", ctl, "show", "route", "for", prefix, "all"],
                                    check=False).stdout

            wait_until(lambda: AGG1 in bird_route(AGG1) and AGG2 in bird_route(AGG2), 30,
                       what="BIRD learning both aggregates", on_timeout=lambda: bird_route(AGG1))
            text1, text2 = bird_route(AGG1), bird_route(AGG2)
            aggregator1 = next((ln for ln in text1.splitlines() if "BGP.aggregator" in ln), "")
            aggregator2 = next((ln for ln in text2.splitlines() if "BGP.aggregator" in ln), "")
            assert "BGP.atomic_aggr" in text1, text1
            assert "192.0.2.11" in aggregator1 and "65010" in aggregator1, text1
            assert "{65021}" in text2 and "BGP.atomic_aggr" not in text2, text2
            assert "192.0.2.12" in aggregator2 and "65020" in aggregator2, text2
        finally:
            down(name, lab_root, out=out)
