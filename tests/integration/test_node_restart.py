"""Two alt-router nodes over userspace GRE: routes learned both ways, run-time announce/withdraw,
and recovery after SIGKILL of ExaBGP, SIGKILL of the daemon, and a clean stop."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from alt_router.lab import Lab, ordered_list, wait_until
from tests.integration.helpers import RunningNode, alt_topology

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# topologies/node_pair.toml: a and b, one tunnel (key 7) carrying IPv4 and IPv6.
A_ROUTES = ("153.16.0.0/16", "2001:db8:a::/48")
B_ROUTES = ("153.17.0.0/16", "2001:db8:b::/48")


@pytest.fixture(scope="module")
def pair(lab_names: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[Lab, RunningNode, RunningNode]]:
    workdir = tmp_path_factory.mktemp("pair")
    alt = alt_topology("node_pair.toml", lab_names("ndpair"))
    with Lab(alt.topology, workdir=workdir) as lab:
        a = RunningNode(lab, alt, "a", workdir).start()
        b = RunningNode(lab, alt, "b", workdir).start()
        yield lab, a, b


def test_each_node_learns_the_others_prefixes(pair: tuple[Lab, RunningNode, RunningNode]) -> None:
    _, a, b = pair
    a.wait_routes(B_ROUTES)
    b.wait_routes(A_ROUTES)
    # The tunnels are the daemon's own: one per peer, named after it.
    a.wait_json({"routes": {"153.17.0.0/16": {"peer": "b", "as_path": ordered_list([65002])}},
                 "tunnels": {"tunnels": {"alt-b": {}}}})
    a.wait_json({"route": {"prefix": "153.17.0.0/16"}}, request={"cmd": "lookup", "address": "153.17.1.1"})


def test_run_time_announce_and_withdraw_are_idempotent(pair: tuple[Lab, RunningNode, RunningNode]) -> None:
    _, a, b = pair
    assert a.query({"cmd": "announce", "prefix": "153.16.5.0/24"})["changed"] is True
    assert a.query({"cmd": "announce", "prefix": "153.16.5.0/24"})["changed"] is False
    assert a.query({"cmd": "announce", "prefix": "2001:db8:a:5::/64"})["changed"] is True
    b.wait_routes(["153.16.5.0/24", "2001:db8:a:5::/64"])
    assert a.query({"cmd": "withdraw", "prefix": "153.16.5.0/24"})["changed"] is True
    assert a.query({"cmd": "withdraw", "prefix": "153.16.5.0/24"})["changed"] is False
    b.wait_routes(["2001:db8:a:5::/64"], absent=["153.16.5.0/24"])
    bad = a.query({"cmd": "announce", "prefix": "153.16.5.1/24"})
    assert bad["ok"] is False and "not a prefix" in bad["error"]


def test_exabgp_killed_is_restarted_and_the_rib_relearned(pair: tuple[Lab, RunningNode, RunningNode]) -> None:
    _, a, b = pair
    b.wait_routes([*A_ROUTES, "2001:db8:a:5::/64"])
    old = b.exabgp_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: (b.exabgp_pid() or old) != old, 20, what="a new ExaBGP on b", on_timeout=b.diag)
    assert b.status()["exabgp"]["restarts"] >= 1
    # Both directions come back: b relearns a's routes, a relearns b's from b's new ExaBGP.
    b.wait_routes([*A_ROUTES, "2001:db8:a:5::/64"])
    a.wait_routes(B_ROUTES)


def test_daemon_killed_adopts_exabgp_and_rebuilds_its_rib(pair: tuple[Lab, RunningNode, RunningNode]) -> None:
    _, a, b = pair
    a.wait_routes(B_ROUTES)
    exabgp = a.exabgp_pid()
    assert a.process is not None
    os.kill(a.process.pid, signal.SIGKILL)
    a.process.popen.wait(10)
    a.start()
    status = a.status()
    assert status["exabgp"]["pid"] == exabgp and status["exabgp"]["adopted"] is True
    a.wait_routes(B_ROUTES)
    # The run-time announcement survived the restart and b still has a's prefixes.
    b.wait_routes([*A_ROUTES, "2001:db8:a:5::/64"])
    wait_until(lambda: a.status()["counters"].get("refresh-requests", 0) >= 1, 10,
               what="a route refresh requested after the adoption", on_timeout=a.diag)


def test_clean_stop_withdraws_and_removes_everything(pair: tuple[Lab, RunningNode, RunningNode]) -> None:
    lab, a, b = pair
    b.wait_routes(A_ROUTES)
    exabgp = a.exabgp_pid()
    assert a.process is not None and exabgp is not None
    a.process.signal(signal.SIGTERM)
    assert a.process.popen.wait(20) == 0, a.diag()
    b.wait_routes([], absent=[*A_ROUTES, "2001:db8:a:5::/64"])
    assert not Path(f"/proc/{exabgp}").exists() or _zombie(exabgp)
    links = lab.exec("a", ["ip", "-o", "link"]).stdout
    assert "alt-b" not in links
    assert not (a.state_dir / "exabgp.pid").exists()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
