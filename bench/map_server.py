"""Map-Server at scale (issue 9 part 3): 300,000 registrations re-registering every 60 s, with lookups.

    sudo python bench/map_server.py [--registrations 300000] [--rate 5000] [--duration 60]

A real ``alt-router run`` node with only the Map-Server role (``ms``) runs in a network namespace
of an ``alt-router lab``; its BGP peer over userspace GRE is a Map-Resolver node (``mr``).  From
a third namespace (``s``) worker processes:

* ``register``: authenticated Map-Registers (HMAC-SHA-256, full 32-byte digest, M bit set), one
  record each, a /28 per registration, paced to ``--rate``; first every registration once (the
  fill, at ``--fill-rate``), then round-robin for ``--duration`` seconds, so each registration
  is refreshed every ``registrations / rate`` seconds (60 s at the defaults);
* ``lookup``: ECM Map-Requests for random registered EIDs to the Map-Resolver at
  ``--lookup-rate``; the MR forwards them over the ALT to ``ms``, which forwards them to the
  registered ETR RLOC, that is back to ``s``;
* ``receive``: on ``s``'s UDP 4342, the Map-Notifies and the forwarded Map-Requests, by nonce.

Site layout (config size): 300,000 ``[[map_server.sites]]`` tables are ~25 MB of TOML, and
parsing them takes minutes on this machine (measured in the run on ``--config-probe`` one-prefix
sites and extrapolated).  So the node gets one /20 site per 256 registrations (1,172 sites for
300,000) with ``accept_more_specifics``: each registration is still its own Map-Register, its
own /28, its own registration entry and its own replay state.  The Map-Server announces the
registered sites' prefixes; four sites lie under each ``[[eid.aggregates]]`` /18
(``summary_only``), so BGP carries the 293 aggregates only.

Reported beside a reference measured in the same run (a bare CPython UDP echo in the same
namespace, and the sender's own rate): the sustained registration rate (the node's ``registered``
counter), registrations per CPU-second of the node process (one core), Map-Notify round-trip
p50/p99, lookup round trip, RSS per 100k registrations beyond the baseline, and what BGP carries.
Targets: >= 5,000 Map-Registers/s sustained with lookups flowing; <= 1 KiB per registration.
Needs root, exabgp.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import array
import hmac
import json
import os
import random
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import tomllib
from hashlib import sha256
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alt_router.lab.alt_runner import down, up
from alt_router.lab.alt_topology import AltTopology
from alt_router.lab.processes import spawn_in_netns
from alt_router.lab.topology import netns_name
from alt_router.lisp.auth import HMAC_SHA_256_128, sign
from alt_router.lisp.ecm import EncapsulatedControlMessage
from alt_router.lisp.map_register import AUTH_DATA_OFFSET, MapRegister
from alt_router.lisp.map_request import MapRequest
from alt_router.lisp.records import EidRecord, Locator, MappingRecord
from alt_router.node.config import parse_config
from alt_router.node.daemon import query

SPACE = IPv4Network("153.0.0.0/8")
REG_LEN = 28
SITE_LEN = 20
AGG_LEN = 18
PER_SITE = 1 << (REG_LEN - SITE_LEN)  # the /28s of one /20 site: 256 registrations a site
U = {"ms": "10.70.0.1", "mr": "10.70.0.2", "s": "10.70.0.3"}
ECHO_PORT = 9999
NONCE_BASE = time.time_ns() & ~0xFFFFFFFF  # increasing across phases and runs (RFC 9301 §5.6)


def reg_prefix(i: int) -> IPv4Network:
    return IPv4Network((int(SPACE.network_address) + i * (1 << (32 - REG_LEN)), REG_LEN))


def site_key(site: int) -> str:
    return f"bench-key-{site}"


# --- workers (run inside the sender namespace) ---------------------------------------------------


def _pace(rate: float, total: int, start: float) -> float:
    """Seconds to sleep before message ``total`` keeps the rate (0 when behind)."""
    return max(0.0, start + total / rate - time.monotonic())


def worker_register(a: argparse.Namespace) -> None:
    """Map-Registers for registrations [0, n) cycling from ``first``, paced; send times by nonce."""
    per_site = PER_SITE
    record = MappingRecord(
        reg_prefix(0).network_address, REG_LEN, ttl=3, locators=(Locator(IPv4Address(U["s"]), local=True),),
        authoritative=True,
    )
    template = bytearray(
        sign(MapRegister(0, (record,), want_map_notify=True, algorithm_id=HMAC_SHA_256_128), "x").encode()
    )
    auth_len = struct.unpack_from("!H", template, AUTH_DATA_OFFSET - 2)[0]
    template[AUTH_DATA_OFFSET:AUTH_DATA_OFFSET + auth_len] = bytes(auth_len)
    eid_off = template.index(SPACE.network_address.packed, AUTH_DATA_OFFSET + auth_len)
    keys = [site_key(s).encode() for s in range((a.n + per_site - 1) // per_site)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    dest = (U["ms"], 4342)
    base = int(SPACE.network_address)
    step = 1 << (32 - REG_LEN)
    nonces = array.array("Q")
    times = array.array("d")
    pack_nonce = struct.Struct("!Q").pack_into
    pack_eid = struct.Struct("!I").pack_into
    start = time.monotonic()
    deadline = start + a.seconds if a.seconds else None
    sent = 0
    i = a.first
    nonce = NONCE_BASE + a.nonce_offset
    while True:
        if deadline is None and sent >= a.n:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        wait = _pace(a.rate, sent, start)
        if wait > 0.0005:
            time.sleep(wait)
        msg = template
        nonce += 1
        pack_nonce(msg, 4, nonce)
        pack_eid(msg, eid_off, base + i * step)
        msg[AUTH_DATA_OFFSET:AUTH_DATA_OFFSET + auth_len] = bytes(auth_len)
        msg[AUTH_DATA_OFFSET:AUTH_DATA_OFFSET + auth_len] = hmac.digest(keys[i // per_site], msg, sha256)
        try:
            sock.sendto(msg, dest)
        except OSError:
            continue
        nonces.append(nonce)
        times.append(time.monotonic())
        sent += 1
        i = (i + 1) % a.n
    elapsed = time.monotonic() - start
    _dump(a.out, nonces, times, {"sent": sent, "elapsed": elapsed, "next": i})


def worker_lookup(a: argparse.Namespace) -> None:
    """ECM Map-Requests for random registered EIDs to the Map-Resolver, paced."""
    rng = random.Random(9)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((U["s"], 0))
    src = IPv4Address(U["s"])
    nonces = array.array("Q")
    times = array.array("d")
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < a.seconds:
        wait = _pace(a.rate, sent, start)
        if wait > 0.0005:
            time.sleep(wait)
        eid = reg_prefix(rng.randrange(a.n)).network_address + 1
        nonce = rng.getrandbits(64)
        request = MapRequest(nonce, None, (src,), (EidRecord(eid, 32),))
        ecm = EncapsulatedControlMessage(request, src, eid, source_port=sock.getsockname()[1])
        sock.sendto(ecm.encode(), (U["mr"], 4342))
        nonces.append(nonce)
        times.append(time.monotonic())
        sent += 1
    _dump(a.out, nonces, times, {"sent": sent, "elapsed": time.monotonic() - start})


def worker_receive(a: argparse.Namespace) -> None:
    """Map-Notify (type 4) and forwarded Map-Request (ECM, type 8) arrivals on UDP 4342, by nonce."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((U["s"], 4342))
    sock.settimeout(0.2)
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    notify_n, notify_t = array.array("Q"), array.array("d")
    req_n, req_t = array.array("Q"), array.array("d")
    unpack = struct.Struct("!Q").unpack_from
    Path(a.out + ".ready").write_text("1")
    while not stop:
        try:
            data = sock.recv(2048)
        except TimeoutError:
            continue
        now = time.monotonic()
        kind = data[0] >> 4
        if kind == 4 and len(data) >= 12:
            notify_n.append(unpack(data, 4)[0])
            notify_t.append(now)
        elif kind == 8 and len(data) >= 4 + 20 + 8 + 12:
            inner = 4 + (data[4] & 0x0F) * 4 + 8
            req_n.append(unpack(data, inner + 4)[0])
            req_t.append(now)
    _dump(a.out + ".notify", notify_n, notify_t, {})
    _dump(a.out + ".request", req_n, req_t, {})


