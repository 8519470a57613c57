"""FRR mode (``[node] bgp = "frr"``, issue 10): the node's own FRR enforces the ExaBGP mode's filters.

The node's FRR instance (``FrrSupervisor`` with the config ``frr_config`` renders from a node
TOML, topologies/frr/node_three_peers.toml) runs in namespace ``n``; a plain FRR bgpd in ``p``
peers with it over a veth (topologies/frr/lab_veth.toml: no GRE is needed to show the filters) on
three sessions, one per filter that a session can show:

* p1 announces a control prefix inside the EID space, (a) a prefix whose AS_PATH holds the
  node's own AS, and (b) a prefix outside ``[eid].accept``: only the control prefix is accepted
  (RFC 4271 §9.1.2 loop check; RFC 6836 §7.1, the ALT carries EID prefixes only);
* p2 announces more routes than its ``max_prefix``: the node's bgpd closes the session with a
  Cease (RFC 4486 §4, subcode 1) and keeps it down;
* p3 uses another TCP-MD5 password (RFC 2385): the session never establishes; with the right
  password on both sides it does.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from alt_router.bgp.frr import FrrSupervisor
from alt_router.bgp.frr_config import ESTABLISHED, peer_states
from alt_router.lab import Lab
from alt_router.lab.daemons import start_frr
from alt_router.node.config import NodeConfig
from tests.bgp.frr_netns import until
from tests.conftest import require_tool
from tests.integration.topologies.frr_topology import frr_lab, frr_node

pytestmark = [pytest.mark.netns, pytest.mark.slow]

CONTROL = "153.16.10.0/24"
OWN_AS = "153.16.20.0/24"
OUTSIDE = "10.99.0.0/16"
MANY = [f"153.16.{i}.0/24" for i in range(101, 109)]  # 8 > p2's max_prefix of 5

PEER = """hostname peer
!
ip prefix-list ONE seq 5 permit {control}
ip prefix-list ONE seq 10 permit {outside}
ip prefix-list LOOP seq 5 permit {own_as}
ip prefix-list MANY seq 5 permit 153.16.96.0/19 ge 24 le 24
!
route-map TO-P1 permit 10
 match ip address prefix-list LOOP
 set as-path prepend 65001
exit
route-map TO-P1 permit 20
 match ip address prefix-list ONE
exit
route-map TO-P2 permit 10
 match ip address prefix-list MANY
exit
route-map TO-P3 permit 10
 match ip address prefix-list ONE
exit
!
router bgp 65002
 bgp router-id 10.0.0.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 no bgp default ipv4-unicast
{neighbors}
 address-family ipv4 unicast
{networks}
{activate}
 exit-address-family
