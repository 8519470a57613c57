"""LISP+ALT end to end (RFC 6836): a Map-Request enters the ALT at a Map-Resolver, crosses a
two-level hierarchy of alt_router nodes over userspace GRE, reaches the Map-Server whose ETRs
registered the EID, and the ETR answers the ITR directly.

    itr --ECM--> mr ==GRE== t1 ==GRE== t2 ==GRE== ms --ECM--> e1 --Map-Reply--> itr
                 (c1)      |  \\                 / (c2)       e2 (proxy-reply)
                           |   f (FRR bgpd + zebra, kernel forwarding) ===GRE
                           +-- redundant path t1 - f - ms

Six alt_router nodes (t1, t2 top level; mr, c1 under t1; ms, c2 under t2) plus FRR on f and the
ETRs e1, e2, every host on one underlay segment: all of it from topologies/alt_e2e.toml, started
as ``alt-router lab up`` starts it, so the tests only wait and assert.  t1 prefers t2 (lower
router-id, equal AS_PATH length) until t2 is killed, then the ALT datagrams cross FRR's kernel.
One lab for the module; the tests run in order, tshark captures until the capture test, and the
last test kills t2.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from alt_router.lab import Lab, ProcessHandle, wait_until
from alt_router.lab.netns import netns_pids
from alt_router.lab.processes import spawn_in_netns
from alt_router.lab.topology import segment_netns_name
from tests.conftest import require_tool
from tests.integration.helpers import LabAlt, RunningNode, address_names, alt_topology, start_alt

pytestmark = [pytest.mark.netns, pytest.mark.slow]

PY = sys.executable
# Underlay addresses, as in topologies/alt_e2e.toml.
U = {"mr": "10.60.0.1", "t1": "10.60.0.2", "t2": "10.60.0.3", "c1": "10.60.0.4", "ms": "10.60.0.5",
     "c2": "10.60.0.6", "f": "10.60.0.7", "itr": "10.60.0.10", "e1": "10.60.0.21", "e2": "10.60.0.22"}
SITE = ("153.24.1.0/24", "153.24.2.0/24", "2001:db8:24::/48")


@dataclass(kw_only=True)
class E2eAlt(LabAlt):
    """The module's lab (nodes, FRR on f, the ETRs), the underlay capture and who has which address."""

    names: dict[str, str]
    capture: ProcessHandle
    pcap: Path

    def lig(self, eid: str, *args: str, timeout: float = 30) -> tuple[int, dict[str, Any]]:
        argv = [PY, "-m", "alt_router.cli", "lig", eid, "-m", U["mr"], "--json", "-t", "2", *args]
        proc = self.lab.exec("itr", argv, check=False, timeout=timeout)
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"lig {eid} exit {proc.returncode}: {proc.stdout}\n{proc.stderr}") from None
        return proc.returncode, doc

    def counters(self) -> dict[str, dict[str, int]]:
        # The edge's alt-sent counts the Map-Resolver's datagrams (its one route lookup, issue 13).
        return {h: {**(m := n.status()["mapping"])["edge"], **m["forwarder"]["counters"]}
                for h, n in self.nodes.items()}

    def diag(self) -> str:
        return "\n".join(f"=== {h}\n{n.diag()}" for h, n in self.nodes.items() if h != "c1")


