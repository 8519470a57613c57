"""FrrSupervisor's process handling, with stand-in zebra/bgpd/vtysh scripts (no root, no FRR needed).

The stand-ins do what the supervisor relies on of the real daemons: write the pid file, create
``<vty_socket>/<name>.vty`` once ready, run in the foreground until SIGTERM.  tests/bgp/
test_frr_supervisor_netns.py runs the real FRR.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from ipaddress import IPv4Address, ip_network
from pathlib import Path
from typing import Any

import pytest

from alt_router.bgp.frr import KILL_WAIT, STOP_WAIT, FrrError, FrrSupervisor
from alt_router.bgp.supervisor import Backoff
from alt_router.node.config import NodeConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
FAST = Backoff(initial=0.05, factor=2.0, maximum=0.2, stable_after=60.0)

DAEMON = f"""#!{sys.executable}
import os, signal, sys, time
from pathlib import Path
args = sys.argv[1:]
name = Path(sys.argv[0]).name
opt = lambda flag: args[args.index(flag) + 1]
run = Path(opt("--vty_socket"))
if (run / f"fail-{{name}}").exists():
    print(f"{{name}}: refusing to start", flush=True)
    sys.exit(1)
Path(opt("-i")).write_text(f"{{os.getpid()}}\\n")
with open(run / "starts.log", "a") as log:
    log.write(f"{{name}} {{os.getpid()}} {{' '.join(args)}}\\n")
stubborn = (run / f"ignore-term-{{name}}").exists()  # a daemon busy tearing a large table down
def on_term(*_):
    with open(run / "signals.log", "a") as log:
        log.write(f"{{name}} TERM\\n")
    if not stubborn:
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
(run / f"{{name}}.vty").touch()
while True:
    time.sleep(1)
"""

VTYSH = f"""#!{sys.executable}
import json, sys
from pathlib import Path
args = sys.argv[1:]
run = Path(args[args.index("--vty_socket") + 1])
commands = [args[i + 1] for i, a in enumerate(args) if a == "-c"]
with open(run / "vtysh.log", "a") as log:
    log.write(" / ".join(commands) + "\\n")
if any("bogus" in c for c in commands) or (
        (run / "refuse-config").exists() and commands[:1] == ["configure terminal"]):
    print("% Unknown command: bogus")
    sys.exit(1)
if commands and commands[-1].endswith("summary json"):
    print(json.dumps({{"ipv4Unicast": {{"peers": {{"10.255.1.2": {{"state": "Established"}},
                                                  "10.255.2.2": {{"state": "Connect"}}}}}}}}))
