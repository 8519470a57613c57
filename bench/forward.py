"""Map-Request ALT datagrams through one alt_router hop (userspace GRE in and out) vs the kernel.

Run as root:  python bench/forward.py [--seconds 3] [--latency-rate 10000] [--latency-seconds 3]
              [--per-packet-syscalls] [--mode frr]

Builds its own lab and tears it down at the end:

    s --eth-m-- m (alt_router: userspace GRE engine + the daemon's ALT forwarder hook) --eth-s-- r
    s --eth-k-- k (plain Linux router, net.ipv4.ip_forward=1)                          --eth-k-- r

``s`` sends the same Map-Request ALT datagrams (IPv4/UDP to 4342, destination an
EID in 153.16.0.0/16, a fresh nonce each) either GRE-encapsulated to m (a raw
protocol-47 socket, GRE key 1) or as plain IP packets routed through k.  m runs
exactly what ``alt-router run`` runs for the data path (``Engine`` attached to
asyncio, ``NodeMapping.hook`` and ``fast_hook``, events to ``NodeMapping.dispatch``),
with one route 153.16.0.0/16 learned from peer r: it decapsulates, decides, decrements the TTL and
re-encapsulates towards r (key 2).  Throughput is what arrives at r (its
interface counters) per second while s sends as fast as it can (64 datagrams per
sendmmsg, so that the sender outruns both paths).  Latency is measured in the
middle node with a pair of packet captures (AF_PACKET, kernel receive/transmit
timestamps, matched by the Map-Request nonce) while s sends at a fixed rate: the
time the hop adds.

``--mode frr`` (issue 10) adds a third hop in the same run, after the ExaBGP-mode one on the same
host m: ``alt-router run`` with ``[node] bgp = "frr"`` (its own FRR, tunnels on TUNs with no
forwarder hook), whose kernel forwards the ALT datagrams from TUN to TUN; the userspace GRE
engine only decapsulates and encapsulates.  Printed: datagrams/s of the FRR-mode, ExaBGP-mode and
kernel hops and the ratios (target: FRR-mode >= 1.5x the ExaBGP-mode hop).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from alt_router.lab import Lab, ProcessHandle, Topology, wait_until
from alt_router.node.control import query

PY = sys.executable

TOPOLOGY = """
name = "bfwd"
[hosts.s]
routes = [{ to = "153.16.0.0/16", via = "10.71.0.1" }]
[hosts.m]
[hosts.k]
forwarding = true
routes = [{ to = "153.16.0.0/16", via = "10.72.1.2" }]
[hosts.r]
[[links]]
a = { host = "s", ifname = "eth-m", addresses = ["10.70.0.2/24"] }
b = { host = "m", ifname = "eth-s", addresses = ["10.70.0.1/24"] }
[[links]]
a = { host = "m", ifname = "eth-r", addresses = ["10.70.1.1/24"] }
b = { host = "r", ifname = "eth-m", addresses = ["10.70.1.2/24"] }
[[links]]
a = { host = "s", ifname = "eth-k", addresses = ["10.71.0.2/24"] }
b = { host = "k", ifname = "eth-s", addresses = ["10.71.0.1/24"] }
[[links]]
a = { host = "k", ifname = "eth-r", addresses = ["10.72.1.1/24"] }
b = { host = "r", ifname = "eth-k", addresses = ["10.72.1.2/24"] }
"""

NODE_CONFIG = """
[node]
name = "m"
asn = 65001
router_id = "192.0.2.1"
tunnel_mode = "userspace"
state_dir = "{state}"
[eid]
accept = ["153.16.0.0/12"]
[[peers]]
name = "s"
asn = 65000
key = 1
[peers.underlay]
local = "10.70.0.1"
remote = "10.70.0.2"
[peers.tunnel]
local_ipv4 = "10.255.1.1/30"
remote_ipv4 = "10.255.1.2"
[[peers]]
name = "r"
asn = 65002
key = 2
[peers.underlay]
local = "10.70.1.1"
remote = "10.70.1.2"
[peers.tunnel]
local_ipv4 = "10.255.2.1/30"
remote_ipv4 = "10.255.2.2"
"""

# The middle node: the daemon's data path without ExaBGP (the route is put into the RIB directly).
MIDDLE = textwrap.dedent("""
    import asyncio, signal, sys
    from ipaddress import IPv4Address, ip_network
    from pathlib import Path
    from alt_router.gre.userspace import Engine
    from alt_router.node.config import load_config
    from alt_router.node.core import NodeCore
    from alt_router.node.tunnels import tunnel_configs, tunnel_name
    from alt_router.node.mapping import NodeMapping
    from alt_router.rib import AnnouncedRoute, Update
    config = load_config(sys.argv[1])
    core = NodeCore(config)
    core.rib.peer_up("r", 0.0)
    core.rib.apply(Update("r", announce=(
        AnnouncedRoute(ip_network("153.16.0.0/16"), IPv4Address("10.255.2.2"), (65002,)),)), 0.0)
    mapping = NodeMapping(config, core.rib, {p.name: tunnel_name(p, i) for i, p in enumerate(config.peers)},
                          announce=lambda p: None, withdraw=lambda p: None)
    # Built as open_tunnels builds it for Node: the hooks and the event sink at construction.
    engine = Engine(tunnel_configs(config), mapping.hook, mapping.fast_hook, events=mapping.dispatch,
                    batched=sys.argv[3] == "batched")
    engine.open()
    loop = asyncio.new_event_loop()
    engine.attach(loop)
    mapping.start(loop, engine)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    Path(sys.argv[2]).write_text("ready")
    loop.run_forever()
    print(mapping.forwarder.stats(), engine.stats(), flush=True)
    engine.close()