@pytest.fixture(scope="module")
def alt(lab_names: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2eAlt]:
    require_tool("bgpd", "/usr/lib/frr/bgpd")
    require_tool("zebra", "/usr/lib/frr/zebra")
    require_tool("vtysh")
    tshark = require_tool("tshark")
    workdir = tmp_path_factory.mktemp("e2e")
    name = lab_names("e2e")
    topology = alt_topology("alt_e2e.toml", name)
    with Lab(topology.topology, workdir=workdir) as lab:
        pcap = workdir / "underlay.pcap"
        # On the segment's bridge (promiscuous), so one capture sees every underlay hop.
        capture = spawn_in_netns(
            segment_netns_name(name, "u"), "sw-u",
            [tshark, "-n", "-i", "br0", "-f", "udp port 4342 or ip proto 47 or icmp", "-w", str(pcap)],
            name="tshark", log_path=workdir / "tshark.log")
        lab.add_cleanup(lambda: capture.stop(grace=2))
        wait_until(lambda: "Capturing on" in capture.read_log() or not capture.running(), 20,
                   what="tshark capturing", on_timeout=capture.log_tail)
        # Captured from before the first Map-Register: test_tshark_decodes_every_message needs it.
        started = start_alt(lab, topology, workdir)
        alt = E2eAlt(**vars(started), names=address_names(topology), capture=capture, pcap=pcap)
        nodes, frr = alt.nodes, alt.frr["f"]
        # Converged: the MR reaches the site, t1 knows both ways there, FRR's kernel has the route.
        nodes["mr"].wait_routes([*SITE, "153.17.0.0/16", "153.25.0.0/16", "2001:db8:25::/48"], timeout=60)
        wait_until(lambda: _peer_received(nodes["t1"], "f") > 0
                   and _route_peer(nodes["t1"], "153.24.1.0/24") == "t2", 40,
                   what="t1 with both paths to the site, preferring t2", on_timeout=alt.diag)
        wait_until(lambda: "153.24.1.0/24" in lab.exec("f", ["ip", "route"]).stdout, 30,
                   what="FRR's zebra installing the site route", on_timeout=frr.bgpd.log_tail)
        # Both ETRs registered (a Map-Register sent before ms listened is retried within seconds).
        wait_until(lambda: {r["etr"] for r in nodes["ms"].query({"cmd": "registrations"})["registrations"]}
                   >= {U["e1"], U["e2"]}, 30, what="both ETRs registered", on_timeout=alt.diag)
        yield alt


def _peer_received(node: RunningNode, peer: str) -> int:
    return int(node.status()["peers"][peer]["received"])


def _route_peer(node: RunningNode, prefix: str) -> str | None:
    route = node.status().get("routes", {}).get(prefix)
    return route["peer"] if route else None


def _delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], key: str) -> dict[str, int]:
    return {h: after[h][key] - before[h][key] for h in after}


def test_etrs_register_with_the_map_server(alt: E2eAlt) -> None:
    ms = alt.nodes["ms"]
    # Two ETRs registered one site prefix, e2 with the P bit (RFC 9301 §5.6); the other prefixes
    # came from e1 alone.
    e1, e2 = U["e1"], U["e2"]
    doc = ms.wait_json({"registrations": [
        {"prefix": "153.24.1.0/24", "etr": e1}, {"prefix": "2001:db8:24::/48", "etr": e1},
        {"prefix": "153.24.2.0/24", "etr": e1}, {"prefix": "153.24.2.0/24", "etr": e2, "proxy_reply": True},
    ]}, request={"cmd": "registrations"}, what="ms holding every registration")
    assert len(doc["registrations"]) == 4, doc
    wait_until(lambda: (c := ms.status()["mapping"]["map_server"])["registered"] >= 2
               and c["map-notify"] >= 2, 10, what="ms counting the registrations", on_timeout=ms.diag)
    counters = ms.status()["mapping"]["map_server"]
    assert not [k for k in counters if k.startswith("refused:")], counters
    for proc in alt.etrs.values():
        wait_until(lambda p=proc: "registered with Map-Server" in p.read_log(), 10,  # type: ignore[misc]
                   what="Map-Notify accepted by the ETR", on_timeout=proc.log_tail)
    # The site is announced while registered, and it is a local prefix of ms's forwarder.
    ms.wait_json({"mapping": {"local_prefixes": list(SITE)}}, 10, what="the site local on ms")


