"""Reference BGP daemons as ALT transits that forward (RFC 6836 §3, §6.3; issue 9 part 4).

    itr --ECM--> mr ==GRE== t ==GRE== ms --ECM--> etr --Map-Reply--> itr
                          FRR (zebra + bgpd) or BIRD 2 (kernel export)

The transit ``t`` is the only path between the Map-Resolver node and the Map-Server node, so an
ALT datagram for the site reaches the Map-Server only if ``t`` forwards it by its kernel table:
RFC 6836 §3 makes an ALT router any BGP router that carries EID prefixes over its GRE tunnels and
forwards ALT datagrams by them.  ``lig`` from the ITR must resolve, and ``lig --trace`` must show
``t`` as a hop (its kernel decrements the TTL and answers the expired probe).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from alt_router.lab import wait_until
from alt_router.lab.alt_runner import down, up
from alt_router.lab.processes import run_in_netns
from alt_router.lab.topology import netns_name
from alt_router.node.daemon import query
from tests.conftest import require_tool
from tests.integration.helpers import address_names, alt_topology

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# topologies/transit.toml; underlay addresses as there.
U = {"itr": "10.61.0.1", "etr": "10.61.0.2", "mr": "10.61.0.11", "t": "10.61.0.12", "ms": "10.61.0.13"}
SITE = "153.16.1.0/24"


def _lig(name: str, eid: str, *args: str) -> tuple[int, dict[str, Any]]:
    argv = [sys.executable, "-m", "alt_router.cli", "lig", eid, "-m", U["mr"], "--json", "-t", "2", *args]
    proc = run_in_netns(netns_name(name, "itr"), argv, check=False, timeout=60)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"lig {eid} exit {proc.returncode}: {proc.stdout}\n{proc.stderr}") from None


def _hops(names: dict[str, str], doc: dict[str, Any]) -> list[str]:
    return [names.get(h["router"], h["router"]) if h.get("router") else
            ("reply:" + names.get(h["map_reply"]["from"], "?") if "map_reply" in h else "*")
            for h in doc["hops"]]


def _route_peer(state_dir: Path, prefix: str) -> str | None:
    try:
        route = query(state_dir, {"cmd": "status"}, timeout=5).get("routes", {}).get(prefix)
    except (OSError, ValueError):
        return None
    return route.get("peer") if route else None


def _run_transit(daemon: str, lab_names: Callable[[str], str], root: Path) -> None:
    name = lab_names(f"tr{daemon}")
    alt = alt_topology("transit.toml", name)
    alt = replace(alt, routers=tuple(replace(r, daemon=daemon) for r in alt.routers))
    out_path = root / "up.out"
    with out_path.open("w") as out:
        try:
            ld, converged = up(alt, root=root, source="test", out=out, timeout=90, etr_timeout=40)
            out.flush()
            assert converged, out_path.read_text()
            assert "ETR registered 153.16.1.0/24" in out_path.read_text(), out_path.read_text()
            # The transit is mr's only way to the site: its BGP routes are in its kernel table.
            wait_until(lambda: _route_peer(ld.node_state("mr"), SITE) == "t", 30,
                       what="mr reaching the site through the transit")
            t_ns = netns_name(name, "t")
            wait_until(lambda: any(SITE in line and "gre-ms" in line for line in
                                   run_in_netns(t_ns, ["ip", "route"]).stdout.splitlines()), 30,
                       what=f"{daemon} installing the site route via the GRE TUN to ms",
                       on_timeout=lambda: run_in_netns(t_ns, ["ip", "route"]).stdout)
            status, doc = _lig(name, "153.16.1.7", "-c", "3")
            assert status == 0, doc
            reply = doc["replies"][0]
            assert reply["from"] == U["etr"]  # the Map-Request crossed t; the ETR answered the ITR
            record = reply["records"][0]
            assert record["eid_prefix"] == SITE and record["authoritative"] is True
            status, doc = _lig(name, "153.16.1.8", "--trace", "--max-hops", "6")
            assert status == 0, doc
            assert _hops(address_names(alt), doc) == ["mr", "t", "reply:etr"], doc
        finally:
            down(name, root, out=out)



def test_frr_transit_is_the_only_path_and_lig_resolves(
    lab_names: Callable[[str], str], lab_root: Path
) -> None:
    require_tool("bgpd", "/usr/lib/frr/bgpd")
    require_tool("zebra", "/usr/lib/frr/zebra")
    _run_transit("frr", lab_names, lab_root)


def test_bird_transit_is_the_only_path_and_lig_resolves(
    lab_names: Callable[[str], str], lab_root: Path
) -> None:
    require_tool("bird")
    _run_transit("bird", lab_names, lab_root)
