"""The parts ``Node`` is composed of (issue 13): tunnel names from one place, the control answers,
the state-directory files, and the ExaBGP renderer fed by its own input types, not the node config."""

from __future__ import annotations

import ast
import dataclasses
import os
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface, ip_network
from pathlib import Path
from typing import Any

import pytest

import alt_router
from alt_router.bgp.exabgp_config import render_exabgp_config
from alt_router.node import control, state
from alt_router.node.config import parse_config
from alt_router.node.daemon import Node
from alt_router.node.tunnels import names_for_added, tunnel_configs, tunnel_names
from alt_router.node.view import DaemonView
from alt_router.types import IPAddress, Prefix

from .test_daemon_core import CONFIG
from .test_reload import PEER_D

# Peer names too long for "alt-<name>" (15 characters at most): their tunnels get "alt<index>".
LONG = (CONFIG.replace('name = "a"', 'name = "peer-a-long-name"')
        .replace('name = "c"', 'name = "peer-c-long-name"'))


def node_for(text: str, tmp_path: Path) -> Node:
    text = text.replace('state_dir = "/nonexistent"', f'state_dir = "{tmp_path}"')
    return Node(parse_config(text), with_tunnels=False)


def test_fallback_tunnel_names_follow_the_peer_index() -> None:
    config = parse_config(LONG)
    assert tunnel_names(config.peers) == {"peer-a-long-name": "alt0", "peer-c-long-name": "alt1"}
    assert [t.name for t in tunnel_configs(config)] == ["alt0", "alt1"]


def test_api_shows_the_tunnel_name_the_node_uses_after_a_reload_removed_a_peer(tmp_path: Path) -> None:
    node = node_for(LONG, tmp_path)
    without_a = LONG[LONG.index('[[peers]]\nname = "peer-c-long-name"'):]
    without_a = LONG[:LONG.index("[[peers]]")] + without_a
    node.reload(parse_config(without_a.replace('state_dir = "/nonexistent"', f'state_dir = "{tmp_path}"')))
    # The kept peer keeps its tunnel (and its name): it is now peer 0, but its tunnel is alt1.
    assert node.tunnel_names == {"peer-c-long-name": "alt1"}
    view = DaemonView(node)
    assert [(t["name"], t["peer"]) for t in view.tunnels()] == [("alt1", "peer-c-long-name")]
    assert node.mapping is not None and node.mapping.forwarder.tunnels == {"peer-c-long-name": "alt1"}


def test_a_peer_added_by_reload_never_takes_a_name_in_use() -> None:
    config = parse_config(LONG + PEER_D.replace('name = "d"', 'name = "peer-d-long-name"'))
    added = config.peers[2:]
    # "alt2" (its index) is taken by a kept peer that moved: the next free index is used.
    assert names_for_added(["alt0", "alt2"], added, {"peer-d-long-name": 2}) == {"peer-d-long-name": "alt3"}
    assert names_for_added(["alt0"], added, {"peer-d-long-name": 2}) == {"peer-d-long-name": "alt2"}


class FakeNode:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.announced: list[str] = []

    def status(self, *, routes: bool = True) -> dict[str, Any]:
        return {"routes": routes}

    def announce(self, prefix: str) -> bool:
        self.announced.append(prefix)
        return True

    def withdraw(self, prefix: str) -> bool:
        return False

    def route(self, address: str) -> dict[str, Any] | None:
        return None if address == "10.0.0.1" else {"prefix": "153.16.0.0/16"}

    def registrations(self) -> list[dict[str, Any]]:
        return [{"site": "s1"}]

    def write_status(self) -> Path:
        return self.tmp_path / "status.json"


def test_control_answers_each_command_and_refuses_the_rest(tmp_path: Path) -> None:
    node = FakeNode(tmp_path)
    assert control.answer(node, {"cmd": "status", "routes": False}) == {"ok": True, "routes": False}
    answer = control.answer(node, {"cmd": "announce", "prefix": "153.16.1.0/24"})
    assert answer == {"ok": True, "changed": True}
    assert node.announced == ["153.16.1.0/24"]
    assert control.answer(node, {"cmd": "lookup", "address": "10.0.0.1"}) == {"ok": True, "route": None}
    assert control.answer(node, {"cmd": "registrations"})["registrations"] == [{"site": "s1"}]
    assert control.answer(node, {"cmd": "dump"}) == {"ok": True, "path": str(tmp_path / "status.json")}
    assert control.answer(node, ["status"]) == {"ok": False, "error": "request must be a JSON object"}
    assert control.answer(node, {"cmd": "reboot"}) == {"ok": False, "error": "unknown cmd 'reboot'"}
    # debug-stall freezes the loop: only with the test switch on.
    assert control.answer(node, {"cmd": "debug-stall"})["ok"] is (os.environ.get(control.DEBUG_ENV) == "1")


