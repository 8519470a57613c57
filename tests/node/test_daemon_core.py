"""NodeCore: ExaBGP lines in, RIB state and ExaBGP commands out (no I/O)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alt_router.bgp.bridge import REPLAYED, Hello
from alt_router.node.config import parse_config
from alt_router.node.core import NodeCore, NodeError

CONFIG = """
[node]
name = "b"
asn = 65002
router_id = "192.0.2.2"
state_dir = "/nonexistent"
[eid]
announce = ["153.17.0.0/16"]
accept = ["153.16.0.0/12", "2001:db8::/32"]
[[peers]]
name = "a"
asn = 65001
max_prefix = 3
[peers.underlay]
local = "10.30.0.2"
remote = "10.30.0.1"
[peers.tunnel]
local_ipv4 = "10.255.1.2/30"
remote_ipv4 = "10.255.1.1"
local_ipv6 = "fd00:1::2/64"
remote_ipv6 = "fd00:1::1"
[[peers]]
name = "c"
asn = 65003
[peers.underlay]
local = "10.30.0.2"
remote = "10.30.0.3"
[peers.tunnel]
local_ipv4 = "10.255.2.1/30"
remote_ipv4 = "10.255.2.2"
"""

PEERS = {"a": ("10.255.1.2", "10.255.1.1", 65001), "c": ("10.255.2.1", "10.255.2.2", 65003)}


def _neighbor(peer: str, **extra: Any) -> dict[str, Any]:
    local, remote, asn = PEERS[peer]
    return {"address": {"local": local, "peer": remote}, "asn": {"local": 65002, "peer": asn}, **extra}


def state(peer: str, s: str) -> str:
    return json.dumps({"type": "state", "neighbor": _neighbor(peer, state=s)})


def update(peer: str, nh: str, prefixes: list[str], path: list[int], family: str = "ipv4 unicast") -> str:
    upd = {"attribute": {"origin": "igp", "as-path": {"0": {"element": "as-sequence", "value": path}}},
           "announce": {family: {nh: [{"nlri": p} for p in prefixes]}}}
    return json.dumps({"type": "update", "neighbor": _neighbor(peer, direction="receive",
                                                               message={"update": upd})})


def withdraw(peer: str, prefixes: list[str]) -> str:
    upd = {"withdraw": {"ipv4 unicast": [{"nlri": p} for p in prefixes]}}
    return json.dumps({"type": "update", "neighbor": _neighbor(peer, direction="receive",
                                                               message={"update": upd})})


@pytest.fixture
def core() -> NodeCore:
    return NodeCore(parse_config(CONFIG))


def test_learned_route_is_exported_to_the_other_peers_with_our_as_prepended(core: NodeCore) -> None:
    assert core.on_line(state("a", "up"), 1.0) == []
    cmds = core.on_line(update("a", "10.255.1.1", ["153.16.0.0/16"], [65001]), 2.0)
    assert core.rib.get("153.16.0.0/16").peer == "a"
    # Not back to a (split horizon); c hears it with AS 65002 prepended.
    assert cmds == ["neighbor 10.255.2.2 announce route 153.16.0.0/16 next-hop self origin igp "
                    "as-path [ 65002 65001 ]"]
    assert core.on_line(withdraw("a", ["153.16.0.0/16"]), 3.0) == [
        "neighbor 10.255.2.2 withdraw route 153.16.0.0/16 next-hop self"]
    assert len(core.rib) == 0


def test_a_path_through_a_peers_as_is_not_sent_to_that_peer(core: NodeCore) -> None:
    core.on_line(state("a", "up"), 1.0)
    assert core.on_line(update("a", "10.255.1.1", ["153.18.0.0/16"], [65001, 65003]), 2.0) == []
    assert core.rib.get("153.18.0.0/16") is not None


def test_ipv6_routes_use_the_tunnel_ipv6_next_hop(core: NodeCore) -> None:
    core.on_line(state("a", "up"), 1.0)
    core.on_line(update("a", "fd00:1::1", ["2001:db8:a::/48"], [65001], "ipv6 unicast"), 2.0)
    assert core.rib.get("2001:db8:a::/48") is not None
    cmds = core.announce("2001:db8:b::/48")
    # c is IPv4-only (families default from its tunnel... here from eid.accept: both), so both peers hear it.
    assert "neighbor 10.255.1.1 announce route 2001:db8:b::/48 next-hop fd00:1::2" in cmds


def test_bad_input_is_counted_and_skipped(core: NodeCore) -> None:
    core.on_line(state("a", "up"), 1.0)
    for line in ("{not json", "[1, 2]", '{"type": "update"}', "\xff\xfe", ""):
        assert core.on_line(line, 2.0) == []
    assert core.reader.counters["malformed"] == 4
    # A neighbor ExaBGP knows but we do not.
    stranger = json.loads(state("a", "up"))
    stranger["neighbor"]["address"]["peer"] = "10.9.9.9"
    assert core.on_line(json.dumps(stranger), 2.0) == []
    assert core.counters["unknown-neighbor"] == 1
    # Next hop that is not a tunnel peer, unknown family, out of EID space, own AS.
    core.on_line(update("a", "10.77.0.1", ["153.16.1.0/24"], [65001]), 3.0)
    core.on_line(update("a", "10.255.1.1", ["1:2::/32"], [65001], "l2vpn vpls"), 3.0)
    core.on_line(update("a", "10.255.1.1", ["10.0.0.0/8"], [65001]), 3.0)
    core.on_line(update("a", "10.255.1.1", ["153.16.2.0/24"], [65001, 65002]), 3.0)
    assert len(core.rib) == 0
    drops = core.rib.drops.as_dict()["a"]
    assert drops == {"own-asn": 1, "outside-eid-space": 1, "unknown-next-hop": 1}
    assert core.reader.counters["nlri-skipped"] == 1
    # A route from a peer that is not up.
    core.on_line(update("c", "10.255.2.2", ["153.18.0.0/16"], [65003]), 4.0)
    assert core.rib.drops.as_dict()["c"] == {"peer-not-up": 1}


def test_max_prefix_tears_the_session_down(core: NodeCore) -> None:
    core.on_line(state("a", "up"), 1.0)
    prefixes = [f"153.16.{i}.0/24" for i in range(5)]
    cmds = core.on_line(update("a", "10.255.1.1", prefixes, [65001]), 2.0)
    assert "neighbor 10.255.1.1 teardown 1" in cmds
    assert len(core.rib) == 0 and not core.rib.peer("a").up
    assert core.counters["teardowns"] == 1 and core.teardowns[0].peer == "a"


def test_announce_and_withdraw_are_idempotent(core: NodeCore) -> None:
    first = core.announce("153.17.5.0/24")
    assert first == ["neighbor 10.255.1.1 announce route 153.17.5.0/24 next-hop self",
                     "neighbor 10.255.2.2 announce route 153.17.5.0/24 next-hop self"]
    assert core.announce("153.17.5.0/24") == []
    assert core.announce("153.17.0.0/16") == []  # configured: ExaBGP announces it statically
    assert len(core.withdraw("153.17.5.0/24")) == 2
    assert core.withdraw("153.17.5.0/24") == []
    with pytest.raises(NodeError):
        core.announce("153.17.5.1/24")


def test_a_new_bridge_gets_the_whole_desired_state(core: NodeCore) -> None:
    core.announce("153.17.5.0/24")
    core.on_line(state("a", "up"), 1.0)
    core.on_line(update("a", "10.255.1.1", ["153.16.0.0/16"], [65001]), 2.0)
    cmds = core.on_bridge_connected()
    assert len(cmds) == 3 and any("as-path [ 65002 65001 ]" in c for c in cmds)


def test_replayed_sessions_are_asked_for_a_route_refresh(core: NodeCore) -> None:
    assert core.on_line(Hello(1, 5, 0, 1).line(), 0.0) == []
    assert core.hello is not None and core.hello.dropped == 5
    core.on_line(state("a", "up"), 1.0)
    assert core.on_line(REPLAYED, 1.0) == [
        "neighbor 10.255.1.1 announce route-refresh ipv4 unicast",
        "neighbor 10.255.1.1 announce route-refresh ipv6 unicast",
    ]
    assert core.on_line("#hello garbage", 1.0) == [] and core.counters["bridge-malformed"] == 1


def test_exabgp_death_empties_the_rib_and_the_export_state(core: NodeCore) -> None:
    core.on_line(state("a", "up"), 1.0)
    core.on_line(update("a", "10.255.1.1", ["153.16.0.0/16"], [65001]), 2.0)
    assert core.exported
    core.on_exabgp_exit(3.0)
    assert len(core.rib) == 0 and not core.exported and not core.rib.peer("a").up
    snap = core.snapshot(4.0)
    assert snap["peers"]["a"]["last_down_reason"] == "ExaBGP exited"
    assert snap["routes"] == {}


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200),
                 st.recursive(st.none() | st.integers() | st.text(max_size=10),
                              lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                                 max_size=3),
                              max_leaves=12).map(json.dumps)))
def test_no_line_crashes_the_core(line: bytes | str) -> None:
    core = NodeCore(parse_config(CONFIG))
    core.on_line(line, 0.0)
