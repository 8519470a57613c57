"""Issue 12 end to end: a Map-Server node as deployed LISP peers see it (RFC 9301).

    itr --ECM--> mr ==GRE== ms --ECM (UDP 4342)--> ea (site A, HMAC-SHA-256, 32-byte MAC)
                             |                 --> eb (site B, HMAC-SHA-1, 20-byte MAC)
                             |                 --> ee (site E, registers from an ephemeral port)
                             +-- site C configured, no ETR; 153.16.0.0/16 otherwise a hole

``ms`` announces the aggregate 153.16.0.0/16 and has four sites in it.  Every ETR sends the full
HMAC digest (the default, as deployed Map-Servers expect); ``ee`` sends its Map-Registers from an
ephemeral port and listens on 4342 (RFC 9301 §5.6).  A lig from the ITR through the Map-Resolver
resolves A, B and E; site C gets a 1-minute and the hole a 15-minute negative Map-Reply from the
Map-Server (§8.3).  tshark, on the segment's bridge from before the tests start, decodes the
Map-Server's side of each exchange.  One lab for the module, built with ``alt-router lab up``'s
code; the tests run in order and the capture test stops the capture.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from ipaddress import IPv4Network, ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from alt_router.lab import ProcessHandle, wait_until
from alt_router.lab.alt_runner import LabDir, down, up
from alt_router.lab.alt_topology import AltTopology
from alt_router.lab.processes import run_in_netns, spawn_in_netns
from alt_router.lab.topology import netns_name, segment_netns_name
from tests.conftest import require_tool
from tests.integration.helpers import RunningLab, alt_topology

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# topologies/interop.toml; underlay addresses, sites and keys as there.
U = {"itr": "10.62.0.1", "mr": "10.62.0.11", "ms": "10.62.0.13",
     "ea": "10.62.0.21", "eb": "10.62.0.22", "ee": "10.62.0.23"}
AGGREGATE = IPv4Network("153.16.0.0/16")
SITES = {"site-a": "153.16.1.0/24", "site-b": "153.16.2.0/24", "site-c": "153.16.3.0/24",
         "site-e": "153.16.4.0/24"}
ETR_SITE = {"ea": "site-a", "eb": "site-b", "ee": "site-e"}
# The full digest of each ETR's algorithm (RFC 2104 HMAC output: SHA-1 20 bytes, SHA-256 32).
FULL_MAC = {"ea": 32, "eb": 20, "ee": 32}
UNREGISTERED_EID = "153.16.3.5"  # in site C
HOLE_EID = "153.16.200.1"  # in the aggregate, in no site

class Interop(RunningLab):
    """The running lab, the capture on its segment, and the Map-Server's view."""

    def __init__(self, alt: AltTopology, ld: LabDir, capture: ProcessHandle, pcap: Path) -> None:
        super().__init__(alt, ld)
        self.capture = capture
        self.pcap = pcap

    def ms(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.query("ms", request)

    def ms_counters(self) -> dict[str, int]:
        return dict(self.status("ms", routes=False)["mapping"]["map_server"])

    def registrations(self) -> list[dict[str, Any]]:
        return list(self.ms({"cmd": "registrations"})["registrations"])

    def etr_log(self, host: str) -> str:
        state = self.ld.load()
        assert state is not None
        logs = [Path(p.log) for p in state.processes if p.host == host and p.name == "etr"]
        return logs[0].read_text(errors="replace") if logs and logs[0].exists() else ""

    def lig(self, eid: str) -> tuple[int, dict[str, Any]]:
        argv = [sys.executable, "-m", "alt_router.cli", "lig", eid, "-m", U["mr"], "--json", "-t", "2"]
        proc = run_in_netns(netns_name(self.alt.name, "itr"), argv, check=False, timeout=30)
        try:
            return proc.returncode, json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"lig {eid} exit {proc.returncode}: {proc.stdout}\n{proc.stderr}") from None

    def diag(self) -> str:
        parts = []
        for host in ("mr", "ms"):
            try:
                parts.append(f"=== {host}\n" + json.dumps(
                    self.status(host, routes=False), indent=1, default=str)[:4000])
            except (OSError, ValueError) as exc:
                parts.append(f"=== {host}: {exc}")
        parts += [f"=== {h} log\n{self.etr_log(h)[-1500:]}" for h in ETR_SITE]
        return "\n".join(parts)


