"""``alt-router etr`` and ``alt-router lig`` on loopback, against the real MR/MS cores in a small stub."""

from __future__ import annotations

import json
import os
import pathlib
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, ip_network

import pytest

from alt_router.alt import LOCAL, AltForwarder
from alt_router.cli import build_parser, main
from alt_router.commands.etr import build as build_etr
from alt_router.commands.etr import state_dir
from alt_router.inet import address
from alt_router.lisp import ECM, HMAC_SHA_256_128, EidRecord, MapRequest
from alt_router.mapping.actions import Action, Announce, SendAlt, SendIp, SendUdp, Withdraw
from alt_router.mapping.map_resolver import MapResolver
from alt_router.mapping.map_server import MapServer, Site
from alt_router.node.udp import send_ip
from alt_router.rib.paths import Path

LO = IPv4Address("127.0.0.1")
KEY = "loopback-key"


class NoRoutes:
    def lookup(self, address: object) -> Path | None:
        return None


class Stub(threading.Thread):
    """A one-node mapping system: Map-Resolver + forwarder + Map-Server, each on its own loopback port."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.mr_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ms_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.mr_sock.bind(("127.0.0.1", 0))
        self.ms_sock.bind(("127.0.0.1", 0))
        self.mr_port = self.mr_sock.getsockname()[1]
        self.ms_port = self.ms_sock.getsockname()[1]
        self.fw = AltForwarder(NoRoutes(), {}, router_v4=LO)
        self.mr = MapResolver(self.fw, list, port=self.mr_port)
        # The etr listens on an ephemeral loopback port, not 4342, and its RLOCs are not
        # 127.0.0.1: only the NAT setting (notify_to = "source-port") reaches it there.
        site = Site("lo", KEY, HMAC_SHA_256_128, (ip_network("10.1.0.0/16"),), notify_to="source-port")
        self.ms = MapServer([site], port=self.ms_port)
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def apply(self, actions: list[Action]) -> None:
        socks = {self.mr_port: self.mr_sock, self.ms_port: self.ms_sock}
        for a in actions:
            if isinstance(a, SendUdp):
                socks[a.sport].sendto(a.payload, (str(a.dst), a.dport))
            elif isinstance(a, SendAlt):
                if a.route == LOCAL:
                    self.apply(self.ms.handle_alt(a.packet, time.monotonic()))
            elif isinstance(a, SendIp):
                send_ip(a.packet)
            elif isinstance(a, Announce):
                self.fw.add_local(a.prefix)
            elif isinstance(a, Withdraw):
                self.fw.remove_local(a.prefix)

    def run(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.mr_sock, self.ms_sock], [], [], 0.05)
            for sock in ready:
                data, peer = sock.recvfrom(65535)
                with self.lock:
                    role = self.mr.handle if sock is self.mr_sock else self.ms.handle_register
                    self.apply(role(data, address(peer[0]), peer[1], time.monotonic()))

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=5)
        self.mr_sock.close()
        self.ms_sock.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def lab() -> Iterator[Stub]:
    stub = Stub()
    stub.start()
    etr = subprocess.Popen(
        [sys.executable, "-m", "alt_router.cli", "etr", "--map-server", "127.0.0.1",
         "--map-server-port", str(stub.ms_port), "--key", KEY, "--eid", "10.1.0.0/16",
         "--rloc", "192.0.2.1,1,100", "--rloc", "192.0.2.2,2,50", "--listen", "127.0.0.1",
         "--port", str(free_udp_port()), "--interval", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 15
        while not stub.ms.registrations():
            assert etr.poll() is None, etr.communicate()[1].decode()
            assert time.monotonic() < deadline, "the etr never registered"
            time.sleep(0.02)
        yield stub
    finally:
        etr.terminate()
        try:
            etr.wait(timeout=5)
        except subprocess.TimeoutExpired:
            etr.kill()
            etr.wait()
        stub.close()


def lig(stub: Stub, *args: str) -> list[str]:
    return ["lig", *args, "-m", "127.0.0.1", "--mr-port", str(stub.mr_port), "--timeout", "3"]


def test_positive_lookup(lab: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(lig(lab, "10.1.2.3")) == 0
    out = capsys.readouterr().out
    assert "EID-prefix 10.1.0.0/16" in out and "authoritative yes" in out
    assert "192.0.2.2" in out and "priority   2  weight  50  up" in out
    assert lab.ms.counters["forwarded-to-etr"] >= 1


def test_json_and_count(lab: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*lig(lab, "10.1.200.1"), "--json", "--count", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["result"] == "positive" and doc["timeouts"] == 0
    assert len(doc["replies"]) == 2 and doc["replies"][0]["nonce"] != doc["replies"][1]["nonce"]
    assert doc["replies"][0]["records"][0]["locators"][0] == {
        "address": "192.0.2.1", "priority": 1, "weight": 100, "state": "up", "local": True}


def test_negative_lookup_exits_1(lab: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(lig(lab, "192.168.1.1")) == 1
    out = capsys.readouterr().out
    assert "EID-prefix 128.0.0.0/1" in out and "natively-forward" in out


def test_timeout_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        assert main(["lig", "10.1.2.3", "-m", "127.0.0.1", "--mr-port", str(port), "--timeout", "0.2"]) == 2
    assert "No map-reply" in capsys.readouterr().out


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lig", "not-an-eid", "-m", "127.0.0.1"]) == 2
    assert main(["etr", "--eid", "10.0.0.0/8"]) == 2
    assert main(["etr", "--map-server", "127.0.0.1", "--key", "k", "--eid", "10.0.0.0/8", "--rloc", "x"]) == 2
    err = capsys.readouterr().err
    assert "lig:" in err and "need --config" in err


def test_trace_over_loopback(lab: Stub, root: None, capsys: pytest.CaptureFixture[str]) -> None:
    # TTL 1 expires at the Map-Resolver (ICMP from 127.0.0.1); TTL 2 reaches the Map-Server and the ETR.
    assert main([*lig(lab, "10.1.2.3"), "--trace", "--max-hops", "4", "--json"]) == 0
    hops = json.loads(capsys.readouterr().out)["hops"]
    assert hops[0] == {"ttl": 1, "router": "127.0.0.1", "kind": "time-exceeded", "rtt_ms": hops[0]["rtt_ms"]}
    assert hops[1]["ttl"] == 2 and hops[1]["map_reply"]["records"][0]["eid_prefix"] == "10.1.0.0/16"
    assert len(hops) == 2


def test_etr_reads_its_node_config(tmp_path: pathlib.Path) -> None:
    conf = tmp_path / "node.toml"
    conf.write_text(
        '[node]\nname = "x"\nasn = 65010\nrouter_id = "192.0.2.10"\n'
        '[eid]\naccept = ["10.0.0.0/8"]\n'
        '[etr]\nregister_interval = 20\nproxy_reply = true\n'
        '[[etr.map_servers]]\naddress = "192.0.2.1"\nkey = "k"\nalgorithm = "hmac-sha1-96"\n'
        '[[etr.mappings]]\neid_prefix = "10.9.0.0/16"\nttl = 10\n'
        '[[etr.mappings.rlocs]]\naddress = "198.51.100.9"\npriority = 3\nweight = 7\n'
    )
    args = build_parser().parse_args(["etr", "--config", str(conf), "--map-server-port", "4999"])
    e = build_etr(args)
    assert e.register_interval == 20 and e.proxy_reply
    assert (e.map_servers[0].address, e.map_servers[0].port, e.map_servers[0].algorithm_id) == (
        IPv4Address("192.0.2.1"), 4999, 1)
    (m,) = e.mappings
    assert (str(m.prefix), m.ttl, m.rlocs[0].priority, m.rlocs[0].weight) == ("10.9.0.0/16", 10, 3, 7)


def test_lig_source_eid_option(lab: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    """RFC 9301 §5.2: AFI 0 by default (tests/mapping/test_lig.py), the given EID with --source-eid."""
    assert main([*lig(lab, "10.1.2.3"), "--source-eid", "10.77.0.1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["source_eid"] == "10.77.0.1" and doc["result"] == "positive"
    assert main([*lig(lab, "10.1.2.3"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["source_eid"] is None


ETR_NODE = (
    '[node]\nname = "x"\nasn = 65010\nrouter_id = "192.0.2.10"\nstate_dir = "{state}"\n'
    '[eid]\naccept = ["10.0.0.0/8"]\n'
    '[etr]\n'
    '[[etr.map_servers]]\naddress = "192.0.2.1"\nkey = "k"\n'
    '[[etr.map_servers]]\naddress = "192.0.2.2"\nkey = "k"\nalgorithm = "hmac-sha1-96"\n'
    'auth_length = "truncated"\n'
    '[[etr.mappings]]\neid_prefix = "10.9.0.0/16"\n'
    '[[etr.mappings.rlocs]]\naddress = "198.51.100.9"\n'
)


def test_check_explains_the_hmac_length_choice(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "node.toml"
    conf.write_text(ETR_NODE.format(state=tmp_path))
    assert main(["check", "-c", str(conf)]) == 0
    err = capsys.readouterr().err
    assert "(192.0.2.1): Map-Registers carry the full 32-byte hmac-sha256-128 digest" in err
    assert 'etr.map_servers[1] (192.0.2.2): auth_length = "truncated" sends a 12-byte MAC' in err


def test_etr_command_auth_length_and_state_dir(tmp_path: pathlib.Path) -> None:
    args = build_parser().parse_args(
        ["etr", "--map-server", "192.0.2.1", "--key", "k", "--eid", "10.0.0.0/8", "--rloc", "192.0.2.9",
         "--auth-length", "truncated", "--state-dir", str(tmp_path)])
    e = build_etr(args, last_nonce=41)
    assert e.map_servers[0].truncated_auth and e.last_nonce == 41
    assert state_dir(args) == tmp_path
    conf = tmp_path / "node.toml"
    conf.write_text(ETR_NODE.format(state=tmp_path / "st"))
    args = build_parser().parse_args(["etr", "--config", str(conf)])
    assert state_dir(args) == tmp_path / "st"
    assert [s.truncated_auth for s in build_etr(args).map_servers] == [False, True]


def test_etr_registering_from_an_ephemeral_port_gets_map_notify_and_requests_at_its_listen_port() -> None:
    """RFC 9301 §5.6: Map-Registers from "a randomly selected UDP source port"; §8.2: the Map-Notify
    goes to 4342 "not to the source port"; §8.3/§5.8: the Map-Server's ECM to the ETR likewise.
    On loopback the listen port stands in for 4342 (``MapServer(etr_port=...)``)."""
    listen = free_udp_port()
    ms_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ms_sock.bind(("127.0.0.1", 0))
    ms_sock.settimeout(10)
    site = Site("lo", KEY, HMAC_SHA_256_128, (ip_network("10.1.0.0/16"),))  # notify_to = "rfc"
    ms = MapServer([site], port=ms_sock.getsockname()[1], etr_port=listen)
    etr = subprocess.Popen(
        [sys.executable, "-m", "alt_router.cli", "etr", "--map-server", "127.0.0.1",
         "--map-server-port", str(ms_sock.getsockname()[1]), "--key", KEY, "--eid", "10.1.0.0/16",
         "--rloc", "127.0.0.1", "--listen", "127.0.0.1", "--port", str(listen), "--register-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        data, peer = ms_sock.recvfrom(65535)
        assert peer[1] != listen  # registered from the ephemeral port
        out = ms.handle_register(data, address(peer[0]), peer[1], time.monotonic())
        notifies = [a for a in out if isinstance(a, SendUdp)]
        assert notifies and all(a.dport == listen for a in notifies)
        for a in notifies:
            ms_sock.sendto(a.payload, (str(a.dst), a.dport))
        assert etr.stderr is not None
        line = etr.stderr.readline().decode()
        while "registered with Map-Server" not in line:
            assert line, "the etr exited"
            line = etr.stderr.readline().decode()
        # A request forwarded by the Map-Server reaches the ETR at its listen port too.
        request = ECM(MapRequest(99, None, (LO,), (EidRecord(IPv4Address("10.1.2.3"), 32),)), LO,
                      IPv4Address("10.1.2.3"), source_port=ms_sock.getsockname()[1])
        packet = request.encode()[4:]
        forwarded = [a for a in ms.handle_alt(packet, time.monotonic()) if isinstance(a, SendUdp)]
        assert forwarded and forwarded[0].dport == listen
        ms_sock.sendto(forwarded[0].payload, (str(forwarded[0].dst), forwarded[0].dport))
        reply, _ = ms_sock.recvfrom(65535)
        assert reply[0] >> 4 == 2 and struct.unpack_from("!Q", reply, 4) == (99,)
    finally:
        etr.terminate()
        etr.wait(timeout=5)
        ms_sock.close()
