"""The operator's view of a running ALT: ``alt-router lab up/status/down``, SIGHUP reload, the
monitoring API of a lab node (token rules, stream resume), SIGTERM clean-up, and ``alt-router demo``
exactly as the README runs it.  One lab for the module (the bundled demo ALT under another name, its
Map-Resolver's API on the underlay with a token); the tests run in order and the last removes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from alt_router.bgp.supervisor import process_matches, read_pidfile
from alt_router.commands.lab import demo_topology_path
from alt_router.lab import wait_until
from alt_router.lab.alt_runner import alive, down, status_lines, up
from alt_router.lab.alt_topology import AltTopology
from alt_router.lab.netns import list_netns, netns_pids
from alt_router.lab.processes import run_in_netns
from alt_router.lab.topology import netns_name
from alt_router.node.daemon import query
from tests.conftest import run_lab_name
from tests.integration.helpers import RunningLab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

NAME = run_lab_name("optest")
TOKEN = "op-token-123"
API = "http://10.0.0.11:8179"


def operator_topology(name: str) -> AltTopology:
    """The bundled demo ALT, with the Map-Resolver's API on the underlay (not loopback), so every
    request needs the token."""
    alt = AltTopology.from_toml(demo_topology_path(), name=name)
    api = f'[api]\nlisten = "10.0.0.11"\ntoken = "{TOKEN}"\n'
    return replace(alt, nodes=tuple(replace(n, extra=api) if n.host == "mr" else n for n in alt.nodes))


@pytest.fixture(scope="module")
def lab(lab_names: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    lab_names(NAME)
    root = tmp_path_factory.mktemp("labroot")
    alt = operator_topology(NAME)
    out = open(root / "up.out", "w")  # noqa: SIM115 - kept open for the module's teardown too
    try:
        ld, converged = up(alt, root=root, source="test", out=out, timeout=45)
        out.flush()
        assert converged, (root / "up.out").read_text()
        yield RunningLab(alt, ld)
    finally:
        down(NAME, root, out=out)
        out.close()


def test_up_converged_registered_and_status_says_so(lab: RunningLab) -> None:
    text = (lab.ld.path.parent / "up.out").read_text()
    for host in ("mr", "core", "ms"):
        assert f"{host:<10} converged after" in text
    assert "ETR registered 153.16.1.0/24" in text
    lines, status = status_lines(NAME, lab.ld.path.parent)
    assert status == 0, lines
    assert sum("all expected present" in line for line in lines) == 3


def test_api_needs_the_token_for_reads_and_writes_off_loopback(lab: RunningLab) -> None:
    got = lab.py("itr", f"""
        import json, urllib.request, urllib.error
        def call(method, path, token=None, body=None):
            req = urllib.request.Request("{API}" + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None)
            if token: req.add_header("Authorization", "Bearer " + token)
            if body is not None: req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=5) as r: return r.status, json.load(r)
            except urllib.error.HTTPError as e: return e.code, json.load(e)
        print(json.dumps({{
            "anon": call("GET", "/v1/status"),
            "wrong": call("GET", "/v1/status", "nope"),
            "good": call("GET", "/v1/status", "{TOKEN}"),
            "lookup": call("GET", "/v1/lookup/153.16.1.9", "{TOKEN}"),
            "write_anon": call("POST", "/v1/routes", None, {{"prefix": "153.17.9.0/24"}}),
            "outside": call("POST", "/v1/routes", "{TOKEN}", {{"prefix": "10.9.0.0/16"}}),
        }}))
    """)
    assert got["anon"][0] == 401 and got["wrong"][0] == 401 and got["write_anon"][0] == 401
    assert got["good"][0] == 200
    assert got["good"][1]["node"] == "mr" and got["good"][1]["roles"] == ["alt", "map-resolver"]
    assert got["lookup"][1]["prefix"] == "153.16.1.0/24" and got["lookup"][1]["tunnel"] == "alt-core"
    assert got["outside"][0] == 422 and "outside" in got["outside"][1]["detail"], got["outside"]
    assert "10.9.0.0/16" not in lab.routes("core")


def test_event_stream_resumes_after_a_reconnect(lab: RunningLab) -> None:
    read_stream = f"""
        import json, sys
        from alt_router.api.client import ApiClient
        client = ApiClient("{API}", token="{TOKEN}", timeout=5)
        since = int(sys.argv[1]) if len(sys.argv) > 1 else None
        want = sys.argv[2] if len(sys.argv) > 2 else None
        seen = []
        for ev in client.stream(since=since, read_timeout=10):
            if ev.event in ("route", "peer"):
                seen.append(ev.json())
            if (want is None and seen) or (want and any(e.get("prefix") == want for e in seen)):
                break
        print(json.dumps(seen))
    """
    first = lab.py("itr", read_stream.replace("sys.argv[1]) if len(sys.argv) > 1", "0) if True"))
    last = max(e["seq"] for e in first)
    # While no client is connected, ms originates a prefix: mr learns it over the ALT.
    assert query(lab.ld.node_state("ms"), {"cmd": "announce", "prefix": "153.16.77.0/24"})["changed"]
    wait_until(lambda: "153.16.77.0/24" in lab.routes("mr"), 20, what="mr learns 153.16.77.0/24")
    code = f"import sys; sys.argv = ['x', '{last}', '153.16.77.0/24']\n" + textwrap.dedent(read_stream)
    resumed = lab.py("itr", code)
    seqs = [e["seq"] for e in resumed]
    assert seqs and min(seqs) == last + 1, seqs  # nothing missed, nothing repeated
    assert any(e.get("prefix") == "153.16.77.0/24" and e["kind"] == "add" for e in resumed)


def test_sighup_applies_new_announcements_without_touching_the_sessions(lab: RunningLab) -> None:
    before = {p: v["since"] for p, v in lab.status("core")["peers"].items()}
    config = lab.ld.node_config("mr")
    original = config.read_text()
    config.write_text(original.replace('announce = ["153.17.0.0/16", "2001:db8:17::/48"]',
                                       'announce = ["153.17.0.0/16", "2001:db8:17::/48", "153.18.0.0/16"]'))
    os.kill(lab.node_pid("mr"), signal.SIGHUP)
    wait_until(lambda: "153.18.0.0/16" in lab.routes("core") and "153.18.0.0/16" in lab.routes("ms"), 20,
               what="153.18.0.0/16 announced after SIGHUP")
    # A change that cannot be applied live is refused by name, and the announcement still goes.
    config.write_text(original.replace("hold_time = 9", "hold_time = 12"))
    os.kill(lab.node_pid("mr"), signal.SIGHUP)
    wait_until(lambda: "153.18.0.0/16" not in lab.routes("core"), 20, what="153.18.0.0/16 withdrawn")
    after = {p: v["since"] for p, v in lab.status("core")["peers"].items()}
    assert after == before, "a reload reset a BGP session"
    log = Path(lab.ld.logs / "mr-alt-router.log").read_text()
    assert "announce 153.18.0.0/16" in log
    assert "needs a restart: peers changed: core" in log
    assert "level=warning logger=alt_router.node.daemon" in log  # logfmt lines
    config.write_text(original)


def test_a_broken_config_on_sighup_keeps_the_node_running(lab: RunningLab) -> None:
    config = lab.ld.node_config("ms")
    original = config.read_text()
    config.write_text(original + "\n[bogus]\n")
    try:
        os.kill(lab.node_pid("ms"), signal.SIGHUP)
        log = lab.ld.logs / "ms-alt-router.log"
        wait_until(lambda: "reload refused" in log.read_text(), 10, what="reload refused in the log")
        assert lab.status("ms")["peers"]["core"]["up"] is True
    finally:
        config.write_text(original)


def _exabgp_pids(host: str) -> set[int]:
    return {pid for pid in netns_pids(netns_name(NAME, host)) if process_matches(pid, ("exabgp",))}


def _peer_up(lab: RunningLab, host: str, peer: str) -> bool:
    try:
        return bool(lab.status(host, routes=False)["peers"][peer]["up"])
    except (OSError, ValueError, KeyError):
        return False


def test_a_killed_node_daemon_is_restarted_and_its_exabgp_replaced(lab: RunningLab) -> None:
    # Like contrib/alt-router@.service (Restart=on-failure, RestartSec=2, KillMode=mixed): the lab
    # restarts a node daemon that dies, and the ExaBGP it orphaned does not stay behind.
    old_pid = lab.node_pid("core")
    old_exabgp = read_pidfile(lab.ld.node_state("core") / "exabgp.pid")
    assert old_exabgp is not None and _exabgp_pids("core") == {old_exabgp}
    os.kill(old_pid, signal.SIGKILL)

    def restarted() -> bool:
        pid = lab.node_pid("core")
        return pid != old_pid and process_matches(pid, ("alt_router.cli", "run"))

    log = lab.ld.logs / "core-alt-router.log"
    wait_until(restarted, 30, what="core's daemon restarted", on_timeout=lambda: log.read_text()[-3000:])
    # The BGP sessions come back at both ends of both of core's tunnels (RFC 4271 §8: Established).
    wait_until(lambda: all(_peer_up(lab, "core", p) and _peer_up(lab, p, "core") for p in ("mr", "ms")), 60,
               what="core's sessions re-established at both ends", on_timeout=lambda: log.read_text()[-3000:])
    wait_until(lambda: "153.16.0.0/16" in lab.routes("mr") and "153.17.0.0/16" in lab.routes("ms"), 30,
               what="the routes through core relearned")
    assert not process_matches(old_exabgp, ())
    new_exabgp = read_pidfile(lab.ld.node_state("core") / "exabgp.pid")
    assert new_exabgp != old_exabgp and _exabgp_pids("core") == {new_exabgp}
    text = log.read_text()
    assert f"stopped its orphaned ExaBGP pid {old_exabgp}" in text and "killed by SIGKILL" in text
    # `lab status` sees the whole ALT converged again (it re-reads every node: wait for it too).
    wait_until(lambda: status_lines(NAME, lab.ld.path.parent)[1] == 0, 30, what="lab status back to 0",
               on_timeout=lambda: "\n".join(status_lines(NAME, lab.ld.path.parent)[0]))


def test_sigterm_on_a_node_removes_its_tunnels_and_withdraws_its_prefixes(lab: RunningLab) -> None:
    pid = lab.node_pid("mr")
    state = lab.ld.load()
    assert state is not None
    keeper = next(p for p in state.processes if p.host == "mr" and p.name == "alt-router")
    os.kill(pid, signal.SIGTERM)
    # The daemon exits 0, and its keeper does not restart it (Restart=on-failure): it exits 0 too.
    assert _reap(keeper.pid, 20) == 0, (lab.ld.logs / "mr-alt-router.log").read_text()[-3000:]
    assert not process_matches(pid, ())
    links = run_in_netns(netns_name(NAME, "mr"), ["ip", "-o", "link"]).stdout
    assert "alt-core" not in links
    # ExaBGP and the bridge stopped with it: nothing runs in mr's namespace any more.
    wait_until(lambda: not netns_pids(netns_name(NAME, "mr")), 10, what="nothing left running on mr")
    wait_until(lambda: "153.17.0.0/16" not in lab.routes("core"), 20, what="mr's prefix withdrawn at core")
    lines, status = status_lines(NAME, lab.ld.path.parent)
    assert status == 1 and any("alt-router" in line and "NOT running" in line for line in lines)


def _reap(pid: int, timeout: float) -> int:
    """Exit code of ``pid``, our child (this process built the lab: the nodes' restart keepers)."""
    def done() -> int | None:
        got, status = os.waitpid(pid, os.WNOHANG)
        return os.waitstatus_to_exitcode(status) + 1000 if got == pid else None

    return wait_until(done, timeout, what=f"pid {pid} exits") - 1000


def test_down_leaves_no_namespaces_links_or_processes(lab: RunningLab) -> None:
    state = lab.ld.load()
    assert state is not None
    removed = down(NAME, lab.ld.path.parent)
    assert any(r.startswith(f"namespace ar-{NAME}-") for r in removed)
    assert not [n for n in list_netns() if n.startswith(f"ar-{NAME}-")]
    assert not [p for p in state.processes if alive(p)]
    assert not lab.ld.state_file.exists() and lab.ld.logs.is_dir()
    lines, status = status_lines(NAME, lab.ld.path.parent)
    assert status == 3, lines
    assert down(NAME, lab.ld.path.parent) == []  # idempotent


def test_readme_demo_end_to_end(lab_names: Callable[[str], str]) -> None:
    # The README's command, under a per-run name: an operator's own `demo` lab is left alone.
    name = lab_names("demo")
    result = subprocess.run([sys.executable, "-m", "alt_router.cli", "demo", "--name", name],
                            capture_output=True, text=True, timeout=150, check=False)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"lab {name}: the ALT converged" in out
    assert "ETR registered 153.16.1.0/24" in out
    assert "EID-prefix 153.16.1.0/24" in out and "authoritative yes" in out
    assert "Map-Reply from 10.0.0.2" in out  # the --trace run reached the ETR
    assert "resolved end to end" in out
    # The demo returns only once its teardown is complete.
    assert not [n for n in list_netns() if n.startswith(f"ar-{name}-")]
    assert f"lab {name}: removed" in out
