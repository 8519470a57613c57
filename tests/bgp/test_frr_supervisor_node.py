"""``Node`` in ``[node] bgp = "frr"`` mode, with stand-in zebra/bgpd/vtysh (no root, no FRR needed).

The node is topologies/frr/node_stand_in.toml (peers b and c).

The node starts its FRR instance instead of ExaBGP and the bridge, routes ``announce``/``withdraw``
to vtysh, marks peers up or down in its RIB from FRR's summary JSON, and shows FRR in its status.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alt_router.bgp.bridge import SOCKET_NAME
from alt_router.node import frr_mode
from alt_router.node import mapping as node_mapping
from alt_router.node.config import NodeConfig
from alt_router.node.daemon import Node
from alt_router.rib import PeerInfo, Rib
from tests.bgp.test_frr_supervisor import FAST, make_bin, until
from tests.integration.topologies.frr_topology import frr_node


class FakeLocalRoutes:
    def __init__(self, *, vrf: str | None = None) -> None:
        self.vrf = vrf
        self.installed: set[Any] = set()
        self.errors = 0

    def set(self, prefixes: Any) -> None:
        self.installed = set(prefixes)

    def clear(self) -> None:
        self.installed = set()


class FakeKernelRoutes:
    def __init__(self) -> None:
        self.started = False
        self.stopped = False
        self.on_stop: Callable[[], Any] | None = None
        self.seen_at_stop: Any = None

    async def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True
        if self.on_stop is not None:
            self.seen_at_stop = self.on_stop()

    def counters(self) -> dict[str, int]:
        return {"routes": 0}


def node_config(state_dir: Path, bin_dir: Path, *, vrf: str | None = None) -> NodeConfig:
    """topologies/frr/node_stand_in.toml, run by the stand-in scripts in ``bin_dir``."""
    frr: dict[str, str | int] = {"bin_dir": str(bin_dir), "vtysh": str(bin_dir / "vtysh")}
    if vrf is not None:
        frr["vrf"] = vrf
    return frr_node("node_stand_in.toml", state_dir=state_dir, frr=frr,
                    api={"port": 21000 + os.getpid() % 20000})


def config_commands(log: Path) -> list[str]:
    """The vtysh runs that changed the config (the peer-state polls are ``show ...``)."""
    return [line for line in log.read_text().splitlines() if line.startswith("configure terminal")]


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> FakeKernelRoutes:
    fake = FakeKernelRoutes()

    def factory(rib: Rib, peer_of_ifname: Any, *, table: int, clock: Any) -> FakeKernelRoutes:
        assert table == 254 and peer_of_ifname("alt-b") == "b" and peer_of_ifname("eth0") is None
        return fake

    monkeypatch.setattr(frr_mode, "default_kernel_rib", factory)
    # The node's kernel data path (node/kernel_alt.py) would switch on forwarding and install local
    # routes in the namespace the test runs in: the host's, here.
    monkeypatch.setattr(node_mapping, "enable_forwarding", lambda **_: [])
    monkeypatch.setattr(node_mapping, "LocalRoutes", FakeLocalRoutes)
    return fake


def test_frr_mode_node(tmp_path: Path, kernel: FakeKernelRoutes) -> None:
    bin_dir = make_bin(tmp_path)
    node = Node(node_config(tmp_path / "state", bin_dir), with_tunnels=False, backoff=FAST)
    assert node.frr is not None
    assert node.hook is None  # no userspace forwarder: the kernel forwards ALT datagrams
    node.frr.supervisor.user = os.environ.get("USER") or "root"
    node.frr.poll_interval = 0.05

    async def scenario() -> None:
        await node.start()
        try:
            assert node.frr is not None
            sup = node.frr.supervisor
            kernel.on_stop = sup.pids
            assert kernel.started
            assert node.supervisor.pid is None  # no ExaBGP
            assert not (node.state_dir / SOCKET_NAME).exists()  # no bridge socket
            assert sup.pids()["bgpd"] is not None
            # The stand-in vtysh says b is Established, c is not (RFC 4271 §8.2.2 states).
            await until(lambda: (p := node.rib.peer("b")) is not None and p.up)
            c = node.rib.peer("c")
            assert c is not None and not c.up
            # A Map-Server's site prefix goes to bgpd through vtysh, and back out.
            assert node.announce("153.16.1.0/24")
            await sup.settle()
            assert config_commands(sup.path("vtysh.log"))[-1].endswith(" / network 153.16.1.0/24")
            assert node.withdraw("153.16.1.0/24")
            await sup.settle()
            assert config_commands(sup.path("vtysh.log"))[-1].endswith(" / no network 153.16.1.0/24")
            status = node.status(routes=False)
            assert status["frr"]["pids"]["zebra"] is not None
            assert status["frr"]["sessions"]["10.255.1.2"] == "Established"
            assert status["frr"]["kernel_rib"] == {"routes": 0}
            assert node.bridge.dropped_commands == 0  # nothing was sent towards an ExaBGP
        finally:
            await node.stop()
        assert kernel.stopped
        # The kernel reader stopped while FRR still ran: zebra's teardown of a large table must
        # not queue a delete event per route for the stopping node.
        assert None not in kernel.seen_at_stop.values()
        assert node.frr.supervisor.pids() == {"zebra": None, "bgpd": None}

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_site_prefixes_announced_before_a_restart_are_in_the_first_config(
    tmp_path: Path, kernel: FakeKernelRoutes,
) -> None:
    bin_dir = make_bin(tmp_path)
    config = node_config(tmp_path / "state", bin_dir)
    node = Node(config, with_tunnels=False, backoff=FAST)
    assert node.frr is not None
    node.frr.supervisor.user = os.environ.get("USER") or "root"
    node.core.announce("153.16.7.0/24")  # e.g. loaded from announcements.json

    async def scenario() -> None:
        await node.start()
        try:
            assert node.frr is not None
            assert "  network 153.16.7.0/24\n" in node.frr.supervisor.path("bgpd.conf").read_text()
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


class Nla:
    """Just enough of a pyroute2 netlink message: ``get_attr``."""

    def __init__(self, **attrs: Any) -> None:
        self.attrs = attrs

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


class FakeIpr:
    def __init__(self, kind: str = "vrf") -> None:
        self.index = {"alt": 7, "alt-b": 11, "alt-c": 12}
        self.kind = kind
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def link_lookup(self, ifname: str) -> list[int]:
        return [self.index[ifname]] if ifname in self.index else []

    def get_links(self, index: int) -> list[Nla]:
        data = Nla(IFLA_VRF_TABLE=100) if self.kind == "vrf" else None
        return [Nla(IFLA_LINKINFO=Nla(IFLA_INFO_KIND=self.kind, IFLA_INFO_DATA=data))]

    def link(self, command: str, **kwargs: Any) -> None:
        self.calls.append((command, kwargs))


def test_vrf_setup_enslaves_the_tunnels_and_finds_the_table() -> None:
    """A kernel VRF (where the host has one): tunnels become its slaves, its table is the ALT's."""
    ipr = FakeIpr()
    assert frr_mode.vrf_setup(ipr, "alt", ["alt-b", "alt-c"]) == 100
    assert ipr.calls == [("set", {"index": 11, "master": 7}), ("set", {"index": 12, "master": 7})]
    with pytest.raises(frr_mode.FrrError, match="no such interface"):
        frr_mode.vrf_setup(ipr, "nope", ["alt-b"])
    with pytest.raises(frr_mode.FrrError, match="tunnel alt-x does not exist"):
        frr_mode.vrf_setup(ipr, "alt", ["alt-x"])
    with pytest.raises(frr_mode.FrrError, match="not a kernel VRF"):
        frr_mode.vrf_setup(FakeIpr(kind="bridge"), "alt", ["alt-b"])