exit
"""


def filter_node(state_dir: Path) -> NodeConfig:
    """topologies/frr/node_three_peers.toml with one filter per session: p2's max-prefix, p3's MD5."""
    config = frr_node("node_three_peers.toml", state_dir=state_dir)
    p1, p2, p3 = config.peers
    p2 = dataclasses.replace(p2, max_prefix=5)
    p3 = dataclasses.replace(p3, md5_password="right-password")
    return dataclasses.replace(config, peers=(p1, p2, p3))


def peer_config(password: str) -> str:
    sessions = (("10.0.0.1", "10.0.0.2", "TO-P1", None), ("10.0.0.5", "10.0.0.6", "TO-P2", None),
                ("10.0.0.9", "10.0.0.10", "TO-P3", password))
    neighbors, activate = [], []
    for remote, local, route_map, pw in sessions:
        neighbors += [f" neighbor {remote} remote-as 65001", f" neighbor {remote} update-source {local}",
                      f" neighbor {remote} timers 3 9", f" neighbor {remote} timers connect 1",
                      f" neighbor {remote} disable-connected-check"]
        if pw:
            neighbors.append(f" neighbor {remote} password {pw}")
        activate += [f"  neighbor {remote} activate", f"  neighbor {remote} route-map {route_map} out"]
    networks = [f"  network {p}" for p in (CONTROL, OWN_AS, OUTSIDE, *MANY)]
    return PEER.format(control=CONTROL, outside=OUTSIDE, own_as=OWN_AS, neighbors="\n".join(neighbors),
                       networks="\n".join(networks), activate="\n".join(activate))




def test_frr_mode_enforces_the_filters(
    lab_names: Callable[[str], str], lab_root: Path, tmp_path: Path,
) -> None:
    require_tool("bgpd", "/usr/lib/frr/bgpd")
    require_tool("zebra", "/usr/lib/frr/zebra")
    require_tool("vtysh")
    name = lab_names("frrflt")
    config = filter_node(lab_root / "n")
    with Lab(frr_lab("lab_veth.toml", name), workdir=tmp_path) as lab:
        peer = start_frr(lab, "p", asn=65002, router_id="10.0.0.2", peers=[],
                         config=peer_config("wrong-password"))
        sup = FrrSupervisor(config, config.node.state_dir / "frr", pathspace=f"{name}-n",
                            command_prefix=["ip", "netns", "exec", lab.netns("n")])

        async def summary() -> dict[str, str]:
            return peer_states(await sup.summary_json())

        async def routes() -> set[str]:
            table = await sup.vtysh_json("show bgp vrf default ipv4 unicast json")
            return set(table.get("routes", {}))

        async def neighbor(address: str) -> dict[str, Any]:
            data = await sup.vtysh_json(f"show bgp vrf default neighbors {address} json")
            info = data.get(address, {})
            return info if isinstance(info, dict) else {}

        async def scenario() -> None:
            await sup.start()
            try:
                # p1: the control prefix arrives; (a) own AS in the path and (b) outside the EID space
                # do not, although p1 sent all three (its advertised-routes says so).
                await until("p1 established and the control prefix", lambda: _has(routes, CONTROL),
                            detail=summary)
                await until("p1 to have advertised all three prefixes",
                            lambda: _advertised(peer.vtysh_json, "10.0.0.1", 3))
                await until("the node to have received p1's UPDATEs",
                            lambda: _updates_received(neighbor, "10.0.0.2", 2))
                table = await routes()
                assert CONTROL in table
                assert OWN_AS not in table, "a route with our own AS in its AS_PATH was accepted"
                assert OUTSIDE not in table, "a route outside the EID space was accepted"

                # (c) p2 sent 8 routes against a max_prefix of 5: the session is shut down (PfxCt) and
                # none of its routes are kept.
                async def p2_overflowed() -> bool:
                    info = await neighbor("10.0.0.6")
                    # Cease 6/1 "Maximum Number of Prefixes Reached" sent by the node (RFC 4486 §4).
                    return (info.get("lastErrorCodeSubcode") == "0601" and info.get("bgpState") != ESTABLISHED
                            and bool(info.get("prefixesConfigExceedMax")))

                await until("p2 shut down by max-prefix", p2_overflowed, detail=lambda: neighbor("10.0.0.6"))
                states = await summary()
                assert states["10.0.0.6"] != ESTABLISHED and "PfxCt" in states["10.0.0.6"], states
                assert not (await routes()) & set(MANY)

                # (d) p3's MD5 password differs: never established, although the peer keeps trying
                # (its connect retry is 1 s and p1, p2 came up long ago).
                assert states["10.0.0.10"] != ESTABLISHED
                info = await neighbor("10.0.0.10")
                assert info.get("bgpState") != ESTABLISHED
                assert int(info.get("connectionsEstablished", 0)) == 0
                # The same session with the password the node expects comes up: MD5 was the only reason.
                peer.vtysh("configure terminal", "router bgp 65002",
                           "neighbor 10.0.0.9 password right-password")
                await until("p3 established with the right password",
                            lambda: _state_is(summary, "10.0.0.10", ESTABLISHED), detail=summary)
                assert CONTROL in await routes()
            finally:
                await sup.stop()

        asyncio.run(scenario())


async def _has(routes: Callable[[], Awaitable[set[str]]], prefix: str) -> bool:
    return prefix in await routes()


async def _state_is(summary: Callable[[], Awaitable[dict[str, str]]], address: str, state: str) -> bool:
    return (await summary()).get(address) == state


async def _advertised(vtysh_json: Callable[[str], Any], neighbor: str, count: int) -> bool:
    data = vtysh_json(f"show bgp ipv4 unicast neighbors {neighbor} advertised-routes json")
    return int(data.get("totalPrefixCounter", 0)) >= count


async def _updates_received(neighbor: Callable[[str], Awaitable[dict[str, Any]]], address: str,
                            count: int) -> bool:
    info = await neighbor(address)
    stats = info.get("messageStats", {})
    return int(stats.get("updatesRecv", 0)) >= count if isinstance(stats, dict) else False
