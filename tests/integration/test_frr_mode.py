"""FRR-integrated nodes in a mixed ALT (issue 10): ``[node] bgp = "frr"`` beside ExaBGP-mode nodes and
a plain BIRD router, built by ``alt-router lab up`` (topologies/frr_mixed.toml).

                 +== fa (FRR mode) ==+
  itr --ECM--> mr                    ms --ECM--> etr --Map-Reply--> itr
   (ExaBGP, MR)  +== fb (FRR mode) ==+ (ExaBGP, Map-Server)
                      //       \\== b (BIRD 2)
  itr --ECM--> mf (FRR mode: Map-Resolver + Map-Server) --ECM--> etr2

An FRR-mode node's own bgpd speaks BGP over the userspace GRE TUNs, zebra installs the ALT routes
in the node namespace's kernel table, the kernel forwards ALT datagrams (RFC 6836 §3: an ALT
router routes them like any BGP router; TTL decrement and ICMP Time Exceeded per RFC 1812 §5.3.1),
and the node reads the routes back for its API.  mr prefers fa (lower router-id, equal AS_PATH
length, RFC 4271 §9.1.2.2 as the ExaBGP-mode RIB ranks it).  mf's Map-Resolver sends its ALT
datagrams through its kernel's table, and its Map-Server receives the ALT datagrams for its site on
local routes (RFC 6836 §3.3, §4).  One lab for the module; the tests run in order: resolution over
fa and through mf, the traces, the TTL on fa's wire, zebra and bgpd killed on fb and recovered by
its node, and last fa killed outright so that the ALT reroutes through fb.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from alt_router.gre import bpf
from alt_router.lab import ProcessHandle, json_mismatch, json_subset, wait_until
from alt_router.lab.alt_runner import LabDir, down, status_lines, up
from alt_router.lab.alt_topology import AltTopology
from alt_router.lab.netns import netns_pids
from alt_router.lab.processes import run_in_netns, spawn_in_netns
from alt_router.lab.topology import netns_name
from tests.conftest import require_tool
from tests.integration.helpers import RunningLab, address_names, alt_topology

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# topologies/frr_mixed.toml; underlay addresses as there.
U = {"itr": "10.64.0.1", "etr": "10.64.0.2", "mr": "10.64.0.11", "fa": "10.64.0.12", "fb": "10.64.0.13",
     "ms": "10.64.0.14", "b": "10.64.0.15", "mf": "10.64.0.16", "etr2": "10.64.0.3"}
SITE4, SITE6 = "153.16.1.0/24", "2001:db8:16:1::/64"  # on ms (ExaBGP mode)
SITE2_4, SITE2_6 = "153.18.1.0/24", "2001:db8:18:1::/64"  # on mf (FRR mode)
FRR_DAEMONS = ("zebra", "bgpd")


class FrrMix(RunningLab):
    """The running lab, seen from the ITR (lig), the nodes' control sockets and their APIs."""

    def __init__(self, alt: AltTopology, ld: LabDir) -> None:
        super().__init__(alt, ld)
        self.names = address_names(alt)

    def ns(self, host: str) -> str:
        return netns_name(self.alt.name, host)

    def lig(self, eid: str, *args: str, mr: str = "mr") -> tuple[int, dict[str, Any]]:
        argv = [sys.executable, "-m", "alt_router.cli", "lig", eid, "-m", U[mr], "--json", "-t", "2", *args]
        proc = run_in_netns(self.ns("itr"), argv, check=False, timeout=60)
        try:
            return proc.returncode, json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"lig {eid} exit {proc.returncode}: {proc.stdout}\n{proc.stderr}") from None

    def hops(self, doc: dict[str, Any]) -> list[str]:
        return [self.names.get(h["router"], h["router"]) if h.get("router") else
                ("reply:" + self.names.get(h["map_reply"]["from"], "?") if "map_reply" in h else "*")
                for h in doc["hops"]]

    def api(self, host: str, path: str) -> Any:
        """GET ``path`` from ``host``'s monitoring API (127.0.0.1:8179 in its namespace, docs/api.md)."""
        return self.py(host, f"""
            import json, urllib.request
            with urllib.request.urlopen("http://127.0.0.1:8179{path}", timeout=10) as r:
                print(r.read().decode())
        """)

    def api_routes(self, host: str) -> dict[str, dict[str, Any]]:
        """``/v1/routes`` (one page: these tables are small), prefix -> route."""
        try:
            doc = self.api(host, "/v1/routes?limit=5000")
        except (AssertionError, ValueError):
            return {}
        return {r["prefix"]: r for r in doc["routes"]}

    def route_peer(self, host: str, prefix: str) -> str | None:
        try:
            route = self.status(host).get("routes", {}).get(prefix)
        except (OSError, ValueError):
            return None
        return route.get("peer") if route else None

    def kernel_routes(self, host: str) -> str:
        """The BGP routes zebra installed in ``host``'s kernel table (both families)."""
        return "".join(run_in_netns(self.ns(host), ["ip", *fam, "route", "show", "proto", "bgp"],
                                    check=False).stdout for fam in ((), ("-6",)))

    def frr_pids(self, host: str) -> dict[str, int]:
        """The FRR daemons running in ``host``'s namespace, by name (the node's own FRR instance)."""
        found: dict[str, int] = {}
        for pid in netns_pids(self.ns(host)):
            with contextlib.suppress(OSError):
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                if comm in FRR_DAEMONS:
                    found[comm] = pid
        return found

    def cmdlines(self, host: str) -> list[str]:
        found = []
        for pid in netns_pids(self.ns(host)):
            with contextlib.suppress(OSError):
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        return found

    def expected(self, host: str) -> set[str]:
        state = self.ld.load()
        assert state is not None
        return set(state.nodes[host]["expected"])

    def mapping(self, host: str) -> dict[str, Any]:
        return dict(self.status(host, routes=False)["mapping"])

    def diag(self, *hosts: str) -> str:
        parts = []
        for host in hosts or ("mr", "fa", "fb", "ms", "mf"):
            try:
                parts.append(f"=== {host}\n" + json.dumps(self.status(host), indent=1, default=str)[:3000])
            except (OSError, ValueError) as exc:
                parts.append(f"=== {host}: {exc}")
            if self.alt.node(host).bgp == "frr":
                parts.append(f"--- {host} kernel BGP routes\n{self.kernel_routes(host)}"
                             f"--- {host} FRR daemons {self.frr_pids(host)}")
            log = self.ld.logs / f"{host}-alt-router.log"
            if log.exists():
                parts.append(f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))
        return "\n".join(parts)