def test_lig_ipv4_eid_through_the_hierarchy(alt: E2eAlt) -> None:
    before = alt.counters()
    status, doc = alt.lig("153.24.1.5")
    assert status == 0, doc
    reply = doc["replies"][0]
    assert reply["from"] == U["e1"]  # the ETR answers the ITR itself
    record = reply["records"][0]
    assert record["eid_prefix"] == "153.24.1.0/24" and record["authoritative"] is True
    assert [loc["address"] for loc in record["locators"]] == [U["e1"]]
    after = alt.counters()
    # The path: the MR originated it, t1 and t2 forwarded it, ms took it locally; c1/c2 saw nothing.
    assert _delta(before, after, "alt-sent")["mr"] == 1
    forwarded = _delta(before, after, "forwarded")
    assert forwarded["t1"] == 1 and forwarded["t2"] == 1 and forwarded["c1"] == forwarded["c2"] == 0
    assert _delta(before, after, "local")["ms"] == 1
    assert alt.nodes["ms"].status()["mapping"]["map_server"]["forwarded-to-etr"] >= 1


def test_lig_ipv6_eid_through_the_hierarchy(alt: E2eAlt) -> None:
    before = alt.counters()
    status, doc = alt.lig("2001:db8:24::5")
    assert status == 0, doc
    reply = doc["replies"][0]
    assert reply["from"] == U["e1"]
    record = reply["records"][0]
    assert record["eid_prefix"] == "2001:db8:24::/48" and record["authoritative"] is True
    after = alt.counters()
    assert _delta(before, after, "alt-sent")["mr"] == 1
    forwarded = _delta(before, after, "forwarded")
    assert forwarded["t1"] == 1 and forwarded["t2"] == 1
    assert _delta(before, after, "local")["ms"] == 1


def _hops(alt: E2eAlt, doc: dict[str, Any]) -> list[str]:
    return [alt.names.get(h["router"], h["router"]) if h.get("router") else
            ("reply:" + alt.names.get(h["map_reply"]["from"], "?") if "map_reply" in h else "*")
            for h in doc["hops"]]


def test_trace_lists_the_alt_hops(alt: E2eAlt) -> None:
    status, doc = alt.lig("153.24.1.9", "--trace", "--max-hops", "8")
    assert status == 0, doc
    assert _hops(alt, doc) == ["mr", "t1", "t2", "reply:e1"], doc


def test_non_eid_gets_a_negative_reply(alt: E2eAlt) -> None:
    routed = [ip_network(p) for p in alt.nodes["mr"].routes()]
    for eid in ("153.32.0.1", "192.0.2.99"):
        status, doc = alt.lig(eid)
        assert status == 1, doc
        record = doc["replies"][0]["records"][0]
        assert record["action"] == "natively-forward" and record["locators"] == []
        prefix = ip_network(record["eid_prefix"])
        assert ip_address(eid) in prefix
        assert not [r for r in routed if r.version == prefix.version and r.overlaps(prefix)], (prefix, routed)
        assert doc["replies"][0]["from"] == U["mr"]


def test_two_etrs_in_a_proxy_reply(alt: E2eAlt) -> None:
    status, doc = alt.lig("153.24.2.7")
    assert status == 0, doc
    reply = doc["replies"][0]
    assert reply["from"] == U["ms"]  # proxy reply: the Map-Server answers for its ETRs
    record = reply["records"][0]
    assert record["eid_prefix"] == "153.24.2.0/24" and record["authoritative"] is False
    assert {loc["address"] for loc in record["locators"]} == {U["e1"], U["e2"]}


