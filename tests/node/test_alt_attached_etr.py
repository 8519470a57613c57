"""ALT-attached ETRs (RFC 6836 §3.1, §4): the ETR's EID-prefixes are announced into the ALT and
the ALT datagrams for them are answered by the ETR itself, beside a Map-Server's sites."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, ip_network
from pathlib import Path

import pytest

from alt_router.lab.alt_topology import AltTopology, AltTopologyError
from alt_router.lisp import MapReply, decode
from alt_router.mapping.actions import SendUdp
from alt_router.mapping.etr import Etr
from alt_router.node.config import ConfigError, parse_config
from alt_router.node.core import NodeCore
from alt_router.node.mapping import NodeMapping, etr_inputs
from tests.integration.helpers import TOPOLOGIES

from .test_node_mapping import CONFIG, ITR, FakeTunnels, Recorder, ecm

ATTACHED = CONFIG.replace('''[etr]
[[etr.map_servers]]
address = "127.0.0.1"
key = "unit-key"
[[etr.mappings]]
eid_prefix = "153.16.1.0/24"
rlocs = [{ address = "203.0.113.9" }]
''', '''[etr]
alt_attached = true
[[etr.mappings]]
eid_prefix = "153.16.2.0/24"
rlocs = [{ address = "203.0.113.20" }]
''')


def test_alt_attached_etr_announces_its_prefixes_and_answers_alt_datagrams(tmp_path: Path) -> None:
    # Its own state_dir: stop() saves the Map-Server's nonce table there.
    config = parse_config(ATTACHED.replace("[eid]", f'state_dir = "{tmp_path}"\n[eid]', 1))
    assert config.etr.alt_attached and config.etr.map_servers == ()
    core = NodeCore(config)
    rec = Recorder()
    mapping = NodeMapping(config, core.rib, {"b": "alt-b"}, announce=rec.announced.append,
                          withdraw=rec.withdrawn.append, port=0, clock=lambda: 100.0)
    sent: list[SendUdp] = []
    mapping._send_udp = sent.append  # type: ignore[method-assign]
    loop = asyncio.new_event_loop()
    try:
        mapping.start(loop, FakeTunnels())
        assert rec.announced == [ip_network("153.16.2.0/24")]
        assert mapping.forwarder.local_prefixes() == [ip_network("153.16.2.0/24")]
        # A Map-Request for the ETR's EID, through the node's own Map-Resolver into the ALT: the
        # forwarder delivers it locally and the ETR answers the ITR-RLOC directly, authoritatively.
        mapping.receive(ecm("153.16.2.9"), ITR, 50000)
        [reply] = sent
        assert reply.dst == ITR and reply.dport == 50000
        msg = decode(reply.payload)
        assert isinstance(msg, MapReply) and msg.nonce == 7
        [record] = msg.records
        assert record.authoritative and (str(record.eid), record.mask_len) == ("153.16.2.0", 24)
        assert [str(loc.address) for loc in record.locators] == ["203.0.113.20"]
        assert mapping.counters["alt-to-etr"] == 1 and mapping.etr is not None
        assert mapping.etr.counters["alt-received"] == 1 and mapping.etr.counters["map-reply"] == 1
        # The Map-Server's registered site beside it still goes through the Map-Server.
        etr = Etr(*etr_inputs(parse_config(CONFIG).etr))
        [register] = etr.register_now()
        mapping.receive(register.payload, IPv4Address("203.0.113.9"), 4342)  # type: ignore[union-attr]
        sent.clear()
        mapping.receive(ecm("153.16.1.9"), ITR, 50000)
        assert mapping.ms is not None and mapping.ms.counters["forwarded-to-etr"] == 1
        assert mapping.counters["alt-to-etr"] == 1
    finally:
        mapping.stop()
        loop.close()


def test_the_etr_announces_nothing_unless_alt_attached() -> None:
    config = parse_config(CONFIG)
    mapping = NodeMapping(config, NodeCore(config).rib, {"b": "alt-b"}, announce=lambda p: None,
                          withdraw=lambda p: None)
    assert mapping.alt_attached_prefixes() == []


def test_an_etr_without_map_servers_must_be_alt_attached() -> None:
    with pytest.raises(ConfigError, match="alt_attached"):
        parse_config(ATTACHED.replace("alt_attached = true\n", ""))
    with pytest.raises(ConfigError, match="outside the accepted EID space"):
        parse_config(ATTACHED.replace('eid_prefix = "153.16.2.0/24"', 'eid_prefix = "10.1.0.0/24"'))


def test_the_lab_renders_an_alt_attached_etr_and_counts_its_eids_as_originated() -> None:
    """docs/lab.md: ``etr = { eids, alt_attached = true }`` on a node; a summary-only aggregate above
    hides the EIDs (run-time originations), as node/core.py does."""
    text = (TOPOLOGIES / "aggregation.toml").read_text()
    alt = AltTopology.from_toml(text, name="unit")
    att = parse_config(alt.node_config("att", Path("/tmp/unused")))
    assert att.etr.alt_attached and [str(m.eid_prefix) for m in att.etr.mappings] == ["153.20.1.0/24"]
    assert "etr" in alt.node("att").roles
    assert alt.expected_routes("mid2") == {"153.20.1.0/24"}
    assert alt.expected_routes("top") == {"153.20.0.0/14"}  # hidden under mid2's aggregate
    with pytest.raises(AltTopologyError, match="alt_attached"):
        AltTopology.from_toml(text.replace("alt_attached = true", "alt_attached = false"), name="unit")
