"""The ETR at the edge: nonce persistence across restarts, config translation, port 4342 dispatch."""

from __future__ import annotations

import json
import logging
import struct
from ipaddress import IPv4Address, ip_network
from pathlib import Path

import pytest

from alt_router.lisp import ECM, HMAC_SHA_1_96, MapRegister, decode
from alt_router.mapping.actions import SendUdp
from alt_router.mapping.etr import EtrRloc
from alt_router.node.config import parse_config
from alt_router.node.core import NodeCore
from alt_router.node.etr_state import NONCE_FILE, NonceStore, load_last_nonce, save_last_nonce
from alt_router.node.mapping import NodeMapping, etr_inputs, role_for

from .util import map_request

CONFIG = """
[node]
name = "e"
asn = 65010
router_id = "192.0.2.10"
state_dir = "{state}"
[eid]
accept = ["153.16.0.0/12"]
[etr]
[[etr.map_servers]]
address = "198.51.100.1"
key = "k"
algorithm = "hmac-sha1-96"
[[etr.map_servers]]
address = "198.51.100.2"
key = "j"
auth_length = "truncated"
[[etr.mappings]]
eid_prefix = "153.16.1.0/24"
rlocs = [{{ address = "203.0.113.9" }}, {{ address = "203.0.113.1", local = false, priority = 2 }}]
"""


def node(state: Path) -> NodeMapping:
    config = parse_config(CONFIG.format(state=state))
    return NodeMapping(config, NodeCore(config).rib, {}, announce=lambda p: None, withdraw=lambda p: None,
                       clock=lambda: 100.0)


def test_config_is_translated_into_the_etrs_own_types(tmp_path: Path) -> None:
    """Issue 13: mapping/etr.py takes EtrMappingConfig/MapServerTarget, never node config."""
    mappings, servers = etr_inputs(parse_config(CONFIG.format(state=tmp_path)).etr)
    (m,) = mappings
    assert m.prefix == ip_network("153.16.1.0/24")
    assert m.rlocs == (
        EtrRloc(IPv4Address("203.0.113.9")), EtrRloc(IPv4Address("203.0.113.1"), 2, 100, local=False))
    assert [(s.algorithm_id, s.truncated_auth, s.port) for s in servers] == [(HMAC_SHA_1_96, False, 4342),
                                                                             (2, True, 4342)]


def test_full_digest_by_default_truncated_per_map_server(tmp_path: Path) -> None:
    """Issue 12 item 1: [[etr.map_servers]] auth_length = "full" (default) | "truncated"."""
    mapping = node(tmp_path)
    assert mapping.etr is not None
    first, second = mapping.etr.tick(0.0)
    assert isinstance(first, SendUdp) and isinstance(second, SendUdp)
    assert struct.unpack_from("!BH", first.payload, 13) == (1, 20)  # HMAC-SHA-1, whole digest
    assert struct.unpack_from("!BH", second.payload, 13) == (2, 16)  # HMAC-SHA-256-128, truncated


def test_nonce_is_persisted_and_keeps_increasing_after_a_restart(tmp_path: Path) -> None:
    """RFC 9301 §5.6: "store the last nonce sent in persistent storage"."""
    first = node(tmp_path)
    assert first.etr is not None
    first.tick()  # registers with both Map-Servers, then saves
    saved = json.loads((tmp_path / NONCE_FILE).read_text())["last_nonce"]
    assert saved == first.etr.last_nonce
    again = node(tmp_path)  # a restart
    assert again.etr is not None and again.etr.last_nonce >= saved
    reg = again.etr.tick(0.0)[0]
    assert isinstance(reg, SendUdp)
    msg = decode(reg.payload)
    assert isinstance(msg, MapRegister) and msg.nonce > saved


def test_corrupt_nonce_file_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / NONCE_FILE
    assert load_last_nonce(path) is None  # missing: silent
    too_big = '{"last_nonce": 18446744073709551616}'
    for text in ("{not json", '{"last_nonce": -1}', '{"last_nonce": "7"}', "[]", too_big):
        path.write_text(text)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="alt_router.node.etr_state"):
            assert load_last_nonce(path) is None
        assert "corrupt" in caplog.text, text
    mapping = node(tmp_path)  # still starts
    assert mapping.etr is not None and mapping.etr.last_nonce > 0