def _tshark_fields(pcap: Path, display: str, *fields: str, live: bool = False) -> list[list[str]]:
    """Rows of ``fields`` for the packets matching ``display``.

    ``live``: the capture is still being written, so its last packet may be cut short and tshark
    exits non-zero after printing every whole packet; those rows are what we want.
    """
    argv = ["tshark", "-n", "-r", str(pcap), "-Y", display, "-T", "fields", "-E", "separator=|",
            "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=not live, timeout=60).stdout
    return [line.split("|") for line in out.splitlines() if line]


# What the capture must hold, as (description, source, destination, lisp.type, inside GRE).
# tshark's lisp.type: 1 Map-Request, 2 Map-Reply, 3 Map-Register, 4 Map-Notify, 8 ECM.
EXPECTED_MESSAGES = (
    ("the ITR's ECM to the Map-Resolver", "itr", "mr", "8", False),
    *((f"the Map-Request as an ALT datagram over GRE {a} -> {b}", a, b, "1", True)
      for a, b in (("mr", "t1"), ("t1", "t2"), ("t2", "ms"))),
    ("the Map-Server's ECM to the ETR", "ms", "e1", "8", False),
    ("the ETR's Map-Reply straight to the ITR", "e1", "itr", "2", False),
    ("the proxy Map-Reply", "ms", "itr", "2", False),
    ("the negative Map-Reply", "mr", "itr", "2", False),
    *((f"{etr}'s Map-Register", etr, "ms", "3", False) for etr in ("e1", "e2")),
    *((f"the Map-Notify to {etr}", "ms", etr, "4", False) for etr in ("e1", "e2")),
)


def _missing_messages(rows: list[list[str]]) -> list[str]:
    def seen(src: str, dst: str, kind: str, gre: bool) -> bool:
        return any(r[0].split(",")[0] == U[src] and r[1].split(",")[0] == U[dst]
                   and kind in r[2].split(",") and (":gre:" in r[3]) == gre for r in rows)

    return [what for what, src, dst, kind, gre in EXPECTED_MESSAGES if not seen(src, dst, kind, gre)]


def test_tshark_decodes_every_message(alt: E2eAlt) -> None:
    # The messages this test looks for are sent here, not borrowed from earlier tests. (The
    # registrations were captured while the fixture waited for both ETRs.)
    for eid, from_ in (("153.24.1.5", "e1"), ("153.24.2.7", "ms"), ("153.32.0.1", "mr")):
        _, doc = alt.lig(eid)
        assert doc["replies"] and doc["replies"][0]["from"] == U[from_], (eid, doc)
    fields = ("ip.src", "ip.dst", "lisp.type", "frame.protocols")
    # tshark (dumpcap) hands the kernel's capture ring to the file in blocks: a packet sent just
    # before SIGINT can be lost with the unfinished block. So wait until the file holds every
    # message, and stop the capture only then.
    def missing_so_far() -> list[str]:
        return _missing_messages(_tshark_fields(alt.pcap, "lisp", *fields, live=True))

    wait_until(lambda: not missing_so_far(), 30, interval=0.5, what="the capture holding every message",
               on_timeout=lambda: f"missing: {missing_so_far()}\n{alt.capture.log_tail()}")
    alt.capture.signal(signal.SIGINT)
    alt.capture.popen.wait(15)
    rows = _tshark_fields(alt.pcap, "lisp", *fields)
    assert _missing_messages(rows) == [], rows
    # The ALT datagram inside GRE: outer underlay addresses, inner ITR -> EID, UDP to 4342.
    inner = _tshark_fields(alt.pcap, f"gre and lisp and ip.src == {U['t1']} and ip.dst == {U['t2']}",
                           "ip.src", "ip.dst", "udp.dstport", "lisp.nonce")
    assert any(r[0] == f"{U['t1']},{U['itr']}" and r[1].split(",")[1] == "153.24.1.5" and r[2] == "4342"
               for r in inner), inner
    malformed = _tshark_fields(alt.pcap, "_ws.malformed or _ws.expert.severity == error", "frame.number")
    assert malformed == [], malformed


def test_killing_t2_reroutes_through_frr(alt: E2eAlt) -> None:
    # A hard failure: every process in t2's namespace (daemon, ExaBGP) dies at once.
    for pid in netns_pids(alt.lab.netns("t2")):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    t1 = alt.nodes["t1"]
    wait_until(lambda: _route_peer(t1, "153.24.1.0/24") == "f", 40, what="t1 rerouting via FRR",
               on_timeout=t1.diag)
    status, doc = alt.lig("153.24.1.6", "-c", "3")
    assert status == 0, doc
    assert doc["replies"][0]["from"] == U["e1"]
    status, doc = alt.lig("153.24.1.10", "--trace", "--max-hops", "8")
    assert status == 0, doc
    # FRR's kernel forwarded it and decremented the TTL: it answers the trace itself.
    assert _hops(alt, doc) == ["mr", "t1", "f", "reply:e1"], doc
