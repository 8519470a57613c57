"""FrrSupervisor with the real FRR 8.4 in a namespace: SIGKILL of zebra or bgpd is recovered.

The node's instance (zebra + bgpd, ``-N``, per-instance paths) peers over a veth with a plain
FRR bgpd (topologies/frr/lab_veth.toml, node_one_peer.toml); after each SIGKILL the supervisor
restarts what died (zebra: both, in order), the session comes back and zebra installs the peer's
route in the kernel table again.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from alt_router.bgp.frr import FrrSupervisor
from alt_router.bgp.frr_config import ESTABLISHED
from alt_router.bgp.supervisor import Backoff
from alt_router.lab import Lab
from alt_router.lab.daemon_text import BgpPeer
from alt_router.lab.daemons import start_frr
from tests.bgp.frr_netns import frr_lab_name, frr_state_root
from tests.integration.topologies.frr_topology import frr_lab, frr_node

pytestmark = [pytest.mark.netns, pytest.mark.slow]

LEARNED = "153.17.0.0/16"


@pytest.fixture
def lab_name() -> Iterator[str]:
    yield from frr_lab_name("frrsup")


@pytest.fixture
def state_root() -> Iterator[Path]:
    yield from frr_state_root()


def test_sigkill_of_zebra_and_bgpd_is_recovered(lab_name: str, state_root: Path, tmp_path: Path) -> None:
    config = frr_node("node_one_peer.toml", state_dir=state_root / "n")
    with Lab(frr_lab("lab_veth.toml", lab_name), workdir=tmp_path) as lab:
        start_frr(lab, "p", asn=65002, router_id="10.0.0.2", peers=[BgpPeer("10.0.0.1", 65001)],
                  networks=[LEARNED])
        sup = FrrSupervisor(config, config.node.state_dir / "frr", pathspace=f"{lab_name}-n",
                            backoff=Backoff(initial=0.2, maximum=1.0),
                            command_prefix=["ip", "netns", "exec", lab.netns("n")])

        def kernel_has_route() -> bool:
            out = lab.exec("n", ["ip", "route", "show", "proto", "bgp"]).stdout
            return LEARNED in out

        async def converged() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 40
            while True:
                states = await sup.peer_states() if sup.ready.is_set() else {}
                if states.get("10.0.0.2") == ESTABLISHED and kernel_has_route():
                    return
                assert loop.time() < deadline, f"not converged: {states}"
                await asyncio.sleep(0.2)

        async def scenario() -> None:
            await sup.start()
            try:
                await converged()
                for daemon in ("zebra", "bgpd"):
                    pid = sup.pids()[daemon]
                    assert pid is not None
                    os.kill(pid, signal.SIGKILL)
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + 20
                    while sup.pids()[daemon] in (None, pid) or not sup.ready.is_set():
                        assert loop.time() < deadline, f"{daemon} not restarted"
                        await asyncio.sleep(0.1)
                    await converged()
                assert sup.restarts == {"zebra": 1, "bgpd": 1}
            finally:
                await sup.stop()
            assert not kernel_has_route()  # zebra took its routes with it

        asyncio.run(scenario())
