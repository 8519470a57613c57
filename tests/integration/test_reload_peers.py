"""SIGHUP on a running node adds and removes a peer live: a--b running, c added to b's config, then
removed again; c's prefix comes and goes at a while the a--b session is never reset."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from alt_router.lab import Lab, Topology
from tests.integration.helpers import NodeSpec, PeerSpec, RunningNode, node_toml

pytestmark = [pytest.mark.netns, pytest.mark.slow]

TOPOLOGY = """
name = "{name}"
[hosts.a]
[hosts.b]
[hosts.c]
[[links]]
a = {{ host = "a", ifname = "eth0", addresses = ["10.31.0.1/24"] }}
b = {{ host = "b", ifname = "eth0", addresses = ["10.31.0.2/24"] }}
[[links]]
a = {{ host = "b", ifname = "eth1", addresses = ["10.32.0.2/24"] }}
b = {{ host = "c", ifname = "eth0", addresses = ["10.32.0.3/24"] }}
"""

B_TO_A = PeerSpec("a", 65001, "10.31.0.2", "10.31.0.1", ("10.255.1.2/30", "10.255.1.1"))
B_TO_C = PeerSpec("c", 65003, "10.32.0.2", "10.32.0.3", ("10.255.2.1/30", "10.255.2.2"), key=3)
SPEC_A = NodeSpec("a", 65001, "192.0.2.1", ("153.16.0.0/16",), (
    PeerSpec("b", 65002, "10.31.0.1", "10.31.0.2", ("10.255.1.1/30", "10.255.1.2")),))
SPEC_B = NodeSpec("b", 65002, "192.0.2.2", ("153.17.0.0/16",), (B_TO_A,))
SPEC_C = NodeSpec("c", 65003, "192.0.2.3", ("153.18.0.0/16",), (
    PeerSpec("b", 65002, "10.32.0.3", "10.32.0.2", ("10.255.2.2/30", "10.255.2.1"), key=3),))


def sessions(node: RunningNode) -> dict[str, tuple[bool, float]]:
    return {name: (p["up"], p["since"]) for name, p in node.status()["peers"].items()}


def sighup(node: RunningNode) -> None:
    os.kill(int((node.state_dir / "alt-router.pid").read_text()), signal.SIGHUP)


@pytest.fixture
def abc(lab_names: Callable[[str], str], tmp_path: Path
        ) -> Iterator[tuple[RunningNode, RunningNode, RunningNode]]:
    with Lab(Topology.from_toml(TOPOLOGY.format(name=lab_names("reloadp"))), workdir=tmp_path) as lab:
        a = RunningNode(lab, SPEC_A, tmp_path).start()
        b = RunningNode(lab, SPEC_B, tmp_path).start()
        c = RunningNode(lab, SPEC_C, tmp_path)
        yield a, b, c


def test_sighup_adds_and_removes_a_peer_without_resetting_the_others(
    abc: tuple[RunningNode, RunningNode, RunningNode],
) -> None:
    a, b, c = abc
    a.wait_routes(["153.17.0.0/16"])
    # a's route says a's side is up; b's side may record "up" a moment later (RFC 4271 §8: each
    # end reaches Established on its own KEEPALIVE), so wait for both before taking the snapshot.
    a.wait_json({"peers": {"b": {"up": True}}}, 20)
    b.wait_json({"peers": {"a": {"up": True}}}, 20)
    before_a, before_b = sessions(a), sessions(b)

    c.start()
    b.config.write_text(node_toml(NodeSpec(**{**vars(SPEC_B), "peers": (B_TO_A, B_TO_C)}), b.state_dir))
    sighup(b)
    a.wait_routes(["153.18.0.0/16"], timeout=25)
    c.wait_routes(["153.16.0.0/16", "153.17.0.0/16"], timeout=10)
    a.wait_json({"routes": {"153.18.0.0/16": {"as_path": [65002, 65003]}}}, 5)
    assert "alt-c" in b.status()["tunnels"]["tunnels"]  # c's routes came through it
    assert sessions(a) == before_a and sessions(b)["a"] == before_b["a"], "the reload reset the a--b session"

    b.config.write_text(node_toml(SPEC_B, b.state_dir))
    sighup(b)
    a.wait_routes(["153.17.0.0/16"], timeout=15, absent=["153.18.0.0/16"])
    b.wait_json({"peers": {"c": None}, "tunnels": {"tunnels": {"alt-c": None}}}, 10)
    assert sessions(a) == before_a and sessions(b) == before_b, "the reload reset the a--b session"
    log = (b.lab.workdir / "b-alt-router.log").read_text()
    assert "peers added c" in log and "peers removed c" in log
