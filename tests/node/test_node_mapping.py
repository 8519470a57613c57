"""The daemon's mapping edge (``alt_router.node.mapping``) without sockets: dispatch, actions, drops."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alt_router.gre.dataplane import Drop, Local
from alt_router.lisp import ECM, EidRecord, MapRequest
from alt_router.mapping.actions import Announce, SendAlt, Withdraw
from alt_router.mapping.etr import Etr
from alt_router.node.config import parse_config
from alt_router.node.core import NodeCore
from alt_router.node.mapping import NodeMapping, etr_inputs, role_for
from alt_router.rib import AnnouncedRoute as Route
from alt_router.rib import Update

KEY = "unit-key"
CONFIG = f"""
[node]
name = "a"
asn = 65001
router_id = "192.0.2.1"
[eid]
accept = ["153.16.0.0/12"]
[[peers]]
name = "b"
asn = 65002
[peers.underlay]
local = "198.51.100.1"
remote = "198.51.100.2"
[peers.tunnel]
local_ipv4 = "10.255.1.1/30"
remote_ipv4 = "10.255.1.2"
[map_resolver]
[map_server]
[[map_server.sites]]
name = "s"
key = "{KEY}"
eid_prefixes = ["153.16.1.0/24"]
[etr]
[[etr.map_servers]]
address = "127.0.0.1"
key = "{KEY}"
[[etr.mappings]]
eid_prefix = "153.16.1.0/24"
rlocs = [{{ address = "203.0.113.9" }}]
"""
ITR = IPv4Address("192.0.2.7")


class FakeTunnels:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def send(self, tunnel_name: str, inner_packet: bytes) -> None:
        self.sent.append((tunnel_name, inner_packet))


class Recorder:
    def __init__(self) -> None:
        self.announced: list[object] = []
        self.withdrawn: list[object] = []


@pytest.fixture
def node() -> tuple[NodeMapping, FakeTunnels, Recorder]:
    config = parse_config(CONFIG)
    core = NodeCore(config)
    core.rib.peer_up("b", 0.0)
    core.rib.apply(Update("b", announce=(
        Route(ip_network("153.17.0.0/16"), IPv4Address("10.255.1.2"), (65002,)),)), 0.0)
    rec = Recorder()
    mapping = NodeMapping(config, core.rib, {"b": "alt-b"}, announce=rec.announced.append,
                          withdraw=rec.withdrawn.append, clock=lambda: 100.0)
    tunnels = FakeTunnels()
    mapping.tunnel_sender = tunnels
    return mapping, tunnels, rec


def ecm(eid: str, ttl: int = 64) -> bytes:
    request = MapRequest(7, ITR, (ITR,), (EidRecord(IPv4Address(eid), 32),))
    return ECM(request, ITR, IPv4Address(eid), source_port=50000, ttl=ttl).encode()


def test_role_dispatch_by_message_type() -> None:
    everything = {"mr": True, "ms": True, "etr": True}
    assert role_for(ecm("153.17.0.1"), **everything) == "mr"
    to_etr = bytes((ecm("153.17.0.1")[0] | 0x02,)) + ecm("153.17.0.1")[1:]
    assert role_for(to_etr, **everything) == "etr"
    assert role_for(to_etr, mr=True, ms=False, etr=False) == "mr"
    assert role_for(bytes((0x30,)) + bytes(20), **everything) == "ms"
    assert role_for(bytes((0x10,)) + bytes(20), **everything) == "etr"
    assert role_for(bytes((0x40,)) + bytes(20), **everything) == "etr"
    assert role_for(bytes((0x20,)) + bytes(20), **everything) is None  # a Map-Reply: nobody's
    assert role_for(bytes((0x30,)) + bytes(20), mr=True, ms=False, etr=True) is None


def test_an_ecm_for_a_routed_eid_goes_into_the_tunnel_the_rib_picks(
    node: tuple[NodeMapping, FakeTunnels, Recorder],
) -> None:
    mapping, tunnels, _ = node
    mapping.receive(ecm("153.17.2.3"), ITR, 50000)
    assert mapping.counters["to-mr"] == 1 and mapping.counters["alt-sent"] == 1
    [(tunnel, packet)] = tunnels.sent
    assert tunnel == "alt-b"
    assert packet[16:20] == IPv4Address("153.17.2.3").packed and packet[8] == 63  # TTL - 1 at the MR
    # Issue 13: one route lookup per datagram, the resolver's; the forwarder was not asked again.
    assert mapping.forwarder.counters["forwarded"] == 0 and mapping.forwarder.stats()["cache"] == 0


def test_registration_announces_the_site_and_takes_its_alt_datagrams_locally(
    node: tuple[NodeMapping, FakeTunnels, Recorder],
) -> None:
    mapping, tunnels, rec = node
    etr = Etr(*etr_inputs(parse_config(CONFIG).etr))
    [register] = etr.register_now()
    mapping.receive(register.payload, IPv4Address("203.0.113.9"), 4342)  # type: ignore[union-attr]
    assert mapping.counters["to-ms"] == 1
    assert rec.announced == [ip_network("153.16.1.0/24")]
    assert ip_network("153.16.1.0/24") in mapping.forwarder.local_prefixes()
    assert mapping.registrations()[0]["etr"] == "203.0.113.9"
    # A request for the site now ends at our Map-Server, not in a tunnel; its ECM to the ETR has no
    # socket here (never started), which is a counted send error, not an exception.
    mapping.receive(ecm("153.16.1.9"), ITR, 50000)
    assert tunnels.sent == []
    assert mapping.counters["alt-local"] == 1 and mapping.ms is not None
    assert mapping.ms.counters["forwarded-to-etr"] == 1 and mapping.counters["send-error"] >= 1
    mapping.execute([Withdraw(ip_network("153.16.1.0/24"))])
    assert rec.withdrawn == [ip_network("153.16.1.0/24")]
    assert mapping.forwarder.local_prefixes() == []


def test_alt_datagrams_without_a_userspace_data_path_are_counted(
    node: tuple[NodeMapping, FakeTunnels, Recorder],
) -> None:
    mapping, _, _ = node
    mapping.tunnel_sender = None
    mapping.receive(ecm("153.17.2.3"), ITR, 50000)
    assert mapping.counters["alt-dropped"] == 1


def test_announce_action_is_idempotent_for_the_forwarder(
    node: tuple[NodeMapping, FakeTunnels, Recorder],
) -> None:
    mapping, _, rec = node
    prefix = ip_network("153.16.1.0/24")
    mapping.execute([Announce(prefix), Announce(prefix)])
    assert mapping.forwarder.local_prefixes() == [prefix] and len(rec.announced) == 2


def test_a_resolver_datagram_goes_where_its_lookup_said_without_a_second_one(
    node: tuple[NodeMapping, FakeTunnels, Recorder],
) -> None:
    mapping, tunnels, _ = node
    mapping.execute([SendAlt(b"\x45" + bytes(30), "alt-x")])  # garbage, and a tunnel the RIB never named
    assert tunnels.sent == [("alt-x", b"\x45" + bytes(30))] and mapping.counters["alt-sent"] == 1


def test_data_path_events_are_dispatched_in_the_one_place(
    node: tuple[NodeMapping, FakeTunnels, Recorder],
) -> None:
    """A Local verdict reaches the Map-Server; a Drop's ICMP error is sent (RFC 1812 §4.3.2)."""
    mapping, _, _ = node
    mapping.dispatch(Local("alt-b", b"\x45" + bytes(30)))
    assert mapping.counters["alt-local"] == 1 and mapping.ms is not None
    assert mapping.ms.counters["malformed"] == 1
    mapping.dispatch(Drop("no-route"))
    assert mapping.counters["icmp-sent"] + mapping.counters["icmp-send-error"] == 0
    mapping.dispatch(Drop("no-route", icmp=b"\x00"))
    assert mapping.counters["icmp-send-error"] == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_on_port_4342_never_raise(data: bytes) -> None:
    config = parse_config(CONFIG)
    mapping = NodeMapping(config, NodeCore(config).rib, {"b": "alt-b"}, announce=lambda p: None,
                          withdraw=lambda p: None, clock=lambda: 1.0)
    mapping.receive(data, ITR, 4342)
    c = mapping.counters
    assert c["received"] == 1
    assert c["malformed"] + c["no-role"] + c["to-mr"] + c["to-ms"] + c["to-etr"] == 1
