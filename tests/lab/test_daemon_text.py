from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from alt_router.lab.daemon_text import (
    BgpPeer,
    DaemonOutputError,
    bird_protocols,
    bird_route_prefixes,
    exabgp_peer_states,
    exabgp_received_prefixes,
    frr_peer_states,
    frr_prefixes,
    parse_json_lines,
    render_bird,
    render_exabgp,
    render_frr_bgpd,
)
from tests.conftest import require_tool

PEERS = [BgpPeer("10.0.0.2", 65002, local_address="10.0.0.1"), BgpPeer("fd00::2", 65002, password="s3cret")]


def test_bgp_peer_rejects_typos() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        BgpPeer("10.0.0.256", 65001)
    with pytest.raises(ValueError, match="remote AS"):
        BgpPeer("10.0.0.1", 0)


def test_router_id_must_be_ipv4() -> None:
    with pytest.raises(ValueError, match="router-id"):
        render_frr_bgpd(65001, "fd00::1", PEERS)


def test_frr_config_has_peers_networks_and_no_policy_requirement() -> None:
    text = render_frr_bgpd(65001, "10.0.0.1", PEERS, ["203.0.113.0/24", "2001:db8::/32"])
    assert "router bgp 65001" in text
    assert "no bgp ebgp-requires-policy" in text
    assert " neighbor 10.0.0.2 remote-as 65002" in text
    assert " neighbor 10.0.0.2 update-source 10.0.0.1" in text
    assert " neighbor fd00::2 password s3cret" in text
    v4 = text.split("address-family ipv4 unicast")[1].split("exit-address-family")[0]
    v6 = text.split("address-family ipv6 unicast")[1].split("exit-address-family")[0]
    assert "network 203.0.113.0/24" in v4 and "2001:db8::/32" not in v4
    assert "network 2001:db8::/32" in v6 and "203.0.113.0/24" not in v6