def test_the_daemon_answers_control_through_the_same_function(tmp_path: Path) -> None:
    node = node_for(CONFIG, tmp_path)
    assert node.control({"cmd": "lookup", "address": "153.16.0.1"}) == {"ok": True, "route": None}
    refused = node.control({"cmd": "announce", "prefix": "not-a-prefix"})
    assert refused["ok"] is False and "not-a-prefix" in refused["error"]


def test_state_files_round_trip_and_the_pidfile_is_ours(tmp_path: Path) -> None:
    state.save_announcements(tmp_path, [ip_network("153.16.1.0/24")])
    assert state.load_announcements(tmp_path) == ["153.16.1.0/24"]
    (tmp_path / state.ANNOUNCEMENTS_FILE).write_text("{not json")
    assert state.load_announcements(tmp_path) == []
    state.claim_pidfile(tmp_path)
    assert (tmp_path / state.PIDFILE).read_text() == f"{os.getpid()}\n"
    state.release_pidfile(tmp_path)
    assert not (tmp_path / state.PIDFILE).exists()
    snap = state.status_totals({"mapping": {"registrations": [{}, {}]}})
    assert snap == {"mapping": {"registrations": 2}}
    assert state.write_status(tmp_path, snap).read_text().startswith("{")


@dataclasses.dataclass(frozen=True)
class _Tunnel:
    session: tuple[IPAddress, IPAddress]
    local_ipv4: IPv4Interface | None = None
    local_ipv6: IPv6Interface | None = None


@dataclasses.dataclass(frozen=True)
class _Peer:
    name: str
    asn: int
    tunnel: _Tunnel
    families: tuple[str, ...] = ("ipv4",)
    hold_time: int = 9
    md5_password: str | None = None
    description: str = ""


@dataclasses.dataclass(frozen=True)
class _Local:
    name: str = "x"
    asn: int = 65010
    router_id: IPv4Address = dataclasses.field(default_factory=lambda: IPv4Address("192.0.2.10"))


@dataclasses.dataclass(frozen=True)
class _Routes:
    announce: tuple[Prefix, ...] = (ip_network("153.18.0.0/16"),)


@dataclasses.dataclass(frozen=True)
class _Speaker:
    peers: tuple[_Peer, ...]
    node: _Local = _Local()
    eid: _Routes = _Routes()
    source: str = "test"


def test_exabgp_config_renders_from_its_own_input_types_without_a_node_config() -> None:
    # The bgp package is core: it takes what it needs (bgp/exabgp_config.Speaker), not NodeConfig.
    peer = _Peer("p", 65011, _Tunnel((IPv4Address("10.9.0.1"), IPv4Address("10.9.0.2")),
                                     local_ipv4=IPv4Interface("10.9.0.1/30")))
    text = render_exabgp_config(_Speaker((peer,)), "/bin/true")
    assert "neighbor 10.9.0.2 {" in text and "local-as 65010;" in text and "peer-as 65011;" in text
    assert "route 153.18.0.0/16 next-hop self;" in text


@pytest.mark.parametrize("name", ["a", "c"])
def test_each_peer_of_a_started_node_has_one_name_everywhere(tmp_path: Path, name: str) -> None:
    node = node_for(CONFIG, tmp_path)
    assert node.mapping is not None
    assert node.tunnel_names[name] == node.mapping.forwarder.tunnels[name] == f"alt-{name}"
    assert {t["name"] for t in DaemonView(node).tunnels()} == {"alt-a", "alt-c"}


def test_nothing_the_daemon_runs_sleeps_on_the_event_loop() -> None:
    # Issue 13: the daemon once killed ExaBGP with a time.sleep loop inside async code.  Every
    # module the daemon process runs (node/, bgp/supervisor.py) waits with asyncio, never time.sleep.
    root = Path(alt_router.__file__).parent
    found = []
    for path in [*sorted((root / "node").glob("*.py")), root / "bgp" / "supervisor.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr == "sleep" and isinstance(node.value, ast.Name)
                    and node.value.id == "time"):
                found.append(f"{path.name}:{node.lineno}")
    assert found == []