@pytest.fixture(scope="module")
def lab(lab_names: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Interop]:
    tshark = require_tool("tshark")
    alt = alt_topology("interop.toml", lab_names("interop"))
    root = tmp_path_factory.mktemp("interop")
    out = open(root / "up.out", "w")  # noqa: SIM115 - kept open for the module's teardown too
    capture: ProcessHandle | None = None
    try:
        ld, converged = up(alt, root=root, source="test", out=out, timeout=45)
        out.flush()
        assert converged, (root / "up.out").read_text()
        pcap = root / "wan.pcap"
        # On the segment's bridge, so one capture sees every host's traffic.  Started after the
        # first registrations; the ETRs register again every 5 s, so the capture sees that too.
        tshark_proc = capture = spawn_in_netns(
            segment_netns_name(alt.name, "wan"), "sw-wan",
            [tshark, "-n", "-i", "br0", "-f", "udp port 4342", "-w", str(pcap)],
            name="tshark", log_path=root / "tshark.log")
        wait_until(lambda: "Capturing on" in tshark_proc.read_log() or not tshark_proc.running(), 20,
                   what="tshark capturing", on_timeout=tshark_proc.log_tail)
        assert tshark_proc.running(), tshark_proc.log_tail()
        yield Interop(alt, ld, tshark_proc, pcap)
    finally:
        if capture is not None:
            capture.stop(grace=2)
        down(alt.name, root, out=out)
        out.close()


def test_sites_register_with_full_digests_and_get_map_notifies(lab: Interop) -> None:
    # RFC 9301 §5.6/§5.7: each ETR sends the full HMAC digest (issue 12 item 1) and asks for a
    # Map-Notify; the Map-Server verifies each length and counts its kind.
    def registered() -> dict[str, int] | None:
        regs = {r["site"] for r in lab.registrations()}
        counters = lab.ms_counters()
        ok = (regs == set(ETR_SITE.values()) and counters.get("auth:sha256-full", 0) >= 2
              and counters.get("auth:sha1-full", 0) >= 1 and counters.get("map-notify", 0) >= 3)
        return counters if ok else None

    counters = wait_until(registered, 30, interval=0.3, what="three sites registered", on_timeout=lab.diag)
    assert not [k for k in counters if k.startswith("refused:")], counters
    # The truncated forms (RFC 2404/4868 names) were never sent: every ETR uses the default.
    assert counters.get("auth:sha1-96", 0) == counters.get("auth:sha256-128", 0) == 0, counters
    regs = {r["site"]: r for r in lab.registrations()}
    assert "site-c" not in regs  # configured, no ETR
    for host, site in ETR_SITE.items():
        reg = regs[site]
        assert reg["prefix"] == SITES[site] and reg["etr"] == U[host] and reg["locators"] == [U[host]]
        # RFC 9301 §8.3: Map-Requests go to an RLOC of the signed registration.
        assert reg["requests_to"] == U[host], reg
    # RFC 9301 §5.6: an ETR may send its Map-Registers from any source port.
    assert regs["site-e"]["port"] != 4342 and regs["site-a"]["port"] == regs["site-b"]["port"] == 4342, regs
    # Each ETR verified the Map-Notify (sent to UDP 4342, RFC 9301 §8.2, so also to ee, whose
    # Map-Registers came from elsewhere) with a MAC as long as its own (RFC 9301 §5.7).
    for host, mac in (("ea", "sha256-full"), ("eb", "sha1-full"), ("ee", "sha256-full")):
        wait_until(lambda h=host, m=mac: f"registered with Map-Server {U['ms']} (Map-Notify, {m} MAC)"  # type: ignore[misc]
                   in lab.etr_log(h), 15, what=f"{host} confirming its registration by Map-Notify",
                   on_timeout=lab.diag)