@pytest.fixture(scope="module")
def lab(lab_names: Callable[[str], str]) -> Iterator[FrrMix]:
    require_tool("bgpd", "/usr/lib/frr/bgpd")
    require_tool("zebra", "/usr/lib/frr/zebra")
    require_tool("vtysh")
    require_tool("bird")
    alt = alt_topology("frr_mixed.toml", lab_names("frrmix"))
    # The FRR-mode nodes' FRR runs as the frr user under this root (pytest's tmp_path is root-only).
    root = Path(tempfile.mkdtemp(prefix="alt-router-frrmix-"))
    root.chmod(0o755)
    out = open(root / "up.out", "w")  # noqa: SIM115 - kept open for the module's teardown too
    try:
        ld, converged = up(alt, root=root, source="test", out=out, timeout=90, etr_timeout=40)
        out.flush()
        mix = FrrMix(alt, ld)
        assert converged, (root / "up.out").read_text() + mix.diag()
        yield mix
    finally:
        down(alt.name, root, out=out)
        out.close()
        shutil.rmtree(root, ignore_errors=True)


def test_mixed_alt_converges_and_frr_nodes_install_the_alt_routes(lab: FrrMix) -> None:
    text = (lab.ld.path.parent / "up.out").read_text()
    assert "ETR registered 153.16.1.0/24, 2001:db8:16:1::/64" in text, text
    assert "ETR registered 153.18.1.0/24, 2001:db8:18:1::/64" in text, text
    lines, status = status_lines(lab.alt.name, lab.ld.path.parent)
    assert status == 0, "\n".join(lines)
    for host in ("fa", "fb", "mf"):
        line = next(x for x in lines if x.split()[:2] == [host, "alt-router"])
        assert "all expected present" in line and "bgp by its own FRR" in line, line
    # zebra put the learned routes in the node's own table, over the GRE TUNs (no ExaBGP there).
    for host, peer in (("fa", "ms"), ("fb", "ms")):
        kernel = lab.kernel_routes(host)
        for prefix in ("153.16.0.0/16", "2001:db8:16::/48"):
            lines = kernel.splitlines()
            assert any(x.startswith(prefix) and f"dev alt-{peer}" in x for x in lines), kernel
        assert not [c for c in lab.cmdlines(host) if "exabgp" in c], lab.cmdlines(host)  # FRR speaks BGP
    assert "153.30.0.0/16" in lab.kernel_routes("fb")  # from BIRD, a plain router peer
    # The FRR-mode nodes' /v1/routes is read back from that table: prefix and peer per route.
    wait_until(lambda: lab.expected("fa") <= set(lab.api_routes("fa")), 20,
               what="fa's /v1/routes holding what its kernel has", on_timeout=lambda: lab.diag("fa"))
    fa_routes = lab.api_routes("fa")
    want_fa = {"153.16.0.0/16": {"peer": "ms"}, "153.17.0.0/16": {"peer": "mr"}}
    assert json_subset(fa_routes, want_fa), json_mismatch(fa_routes, want_fa)
    # An ExaBGP-mode node takes an FRR-mode node's origination and its re-advertisements
    # (IPv6 included, with a next hop inside the tunnel's IPv6 subnet).
    mr = lab.status("mr")["routes"]
    want = {"153.20.0.0/16": {"peer": "fa", "as_path": [65010]}, "153.30.0.0/16": {"peer": "fb"},
            "2001:db8:16::/48": {}}
    assert json_subset(mr, want), json_mismatch(mr, want)