"""


def node_a() -> NodeConfig:
    return load_config(ROOT / "docs" / "examples" / "node-a.toml")


def make_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("zebra", DAEMON), ("bgpd", DAEMON), ("vtysh", VTYSH)):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return bin_dir


def supervisor(tmp_path: Path) -> FrrSupervisor:
    bin_dir = make_bin(tmp_path)
    return FrrSupervisor(node_a(), tmp_path / "state" / "frr", pathspace="alt-a", bin_dir=bin_dir,
                         vtysh=str(bin_dir / "vtysh"), backoff=FAST, user=getpass.getuser())


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def starts(sup: FrrSupervisor) -> list[tuple[str, int, str]]:
    path = sup.path("starts.log")
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        name, pid, args = line.split(" ", 2)
        out.append((name, int(pid), args))
    return out


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_zebra_then_bgpd_with_explicit_per_instance_paths(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)

    async def scenario() -> None:
        await sup.start()
        try:
            (zebra, zpid, zargs), (bgpd, bpid, bargs) = starts(sup)
            assert (zebra, bgpd) == ("zebra", "bgpd")
            assert sup.pids() == {"zebra": zpid, "bgpd": bpid}
            run_dir = str(sup.run_dir)
            for args, name in ((zargs, "zebra"), (bargs, "bgpd")):
                # Its own pathspace, sockets and files: it coexists with the operator's FRR.
                assert f"-N alt-a -f {run_dir}/{name}.conf -i {run_dir}/{name}.pid" in args
                assert f"-z {run_dir}/zserv.api --vty_socket {run_dir} -P 0" in args
            assert "router bgp 65001" in sup.path("bgpd.conf").read_text()
            assert "ip forwarding" in sup.path("zebra.conf").read_text()
            assert sup.path("bgpd.conf").stat().st_mode & 0o777 == 0o640  # MD5 passwords inside
            assert sup.ready.is_set()
        finally:
            await sup.stop()
        assert sup.pids() == {"zebra": None, "bgpd": None}
        for _, pid, _ in starts(sup):
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)

    run(scenario)


def test_sigkill_of_bgpd_restarts_bgpd_only(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)

    async def scenario() -> None:
        await sup.start()
        try:
            zebra, bgpd = sup.pids()["zebra"], sup.pids()["bgpd"]
            assert bgpd is not None
            os.kill(bgpd, signal.SIGKILL)
            await until(lambda: sup.pids()["bgpd"] not in (None, bgpd) and sup.ready.is_set())
            assert sup.pids()["zebra"] == zebra
            assert sup.restarts == {"zebra": 0, "bgpd": 1}
        finally:
            await sup.stop()

    run(scenario)


def test_sigkill_of_zebra_restarts_both_in_order(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)

    async def scenario() -> None:
        await sup.start()
        try:
            zebra, bgpd = sup.pids()["zebra"], sup.pids()["bgpd"]
            assert zebra is not None
            os.kill(zebra, signal.SIGKILL)
            await until(lambda: sup.pids()["bgpd"] not in (None, bgpd) and sup.ready.is_set())
            assert sup.pids()["zebra"] not in (None, zebra)
            assert [name for name, _, _ in starts(sup)] == ["zebra", "bgpd", "zebra", "bgpd"]
            assert sup.restarts == {"zebra": 1, "bgpd": 0}
        finally:
            await sup.stop()

    run(scenario)


def test_a_daemon_that_will_not_start_is_retried_with_backoff(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)

    async def scenario() -> None:
        await sup.start()
        try:
            sup.path("fail-bgpd").touch()
            bgpd = sup.pids()["bgpd"]
            assert bgpd is not None
            os.kill(bgpd, signal.SIGKILL)
            await until(lambda: sup.counters["start-failures"] >= 2)
            assert not sup.ready.is_set()
            sup.path("fail-bgpd").unlink()
            await until(lambda: sup.ready.is_set() and sup.pids()["bgpd"] is not None)
            assert sup.restarts["bgpd"] >= 3
        finally:
            await sup.stop()

    run(scenario)


def test_first_start_failure_raises_with_the_log(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    sup.run_dir.mkdir(parents=True)
    sup.path("fail-zebra").touch()

    async def scenario() -> None:
        with pytest.raises(FrrError, match=r"zebra exited with status 1.*refusing to start"):
            await sup.start()
        assert sup.pids() == {"zebra": None, "bgpd": None}

    run(scenario)


def test_run_time_originations_use_vtysh_and_survive_a_restart(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    site = ip_network("153.16.1.0/24")

    async def scenario() -> None:
        await sup.start()
        try:
            assert sup.originate(site) and not sup.originate(site)
            await sup.settle()
            log = sup.path("vtysh.log").read_text().splitlines()
            assert log[-1] == ("configure terminal / router bgp 65001 / address-family ipv4 unicast / "
                               "network 153.16.1.0/24")
            # bgpd restarted: its new config holds the prefix (nothing is lost with the old bgpd).
            bgpd = sup.pids()["bgpd"]
            assert bgpd is not None
            os.kill(bgpd, signal.SIGKILL)
            await until(lambda: sup.pids()["bgpd"] not in (None, bgpd) and sup.ready.is_set())
            assert "  network 153.16.1.0/24\n" in sup.path("bgpd.conf").read_text()
            assert sup.withdraw(site) and not sup.withdraw(site)
            await sup.settle()
            assert sup.path("vtysh.log").read_text().splitlines()[-1].endswith("no network 153.16.1.0/24")
        finally:
            await sup.stop()

    run(scenario)


def config_runs(sup: FrrSupervisor) -> list[str]:
    """The vtysh runs that changed the config or reset sessions (the polls are ``show ...``)."""
    path = sup.path("vtysh.log")
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in lines if line.startswith(("configure terminal", "clear "))]


def test_reload_applies_a_removed_peer_live(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)

    async def scenario() -> None:
        await sup.start()
        try:
            bgpd = sup.pids()["bgpd"]
            assert not await sup.reload(node_a())
            assert config_runs(sup) == [] and sup.counters["reload-live"] == 0
            cfg = dataclasses.replace(node_a(), peers=node_a().peers[:1])
            assert not await sup.reload(cfg)  # no restart: b's session stays up
            assert config_runs(sup) == [
                "configure terminal / router bgp 65001 / no neighbor 10.255.2.2 / exit"]
            assert sup.pids()["bgpd"] == bgpd
            assert "10.255.2.2" not in sup.path("bgpd.conf").read_text()  # a later restart agrees
            assert sup.counters["reload-live"] == 1 and sup.counters["reload-restart"] == 0
            # A new hold time for b: its session is reset after the change (RFC 4271 §4.2).
            assert not await sup.reload(dataclasses.replace(
                cfg, peers=(dataclasses.replace(cfg.peers[0], hold_time=30),)))
            assert config_runs(sup)[-2:] == [
                "configure terminal / router bgp 65001 / neighbor 10.255.1.2 timers 10 30 / exit",
                "clear bgp vrf default 10.255.1.2"]
        finally:
            await sup.stop()

    run(scenario)


def test_reload_restarts_bgpd_for_a_new_router_id(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    cfg = node_a()
    moved = dataclasses.replace(cfg, node=dataclasses.replace(cfg.node, router_id=IPv4Address("192.0.2.99")))

    async def scenario() -> None:
        await sup.start()
        try:
            bgpd = sup.pids()["bgpd"]
            assert await sup.reload(moved)
            await until(lambda: sup.pids()["bgpd"] not in (None, bgpd) and sup.ready.is_set())
            assert " bgp router-id 192.0.2.99\n" in sup.path("bgpd.conf").read_text()
            assert config_runs(sup) == []
            assert sup.restarts == {"zebra": 0, "bgpd": 0}  # a reload is not a crash
            assert sup.counters["reload-restart"] == 1 and sup.counters["reload-live"] == 0
        finally:
            await sup.stop()

    run(scenario)


def test_reload_refused_by_vtysh_falls_back_to_a_restart(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    cfg = node_a()

    async def scenario() -> None:
        await sup.start()
        try:
            bgpd = sup.pids()["bgpd"]
            sup.path("refuse-config").touch()
            # bgpd may hold part of a refused change: only a restart makes it run the file again.
            assert await sup.reload(dataclasses.replace(cfg, peers=cfg.peers[:1]))
            await until(lambda: sup.pids()["bgpd"] not in (None, bgpd) and sup.ready.is_set())
            assert "10.255.2.2" not in sup.path("bgpd.conf").read_text()
            assert sup.counters["reload-restart"] == 1
        finally:
            await sup.stop()

    run(scenario)


def test_vtysh_queries_and_errors(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)

    async def scenario() -> None:
        await sup.start()
        try:
            assert await sup.peer_states() == {"10.255.1.2": "Established", "10.255.2.2": "Connect"}
            assert sup.path("vtysh.log").read_text().splitlines()[-1] == "show bgp vrf default summary json"
            with pytest.raises(FrrError, match="Unknown command"):
                await sup.vtysh("bogus")
            with pytest.raises(FrrError, match="did not answer JSON"):
                await sup.vtysh_json("show version")
        finally:
            await sup.stop()

    run(scenario)


def test_a_leftover_instance_is_stopped_before_start(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)

    async def scenario() -> None:
        await sup.start()
        old = sup.pids()
        if sup._task is not None:
            sup._task.cancel()  # the node was SIGKILLed: its daemons live on
        fresh = FrrSupervisor(node_a(), sup.run_dir, pathspace="alt-a", bin_dir=sup.bin_dir,
                              vtysh=sup.vtysh_binary, backoff=FAST, user=getpass.getuser())
        await fresh.start()
        try:
            pids = [pid for pid in old.values() if pid is not None]
            assert len(pids) == 2
            await until(lambda: all(gone(pid) for pid in pids))
        finally:
            await fresh.stop()
            await sup.stop()

    run(scenario)


def test_reload_of_announcements_alone_goes_through_vtysh(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    cfg = node_a()
    more = dataclasses.replace(cfg, eid=dataclasses.replace(
        cfg.eid, announce=(*cfg.eid.announce[1:], ip_network("153.16.2.0/24"))))

    async def scenario() -> None:
        await sup.start()
        try:
            bgpd = sup.pids()["bgpd"]
            assert not await sup.reload(more)  # no restart: the sessions stay up
            assert config_runs(sup) == [
                "configure terminal / router bgp 65001 / address-family ipv4 unicast / "
                "network 153.16.2.0/24 / no network 153.16.0.0/16 / exit-address-family / exit"]
            assert sup.pids()["bgpd"] == bgpd
            text = sup.path("bgpd.conf").read_text()
            assert "  network 153.16.2.0/24\n" in text and "  network 153.16.0.0/16\n" not in text
        finally:
            await sup.stop()

    run(scenario)


def test_stop_is_bounded_when_the_daemons_ignore_sigterm(tmp_path: Path) -> None:
    # The node must stop within 3 s of SIGTERM whatever the table size (node/daemon.py); a bgpd
    # freeing a million paths or a zebra removing a million kernel routes takes far longer.
    sup = supervisor(tmp_path)
    sup.run_dir.mkdir(parents=True)
    for name in ("zebra", "bgpd"):
        sup.path(f"ignore-term-{name}").touch()

    async def scenario() -> None:
        await sup.start()
        pids = [pid for pid in sup.pids().values() if pid is not None]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await sup.stop()
        took = loop.time() - t0
        assert took < STOP_WAIT + KILL_WAIT + 0.5, took  # the margin: a loaded CI machine
        assert took >= STOP_WAIT - 0.1  # each had its chance to exit on SIGTERM
        assert sup.counters["stop-kills"] == 2
        for pid in pids:
            assert gone(pid)
        # bgpd (its Cease to the peers) before zebra.
        assert sup.path("signals.log").read_text().split() == ["bgpd", "TERM", "zebra", "TERM"]

    run(scenario)


def test_stop_signals_zebra_as_soon_as_bgpd_is_gone(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)

    async def scenario() -> None:
        await sup.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await sup.stop()
        assert loop.time() - t0 < STOP_WAIT
        assert sup.counters["stop-kills"] == 0
        assert sup.path("signals.log").read_text().split() == ["bgpd", "TERM", "zebra", "TERM"]

    run(scenario)
