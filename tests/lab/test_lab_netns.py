from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from alt_router.lab import CommandError, Lab, LabError, Topology, wait_until
from alt_router.lab.netns import netns_pids
from tests.conftest import require_tool
from tests.lab.conftest import netns_names, pid_alive

pytestmark = pytest.mark.netns

LINE = """
name = "{name}"

[hosts.a]
routes = [{{ to = "default", via = "10.11.1.1" }}, {{ to = "::/0", via = "fd11:1::1" }}]

[hosts.r]
forwarding = true

[hosts.b]
routes = [{{ to = "default", via = "10.11.2.1" }}, {{ to = "::/0", via = "fd11:2::1" }}]

[[links]]
a = {{ host = "a", ifname = "eth0", addresses = ["10.11.1.2/24", "fd11:1::2/64"] }}
b = {{ host = "r", ifname = "to-a", addresses = ["10.11.1.1/24", "fd11:1::1/64"] }}

[[links]]
a = {{ host = "r", ifname = "to-b", addresses = ["10.11.2.1/24", "fd11:2::1/64"] }}
b = {{ host = "b", ifname = "eth0", addresses = ["10.11.2.2/24", "fd11:2::2/64"] }}
mtu = 1400
"""

BRIDGE = """
name = "{name}"
[hosts.x]
[hosts.y]
[hosts.z]

[[segments]]
name = "lan"
members = [
  {{ host = "x", ifname = "lan0", addresses = ["10.12.0.1/24", "fd12::1/64"] }},
  {{ host = "y", ifname = "lan0", addresses = ["10.12.0.2/24", "fd12::2/64"] }},
  {{ host = "z", ifname = "lan0", addresses = ["10.12.0.3/24", "fd12::3/64"] }},
]
"""


def _ping(lab: Lab, host: str, address: str) -> str | None:
    """One ping; the output on success.  Retried by the caller: the first packet may wait for ARP/ND."""
    result = lab.exec(host, ["ping", "-c1", "-W1", address], check=False, timeout=10)
    return result.stdout if result.returncode == 0 else None


def _ping_ttl(output: str) -> int:
    for token in output.split():
        if token.startswith(("ttl=", "hlim=")):
            return int(token.split("=")[1])
    raise AssertionError(f"no ttl in ping output: {output}")