def worker_echo_server(a: argparse.Namespace) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((U["ms"], ECHO_PORT))
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(data, peer)


def worker_echo_client(a: argparse.Namespace) -> None:
    """Closed loop (a window of 64 in flight) against the echo server: the reference rate."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    payload = bytes(120)
    dest = (U["ms"], ECHO_PORT)
    got = 0
    for _ in range(64):
        sock.sendto(payload, dest)
    start = time.monotonic()
    while time.monotonic() - start < a.seconds:
        try:
            sock.recv(2048)
        except TimeoutError:
            for _ in range(64):
                sock.sendto(payload, dest)
            continue
        got += 1
        sock.sendto(payload, dest)
    Path(a.out).write_text(json.dumps({"echoes": got, "elapsed": time.monotonic() - start}))


def _dump(path: str, nonces: array.array[int], times: array.array[float], meta: dict[str, Any]) -> None:
    with open(path + ".n", "wb") as fh:
        nonces.tofile(fh)
    with open(path + ".t", "wb") as fh:
        times.tofile(fh)
    Path(path + ".json").write_text(json.dumps(meta))


def _load(path: str) -> tuple[dict[int, float], dict[str, Any]]:
    n, t = array.array("Q"), array.array("d")
    size = os.path.getsize(path + ".n")
    with open(path + ".n", "rb") as fh:
        n.fromfile(fh, size // 8)
    with open(path + ".t", "rb") as fh:
        t.fromfile(fh, size // 8)
    meta = json.loads(Path(path + ".json").read_text()) if Path(path + ".json").exists() else {}
    return dict(zip(n, t, strict=True)), meta


# --- the driver -------------------------------------------------------------------------------------


def site_tables(n_sites: int, *, more_specifics: bool, site_len: int) -> str:
    lines = []
    for s in range(n_sites):
        p = IPv4Network((int(SPACE.network_address) + s * (1 << (32 - site_len)), site_len))
        lines.append(
            f'[[map_server.sites]]\nname = "s{s}"\nkey = "{site_key(s)}"\neid_prefixes = ["{p}"]\n'
            + ("accept_more_specifics = true\n" if more_specifics else "")
        )
    return "".join(lines)


def config_probe(n: int) -> dict[str, float]:
    """Parse a config with ``n`` one-prefix sites the way the node does; seconds per 100k sites."""
    head = (
        '[node]\nname = "probe"\nasn = 65002\nrouter_id = "192.0.2.2"\ntunnel_mode = "userspace"\n'
        f'state_dir = "/tmp/probe"\n[eid]\naccept = ["{SPACE}"]\n'
        "[map_server]\nmax_registrations_per_source = 1000000\n"
    )
    text = head + site_tables(n, more_specifics=False, site_len=REG_LEN)
    t0 = time.perf_counter()
    tomllib.loads(text)
    t1 = time.perf_counter()
    parse_config(text, source="probe.toml")
    t2 = time.perf_counter()
    return {"sites": n, "mbytes": len(text) / 1e6, "toml_s": t1 - t0, "parse_config_s": t2 - t1,
            "per_100k_s": (t2 - t1) * 100_000 / n}


def lab_toml(name: str, a: argparse.Namespace) -> str:
    n_sites = (a.registrations + PER_SITE - 1) // PER_SITE
    sites_per_agg = 1 << (SITE_LEN - AGG_LEN)
    n_aggs = (n_sites + sites_per_agg - 1) // sites_per_agg
    aggs = ", ".join(
        f'{{ prefix = "{IPv4Network((int(SPACE.network_address) + k * (1 << (32 - AGG_LEN)), AGG_LEN))}", '
        "summary_only = true }"
        for k in range(n_aggs)
    )
    extra = (
        "[map_server]\nenabled = true\nmax_registrations_per_source = 1000000\n"
        f"max_registrations_per_site = {max(1024, 2 * PER_SITE)}\n"
        + site_tables(n_sites, more_specifics=True, site_len=SITE_LEN)
    )
    mr_extra = (
        "[map_resolver]\nenabled = true\nrate_limit = 100000.0\nrate_burst = 200000\n"
        "global_rate_limit = 100000.0\nglobal_rate_burst = 200000\n"
    )
    members = "".join(
        f'  {{ host = "{h}", ifname = "eth0", addresses = ["{ip}/24"] }},\n' for h, ip in U.items()
    )
    return f'''name = "{name}"
[hosts.ms]
[hosts.mr]
[hosts.s]
[[segments]]
name = "u"
members = [
{members}]
[alt]
accept = ["{SPACE}"]
[alt.nodes.ms]
asn = 65002
router_id = "192.0.2.2"
aggregates = [{aggs}]
extra = {json.dumps(extra)}
[alt.nodes.mr]
asn = 65001
router_id = "192.0.2.1"
extra = {json.dumps(mr_extra)}
[[alt.tunnels]]
between = ["ms", "mr"]
'''


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def drive(a: argparse.Namespace) -> int:
    out = sys.stdout
    probe = config_probe(a.config_probe) if a.config_probe else None
    if probe:
        out.write(f"config probe: {probe['sites']} one-prefix sites ({probe['mbytes']:.1f} MB TOML): "
                  f"tomllib {probe['toml_s']:.1f} s, parse_config {probe['parse_config_s']:.1f} s "
                  f"-> {probe['per_100k_s']:.0f} s per 100k sites\n")
    name = "msbench"
    root = Path(tempfile.mkdtemp(prefix="alt-router-msbench-"))
    root.chmod(0o755)
    work = root / "work"
    work.mkdir()
    alt = AltTopology.from_toml(lab_toml(name, a))
    me = [sys.executable, str(Path(__file__).resolve())]
    procs = []

    def worker(host: str, label: str, *args: str) -> Any:
        h = spawn_in_netns(netns_name(name, host), host, [*me, "--worker", *args], name=label,
                           log_path=work / f"{label}.log")
        procs.append(h)
        return h

    try:
        t0 = time.monotonic()
        ld, converged = up(alt, root=root, source="bench", out=out, timeout=a.timeout)
        out.write(f"lab up in {time.monotonic() - t0:.1f} s (converged: {converged})\n")
        if not converged:
            return 1
        ms_state = ld.node_state("ms")
        pid = int((ms_state / "alt-router.pid").read_text())

        def ms_counters() -> dict[str, Any]:
            mapping = query(ms_state, {"cmd": "status", "routes": False}, timeout=30).get("mapping", {})
            return {**mapping.get("map_server", {}), "registrations": mapping.get("registrations", 0)}

        rss_base = proc_rss_kib(pid)
        out.write(f"ms node pid {pid}: RSS {rss_base / 1024:.0f} MiB with {len(alt.node('ms').aggregates)} "
                  f"aggregates and the sites configured, nothing registered\n")

        # Reference: a bare CPython UDP echo in ms's namespace, same sender namespace.
        echo = worker("ms", "echo-server", "echo-server")
        time.sleep(0.5)  # bench only: the echo server binds at once
        ref = work / "echo.json"
        e = worker("s", "echo-client", "echo-client", "--seconds", "5", "--out", str(ref))
        e.popen.wait(30)
        echo.stop()
        ref_rate = json.loads(ref.read_text())["echoes"] / json.loads(ref.read_text())["elapsed"]
        out.write(f"reference: bare CPython UDP echo {ref_rate:,.0f} round trips/s\n")

        recv_out = str(work / "recv")
        recv = worker("s", "receiver", "receive", "--out", recv_out)
        while not Path(recv_out + ".ready").exists():
            time.sleep(0.05)

        # Fill: every registration once; a second pass re-sends what a saturated node dropped.
        c0 = ms_counters()
        t_fill = time.monotonic()
        for attempt in range(2):
            fill = worker("s", f"fill{attempt}", "register", "--n", str(a.registrations),
                          "--rate", str(a.fill_rate), "--out", str(work / f"fill{attempt}"),
                          "--nonce-offset", str(attempt << 29))
            fill.popen.wait(a.registrations / a.fill_rate * 3 + 120)
            last, still = -1, 0
            while still < 5:  # until the node's table stops growing for 5 s
                held = ms_counters()["registrations"]
                if held >= a.registrations:
                    break
                still = still + 1 if held == last else 0
                last = held
                time.sleep(1)
            if ms_counters()["registrations"] >= a.registrations:
                break
            out.write(f"fill pass {attempt + 1}: {ms_counters()['registrations']:,} held; sending again\n")
        fill_s = time.monotonic() - t_fill
        c1 = ms_counters()
        rss_full = proc_rss_kib(pid)
        out.write(f"fill: {c1.get('registered', 0) - c0.get('registered', 0):,} registered in "
                  f"{fill_s:.1f} s; table {c1.get('registrations', '?')}; RSS {rss_full / 1024:.0f} MiB\n")

        # Sustained: re-registration round-robin plus lookups.
        cpu0 = proc_cpu(pid)
        t_meas = time.monotonic()
        reg = worker("s", "register", "register", "--n", str(a.registrations),
                     "--rate", str(a.rate), "--seconds", str(a.duration), "--out", str(work / "reg"),
                     "--nonce-offset", str(1 << 30))
        look = worker("s", "lookup", "lookup", "--n", str(a.registrations), "--rate", str(a.lookup_rate),
                      "--seconds", str(a.duration), "--out", str(work / "look"))
        reg.popen.wait(a.duration + 120)
        look.popen.wait(a.duration + 120)
        time.sleep(2)  # bench only: the last Map-Notifies in flight
        meas_s = time.monotonic() - t_meas
        cpu = proc_cpu(pid) - cpu0
        c2 = ms_counters()
        rss_end = proc_rss_kib(pid)
        recv.signal(signal.SIGTERM)
        recv.popen.wait(30)

        sent, sent_meta = _load(str(work / "reg"))
        lsent, lmeta = _load(str(work / "look"))
        notifies, _ = _load(recv_out + ".notify")
        requests, _ = _load(recv_out + ".request")
        rtt = [(notifies[n] - t) * 1000 for n, t in sent.items() if n in notifies]
        lrtt = [(requests[n] - t) * 1000 for n, t in lsent.items() if n in requests]
        registered = c2.get("registered", 0) - c1.get("registered", 0)
        sender_rate = sent_meta["sent"] / sent_meta["elapsed"]
        ms_rate = registered / a.duration
        per_core = registered / cpu if cpu else float("nan")
        refused = {k: c2[k] - c1.get(k, 0) for k in c2 if k.startswith("refused") and c2[k] - c1.get(k, 0)}

        mr_routes = query(ld.node_state("mr"), {"cmd": "status"}, timeout=30).get("routes", {})
        lens: dict[int, int] = {}
        for p in mr_routes:
            ln = int(p.split("/")[1])
            lens[ln] = lens.get(ln, 0) + 1
        # Per registration actually held at the end of the fill (a saturated node holds fewer).
        held_full = max(1, int(c1.get("registrations", 0)) or a.registrations)
        per_reg = (rss_full - rss_base) * 1024 / held_full

        out.write("\n")
        rows = [
            ("registrations held", f"{c2.get('registrations', '?')}", ""),
            ("sender rate (Map-Registers/s)", f"{sender_rate:,.0f}", "reference"),
            ("Map-Server registered/s, sustained", f"{ms_rate:,.0f}",
             f"{ms_rate / sender_rate:.2f}x sender, {ms_rate / ref_rate:.2f}x UDP echo"),
            ("Map-Server registrations per CPU-second", f"{per_core:,.0f}",
             f"{per_core / ref_rate:.2f}x UDP echo ({cpu:.1f} CPU-s in {a.duration} s)"),
            ("Map-Notify received / sent", f"{len(rtt):,} / {len(sent):,}",
             f"{len(rtt) / max(1, len(sent)):.3f}"),
            ("Map-Notify RTT p50 / p99 (ms)", f"{pct(rtt, 0.5):.2f} / {pct(rtt, 0.99):.2f}", ""),
            ("lookups sent / reached the ETR", f"{lmeta['sent']:,} / {len(lrtt):,}",
             f"{lmeta['sent'] / lmeta['elapsed']:.0f}/s"),
            ("lookup RTT p50 / p99 (ms), ITR->MR->ALT->MS->ETR",
             f"{pct(lrtt, 0.5):.2f} / {pct(lrtt, 0.99):.2f}", ""),
            ("RSS baseline / full / end (MiB)",
             f"{rss_base / 1024:.0f} / {rss_full / 1024:.0f} / {rss_end / 1024:.0f}", ""),
            ("RSS per 100k registrations (MiB)",
             f"{(rss_full - rss_base) / 1024 * 100_000 / held_full:.1f}",
             f"{per_reg:.0f} bytes per registration (target <= 1024)"),
            ("BGP: prefixes mr learns from ms", f"{len(mr_routes)}",
             ", ".join(f"{c} x /{ln}" for ln, c in sorted(lens.items()))),
            ("refused during the run", json.dumps(refused) if refused else "none", ""),
        ]
        width = max(len(r[0]) for r in rows)
        for label, value, note in rows:
            out.write(f"  {label:<{width}}  {value:>22}  {note}\n")
        out.write(f"\nmeasurement window {meas_s:.1f} s; fill {fill_s:.1f} s at {a.fill_rate}/s target\n")
        return 0
    finally:
        for h in procs:
            h.stop(grace=2)
        if not a.keep:
            down(name, root, out=out)
            shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--registrations", type=int, default=300_000)
    p.add_argument("--rate", type=float, default=5000.0, help="Map-Registers/s while measuring")
    p.add_argument("--fill-rate", type=float, default=3000.0, help="Map-Registers/s for the first round")
    p.add_argument("--lookup-rate", type=float, default=500.0, help="ECM Map-Requests/s while measuring")
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--config-probe", type=int, default=30_000,
                   help="one-prefix sites to time config parsing with (0: skip)")
    p.add_argument("--timeout", type=float, default=300.0, help="lab convergence timeout")
    p.add_argument("--keep", action="store_true", help="leave the lab up")
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("role", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    p.add_argument("--nonce-offset", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        workers = {"register": worker_register, "lookup": worker_lookup, "receive": worker_receive,
                   "echo-server": worker_echo_server, "echo-client": worker_echo_client}
        workers[a.role](a)
        return 0
    if os.geteuid() != 0:
        print("bench/map_server.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    return drive(a)


if __name__ == "__main__":
    sys.exit(main())
