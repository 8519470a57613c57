"""A reload of an FRR-mode node against the real FRR 8.4: only the sessions it touches reset.

The node's instance (``FrrSupervisor``, zebra + bgpd) in n has sessions with a plain FRR bgpd in
p (topologies/frr/lab_veth.toml, node_three_peers.toml).  Each reload goes through vtysh
(``frr_config.bgpd_changes``); the per-neighbor established-transitions counter and the
established-since time in ``show bgp neighbors json`` show which sessions reset: a peer added
comes up, a peer removed is closed, a peer whose TCP-MD5 password changes (RFC 2385) resets and
comes back once p has the same password; every other session stays up throughout.

And for each reload of tests/bgp/test_frr_reload.py: a bgpd started with the old config and given
the commands runs the same configuration (``show running-config``) as one started with the new.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from alt_router.bgp.frr import FrrSupervisor
from alt_router.bgp.frr_config import ESTABLISHED, bgpd_changes, render_frr_config
from alt_router.lab import Lab, Topology
from alt_router.lab.daemon_text import BgpPeer
from alt_router.lab.daemons import start_frr
from tests.bgp.frr_netns import frr_lab_name, frr_state_root, until
from tests.bgp.test_frr_reload import scenarios
from tests.integration.topologies.frr_topology import frr_lab, frr_node

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# The node's neighbors (p's addresses) and p's (the node's), one /30 each (lab_veth.toml).
P1, P2, P3 = "10.0.0.2", "10.0.0.6", "10.0.0.10"
N1, N2, N3 = "10.0.0.1", "10.0.0.5", "10.0.0.9"
# Transitions to and from Established: equal before and after means the session never reset.
COUNTERS = ("connectionsEstablished", "connectionsDropped")
LEARNED = "153.17.0.0/16"  # p's; inside the node's [eid].accept of 153.16.0.0/12


@pytest.fixture
def lab_name() -> Iterator[str]:
    yield from frr_lab_name("frrrld")


@pytest.fixture
def state_root() -> Iterator[Path]:
    yield from frr_state_root()




def test_reload_resets_only_the_sessions_it_touches(lab_name: str, state_root: Path, tmp_path: Path) -> None:
    full = frr_node("node_three_peers.toml", state_dir=state_root / "n")
    p1, p2, p3 = full.peers
    with Lab(frr_lab("lab_veth.toml", lab_name), workdir=tmp_path) as lab:
        peer = start_frr(lab, "p", asn=65002, router_id="10.0.0.2", networks=[LEARNED], peers=[
            BgpPeer(node, 65001, local_address=own, families=("ipv4",))
            for node, own in ((N1, P1), (N2, P2), (N3, P3))])
        sup = FrrSupervisor(dataclasses.replace(full, peers=(p1, p2)), full.node.state_dir / "frr",
                            pathspace=f"{lab_name}-n",
                            command_prefix=["ip", "netns", "exec", lab.netns("n")])

        async def neighbors() -> dict[str, dict[str, Any]]:
            data = await sup.vtysh_json("show bgp vrf default neighbors json")
            return {a: info for a, info in data.items() if isinstance(info, dict)}

        def established(*addresses: str) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                table = await neighbors()
                return all(table.get(a, {}).get("bgpState") == ESTABLISHED for a in addresses)
            return check

        async def untouched(before: dict[str, dict[str, Any]], *addresses: str) -> None:
            now = await neighbors()
            for address in addresses:
                was, is_ = before[address], now[address]
                assert is_.get("bgpState") == ESTABLISHED, (address, is_.get("bgpState"))
                assert [is_.get(c) for c in COUNTERS] == [was.get(c) for c in COUNTERS], address
                # bgpd derives the epoch from the uptime: it may move by a second without a reset.
                since = int(is_["bgpTimerUpEstablishedEpoch"]) - int(was["bgpTimerUpEstablishedEpoch"])
                assert abs(since) <= 1, f"session {address} was reset"

        async def scenario() -> None:
            await sup.start()
            try:
                bgpd = sup.pids()["bgpd"]
                await until("p1 and p2 established", established(P1, P2), detail=neighbors)
                before = await neighbors()

                # A third peer: its session comes up, the two others stay as they were.
                assert not await sup.reload(full)
                await until("p3 established", established(P3), detail=neighbors)
                await untouched(before, P1, P2)
                before = await neighbors()

                # p2 removed: bgpd closes that session (p sees it drop), p1 and p3 stay up.
                assert not await sup.reload(dataclasses.replace(full, peers=(p1, p3)))
                assert P2 not in await neighbors()

                async def p2_closed() -> bool:
                    info = peer.vtysh_json(f"show bgp neighbors {N2} json").get(N2, {})
                    return info.get("bgpState") != ESTABLISHED and int(info.get("connectionsDropped", 0)) >= 1

                await until("p to see the session with p2 closed", p2_closed)
                await untouched(before, P1, P3)

                # [eid].accept narrowed, then widened again: p's 153.17.0.0/16 leaves the node's
                # table and comes back by route refresh (RFC 2918), no session resets.
                async def has_learned() -> bool:
                    table = await sup.vtysh_json("show bgp vrf default ipv4 unicast json")
                    return LEARNED in table.get("routes", {})

                await until("p's route", has_learned)
                narrow = dataclasses.replace(full, peers=(p1, p3), eid=dataclasses.replace(
                    full.eid, accept=(ip_network("153.16.0.0/16"),)))
                assert not await sup.reload(narrow)
                await until("p's route to leave the EID space", lambda: _not(has_learned()))
                assert not await sup.reload(dataclasses.replace(full, peers=(p1, p3)))
                await until("p's route back in the EID space", has_learned)
                await untouched(before, P1, P3)

                # p1 gets a TCP-MD5 password (RFC 2385): bgpd resets that session at once; it stays
                # down until p has the same password, then comes back.  p3 is not touched.
                rotated = dataclasses.replace(p1, md5_password="rotated-secret")
                assert not await sup.reload(dataclasses.replace(full, peers=(rotated, p3)))

                async def p1_reset() -> bool:
                    info = (await neighbors()).get(P1, {})
                    return info.get("bgpState") != ESTABLISHED
                await until("the session with p1 to reset", p1_reset, detail=neighbors)
                peer.vtysh("configure terminal", "router bgp 65002", f"neighbor {N1} password rotated-secret")
                await until("p1 established again with the password", established(P1), detail=neighbors)
                after = await neighbors()
                assert after[P1]["connectionsEstablished"] == before[P1]["connectionsEstablished"] + 1
                await untouched(before, P3)

                assert sup.pids()["bgpd"] == bgpd  # never restarted
                assert sup.counters["reload-live"] == 5 and sup.counters["reload-restart"] == 0
                text = sup.path("bgpd.conf").read_text()  # what a later bgpd start would run
                assert f" neighbor {P1} password rotated-secret\n" in text and P2 not in text
            finally:
                await sup.stop()

        asyncio.run(scenario())


def test_live_changes_leave_bgpd_as_a_fresh_start_would(lab_name: str, tmp_path: Path) -> None:
    def running(daemon: Any) -> str:
        text = daemon.vtysh("show running-config")
        return text[text.index("frr defaults"):]  # after the build banner

    def run(daemon: Any, commands: tuple[str, ...]) -> None:
        if commands:
            out = daemon.vtysh(*commands)
            assert not [line for line in out.splitlines() if line.startswith("%")], out

    # Two namespaces: each bgpd listens on port 179; no links, so no session ever comes up.
    topology = Topology.from_dict({"name": lab_name, "hosts": {"live": {}, "fresh": {}}})
    with Lab(topology, workdir=tmp_path) as lab:
        for name, (before, after) in scenarios().items():
            old, new = render_frr_config(before).bgpd, render_frr_config(after).bgpd
            change = bgpd_changes(old, new)
            live = start_frr(lab, "live", asn=0, router_id="0.0.0.0", peers=[], config=old)
            fresh = start_frr(lab, "fresh", asn=0, router_id="0.0.0.0", peers=[], config=new)
            try:
                assert running(live) != running(fresh), name
                run(live, change.configure)
                run(live, change.clear)
                assert running(live) == running(fresh), name
            finally:
                live.stop()
                fresh.stop()


async def _not(check: Awaitable[bool]) -> bool:
    return not await check
