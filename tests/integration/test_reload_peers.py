"""SIGHUP on a running node adds and removes a peer live: a--b running, c added to b's config, then
removed again; c's prefix comes and goes at a while the a--b session is never reset."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from alt_router.lab import Lab, ordered_list
from alt_router.lab.alt_topology import AltTopology
from tests.integration.helpers import RunningNode, alt_topology

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def without_tunnel(alt: AltTopology, a: str, b: str) -> AltTopology:
    """``alt`` less the tunnel between ``a`` and ``b`` (the others keep their keys and addresses)."""
    return replace(alt, tunnels=tuple(t for t in alt.tunnels if {t.a, t.b} != {a, b}))


def sessions(node: RunningNode) -> dict[str, tuple[bool, float]]:
    return {name: (p["up"], p["since"]) for name, p in node.status()["peers"].items()}


def sighup(node: RunningNode) -> None:
    os.kill(int((node.state_dir / "alt-router.pid").read_text()), signal.SIGHUP)


@pytest.fixture
def abc(lab_names: Callable[[str], str], tmp_path: Path
        ) -> Iterator[tuple[AltTopology, RunningNode, RunningNode, RunningNode]]:
    """topologies/reload_peers.toml: a -- b -- c, with b configured without its tunnel to c."""
    alt = alt_topology("reload_peers.toml", lab_names("reloadp"))
    with Lab(alt.topology, workdir=tmp_path) as lab:
        a = RunningNode(lab, alt, "a", tmp_path).start()
        b = RunningNode(lab, without_tunnel(alt, "b", "c"), "b", tmp_path).start()
        c = RunningNode(lab, alt, "c", tmp_path)
        yield alt, a, b, c


def test_sighup_adds_and_removes_a_peer_without_resetting_the_others(
    abc: tuple[AltTopology, RunningNode, RunningNode, RunningNode],
) -> None:
    alt, a, b, c = abc
    a.wait_routes(["153.17.0.0/16"])
    # a's route says a's side is up; b's side may record "up" a moment later (RFC 4271 §8: each
    # end reaches Established on its own KEEPALIVE), so wait for both before taking the snapshot.
    a.wait_json({"peers": {"b": {"up": True}}}, 20)
    b.wait_json({"peers": {"a": {"up": True}}}, 20)
    before_a, before_b = sessions(a), sessions(b)

    c.start()
    b.configure(alt)
    sighup(b)
    a.wait_routes(["153.18.0.0/16"], timeout=25)
    c.wait_routes(["153.16.0.0/16", "153.17.0.0/16"], timeout=10)
    a.wait_json({"routes": {"153.18.0.0/16": {"as_path": ordered_list([65002, 65003])}}}, 5)
    b.wait_json({"tunnels": {"tunnels": {"alt-c": {}}}}, 5)  # c's routes came through it
    assert sessions(a) == before_a and sessions(b)["a"] == before_b["a"], "the reload reset the a--b session"

    b.configure(without_tunnel(alt, "b", "c"))
    sighup(b)
    a.wait_routes(["153.17.0.0/16"], timeout=15, absent=["153.18.0.0/16"])
    b.wait_json({"peers": {"c": None}, "tunnels": {"tunnels": {"alt-c": None}}}, 10)
    assert sessions(a) == before_a and sessions(b) == before_b, "the reload reset the a--b session"
    log = (b.lab.workdir / "b-alt-router.log").read_text()
    assert "peers added c" in log and "peers removed c" in log
