"""FRR-integrated mode's kernel data path between network namespaces (node/kernel_alt.py, issue 10).

    p (ITRs, peers) 10.80.0.2 --- 10.80.0.1 m (the node under test) 10.81.0.1 --- 10.81.0.2 q

m runs ``NodeMapping(kernel_alt=True)`` as a Map-Server for 153.16.1.0/24 (no forwarder, no GRE
hook): (1) the Map-Resolver's sender puts an ALT datagram into the kernel's table with the
ITR's source address (RFC 6836 §3.3); (2) a datagram to an EID of the site reaches the wildcard
UDP 4342 socket through the ``local`` route and is dispatched as ``Local`` with the ITR's
address and port; (3) a longer route in the main table (a peer's more-specific) wins over that
local route by longest-prefix match (RFC 6836 §6.1), and the kernel forwards it (TTL - 1,
RFC 1812 §5.3.1).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alt_router.lab import Lab, ProcessHandle, Topology, remove_lab, wait_until
from tests.conftest import require, require_tool, run_lab_name

pytestmark = pytest.mark.netns

PY = sys.executable
ITR = "192.0.2.7"
ITR6 = "2001:db8:ffff::7"

TOPOLOGY: dict[str, Any] = {
    "hosts": {
        "p": {"routes": [{"to": "153.16.0.0/16", "via": "10.80.0.1"},
                         {"to": "10.81.0.0/24", "via": "10.80.0.1"}]},
        "m": {"routes": [{"to": "153.17.0.0/16", "via": "10.80.0.2"},
                         {"to": "192.0.2.0/24", "via": "10.80.0.2"},
                         {"to": "2001:db8:17::/48", "via": "2001:db8:80::2"}]},
        "q": {"routes": [{"to": "10.80.0.0/24", "via": "10.81.0.1"},
                         {"to": "192.0.2.0/24", "via": "10.81.0.1"}]},
    },
    "links": [
        {"a": {"host": "p", "ifname": "eth-m", "addresses": ["10.80.0.2/24", "2001:db8:80::2/64"]},
         "b": {"host": "m", "ifname": "eth-p", "addresses": ["10.80.0.1/24", "2001:db8:80::1/64"]}},
        {"a": {"host": "m", "ifname": "eth-q", "addresses": ["10.81.0.1/24"]},
         "b": {"host": "q", "ifname": "eth-m", "addresses": ["10.81.0.2/24"]}},
    ],
}

NODE = """
[node]
name = "m"
asn = 65001
router_id = "10.80.0.1"
state_dir = "{state}"
[eid]
accept = ["153.16.0.0/12"]
[map_server]
[[map_server.sites]]
name = "s"
key = "netns-key"
eid_prefixes = ["153.16.1.0/24"]
"""

# The node under test: the mapping edge in kernel mode, every Local event it dispatches recorded.
NODE_SCRIPT = textwrap.dedent("""
    import asyncio, json, signal, sys
    from pathlib import Path
    from alt_router.gre.dataplane import Local
    from alt_router.inet import parse_ip, parse_udp
    from alt_router.node.config import load_config
    from alt_router.node.core import NodeCore
    from alt_router.node.mapping import NodeMapping
    config, out, ready = load_config(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    mapping = NodeMapping(config, NodeCore(config).rib, {}, announce=lambda p: None,
                          withdraw=lambda p: None, kernel_alt=True)
    dispatch = mapping.dispatch
    def record(event):
        if isinstance(event, Local):
            ip = parse_ip(event.packet)
            udp = parse_udp(ip)
            with out.open("a") as f:
                f.write(json.dumps({"src": str(ip.src), "dst": str(ip.dst), "sport": udp.sport,
                                    "ttl": ip.ttl, "payload": udp.payload.hex()}) + "\\n")
        dispatch(event)
    mapping.dispatch = record
    loop = asyncio.new_event_loop()
    mapping.start(loop, None)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    ready.write_text(json.dumps(mapping.status()["kernel_alt"]))
    loop.run_forever()
    mapping.stop()
""")

# A wildcard UDP 4342 listener (both families) that records what arrives: source, port,
# destination and TTL (node/kernel_alt.py's own parser, checked against the wire by test 1).
LISTENER = textwrap.dedent("""
    import json, select, socket, sys
    from pathlib import Path
    from alt_router.node.kernel_alt import ANCILLARY_SIZE, destination_info, enable_destination_info
    out, ready = Path(sys.argv[1]), Path(sys.argv[2])
    socks = []
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        enable_destination_info(s)
        s.bind((host, 4342))
        socks.append(s)
    ready.touch()
    while True:
        for s in select.select(socks, [], [])[0]:
            data, anc, _, peer = s.recvmsg(65535, ANCILLARY_SIZE)
            dst, ttl = destination_info(anc)
            info = {"src": peer[0], "sport": peer[1], "dst": str(dst), "ttl": ttl, "payload": data.hex()}
            with out.open("a") as f:
                f.write(json.dumps(info) + "\\n")
""")

SEND_FROM_P = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.80.0.2", int(sys.argv[2])))
    s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[1], 4342))
""")