def test_frr_mode_with_a_vrf_reads_the_vrfs_table(tmp_path: Path, kernel: FakeKernelRoutes) -> None:
    bin_dir = make_bin(tmp_path)
    config = node_config(tmp_path / "state", bin_dir, vrf="alt")
    ipr = FakeIpr()
    rib = Rib(65001, config.eid.accept, [])
    tables: list[int] = []

    def factory(rib: Rib, peer_of_ifname: Any) -> FakeKernelRoutes:
        tables.append(mode.table)
        return kernel

    mode = frr_mode.FrrMode(config, rib, {"b": "alt-b", "c": "alt-c"}, backoff=FAST, kernel_rib=factory,
                            netlink=lambda work: work(ipr))
    mode.supervisor.user = os.environ.get("USER") or "root"

    async def scenario() -> None:
        await mode.start()
        try:
            assert tables == [100]
            assert "router bgp 65001 vrf alt\n" in mode.supervisor.path("bgpd.conf").read_text()
            assert [kw["index"] for _, kw in ipr.calls] == [11, 12]
        finally:
            await mode.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_peer_states_from_frr_mark_peers_up_and_down_in_the_rib(tmp_path: Path) -> None:
    """RFC 4271 §8: only an Established session is up; any other FRR state (max-prefix, Idle) is down."""
    config = node_config(tmp_path / "state", tmp_path)
    rib = Rib(65001, config.eid.accept, [PeerInfo(p.name, p.asn, p.tunnel.remotes) for p in config.peers])
    mode = frr_mode.FrrMode(config, rib, {"b": "alt-b", "c": "alt-c"}, clock=lambda: 5.0)
    mode.apply_states({"10.255.1.2": "Established", "10.255.2.2": "Active"})
    b, c = rib.peer("b"), rib.peer("c")
    assert b is not None and c is not None
    assert b.up and not c.up and b.since == 5.0
    mode.apply_states({"10.255.1.2": "Idle (PfxCt)", "10.255.2.2": "Established"})
    assert not b.up and b.last_down_reason == "FRR: Idle (PfxCt)" and c.up
    mode.apply_states({})  # FRR not answering while bgpd restarts: nothing is up
    assert not c.up and "not in FRR's summary" in c.last_down_reason
    assert mode.peer_of_ifname("alt-c") == "c" and mode.peer_of_ifname("lo") is None


def test_a_vrf_node_sends_and_installs_local_routes_in_the_vrf(tmp_path: Path,
                                                               kernel: FakeKernelRoutes) -> None:
    """[frr] vrf: the Map-Resolver's raw sockets and the local routes follow the ALT into the VRF."""
    node = Node(node_config(tmp_path / "state", tmp_path, vrf="alt"), with_tunnels=False, backoff=FAST)
    assert node.mapping is not None
    assert node.mapping.kernel_sender is not None and node.mapping.kernel_sender.vrf == "alt"
    assert isinstance(node.mapping.local_routes, FakeLocalRoutes) and node.mapping.local_routes.vrf == "alt"
