"""Userspace GRE throughput against the plain veth path, 64-byte UDP packets.

Run as root:  python bench/tunnel.py [--seconds 3]

Builds its own two-namespace lab (sender "s", receiver "r", one veth), runs
``alt-router tunnel --mode userspace`` on both ends, then with the same sender
program blasts UDP for a few seconds over the plain veth path and then through
the tunnel, counting what the receiver gets.  Prints packets/s for both paths
and the tunnel/plain ratio.  Everything is torn down at the end.
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

from alt_router.lab import Lab, Topology, wait_until

PACKET = 64  # bytes of IPv4 packet: 20 IP + 8 UDP + 36 payload
PY = sys.executable

SENDER = textwrap.dedent("""
    import json, socket, sys, time
    dst, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((dst, port))
    payload = bytes(int(sys.argv[4]) - 28)
    sent = errors = 0
    end = time.monotonic() + seconds
    send = s.send
    while time.monotonic() < end:
        for _ in range(256):
            try:
                send(payload)
                sent += 1
            except OSError:
                errors += 1
    print(json.dumps({"sent": sent, "errors": errors, "seconds": seconds}))
""")

RECEIVER = textwrap.dedent("""
    import json, socket, sys, time
    addr, port, out, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((addr, port))
    open(ready, "w").close()
    buf = bytearray(2048)
    count, first, last = 0, None, None
    s.settimeout(30)
    recv = s.recv_into
    while True:
        try:
            recv(buf)
        except socket.timeout:
            break
        now = time.monotonic()
        if first is None:
            first = now
            s.settimeout(1.0)  # the sender is done once the stream pauses for a second
        last = now
        count += 1
    with open(out, "w") as f:
        json.dump({"received": count, "span": (last - first) if first else 0.0}, f)
""")

TOPOLOGY = {
    "hosts": {"s": {}, "r": {}},
    "links": [{
        "a": {"host": "s", "ifname": "eth0", "addresses": ["192.0.2.1/24"]},
        "b": {"host": "r", "ifname": "eth0", "addresses": ["192.0.2.2/24"]},
    }],
}


def measure(lab: Lab, dst: str, port: int, seconds: float) -> dict[str, float]:
    out, ready = lab.workdir / f"recv-{port}.json", lab.workdir / f"recv-{port}.ready"
    receiver = lab.spawn("r", [PY, "-c", RECEIVER, dst, str(port), str(out), str(ready)], name=f"recv{port}")
    wait_until(ready.exists, 10, what="receiver")
    argv = [PY, "-c", SENDER, dst, str(port), str(seconds), str(PACKET)]
    result = lab.exec("s", argv, timeout=seconds + 30)
    sent = json.loads(result.stdout)
    wait_until(lambda: not receiver.running(), 15, what="receiver to finish")
    got = json.loads(out.read_text())
    return {
        "sent_pps": sent["sent"] / seconds,
        "received_pps": got["received"] / seconds,
        "received": got["received"],
        "sent": sent["sent"],
        "send_errors": sent["errors"],
    }


def start_tunnel(lab: Lab, host: str, local: str, remote: str, inner: str) -> Path:
    stats = lab.workdir / f"{host}-tunnel.json"
    proc = lab.spawn(host, [PY, "-m", "alt_router.cli", "tunnel", "--mode", "userspace", "--name", "gre1",
                            "--local", local, "--remote", remote, "--address", inner, "--stats", str(stats)],
                     name="tunnel")
    wait_until(lambda: stats.exists() or not proc.running(), 15, what=f"tunnel on {host}")
    if not proc.running():
        raise SystemExit(f"alt-router tunnel failed on {host}:\n{proc.log_tail()}")
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="sending time per path (default 3)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/tunnel.py needs root (network namespaces)", file=sys.stderr)
        return 2
    started = time.monotonic()
    with TemporaryDirectory(prefix="gre-bench-") as tmp, Lab(
        Topology.from_dict({"name": f"gb{os.getpid() % 100000}", **TOPOLOGY}), workdir=tmp
    ) as lab:
        plain = measure(lab, "192.0.2.2", 9000, args.seconds)
        start_tunnel(lab, "s", "192.0.2.1", "192.0.2.2", "10.255.0.1/30")
        rstats = start_tunnel(lab, "r", "192.0.2.2", "192.0.2.1", "10.255.0.2/30")
        tunnel = measure(lab, "10.255.0.2", 9001, args.seconds)
        time.sleep(1.2)  # one more stats write from the receiving tunnel process
        drops = json.loads(rstats.read_text())["tunnels"]["gre1"]["drops"]
    ratio = tunnel["received_pps"] / plain["received_pps"] if plain["received_pps"] else 0.0
    print(f"{PACKET}-byte UDP, {args.seconds:.0f} s per path, 2 shared cores")
    for name, r in (("plain veth", plain), ("userspace GRE", tunnel)):
        print(f"  {name:14s} sent {r['sent_pps']:>10,.0f} pps  received {r['received_pps']:>10,.0f} pps"
              f"  ({r['received']:,} of {r['sent']:,})")
    print(f"  ratio tunnel/plain (received): {ratio:.3f}")
    print(f"  receiving tunnel drops: {drops or 'none'}")
    print(f"  total run time {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