def test_ipv4_and_ipv6_eids_resolve_across_frr_mode_transits(lab: FrrMix) -> None:
    # The site's own prefixes, announced by ms once the ETR registered, reach mr through fa.
    wait_until(lambda: lab.route_peer("mr", SITE4) == "fa" and lab.route_peer("mr", SITE6) == "fa", 30,
               what="mr routing the site through fa", on_timeout=lab.diag)
    for eid, prefix in (("153.16.1.5", SITE4), ("2001:db8:16:1::5", SITE6)):
        status, doc = lab.lig(eid, "-c", "3")
        assert status == 0, (eid, doc, lab.diag())
        reply = doc["replies"][0]
        assert reply["from"] == U["etr"], doc  # the Map-Request crossed fa; the ETR answered the ITR
        record = reply["records"][0]
        assert record["eid_prefix"] == prefix and record["authoritative"] is True, record
        assert [loc["address"] for loc in record["locators"]] == [U["etr"]], record


def test_an_frr_mode_map_server_receives_alt_datagrams_on_its_local_routes(lab: FrrMix) -> None:
    # mf's kernel delivers ALT datagrams for its site to its UDP 4342 socket (local routes); its
    # Map-Server sends them on to the ETR as ECMs (RFC 6833 §4.1), the ETR answers the ITR.
    routes = run_in_netns(lab.ns("mf"), ["ip", "route", "show", "table", "main", "type", "local"]).stdout
    assert SITE2_4 in routes, routes
    wait_until(lambda: lab.route_peer("mr", SITE2_4) == "fb", 30, what="mr routing site2 to fb",
               on_timeout=lambda: lab.diag("mr", "mf"))
    before = lab.mapping("mf")["map_server"].get("alt-received", 0)
    for eid, prefix in (("153.18.1.5", SITE2_4), ("2001:db8:18:1::5", SITE2_6)):
        status, doc = lab.lig(eid)
        assert status == 0, (eid, doc, lab.diag("mf"))
        reply = doc["replies"][0]
        assert reply["from"] == U["etr2"], doc
        record = reply["records"][0]
        assert record["eid_prefix"] == prefix and record["authoritative"] is True, record
    assert lab.mapping("mf")["map_server"]["alt-received"] == before + 2, lab.mapping("mf")


def test_an_frr_mode_map_resolver_sends_alt_datagrams_through_its_kernel(lab: FrrMix) -> None:
    # RFC 6836 §3.3: the Map-Resolver forwards the Map-Request into the ALT, here by its kernel's
    # table (the route zebra installed towards fb), with the ITR's address as the source.
    before = lab.mapping("mf")["edge"]["alt-sent"]
    for eid, prefix in (("153.16.1.5", SITE4), ("2001:db8:16:1::5", SITE6)):
        status, doc = lab.lig(eid, mr="mf")
        assert status == 0, (eid, doc, lab.diag("mf"))
        reply = doc["replies"][0]
        assert reply["from"] == U["etr"], doc
        assert reply["records"][0]["eid_prefix"] == prefix, doc
    edge = lab.mapping("mf")["edge"]
    assert edge["alt-sent"] == before + 2 and edge["alt-no-route"] == 0, edge