""")

# s: Map-Request ALT datagrams, GRE-encapsulated to m or plain to k; nonce = sequence number.
# Flat out it hands the kernel 64 datagrams per sendmmsg(2) (ctypes), so that the sender, not
# CPython's per-call cost, is no longer what limits either path; at a fixed rate, one sendto each.
SENDER = textwrap.dedent("""
    import ctypes, json, socket, struct, sys, time
    from ipaddress import IPv4Address
    from alt_router.inet import udp_packet
    from alt_router.lisp import EidRecord, MapRequest
    mode, dst, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    itr = IPv4Address("10.70.0.2")
    eids = [IPv4Address(f"153.16.{i // 250}.{i % 250 + 1}") for i in range(1000)]
    templates = []
    for eid in eids:
        req = MapRequest(0, itr, (itr,), (EidRecord(eid, 32),)).encode()
        pkt = bytearray(udp_packet(itr, eid, 40000, 4342, req, ttl=64))
        pkt[26:28] = b"\\0\\0"  # UDP checksum 0 (none): the nonce is rewritten per datagram
        templates.append(pkt)
    if mode == "gre":
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
        head = struct.pack("!HHI", 0x2000, 0x0800, 1)  # K bit, IPv4, key 1
        templates = [bytearray(head) + t for t in templates]
        off = len(head) + 28 + 4
        dests = [dst] * len(eids)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        off = 28 + 4
        dests = [str(e) for e in eids]
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    n = len(templates)
    pack = struct.Struct("!Q").pack_into
    sent = errors = seq = 0
    start = time.perf_counter()
    end = start + seconds
    if rate > 0:
        send = s.sendto
        interval = 1.0 / rate
        due = start
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if now < due:
                # Sleep rather than spin: the sender must not take the middle node's core.
                # Timer slack makes some sleeps long; the next datagrams then catch up.
                time.sleep(due - now)
                continue
            due += interval
            seq += 1
            t = templates[seq % n]
            pack(t, off, seq)
            try:
                send(t, (dests[seq % n], 0))
                sent += 1
            except OSError:
                errors += 1
    else:
        BATCH = 64
        class Iovec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
        class Msghdr(ctypes.Structure):
            _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                        ("iov", ctypes.POINTER(Iovec)), ("iovlen", ctypes.c_size_t),
                        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                        ("flags", ctypes.c_int)]
        class Mmsghdr(ctypes.Structure):
            _fields_ = [("hdr", Msghdr), ("len", ctypes.c_uint)]
        libc = ctypes.CDLL(None, use_errno=True)
        sendmmsg = libc.sendmmsg
        sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        bufs = [(ctypes.c_char * len(t)).from_buffer(t) for t in templates]
        sockaddr = struct.Struct("=HH4s8x").pack  # struct sockaddr_in
        addrs = [ctypes.create_string_buffer(sockaddr(socket.AF_INET, 0, socket.inet_aton(d)), 16)
                 for d in dests]
        iovs = (Iovec * n)(*[Iovec(ctypes.addressof(b), len(b)) for b in bufs])
        # Message j sends template j % n, so any BATCH consecutive sequence numbers are one slice.
        msgs = (Mmsghdr * (n + BATCH))()
        for j in range(n + BATCH):
            h = msgs[j].hdr
            h.name, h.namelen = ctypes.addressof(addrs[j % n]), 16
            h.iov, h.iovlen = ctypes.pointer(iovs[j % n]), 1
        base, size = ctypes.addressof(msgs), ctypes.sizeof(Mmsghdr)
        fd = s.fileno()
        while time.perf_counter() < end:
            first = (seq + 1) % n
            for i in range(BATCH):
                seq += 1
                pack(templates[seq % n], off, seq)
            done = sendmmsg(fd, base + first * size, BATCH, 0)
            done = max(done, 0)
            sent += done
            errors += BATCH - done
    print(json.dumps({"sent": sent, "errors": errors, "seconds": time.perf_counter() - start}))