@pytest.mark.parametrize("host", list(ETR_SITE))
def test_registered_sites_resolve(lab: Interop, host: str) -> None:
    # RFC 9301 §8.2/§5.8: the Map-Server forwards the ECM Map-Request to the ETR at UDP 4342,
    # which answers the ITR with an authoritative Map-Reply (§5.4).
    prefix = ip_network(SITES[ETR_SITE[host]])
    eid = str(prefix.network_address + 7)
    status, doc = lab.lig(eid)
    assert status == 0, doc
    reply = doc["replies"][0]
    assert reply["from"] == U[host], doc
    record = reply["records"][0]
    assert record["eid_prefix"] == str(prefix) and record["authoritative"] is True, record
    assert record["action"] == "no-action" and [loc["address"] for loc in record["locators"]] == [U[host]]


def _negative(lab: Interop, eid: str, counter: str) -> dict[str, Any]:
    before = lab.ms_counters().get(counter, 0)
    status, doc = lab.lig(eid)
    assert status == 1, doc  # lig: a negative Map-Reply
    reply = doc["replies"][0]
    # The Map-Server node answers it (issue 12 item 3), not the Map-Resolver: the MR routed it
    # into the ALT by the aggregate.
    assert reply["from"] == U["ms"], doc
    record = reply["records"][0]
    assert record["action"] == "natively-forward" and record["locators"] == [], record
    assert lab.ms_counters().get(counter, 0) == before + 1
    return dict(record)


def test_unregistered_site_gets_a_one_minute_negative_reply(lab: Interop) -> None:
    # RFC 9301 §8.3: "...configured but not registered... a negative Map-Reply with a TTL of 1 minute".
    record = _negative(lab, UNREGISTERED_EID, "not-registered")
    assert record["ttl_minutes"] == 1, record
    assert record["eid_prefix"] == SITES["site-c"], record


def test_hole_in_the_aggregate_gets_a_fifteen_minute_negative_reply(lab: Interop) -> None:
    # RFC 9301 §8.3: an EID in the aggregate but in no site gets a 15-minute negative Map-Reply,
    # for the largest prefix that covers it and overlaps no configured site (issue 12 item 3).
    record = _negative(lab, HOLE_EID, "not-in-site")
    assert record["ttl_minutes"] == 15, record
    prefix = ip_network(record["eid_prefix"])
    assert isinstance(prefix, IPv4Network)
    sites = [ip_network(p) for p in SITES.values()]
    assert ip_address(HOLE_EID) in prefix and prefix.subnet_of(AGGREGATE), prefix
    assert not [s for s in sites if s.overlaps(prefix)], prefix
    # The largest: one bit shorter it would overlap a site (or leave the aggregate).
    wider = prefix.supernet()
    assert not wider.subnet_of(AGGREGATE) or any(s.overlaps(wider) for s in sites), prefix
    assert prefix == ip_network("153.16.128.0/17")


def _tshark_rows(pcap: Path, display: str, fields: tuple[str, ...], *, live: bool) -> list[dict[str, str]]:
    """One dict per packet matching ``display``: each field's first occurrence (the outer header).

    ``live``: the capture is still being written, so its last packet may be cut short and tshark
    exits non-zero after printing every whole packet; those rows are what we want.
    """
    argv = ["tshark", "-n", "-r", str(pcap), "-Y", display, "-T", "fields", "-E", "separator=|",
            "-E", "occurrence=f"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=not live, timeout=60).stdout
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line]


FIELDS = ("ip.src", "ip.dst", "udp.srcport", "udp.dstport", "lisp.type", "lisp.authlen",
          "lisp.mapping.ttl", "lisp.mapping.act", "lisp.mapping.eid.ipv4", "lisp.mapping.eid.masklen")