class KernelAltLab:
    def __init__(self, lab: Lab, node: ProcessHandle, node_out: Path, status: dict[str, Any]) -> None:
        self.lab = lab
        self.node = node
        self.node_out = node_out
        self.status = status

    def listen(self, host: str) -> Path:
        out, ready = self.lab.workdir / f"{host}-heard.jsonl", self.lab.workdir / f"{host}-listening"
        self.lab.spawn(host, [PY, "-c", LISTENER, str(out), str(ready)], name="listener")
        wait_until(ready.exists, 10, what=f"UDP 4342 listener on {host}")
        return out

    def send_from_p(self, eid: str, sport: int, payload: bytes) -> None:
        self.lab.exec("p", [PY, "-c", SEND_FROM_P, eid, str(sport), payload.hex()])


def lines(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


@pytest.fixture(scope="module")
def kalt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelAltLab]:
    require(os.geteuid() == 0, "needs root for network namespaces")
    require_tool("ip")
    name = run_lab_name("kalt")
    remove_lab(name)
    workdir = tmp_path_factory.mktemp("kalt")
    config = workdir / "m.toml"
    config.write_text(NODE.format(state=workdir / "m-state"))
    try:
        with Lab(Topology.from_dict({"name": name, **TOPOLOGY}), workdir=workdir) as lab:
            out, ready = workdir / "m-local.jsonl", workdir / "m-ready"
            node = lab.spawn("m", [PY, "-c", NODE_SCRIPT, str(config), str(out), str(ready)], name="node")
            wait_until(ready.exists, 20, what="the kernel-mode node", on_timeout=node.log_tail)
            yield KernelAltLab(lab, node, out, json.loads(ready.read_text()))
    finally:
        remove_lab(name)


def test_the_resolvers_datagram_leaves_by_the_kernels_route_with_the_itr_source(kalt: KernelAltLab) -> None:
    heard = kalt.listen("p")
    kalt.lab.exec("p", ["ip", "route", "add", "local", "153.17.0.0/16", "dev", "lo"])
    kalt.lab.exec("p", ["ip", "-6", "route", "add", "local", "2001:db8:17::/48", "dev", "lo"])
    send = textwrap.dedent(f"""
        from ipaddress import ip_address
        from alt_router.inet import udp_packet
        from alt_router.node.kernel_alt import KernelAltSender
        sender = KernelAltSender()
        def alt(src, dst):
            return udp_packet(ip_address(src), ip_address(dst), 50001, 4342, b"map-request", ttl=9)
        print(sender.send(alt("{ITR}", "153.17.2.3")), sender.send(alt("{ITR6}", "2001:db8:17::3")),
              sender.send(alt("{ITR}", "10.99.0.1")), sender.send(alt("{ITR6}", "2001:db8:99::1")))
    """)
    result = kalt.lab.exec("m", [PY, "-c", send])
    # The last two have no route in m's table: counted, not raised.
    assert result.stdout.split() == ["alt-sent", "alt-sent", "alt-no-route", "alt-no-route"]
    got = wait_until(lambda: found if len(found := lines(heard)) == 2 else None, 10,
                     what="the ALT datagrams at p")
    # Only m's routes (via eth-p) reach p; the ITR's address and port survive, TTL as sent.
    payload = b"map-request".hex()
    assert sorted(got, key=lambda d: d["dst"]) == [
        {"src": ITR, "sport": 50001, "dst": "153.17.2.3", "ttl": 9, "payload": payload},
        {"src": ITR6, "sport": 50001, "dst": "2001:db8:17::3", "ttl": 9, "payload": payload},
    ]


def test_a_datagram_to_a_site_eid_is_dispatched_as_the_local_event(kalt: KernelAltLab) -> None:
    assert kalt.status["local_routes"] == ["153.16.1.0/24"]
    routes = kalt.lab.exec("m", ["ip", "route", "show", "table", "main", "proto", "250"]).stdout
    assert "local 153.16.1.0/24 dev lo" in routes
    kalt.send_from_p("153.16.1.9", 50002, b"not-a-map-request")
    [event] = wait_until(lambda: lines(kalt.node_out), 10, what="the Local event",
                         on_timeout=kalt.node.log_tail)
    assert event == {"src": "10.80.0.2", "dst": "153.16.1.9", "sport": 50002, "ttl": 64,
                     "payload": b"not-a-map-request".hex()}


def test_a_longer_route_in_the_main_table_wins_over_the_local_route(kalt: KernelAltLab) -> None:
    heard = kalt.listen("q")
    kalt.lab.exec("q", ["ip", "route", "add", "local", "153.16.1.128/25", "dev", "lo"])
    # A peer's more-specific inside the site's prefix, as zebra would install it.
    kalt.lab.exec("m", ["ip", "route", "add", "153.16.1.128/25", "via", "10.81.0.2"])
    before = len(lines(kalt.node_out))
    kalt.send_from_p("153.16.1.200", 50003, b"to-the-more-specific")
    [got] = wait_until(lambda: lines(heard), 10, what="the datagram at q")
    # m forwarded it (the kernel: ip_forward set by kernel_alt, TTL decremented) instead of taking it.
    assert got == {"src": "10.80.0.2", "sport": 50003, "dst": "153.16.1.200", "ttl": 63,
                   "payload": b"to-the-more-specific".hex()}
    assert len(lines(kalt.node_out)) == before


def test_stopping_the_node_removes_its_local_routes_and_keeps_the_others(kalt: KernelAltLab) -> None:
    # Runs last in this module: it stops the node.
    kalt.node.stop()
    routes = kalt.lab.exec("m", ["ip", "route", "show", "table", "main"]).stdout
    assert "153.16.1.0/24" not in routes  # ours (proto 250) went with the node
    assert "153.16.1.128/25 via 10.81.0.2" in routes  # a route of another protocol stays
    assert kalt.lab.exec("m", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