""")

# Kernel timestamps of the same datagram entering and leaving a node, matched by nonce.
PAIRS = textwrap.dedent("""
    import json, select, socket, struct, sys, time
    in_if, out_if, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    SO_TIMESTAMPNS = 35
    ETH_P_ALL = 3  # only ETH_P_ALL taps see transmitted packets
    def open_(ifname):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        s.bind((ifname, ETH_P_ALL))
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.setblocking(False)
        return s
    def nonce(p):
        if len(p) < 20 or p[0] >> 4 != 4:
            return None
        ihl = (p[0] & 15) * 4
        if p[9] == 47:
            flags = p[ihl]
            g = 4 + 4 * bool(flags & 0x80) + 4 * bool(flags & 0x20) + 4 * bool(flags & 0x10)
            p = p[ihl + g:]
            ihl = (p[0] & 15) * 4
        if len(p) < ihl + 20 or p[9] != 17 or p[ihl + 2:ihl + 4] != b"\\x10\\xf6":
            return None
        return struct.unpack_from("!Q", p, ihl + 12)[0]
    sin, sout = open_(in_if), open_(out_if)
    print("ready", flush=True)
    seen_in, seen_out = {}, {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r, _, _ = select.select([sin, sout], [], [], 0.2)
        for s in r:
            while True:
                try:
                    data, anc, _f, addr = s.recvmsg(2048, 64)
                except BlockingIOError:
                    break
                # Ingress copies on in_if, egress copies on out_if (PACKET_OUTGOING = 4).
                if (s is sin) == (addr[2] == 4):
                    continue
                ts = next((struct.unpack("ll", v[:16]) for lvl, t, v in anc if t == SO_TIMESTAMPNS), None)
                n = nonce(data)
                if ts is None or n is None:
                    continue
                (seen_in if s is sin else seen_out)[n] = ts[0] * 1e9 + ts[1]
    d = sorted(seen_out[k] - seen_in[k] for k in seen_in.keys() & seen_out.keys())
    q = lambda f: d[min(len(d) - 1, int(f * len(d)))] / 1000 if d else None
    print(json.dumps({"matched": len(d), "in": len(seen_in), "out": len(seen_out),
                      "p50_us": q(0.5), "p90_us": q(0.9), "p99_us": q(0.99), "max_us": q(1.0)}))
""")



def per_run(topology: str) -> str:
    """The lab topology under a name of this run's own: two runs at once (two people, or a test
    beside a bench) must not remove each other's namespaces."""
    return topology.replace('name = "bfwd"', f'name = "bfwd{os.getpid():x}"', 1)