def test_frr_config_is_accepted_by_bgpd(tmp_path: Path) -> None:
    bgpd = require_tool("bgpd", "/usr/lib/frr/bgpd")
    conf = tmp_path / "bgpd.conf"
    conf.write_text(render_frr_bgpd(65001, "10.0.0.1", PEERS, ["203.0.113.0/24", "2001:db8::/32"]))
    proc = subprocess.run(
        [bgpd, "-C", "-f", str(conf), "-Z", "-S"], capture_output=True, text=True, check=False, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bird_config_is_accepted_by_bird(tmp_path: Path) -> None:
    bird = require_tool("bird")
    conf = tmp_path / "bird.conf"
    conf.write_text(render_bird(65003, "10.0.1.1", PEERS, ["198.18.0.0/15", "2001:db8::/32"]))
    proc = subprocess.run(
        [bird, "-p", "-c", str(conf)], capture_output=True, text=True, check=False, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_exabgp_config_is_accepted_by_exabgp(tmp_path: Path) -> None:
    exabgp = require_tool("exabgp")
    conf = tmp_path / "exabgp.conf"
    peers = [*PEERS[:1], BgpPeer("fd00::2", 65002, local_address="fd00::1", password="s3cret")]
    text = render_exabgp(65002, "10.0.0.2", peers, ["192.0.2.0/24", "2001:db8:2::/48"], api_run="/bin/cat")
    assert "process api-log" in text and "processes [ api-log ]" in text
    conf.write_text(text)
    proc = subprocess.run(
        [exabgp, "validate", str(conf)], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_exabgp_routes_need_a_local_address() -> None:
    with pytest.raises(ValueError, match="fd00::2: announcing routes needs local_address"):
        render_exabgp(65002, "10.0.0.2", PEERS, ["2001:db8:2::/48"])
    # Routes of the other family do not go to that peer, so no local address is needed.
    assert "192.0.2.0/24" not in render_exabgp(65002, "10.0.0.2", PEERS[1:], ["192.0.2.0/24"])


def test_bad_network_is_rejected_before_any_daemon_sees_it() -> None:
    with pytest.raises(ValueError):
        render_bird(65003, "10.0.1.1", PEERS, ["198.18.0.1/15"])


FRR_SUMMARY = {
    "ipv4Unicast": {"routerId": "10.0.0.1", "peers": {"10.0.0.2": {"state": "Established", "pfxRcd": 1}}},
    "ipv6Unicast": {"peers": {"fd00::2": {"state": "Active"}}},
}


def test_frr_summary_parsing() -> None:
    assert frr_peer_states(FRR_SUMMARY) == {"10.0.0.2": "Established", "fd00::2": "Active"}
    assert frr_peer_states({}) == {}
    with pytest.raises(DaemonOutputError, match="peers"):
        frr_peer_states({"ipv4Unicast": {"peers": []}})


def test_frr_table_parsing() -> None:
    table = {"vrfId": 0, "routes": {"203.0.113.0/24": [{"valid": True}], "192.0.2.0/24": [{}]}}
    assert frr_prefixes(table) == {"203.0.113.0/24", "192.0.2.0/24"}
    assert frr_prefixes({}) == set()
    with pytest.raises(DaemonOutputError):
        frr_prefixes({"routes": []})


BIRD_PROTOCOLS = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     21:50:00.123
static_ipv4 Static    master4    up     21:50:00.123
peer1      BGP        ---        up     21:50:01.456  Established
peer2      BGP        ---        start  2026-11-24 21:50:01  Active        Socket: Connection refused
"""


def test_bird_protocols_parsing() -> None:
    protos = bird_protocols(BIRD_PROTOCOLS)
    assert set(protos) == {"device1", "static_ipv4", "peer1", "peer2"}
    assert protos["peer1"].proto == "BGP" and protos["peer1"].state == "up"
    assert protos["peer1"].info == "Established"
    assert protos["peer2"].info.startswith("Active")
    assert bird_protocols("garbage\n\n") == {}


def test_bird_routes_parsing() -> None:
    text = """BIRD 2.0.12 ready.
Table master4:
192.0.2.0/24         unicast [peer1 21:50:02.000] * (100) [AS65002i]
\tvia 10.0.1.2 on eth0
198.18.0.0/15        blackhole [static_ipv4 21:50:00.123] * (200)

Table master6:
2001:db8::/32        unicast [peer1 21:50:02.000] * (100) [AS65002i]
"""
    assert bird_route_prefixes(text) == {"192.0.2.0/24", "198.18.0.0/15", "2001:db8::/32"}


def _state(peer: str, state: str) -> str:
    return json.dumps(
        {"type": "state", "neighbor": {"address": {"local": "x", "peer": peer}, "state": state}}
    )


def _update(
    peer: str, announce: dict[str, object] | None = None, withdraw: dict[str, object] | None = None
) -> str:
    update: dict[str, object] = {}
    if announce is not None:
        update["announce"] = announce
    if withdraw is not None:
        update["withdraw"] = withdraw
    return json.dumps(
        {"type": "update", "neighbor": {"address": {"peer": peer}, "message": {"update": update}}}
    )


def test_exabgp_api_stream() -> None:
    lines = [
        _state("10.0.0.1", "connected"),
        _state("10.0.0.1", "up"),
        "not json at all",
        "[1, 2]",
        _update(
            "10.0.0.1",
            announce={
                "ipv4 unicast": {"10.0.0.1": [{"nlri": "203.0.113.0/24"}, {"nlri": "198.51.100.0/24"}]},
                "ipv6 unicast": {"fd00::1": [{"nlri": "2001:db8::/32"}]},
            },
        ),
        _update("10.0.0.1", withdraw={"ipv4 unicast": [{"nlri": "198.51.100.0/24"}]}),
        _update("10.0.1.1", announce={"ipv4 unicast": {"10.0.1.1": [{"nlri": "192.0.2.0/24"}]}}),
        _state("10.0.1.1", "down"),
        json.dumps({"type": "update", "neighbor": {"message": {"update": "weird"}}}),
    ]
    messages, skipped = parse_json_lines("\n".join(lines) + "\n")
    assert skipped == 2
    assert exabgp_peer_states(messages) == {"10.0.0.1": "up", "10.0.1.1": "down"}
    assert exabgp_received_prefixes(messages) == {"203.0.113.0/24", "2001:db8::/32", "192.0.2.0/24"}
    assert exabgp_received_prefixes(messages, "10.0.0.1") == {"203.0.113.0/24", "2001:db8::/32"}