def test_save_is_atomic_and_skips_unchanged_values(tmp_path: Path) -> None:
    path = tmp_path / "sub" / NONCE_FILE
    assert save_last_nonce(path, 5) and load_last_nonce(path) == 5
    assert [p.name for p in path.parent.iterdir()] == [NONCE_FILE]  # no temporary file left behind
    store = NonceStore(path)
    assert store.saved == 5
    path.unlink()
    store.save(5)  # unchanged: not written again
    assert not path.exists()
    store.save(6)
    assert load_last_nonce(path) == 6


def test_unwritable_state_dir_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="alt_router.node.etr_state"):
        assert not save_last_nonce(blocker / NONCE_FILE, 1)
    assert "cannot save" in caplog.text


def test_map_notify_and_ecm_map_requests_at_4342_reach_the_etr() -> None:
    """RFC 9301 §8.2: Map-Notify goes to UDP 4342 whatever port the Map-Register came from;
    §5.8/§8.3: the Map-Server's ECM (E bit, "to ETR") reaches the ETR even beside a Map-Resolver."""
    everything = {"mr": True, "ms": True, "etr": True}
    notify = bytes((0x40,)) + bytes(15)
    assert role_for(notify, **everything) == "etr"
    ecm = ECM(map_request("153.16.1.9"), IPv4Address("192.0.2.7"), IPv4Address("153.16.1.9"), to_etr=True)
    assert role_for(ecm.encode(), **everything) == "etr"
    assert role_for(ecm.encode(), mr=False, ms=False, etr=True) == "etr"
    plain = ECM(map_request("153.16.1.9"), IPv4Address("192.0.2.7"), IPv4Address("153.16.1.9"))
    assert role_for(plain.encode(), mr=False, ms=False, etr=True) == "etr"  # an ETR-only node


def test_node_etr_answers_at_4342_from_4342(tmp_path: Path) -> None:
    """RFC 9301 §5.5: "the source port of the Map-Reply message is set to the well-known UDP port 4342"."""
    mapping = node(tmp_path)
    assert mapping.etr is not None and mapping.etr.port == 4342
    (out,) = mapping.etr.handle(map_request("153.16.1.5").encode(), IPv4Address("192.0.2.7"), 40000, 0.0)
    assert isinstance(out, SendUdp) and (out.sport, out.dport) == (4342, 40000)


def test_ecm_without_e_bit_from_our_map_server_goes_to_the_etr_beside_a_map_resolver(tmp_path: Path) -> None:
    """RFC 9301 §5.8 shows the E bit as reserved, so an RFC 9301 Map-Server forwards its ECM to the ETR
    without it; from one of our Map-Servers and for our EID, it is the ETR's."""
    config = parse_config(CONFIG.format(state=tmp_path) + "[map_resolver]\n")
    mapping = NodeMapping(config, NodeCore(config).rib, {}, announce=lambda p: None,
                          withdraw=lambda p: None, clock=lambda: 100.0)
    itr, ms = IPv4Address("192.0.2.7"), IPv4Address("198.51.100.2")
    ours = ECM(map_request("153.16.1.5"), itr, IPv4Address("153.16.1.5"), source_port=40000).encode()
    other = ECM(map_request("153.17.1.5"), itr, IPv4Address("153.17.1.5"), source_port=40000).encode()
    assert mapping.etr is not None
    assert mapping.etr.owns_ecm(ours, ms) and not mapping.etr.owns_ecm(other, ms)
    assert not mapping.etr.owns_ecm(ours, itr)  # an ITR asking for our EID: the resolver's
    mapping.receive(ours, ms, 4342)
    assert (mapping.counters["to-etr"], mapping.counters["to-mr"]) == (1, 0)
    assert mapping.etr.counters["map-reply"] == 1
    mapping.receive(ours, itr, 40000)
    mapping.receive(other, ms, 4342)
    assert (mapping.counters["to-etr"], mapping.counters["to-mr"]) == (1, 2)
    assert not mapping.etr.owns_ecm(b"\x88" + bytes(60), ms)  # LISP-SEC data first: left to the resolver