def rx(lab: Lab, host: str, ifname: str) -> int:
    return int(lab.exec(host, ["cat", f"/sys/class/net/{ifname}/statistics/rx_packets"]).stdout)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid``, all its threads (the data-plane thread too)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def measured_blast(lab: Lab, pid: int, seconds: float) -> dict[str, float]:
    """``blast`` through m, plus the CPU the middle process spent per datagram it forwarded: a
    figure that does not depend on what else shares the machine's cores."""
    settle(lab)
    user0, sys0 = cpu_times(pid)
    result = blast(lab, "gre", seconds)
    settle(lab)
    user1, sys1 = cpu_times(pid)
    # User time is the Python; system time the syscalls, with what the kernel does inside them
    # (for the FRR-mode hop, forwarding the datagram from one TUN to the other).
    result["cpu_user_seconds"], result["cpu_sys_seconds"] = user1 - user0, sys1 - sys0
    result["cpu_seconds"] = result["cpu_user_seconds"] + result["cpu_sys_seconds"]
    forwarded = rx(lab, "r", "eth-m") - result.pop("_rx_before")
    result["forwarded_incl_backlog"] = forwarded
    result["cpu_us_per_datagram"] = 1e6 * result["cpu_seconds"] / forwarded if forwarded else float("nan")
    return result


def settle(lab: Lab, timeout: float = 30.0) -> None:
    """Wait until nothing more arrives at r: a hop with a deep socket buffer is still draining the
    previous run, whose datagrams would count in the next one (and match its nonces)."""
    last = [rx(lab, "r", "eth-m") + rx(lab, "r", "eth-k"), 0]

    def quiet() -> bool:
        now = rx(lab, "r", "eth-m") + rx(lab, "r", "eth-k")
        last[1] = last[1] + 1 if now == last[0] else 0
        last[0] = now
        return last[1] >= 3

    wait_until(quiet, timeout, interval=0.2, what="the previous run's datagrams drained")


def machine_busy() -> float:
    """CPU seconds all cores spent on anything but idle and I/O wait (/proc/stat): softirq included."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


def blast(lab: Lab, mode: str, seconds: float, rate: float = 0) -> dict[str, float]:
    ifname, dst = ("eth-m", "10.70.0.1") if mode == "gre" else ("eth-k", "unused")
    before = rx(lab, "r", ifname)
    busy = machine_busy()
    out = lab.exec("s", [PY, "-c", SENDER, mode, dst, str(rate), str(seconds)], timeout=seconds + 60).stdout
    time.sleep(0.3)  # the last datagrams still in flight
    got = rx(lab, "r", ifname) - before
    busy = machine_busy() - busy
    doc = json.loads(out)
    # Where a hop's work is all in the kernel it runs on whatever core delivers the packet (the
    # sender's, on a veth), so its process's CPU says nothing; the machine's busy time per datagram
    # delivered (sender, hop and receiver together, the sender's share alike for every hop) does,
    # on a machine with nothing else running.
    return {"sent": doc["sent"], "received": got, "sent_per_s": doc["sent"] / doc["seconds"],
            "received_per_s": got / doc["seconds"], "seconds": doc["seconds"], "_rx_before": before,
            "machine_cpu_us_per_datagram": 1e6 * busy / got if got else float("nan")}


def latency(
    lab: Lab, host: str, mode: str, rate: float, seconds: float, *, name: str = ""
) -> dict[str, object]:
    # The capture outlives the sender's start-up (it builds its datagrams first) and its run.
    pairs = lab.spawn(host, [PY, "-c", PAIRS, "eth-s", "eth-r", str(seconds + 8)],
                      name=f"pairs-{name or mode}")
    wait_until(lambda: "ready" in pairs.read_log(), 10, what="capture ready", on_timeout=pairs.log_tail)
    settle(lab)
    sent = blast(lab, mode, seconds, rate)
    sent.pop("_rx_before")
    wait_until(lambda: not pairs.running(), seconds + 20, what="capture done", on_timeout=pairs.log_tail)
    result: dict[str, object] = json.loads(pairs.read_log().splitlines()[-1])
    result["sent_per_s"] = round(sent["sent_per_s"])
    return result


def start_middle(lab: Lab, tmp: Path, io: str) -> ProcessHandle | None:
    """The ExaBGP-mode hop on m: the daemon's data path with its ALT forwarder (MIDDLE)."""
    conf = tmp / "m.toml"
    conf.write_text(NODE_CONFIG.format(state=tmp / "m-state"))
    ready = tmp / "m.ready"
    middle = lab.spawn("m", [PY, "-c", MIDDLE, str(conf), str(ready), io], name="middle")
    wait_until(lambda: ready.exists() or not middle.running(), 20, what="middle node",
               on_timeout=middle.log_tail)
    if not middle.running():
        print(middle.log_tail(), file=sys.stderr)
        return None
    return middle