def test_line_lab_end_hosts_ping_through_the_router(netns_lab: Callable[[str], str], tmp_path: Path) -> None:
    require_tool("ping")
    name = netns_lab("ltline")
    with Lab(Topology.from_toml(LINE.format(name=name)), workdir=tmp_path) as lab:
        for address in ("10.11.2.2", "fd11:2::2"):
            out = wait_until(lambda a=address: _ping(lab, "a", a), 10, what=f"ping a -> {address}")
            # One hop less than the sender's 64: the packet really crossed r.
            assert _ping_ttl(out) == 63, out
        # The MTU of the second link was applied on both ends.
        mtu = lab.exec("b", ["cat", "/sys/class/net/eth0/mtu"]).stdout.strip()
        assert mtu == "1400"
        assert lab.exec("r", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
        assert lab.exec("a", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"


def test_bridge_segment_connects_three_members(netns_lab: Callable[[str], str], tmp_path: Path) -> None:
    require_tool("ping")
    name = netns_lab("ltbr")
    topo = Topology.from_toml(BRIDGE.format(name=name))
    with Lab(topo, workdir=tmp_path) as lab:
        for src, dst in (("x", "10.12.0.2"), ("x", "10.12.0.3"), ("y", "10.12.0.3"), ("z", "fd12::1")):
            out = wait_until(lambda s=src, d=dst: _ping(lab, s, d), 10, what=f"ping {src} -> {dst}")
            assert _ping_ttl(out) == 64, out  # same segment: no router in between
        ports = subprocess.run(
            ["ip", "-n", topo.segment_netns("lan"), "-o", "link", "show", "master", "br0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert sorted(line.split(":")[1].strip().split("@")[0] for line in ports.splitlines()) == [
            "p-x",
            "p-y",
            "p-z",
        ]


def test_teardown_removes_everything_even_when_the_body_raises(
    netns_lab: Callable[[str], str], tmp_path: Path
) -> None:
    name = netns_lab("ltdown")
    topo = Topology.from_toml(LINE.format(name=name))
    with pytest.raises(RuntimeError, match="boom"), Lab(topo, workdir=tmp_path) as lab:
        sleeper = lab.spawn("a", ["sleep", "300"], name="sleeper")
        # A process that escapes its parent's process group: only the per-namespace sweep finds it.
        lab.exec("b", ["sh", "-c", "setsid sleep 301 >/dev/null 2>&1 < /dev/null &"])
        escaped = wait_until(lambda: netns_pids(topo.netns("b")), 5, what="daemonized sleep in b")
        assert set(topo.all_netns()) <= netns_names()
        raise RuntimeError("boom")
    assert not {n for n in netns_names() if n.startswith(f"ar-{name}-")}
    assert not pid_alive(sleeper.pid)
    assert not any(pid_alive(pid) for pid in escaped)
    assert sleeper.log_path == tmp_path / "a-sleeper.log"
    lab.teardown()  # idempotent
    lab.teardown()


def test_exec_reports_failures_and_unknown_hosts(netns_lab: Callable[[str], str], tmp_path: Path) -> None:
    name = netns_lab("ltexec")
    with Lab(Topology.from_toml(f'name = "{name}"\n[hosts.a]\n'), workdir=tmp_path) as lab:
        with pytest.raises(CommandError, match="exited 3") as info:
            lab.exec("a", ["sh", "-c", "echo oops >&2; exit 3"])
        assert info.value.result.returncode == 3
        assert "oops" in info.value.result.stderr
        assert lab.exec("a", ["sh", "-c", "exit 3"], check=False).returncode == 3
        with pytest.raises(LabError, match="no host 'nope'"):
            lab.exec("nope", ["true"])
        with pytest.raises(LabError, match="did not finish"):
            lab.exec("a", ["sleep", "5"], timeout=0.2)
        # The namespace is isolated: only lo, no route to the outside.
        assert lab.exec("a", ["ip", "-o", "link"]).stdout.count("\n") == 1


def test_topology_processes_start_with_the_lab_and_stop_with_it(
    netns_lab: Callable[[str], str], tmp_path: Path
) -> None:
    name = netns_lab("ltproc")
    text = f'name = "{name}"\n[hosts.a]\n[[processes]]\nhost = "a"\nname = "talker"\n'
    text += 'argv = ["sh", "-c", "echo hello from $(ip netns identify); exec sleep 300"]\n'
    with Lab(Topology.from_toml(text), workdir=tmp_path) as lab:
        proc = lab.process("talker", "a")
        wait_until(lambda: "hello from" in proc.read_log(), 5, what="talker output")
        assert f"hello from ar-{name}-a" in proc.read_log()
        assert proc.running()
    assert not proc.running()


def test_stale_leftovers_are_found_and_removed(
    netns_lab: Callable[[str], str], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    name = netns_lab("ltstale")
    stale_ns = f"ar-{name}-a"
    other_ns = f"ar-{name}x-a"  # another lab whose name merely starts the same way
    netns_lab(f"{name}x")
    subprocess.run(["ip", "netns", "add", stale_ns], check=True)
    subprocess.run(["ip", "netns", "add", other_ns], check=True)
    leftover = subprocess.Popen(["ip", "netns", "exec", stale_ns, "sleep", "300"], start_new_session=True)
    try:
        wait_until(lambda: netns_pids(stale_ns), 5, what="leftover process in namespace")
        assert Lab.cleanup_stale(name) == [stale_ns]
        assert leftover.wait(5) is not None
        assert stale_ns not in netns_names()
        assert other_ns in netns_names()
        assert Lab.cleanup_stale(name) == []

        # Building over leftovers cleans them first and says so.
        subprocess.run(["ip", "netns", "add", stale_ns], check=True)
        caplog.set_level(logging.WARNING, logger="alt_router.lab")
        with Lab(Topology.from_toml(f'name = "{name}"\n[hosts.a]\n[hosts.b]\n'), workdir=tmp_path) as lab:
            assert lab.exec("a", ["true"]).returncode == 0
        assert any("leftovers" in r.getMessage() and stale_ns in r.getMessage() for r in caplog.records)
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_sigterm_to_the_owning_process_tears_the_lab_down(
    netns_lab: Callable[[str], str], tmp_path: Path
) -> None:
    name = netns_lab("ltterm")
    script = textwrap.dedent(
        f"""
        import signal
        from alt_router.lab import Lab, Topology
        lab = Lab(Topology.from_toml('name = "{name}"\\n[hosts.a]\\n[hosts.b]\\n'), workdir="{tmp_path}")
        lab.build()
        lab.spawn("a", ["sleep", "300"], name="sleeper")
        print("ready", flush=True)
        while True:
            signal.pause()  # until the SIGTERM the test sends
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
        pids = netns_pids(f"ar-{name}-a")
        assert pids
        owner.send_signal(signal.SIGTERM)
        assert owner.wait(15) == 128 + signal.SIGTERM
        assert not {n for n in netns_names() if n.startswith(f"ar-{name}-")}
        assert not any(pid_alive(pid) for pid in pids)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_sigterm_to_a_forked_child_leaves_the_owners_lab_alone(
    netns_lab: Callable[[str], str], tmp_path: Path
) -> None:
    """pyroute2's NetNS forks a child to open its socket in a namespace and SIGTERMs it when that is
    slow: the child inherits the lab's SIGTERM handler, which must end the child at once, not tear
    down the parent's lab nor unwind (SystemExit) into the parent's copied stack and run on."""
    name = netns_lab("ltfork")
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from alt_router.lab import Lab, Topology
        lab = Lab(Topology.from_toml('name = "{name}"\\n[hosts.a]\\n'), workdir="{tmp_path}")
        lab.build()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.write(w, b"r")  # a signal that arrives before the child runs Python is lost
                while True:
                    signal.pause()
            except BaseException:
                print("child unwound", flush=True)  # what the bug did
                os._exit(99)
        os.read(r, 1)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        alive = os.path.exists("/run/netns/ar-{name}-a")
        print(os.waitstatus_to_exitcode(status), alive, flush=True)
        lab.teardown()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(128 + signal.SIGTERM), "True"]


def test_spawn_requires_a_built_lab(netns_lab: Callable[[str], str]) -> None:
    lab = Lab(Topology.from_toml('name = "ltnobld"\n[hosts.a]\n'))
    with pytest.raises(LabError, match="not built"):
        lab.spawn("a", ["true"])
    lab.teardown()  # tearing down a lab never built is a no-op
    assert os.path.exists("/run/netns/ar-ltnobld-a") is False