def test_traces_list_the_frr_mode_hops(lab: FrrMix) -> None:
    # fa's and fb's kernels decrement the TTL and answer the expired probes (RFC 1812 §5.3.1).
    for eid, mr, hops in (("153.16.1.8", "mr", ["mr", "fa", "reply:etr"]),
                          ("153.18.1.8", "mr", ["mr", "fb", "reply:etr2"]),
                          ("153.16.1.8", "mf", ["mf", "fb", "reply:etr"])):
        status, doc = lab.lig(eid, "--trace", "--max-hops", "6", mr=mr)
        assert status == 0, doc
        assert lab.hops(doc) == hops, (eid, mr, doc)


def _tshark_rows(pcap: Path, display: str, fields: tuple[str, ...], *, live: bool) -> list[list[str]]:
    """Rows of ``fields`` for the packets matching ``display``; ``live``: the capture is still being
    written, so tshark may exit non-zero after the last whole packet (those rows are what we want)."""
    argv = ["tshark", "-n", "-r", str(pcap), "-Y", display, "-T", "fields", "-E", "separator=|",
            "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        argv += ["-e", f]
    proc = subprocess.run(argv, capture_output=True, text=True, check=not live, timeout=60)
    return [line.split("|") for line in proc.stdout.splitlines() if line]


def _ttl_pairs(pcap: Path, *, live: bool) -> dict[tuple[str, str], list[int | None]]:
    """(family, Map-Request nonce) -> [inner TTL or hop limit arriving from mr, leaving for ms],
    read from GRE on fa's underlay wire."""
    pairs: dict[tuple[str, str], list[int | None]] = {}
    fields = ("ip.src", "ip.dst", "ip.ttl", "ipv6.hlim", "lisp.nonce")
    for src, dst, ttl, hlim, nonce in _tshark_rows(pcap, "gre and lisp.type == 1", fields, live=live):
        outer = (src.split(",")[0], dst.split(",")[0])
        ttls = ttl.split(",")
        # The outer IPv4 header is the first ip.ttl; the ALT datagram's is the second, or its
        # IPv6 hop limit.
        inner, family = (ttls[1], "ipv4") if len(ttls) > 1 else (hlim, "ipv6")
        side = {(U["mr"], U["fa"]): 0, (U["fa"], U["ms"]): 1}.get(outer)
        if side is not None and inner:
            pairs.setdefault((family, nonce), [None, None])[side] = int(inner)
    return pairs


def _bpf_totals(lab: FrrMix, host: str) -> dict[str, int] | None:
    """The tc-BPF programs' packet counts over ``host``'s tunnels; None where the host has kernel GRE
    or cannot load BPF programs (then the node's tunnels are of another mode)."""
    tunnels = lab.status(host, routes=False)["tunnels"]
    if tunnels["mode"] != "bpf":
        assert tunnels["mode"] == "kernel" or not bpf.probe()[0], tunnels
        return None
    totals = {"decap-packets": 0, "encap-packets": 0}
    for name, entry in tunnels["tunnels"].items():
        assert entry["bpf"]["offload"] == "tc-bpf", (name, entry)
        for key in totals:
            totals[key] += entry["bpf"][key]
    return totals


def test_tshark_shows_the_frr_mode_transit_decrementing_the_ttl(lab: FrrMix) -> None:
    tshark = require_tool("tshark")
    pcap = lab.ld.path / "fa-underlay.pcap"
    capture: ProcessHandle = spawn_in_netns(
        lab.ns("fa"), "fa", [tshark, "-n", "-i", "eth0", "-f", "ip proto 47", "-w", str(pcap)],
        name="tshark", log_path=lab.ld.path / "fa-tshark.log")

    def complete() -> set[str] | None:
        both = {family for (family, _), p in _ttl_pairs(pcap, live=True).items() if None not in p}
        return both if both == {"ipv4", "ipv6"} else None

    try:
        wait_until(lambda: "Capturing on" in capture.read_log() or not capture.running(), 20,
                   what="tshark capturing on fa", on_timeout=capture.log_tail)
        assert capture.running(), capture.log_tail()
        before = _bpf_totals(lab, "fa")
        for eid in ("153.16.1.9", "2001:db8:16:1::9"):
            status, doc = lab.lig(eid)
            assert status == 0, doc
        # This kernel has no GRE, so fa's tunnels are tc-BPF GRE (docs/gre.md): the programs, not
        # the userspace engine, took the datagrams out of GRE and put them back in.
        after = _bpf_totals(lab, "fa")
        if before is not None and after is not None:
            assert after["decap-packets"] - before["decap-packets"] >= 2, (before, after)
            assert after["encap-packets"] - before["encap-packets"] >= 2, (before, after)
        # dumpcap writes the capture in blocks: wait until both copies of each datagram are in it.
        wait_until(complete, 30, interval=0.5, what="the ALT datagrams in and out of fa in the capture",
                   on_timeout=lambda: f"{_ttl_pairs(pcap, live=True)}\n{capture.log_tail()}")
    finally:
        capture.stop(grace=2)
    pairs = {k: p for k, p in _ttl_pairs(pcap, live=False).items() if None not in p}
    assert {family for family, _ in pairs} == {"ipv4", "ipv6"}, _ttl_pairs(pcap, live=False)
    # RFC 6836 §3 / RFC 1812 §5.3.1 (RFC 8200 §3 for the hop limit): one forwarding hop, the ALT
    # datagram's own TTL one less; fa's kernel did it, nothing in Python touched the datagram.
    for key, (ttl_in, ttl_out) in pairs.items():
        assert ttl_in is not None and ttl_out == ttl_in - 1, (key, ttl_in, ttl_out)


def _recovered(lab: FrrMix, host: str, old: dict[str, int], killed: str) -> dict[str, Any] | None:
    """``host`` once its node restarted ``killed``, all its sessions are up again and its kernel
    table and ``/v1/routes`` hold every expected route again."""
    pids = lab.frr_pids(host)
    if set(pids) != set(FRR_DAEMONS) or pids[killed] == old[killed]:
        return None
    try:
        status = lab.status(host)
    except (OSError, ValueError):
        return None
    peers = status.get("peers", {})
    expected = lab.expected(host)
    if not peers or not all(p.get("up") for p in peers.values()):
        return None
    if not expected <= set(status.get("routes", {})):
        return None
    if not expected <= set(lab.api_routes(host)):
        return None
    kernel = lab.kernel_routes(host)
    return status if all(f"{p} " in kernel for p in expected) else None


@pytest.mark.parametrize("daemon", ["zebra", "bgpd"])
def test_sigkill_of_an_frr_daemon_is_recovered_by_the_node(lab: FrrMix, daemon: str) -> None:
    old = lab.frr_pids("fb")
    assert set(old) == set(FRR_DAEMONS), (old, lab.diag("fb"))
    node_pid = lab.node_pid("fb")
    before = lab.status("fb", routes=False)["frr"]
    os.kill(old[daemon], signal.SIGKILL)
    after = wait_until(lambda: _recovered(lab, "fb", old, daemon), 60, interval=0.5,
                       what=f"fb's node restarting its {daemon}, sessions and routes back",
                       on_timeout=lambda: lab.diag("fb"))["frr"]
    assert lab.node_pid("fb") == node_pid  # the node's supervisor did it, not a restart of the node
    assert after["restarts"][daemon] == before["restarts"][daemon] + 1, (before, after)
    # The view followed the kernel table down and up again: the dead daemon's routes were removed
    # (zebra removes a dead bgpd's routes; a new zebra sweeps the old one's), then installed anew.
    deleted = after["kernel_rib"]["alt-deletes"] - before["kernel_rib"]["alt-deletes"]
    assert deleted >= len(lab.expected("fb")), (before["kernel_rib"], after["kernel_rib"])
    # mr, an ExaBGP-mode peer, has fb's routes again too.
    wait_until(lambda: lab.route_peer("mr", "153.30.0.0/16") == "fb", 30,
               what="mr learning 153.30.0.0/16 from fb again", on_timeout=lambda: lab.diag("mr", "fb"))


def test_killing_an_frr_mode_transit_reroutes_through_the_other(lab: FrrMix) -> None:
    wait_until(lambda: lab.route_peer("mr", SITE4) == "fa", 30, what="mr routing the site through fa",
               on_timeout=lab.diag)
    # A hard failure: the node, its zebra and its bgpd die at once (no Cease: the hold timer notices).
    for pid in netns_pids(lab.ns("fa")):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: lab.route_peer("mr", SITE4) == "fb" and lab.route_peer("mr", SITE6) == "fb", 40,
               what="mr rerouting the site through fb", on_timeout=lambda: lab.diag("mr", "fb"))
    for eid in ("153.16.1.6", "2001:db8:16:1::6"):
        status, doc = lab.lig(eid, "-c", "3")
        assert status == 0, (eid, doc)
        assert doc["replies"][0]["from"] == U["etr"], doc
    status, doc = lab.lig("153.16.1.10", "--trace", "--max-hops", "6")
    assert status == 0, doc
    assert lab.hops(doc) == ["mr", "fb", "reply:etr"], doc