# The FRR-mode hop's kernel forwards (RFC 1812 §5.3.1), with no source check: the datagrams come in
# over the TUN from s, whose underlay address m reaches over eth-s.
FRR_HOP_SYSCTLS = ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                   "net.ipv4.conf.default.rp_filter=0")
FRR_ROUTE = ["ip", "route", "replace", "153.16.0.0/16", "via", "10.255.2.2", "dev", "alt-r", "proto", "bgp"]


def start_frr_node(lab: Lab, tmp: Path, tree: str | None = None,
                   tunnel_mode: str = "userspace") -> ProcessHandle | None:
    """The FRR-mode hop on m: ``alt-router run`` with ``[node] bgp = "frr"`` (issue 10).

    Its own FRR (zebra + bgpd) runs, its tunnels are userspace GRE on TUNs with no forwarder hook,
    and its kernel forwards.  There is no BGP speaker on r, so the route to r is put in m's kernel
    table as zebra installs a BGP route (``proto bgp`` via the tunnel peer; the node's netlink
    reader takes it into its RIB like any other): the data path is the one a learned route takes.
    """
    state = tmp / "m-frr-state"
    conf = tmp / "m-frr.toml"
    text = NODE_CONFIG.format(state=state).replace('tunnel_mode = "userspace"\n',
                                                    f'tunnel_mode = "{tunnel_mode}"\nbgp = "frr"\n', 1)
    conf.write_text(text + '\n[frr]\npathspace = "bench-forward-m"\n')
    tmp.chmod(0o755)  # the node's FRR runs as the frr user under its state dir
    lab.exec("m", ["sysctl", "-q", "-w", *FRR_HOP_SYSCTLS])
    # ``tree``: run another checkout's alt_router (``--frr-baseline``); ``-m`` puts the cwd first.
    env, cwd = ({"PYTHONPATH": tree}, tree) if tree else (None, None)
    node = lab.spawn("m", [PY, "-m", "alt_router.cli", "run", "-c", str(conf)], name="frr-node",
                     env=env, cwd=cwd)

    def up() -> bool:
        if not node.running():
            return True
        try:
            answer = query(state, {"cmd": "status", "routes": False}, timeout=5)
        except (OSError, ValueError):
            return False
        shown = lab.exec("m", ["ip", "-o", "-4", "addr", "show", "dev", "alt-r"], check=False).stdout
        return bool(answer.get("ok")) and " 10.255.2.1/" in shown

    wait_until(up, 60, what="the FRR-mode node with its tunnels", on_timeout=node.log_tail)
    if not node.running():
        print(node.log_tail(), file=sys.stderr)
        return None
    lab.exec("m", FRR_ROUTE)
    return node


