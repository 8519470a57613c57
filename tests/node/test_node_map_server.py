"""The Map-Server at the node edge: its config keys, local delivery of its space, the nonce file."""

from __future__ import annotations

import json
import logging
import pathlib
from ipaddress import IPv4Address, ip_network

import pytest

from alt_router.lisp import ECM, EidRecord, MapReply, MapRequest, decode
from alt_router.mapping.actions import SendUdp
from alt_router.mapping.map_server import MapServer, Site
from alt_router.node.config import ConfigError, parse_config
from alt_router.node.core import NodeCore
from alt_router.node.mapping import NodeMapping, site_from_config
from alt_router.node.ms_state import MapServerNonceStore, nonce_table_path
from alt_router.rib import AnnouncedRoute as Route
from alt_router.rib import Update
from tests.mapping import peer_vectors as pv

KEY = "node-key"
ITR = IPv4Address("192.0.2.7")
RLOC = IPv4Address("203.0.113.9")


def config_text(state_dir: pathlib.Path, site_extra: str = "", ms_extra: str = "") -> str:
    return f"""
[node]
name = "ms"
asn = 65002
router_id = "192.0.2.2"
state_dir = "{state_dir}"
[eid]
accept = ["153.16.0.0/12"]
announce = ["153.16.0.0/16"]
[[peers]]
name = "b"
asn = 65001
[peers.underlay]
local = "198.51.100.1"
remote = "198.51.100.2"
[peers.tunnel]
local_ipv4 = "10.255.1.1/30"
remote_ipv4 = "10.255.1.2"
[map_resolver]
[map_server]
{ms_extra}
[[map_server.sites]]
name = "s"
key = "{KEY}"
eid_prefixes = ["153.16.1.0/24"]
{site_extra}
"""


class FakeTunnels:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def send(self, tunnel_name: str, inner_packet: bytes) -> None:
        self.sent.append((tunnel_name, inner_packet))


def build(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, **extra: str
          ) -> tuple[NodeMapping, FakeTunnels, list[SendUdp]]:
    config = parse_config(config_text(tmp_path, **extra))
    core = NodeCore(config)
    core.rib.peer_up("b", 0.0)
    core.rib.apply(Update("b", announce=(
        Route(ip_network("153.16.9.0/24"), IPv4Address("10.255.1.2"), (65001,)),)), 0.0)
    mapping = NodeMapping(config, core.rib, {"b": "alt-b"}, announce=lambda p: None,
                          withdraw=lambda p: None, clock=lambda: 100.0)
    tunnels = FakeTunnels()
    mapping.tunnel_sender = tunnels
    sent: list[SendUdp] = []
    monkeypatch.setattr(mapping, "_send_udp", sent.append)
    return mapping, tunnels, sent


def ecm(eid: str) -> bytes:
    request = MapRequest(7, ITR, (ITR,), (EidRecord(IPv4Address(eid), 32),))
    return ECM(request, ITR, IPv4Address(eid), source_port=50000, ttl=64).encode()


def test_site_and_cap_keys_are_read_and_translated(tmp_path: pathlib.Path) -> None:
    config = parse_config(config_text(tmp_path, site_extra='notify_to = "source-port"\nreplay = "log-only"',
                                      ms_extra="max_registrations_per_site = 10\n"
                                               "max_registrations_per_source = 3"))
    (site,) = config.map_server.sites
    assert site_from_config(site) == Site("s", KEY, pv.SHA256, (ip_network("153.16.1.0/24"),),
                                          notify_to="source-port", replay="log-only")
    assert (config.map_server.max_registrations_per_site, config.map_server.max_registrations_per_source) == (
        10, 3)
    defaults = parse_config(config_text(tmp_path)).map_server
    assert (defaults.sites[0].notify_to, defaults.sites[0].replay) == ("rfc", "enforce")
    assert (defaults.max_registrations_per_site, defaults.max_registrations_per_source) == (1024, 256)