# tshark's lisp.type: 2 Map-Reply, 3 Map-Register, 4 Map-Notify, 8 ECM; lisp.mapping.act 1 is
# Natively-Forward (RFC 9301 §5.4).
EXPECTED: tuple[tuple[str, Callable[[dict[str, str]], bool]], ...] = (
    *((f"the Map-Notify to {h} at UDP 4342 with a {n}-byte MAC (RFC 9301 §5.7, §8.2)",
       lambda r, h=h, n=n: r["ip.src"] == U["ms"] and r["ip.dst"] == U[h] and r["lisp.type"] == "4"
       and r["udp.dstport"] == "4342" and r["lisp.authlen"] == str(n))
      for h, n in FULL_MAC.items()),
    *((f"{h}'s Map-Register with a {n}-byte MAC", lambda r, h=h, n=n: r["ip.src"] == U[h]
       and r["lisp.type"] == "3" and r["lisp.authlen"] == str(n)) for h, n in FULL_MAC.items()),
    ("ee's Map-Register from an ephemeral port (RFC 9301 §5.6)", lambda r: r["ip.src"] == U["ee"]
     and r["lisp.type"] == "3" and r["udp.srcport"] not in ("", "4342")),
    ("the ECM Map-Request to ee at UDP 4342 (RFC 9301 §5.8)", lambda r: r["ip.src"] == U["ms"]
     and r["ip.dst"] == U["ee"] and r["lisp.type"] == "8" and r["udp.dstport"] == "4342"),
    ("the 1-minute negative Map-Reply for site C (RFC 9301 §8.3)", lambda r: r["ip.src"] == U["ms"]
     and r["ip.dst"] == U["itr"] and r["lisp.type"] == "2" and r["lisp.mapping.ttl"] == "1"
     and r["lisp.mapping.act"] == "1" and r["lisp.mapping.eid.ipv4"] == "153.16.3.0"
     and r["lisp.mapping.eid.masklen"] == "24"),
    ("the 15-minute negative Map-Reply for the hole (RFC 9301 §8.3)", lambda r: r["ip.src"] == U["ms"]
     and r["ip.dst"] == U["itr"] and r["lisp.type"] == "2" and r["lisp.mapping.ttl"] == "15"
     and r["lisp.mapping.act"] == "1" and r["lisp.mapping.eid.ipv4"] == "153.16.128.0"
     and r["lisp.mapping.eid.masklen"] == "17"),
)


def _missing(rows: list[dict[str, str]]) -> list[str]:
    return [what for what, match in EXPECTED if not any(match(r) for r in rows)]


def test_tshark_decodes_the_map_servers_side_of_each_exchange(lab: Interop) -> None:
    # The lookups this test looks for are sent here; the ETRs re-register every 5 s.
    for eid in (str(ip_network(SITES["site-e"]).network_address + 9), UNREGISTERED_EID, HOLE_EID):
        _, doc = lab.lig(eid)
        assert doc["replies"], (eid, doc)

    def missing_so_far() -> list[str]:
        return _missing(_tshark_rows(lab.pcap, "lisp", FIELDS, live=True))

    # dumpcap writes the kernel's ring in blocks: stop the capture only once the file has it all.
    wait_until(lambda: not missing_so_far(), 30, interval=0.5, what="the capture holding every message",
               on_timeout=lambda: f"missing: {missing_so_far()}\n{lab.capture.log_tail()}")
    lab.capture.signal(signal.SIGINT)
    lab.capture.popen.wait(15)
    rows = _tshark_rows(lab.pcap, "lisp", FIELDS, live=False)
    assert _missing(rows) == [], rows
    # Every Map-Notify the Map-Server sent went to 4342 with a full-length MAC (none truncated).
    notifies = [r for r in rows if r["lisp.type"] == "4"]
    assert notifies, rows
    assert all(r["udp.dstport"] == "4342" and r["lisp.authlen"] in ("20", "32") for r in notifies), notifies
    malformed = _tshark_rows(lab.pcap, "_ws.malformed or _ws.expert.severity == error", ("frame.number",),
                             live=False)
    assert malformed == [], malformed