def compare_frr(lab: Lab, tmp: Path, baseline: str, rounds: int, seconds: float) -> dict[str, object]:
    """The FRR-mode hop of this tree and of ``baseline``, alternated: per round, datagrams/s and
    CPU per datagram of each, and the medians."""
    runs: dict[str, list[dict[str, float]]] = {"this": [], "baseline": []}
    for _ in range(rounds):
        for label, tree in (("baseline", baseline), ("this", None)):
            node = start_frr_node(lab, tmp, tree)
            if node is None:
                raise SystemExit(f"the FRR-mode node ({label}) did not start")
            blast(lab, "gre", 0.5)
            runs[label].append(measured_blast(lab, node.pid, seconds))
            node.stop()

    def median(label: str, key: str) -> float:
        values = sorted(r[key] for r in runs[label])
        return values[len(values) // 2]

    summary: dict[str, object] = {"runs": runs}
    for key in ("received_per_s", "cpu_us_per_datagram", "cpu_user_seconds", "cpu_sys_seconds"):
        summary[f"median_{key}"] = {label: median(label, key) for label in runs}
    return summary


def frr_node_routes(tmp: Path) -> int | None:
    try:
        return int(query(tmp / "m-frr-state", {"cmd": "status", "routes": False}, timeout=5)["rib"]["routes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def spread_receive(lab: Lab) -> None:
    """Receive Packet Steering on the hops' ingress devices, as on a router whose NIC has one queue.

    A veth delivers into the receiving namespace on the sending CPU, so without it everything a hop
    does in the kernel (the tc-BPF GRE hop and the kernel hop: all of it) runs on the sender's
    core and the sender, not the hop, is what the run measures. With RPS the hop's receive work
    may run on the other core, as a userspace hop's process does. Applied to every hop alike.
    """
    mask = format((1 << (os.cpu_count() or 1)) - 1, "x")
    for host in ("m", "k"):
        lab.exec(host, ["sh", "-c", f"echo {mask} > /sys/class/net/eth-s/queues/rx-0/rps_cpus"])


def measure_hop(lab: Lab, tmp: Path, hop: str, io: str, seconds: float) -> dict[str, float]:
    """One throughput run through ``hop``: "exabgp", "frr" (userspace GRE), "frr-bpf" or "kernel"."""
    if hop == "kernel":
        settle(lab)
        out = blast(lab, "kernel", seconds)
        out.pop("_rx_before")
        return out
    node = (start_middle(lab, tmp, io) if hop == "exabgp"
            else start_frr_node(lab, tmp, tunnel_mode="bpf" if hop == "frr-bpf" else "userspace"))
    if node is None:
        raise SystemExit(f"the {hop} hop did not start")
    try:
        blast(lab, "gre", 0.5)  # warm-up: neighbours, caches
        return measured_blast(lab, node.pid, seconds)
    finally:
        node.stop()


def frr_node_tunnels(tmp: Path) -> object:
    """The node's tunnel counters (``bpf``: the programs' own), to show which path carried the blast."""
    try:
        return query(tmp / "m-frr-state", {"cmd": "status", "routes": False}, timeout=5).get("tunnels")
    except (OSError, ValueError):
        return None


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each throughput run")
    ap.add_argument("--latency-rate", type=float, default=10_000, help="datagrams/s for the latency runs")
    ap.add_argument("--latency-seconds", type=float, default=3.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--per-packet-syscalls", action="store_true",
                    help="middle node without recvmmsg/sendmmsg (Engine(batched=False)), for comparison")
    ap.add_argument("--mode", choices=("exabgp", "frr"), default="exabgp",
                    help="frr: also an FRR-mode hop ([node] bgp = \"frr\", kernel forwarding, "
                         "userspace GRE only for the encapsulation), in the same run as the "
                         "ExaBGP-mode and kernel hops")
    ap.add_argument("--frr-baseline", metavar="TREE",
                    help="with --mode frr: also measure the FRR-mode hop running TREE's alt_router "
                         "(another checkout), alternating with this tree's, --rounds times each; the "
                         "CPU per datagram of the two is the figure a busy machine cannot blur")
    ap.add_argument("--rps", action="store_true",
                    help="RPS on the hops' ingress devices (m and k's eth-s): their kernel work runs on "
                         "any core instead of the sender's (see spread_receive)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="with --mode frr: rounds of every hop in turn (medians are reported); "
                         "also the rounds of --frr-baseline")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/forward.py needs root (network namespaces)", file=sys.stderr)
        return 2
    with TemporaryDirectory(prefix="bench-forward-") as tmp, \
            Lab(Topology.from_toml(per_run(TOPOLOGY)), workdir=Path(tmp)) as lab:
        io = "single" if args.per_packet_syscalls else "batched"
        if args.rps:
            spread_receive(lab)
        middle = start_middle(lab, Path(tmp), io)
        if middle is None:
            return 1
        blast(lab, "gre", 0.5)  # warm-up: caches, ARP
        blast(lab, "kernel", 0.5)
        alt = measured_blast(lab, middle.pid, args.seconds)
        settle(lab)
        kern = blast(lab, "kernel", args.seconds)
        kern.pop("_rx_before")
        lat_alt = latency(lab, "m", "gre", args.latency_rate, args.latency_seconds)
        lat_kern = latency(lab, "k", "kernel", args.latency_rate, args.latency_seconds)
        middle.stop()
        result: dict[str, object] = {
            "alt_router_hop": alt, "kernel_hop": kern,
            "ratio": alt["received_per_s"] / kern["received_per_s"] if kern["received_per_s"] else None,
            "latency_alt_router_hop": lat_alt, "latency_kernel_hop": lat_kern,
            "middle": middle.log_tail(3),
        }
        frr = lat_frr = bpf = lat_bpf = None
        if args.mode == "frr":
            node = start_frr_node(lab, Path(tmp))
            if node is None:
                return 1
            blast(lab, "gre", 0.5)  # warm-up: the new TUNs' neighbours
            frr = measured_blast(lab, node.pid, args.seconds)
            lat_frr = latency(lab, "m", "gre", args.latency_rate, args.latency_seconds, name="frr")
            result["frr_node_rib_routes"] = frr_node_routes(Path(tmp))  # the route, read back from the kernel
            node.stop()
            # The same FRR-mode node with tunnel_mode "bpf": tc-BPF programs do the GRE work.
            node = start_frr_node(lab, Path(tmp), tunnel_mode="bpf")
            if node is None:
                return 1
            blast(lab, "gre", 0.5)
            bpf = measured_blast(lab, node.pid, args.seconds)
            lat_bpf = latency(lab, "m", "gre", args.latency_rate, args.latency_seconds, name="frr-bpf")
            result["frr_bpf_tunnels"] = frr_node_tunnels(Path(tmp))
            node.stop()
            if args.frr_baseline:
                result["frr_baseline"] = compare_frr(lab, Path(tmp), args.frr_baseline, args.rounds,
                                                     args.seconds)
            # More rounds, each hop in turn, so that a change in the machine's load (it is shared)
            # falls on every hop alike; the ratios below are of the medians.
            samples = {"exabgp": [alt], "frr": [frr], "frr-bpf": [bpf], "kernel": [kern]}
            for n in range(1, args.rounds):
                order = list(samples)
                for which in order[n % len(order):] + order[:n % len(order)]:
                    samples[which].append(measure_hop(lab, Path(tmp), which, io, args.seconds))
            med = {which: sorted(r["received_per_s"] for r in runs)[len(runs) // 2]
                   for which, runs in samples.items()}
            result["rounds"] = {which: [r["received_per_s"] for r in runs] for which, runs in samples.items()}
            result["median_received_per_s"] = med
            # The same round's hops ran a few seconds apart: their ratio is the figure a load that
            # changes from one minute to the next blurs least.
            per_round = [b["received_per_s"] / a["received_per_s"]
                         for a, b in zip(samples["exabgp"], samples["frr-bpf"], strict=True)
                         if a["received_per_s"]]
            result["frr_bpf_vs_exabgp_per_round"] = per_round
            result["frr_bpf_vs_exabgp_median_of_rounds"] = sorted(per_round)[len(per_round) // 2]
            cpu = {which: sorted(r["machine_cpu_us_per_datagram"] for r in runs)[len(runs) // 2]
                   for which, runs in samples.items()}
            alt, frr, bpf, kern = (
                dict(samples[h][0], received_per_s=med[h], machine_cpu_us_per_datagram=cpu[h])
                for h in ("exabgp", "frr", "frr-bpf", "kernel"))
            result["ratio"] = _ratio(alt["received_per_s"], kern["received_per_s"])
            result.update({
                "frr_mode_hop": frr, "latency_frr_mode_hop": lat_frr,
                "frr_bpf_hop": bpf, "latency_frr_bpf_hop": lat_bpf,
                "frr_vs_exabgp_ratio": _ratio(frr["received_per_s"], alt["received_per_s"]),
                "frr_vs_kernel_ratio": _ratio(frr["received_per_s"], kern["received_per_s"]),
                "frr_bpf_vs_exabgp_ratio": _ratio(bpf["received_per_s"], alt["received_per_s"]),
                "frr_bpf_vs_kernel_ratio": _ratio(bpf["received_per_s"], kern["received_per_s"]),
                # > 1: the FRR-mode hop spends less CPU per datagram than the ExaBGP-mode hop.
                "exabgp_vs_frr_cpu_per_datagram": _ratio(alt["cpu_us_per_datagram"],
                                                         frr["cpu_us_per_datagram"]),
            })
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"alt_router hop (userspace GRE in/out + forwarder): {alt['received_per_s']:>10,.0f} datagrams/s "
          f"(sender offered {alt['sent_per_s']:,.0f}/s)")
    if frr is not None:
        print(f"FRR-mode hop (userspace GRE, kernel forwarding):   {frr['received_per_s']:>10,.0f} "
              f"datagrams/s (sender offered {frr['sent_per_s']:,.0f}/s)")
    if bpf is not None:
        print(f"FRR-mode hop (tc-BPF GRE, kernel forwarding):      {bpf['received_per_s']:>10,.0f} "
              f"datagrams/s (sender offered {bpf['sent_per_s']:,.0f}/s)")
    print(f"kernel hop (plain IP forwarding):                  {kern['received_per_s']:>10,.0f} datagrams/s "
          f"(sender offered {kern['sent_per_s']:,.0f}/s)")
    if result["ratio"] is not None:
        print(f"ratio alt_router / kernel: {result['ratio']:.1%}")
    hops = [("ExaBGP-mode", alt), ("FRR-mode userspace GRE", frr), ("FRR-mode tc-BPF GRE", bpf),
            ("kernel", kern)]
    print("machine CPU per datagram delivered (all cores; sender + hop + receiver; meaningful on an "
          "otherwise idle machine): " + ", ".join(f"{name} {hop['machine_cpu_us_per_datagram']:.1f} us"
                                                  for name, hop in hops if hop is not None))
    if "rounds" in result:
        print(f"(medians of {args.rounds} rounds, every hop in turn; datagrams/s per round: "
              f"{result['rounds']})")
        rounds = ", ".join(f"{r:.2f}" for r in result["frr_bpf_vs_exabgp_per_round"])  # type: ignore[attr-defined]
        print(f"ratio FRR-mode hop (tc-BPF GRE) / ExaBGP-mode hop, round by round: {rounds}; "
              f"median {result['frr_bpf_vs_exabgp_median_of_rounds']:.2f}x")
    for name, hop in (("alt_router", alt), ("FRR-mode", frr)):
        if hop is not None:
            print(f"CPU per datagram, {name} hop process: {hop['cpu_us_per_datagram']:.1f} us "
                  f"({hop['cpu_user_seconds']:.2f} s user + {hop['cpu_sys_seconds']:.2f} s system "
                  f"for {hop['forwarded_incl_backlog']:,} datagrams)")
    if frr is not None:
        for key, what in (("frr_vs_exabgp_ratio", "FRR-mode hop (userspace GRE) / ExaBGP-mode hop"),
                          ("frr_vs_kernel_ratio", "FRR-mode hop (userspace GRE) / kernel"),
                          ("frr_bpf_vs_exabgp_ratio", "FRR-mode hop (tc-BPF GRE) / ExaBGP-mode hop"),
                          ("frr_bpf_vs_kernel_ratio", "FRR-mode hop (tc-BPF GRE) / kernel"),
                          ("exabgp_vs_frr_cpu_per_datagram",
                           "CPU per datagram, ExaBGP-mode hop / FRR-mode hop")):
            value = result[key]
            if isinstance(value, float):
                print(f"ratio {what}: {value:.2f}x")
    cmp = result.get("frr_baseline")
    if isinstance(cmp, dict):
        for label in ("baseline", "this"):
            for run in cmp["runs"][label]:
                print(f"FRR-mode hop, {label:8} tree: {run['received_per_s']:>10,.0f} datagrams/s, "
                      f"{run['cpu_us_per_datagram']:.1f} us CPU per datagram "
                      f"({run['cpu_user_seconds']:.2f} s user + {run['cpu_sys_seconds']:.2f} s system "
                      f"for {run['forwarded_incl_backlog']:,})")
    lats = [("alt_router", lat_alt), ("kernel", lat_kern)] + ([("FRR-mode", lat_frr)] if lat_frr else []) + (
        [("FRR-mode tc-BPF", lat_bpf)] if lat_bpf else [])
    for name, lat in lats:
        print(f"added latency per {name} hop at {lat['sent_per_s']:,}/s: p50 {lat['p50_us']} us, "
              f"p90 {lat['p90_us']} us, p99 {lat['p99_us']} us, max {lat['max_us']} us "
              f"({lat['matched']} datagrams matched)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