@pytest.mark.parametrize("extra", ['notify_to = "source"', 'replay = "sometimes"'])
def test_bad_site_values_name_the_key(tmp_path: pathlib.Path, extra: str) -> None:
    with pytest.raises(ConfigError, match=extra.split(" ", maxsplit=1)[0]):
        parse_config(config_text(tmp_path, site_extra=extra))


def test_a_hole_in_the_announced_aggregate_is_answered_not_dropped(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 9301 §8.3: the Map-Server answers for its aggregate; RFC 6836 §6.1: longest match still rules."""
    mapping, tunnels, sent = build(tmp_path, monkeypatch)
    mapping.receive(ecm("153.16.200.1"), ITR, 50000)
    assert tunnels.sent == [] and mapping.forwarder.counters["no-route"] == 0
    (reply,) = sent
    rec = decode(reply.payload).records[0]  # type: ignore[union-attr]
    assert isinstance(decode(reply.payload), MapReply) and rec.ttl == 15 and reply.dst == ITR
    # An unregistered configured site: 1 minute.
    mapping.receive(ecm("153.16.1.7"), ITR, 50000)
    assert decode(sent[-1].payload).records[0].ttl == 1  # type: ignore[union-attr]
    # The negative next to a peer's route inside our aggregate leaves that route out.
    mapping.receive(ecm("153.16.8.1"), ITR, 50000)
    rec = decode(sent[-1].payload).records[0]  # type: ignore[union-attr]
    assert not ip_network(f"{rec.eid}/{rec.mask_len}").overlaps(ip_network("153.16.9.0/24"))
    # A more-specific route a peer announced inside our aggregate wins.
    mapping.receive(ecm("153.16.9.1"), ITR, 50000)
    assert [t for t, _ in tunnels.sent] == ["alt-b"]


def test_the_nonce_table_is_saved_at_stop_and_read_at_start(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 9301 §5.6: the Map-Server saves the last nonce per xTR-ID and key in persistent storage."""
    mapping, _, _ = build(tmp_path, monkeypatch)
    data = pv.map_register(KEY, pv.record("153.16.1.0/24", pv.locator(str(RLOC))), nonce=500)
    mapping.receive(data, RLOC, 4342)
    mapping.stop()
    saved = json.loads(nonce_table_path(tmp_path).read_text())
    assert saved["nonces"][0]["nonce"] == 500
    again, _, _ = build(tmp_path, monkeypatch)
    again.receive(data, RLOC, 4342)  # replayed after the restart
    assert again.ms is not None and again.ms.counters["refused:replay"] == 1


def test_a_corrupt_nonce_file_is_a_warning(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    nonce_table_path(tmp_path).write_text('{"saved_at": 1, "nonces": [{"site": 3}]}')
    with caplog.at_level(logging.WARNING):
        mapping, _, _ = build(tmp_path, monkeypatch)
    assert mapping.ms is not None and mapping.ms.stats()["nonces"] == 0
    assert any("corrupt Map-Server nonce table" in r.getMessage() for r in caplog.records)


def test_saves_are_rate_bounded(tmp_path: pathlib.Path) -> None:
    ms = MapServer([Site("s", KEY, pv.SHA256, (ip_network("153.16.1.0/24"),))])
    store = MapServerNonceStore(tmp_path / "n.json", min_interval=10.0, wall=lambda: 1000.0)
    assert store.due(ms, 0.0) is None and not store.maybe_save(ms, 0.0)
    for i, now in enumerate((0.0, 1.0, 5.0)):
        data = pv.map_register(KEY, pv.record("153.16.1.0/24", pv.locator(str(RLOC))), nonce=i + 1)
        ms.handle_register(data, RLOC, 4342, now)
        store.maybe_save(ms, now)
    assert store.due(ms, 5.0) == 10.0  # saved at 0.0; the next save waits for the interval
    assert store.maybe_save(ms, 10.0)
    assert json.loads((tmp_path / "n.json").read_text())["nonces"][0]["nonce"] == 3
