"""ExaBGP API lines -> events (real samples + fuzzing), and the commands we send."""

from __future__ import annotations

import contextlib
import json
from ipaddress import IPv4Address, ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alt_router.bgp.exabgp_api import (
    ApiReader,
    CommandAck,
    EndOfRib,
    ExabgpApiError,
    Ignored,
    Notification,
    PeerOpen,
    PeerState,
    RouteRefresh,
    RouteUpdate,
    Shutdown,
    announce_route,
    parse_line,
    route_refresh,
    teardown,
    withdraw_route,
)
from alt_router.rib import DropReason, PeerInfo, Rib

SAMPLE = Path(__file__).parent / "data" / "exabgp-5.0.15-frr-8.4.jsonl"


def sample_lines() -> list[str]:
    return [line for line in SAMPLE.read_text().splitlines() if not line.startswith("#")]


def header(kind: str, body: str) -> str:
    return ('{ "exabgp": "5.0.0", "time": 1.0, "host" : "vm", "pid" : 1, "ppid" : 1, "counter": 1, '
            f'"type": "{kind}", "neighbor": {{ "address": {{ "local": "10.255.0.1", "peer": "10.255.0.2" }}, '
            f'"asn": {{ "local": 65001, "peer": 65002 }}, "router-id": "10.255.0.1" , {body} }} }}')


def test_every_real_line_parses() -> None:
    events = [parse_line(line) for line in sample_lines()]
    kinds = {type(e) for e in events}
    assert {PeerState, PeerOpen, RouteUpdate, EndOfRib, RouteRefresh, Notification, Shutdown,
            CommandAck} <= kinds
    assert not any(isinstance(e, Ignored) for e in events)


def test_real_state_open_and_notification() -> None:
    events = [parse_line(line) for line in sample_lines()]
    states = [e for e in events if isinstance(e, PeerState)]
    assert states[0].state == "connected" and states[0].neighbor.peer == ip_address("10.255.0.2")
    assert states[0].neighbor.peer_asn == 65002
    assert any(s.state == "down" and s.reason == "notification received (6,2)" for s in states)
    opened = next(e for e in events if isinstance(e, PeerOpen))
    assert opened.router_id == IPv4Address("10.255.0.2") and opened.hold_time == 180
    assert "enhanced-route-refresh" in opened.capabilities
    note = next(e for e in events if isinstance(e, Notification))
    assert (note.code, note.subcode) == (6, 2) and "maintenance" in note.message
    assert isinstance(events[-1], Shutdown)
    acks = [e.ok for e in events if isinstance(e, CommandAck)]
    assert acks.count(False) == 1  # the IPv6 "next-hop self" on an IPv4 session


def test_real_updates() -> None:
    events = [parse_line(line) for line in sample_lines()]
    updates = [e for e in events if isinstance(e, RouteUpdate)]
    first = updates[0]
    assert first.announce[0].prefix == ip_network("153.16.0.0/16")
    assert first.announce[0].as_path == (65002, 65001) and first.announce[0].origin == "igp"
    assert first.announce[0].next_hop == ip_address("10.255.0.2")
    v6 = updates[1].announce[0]
    assert v6.prefix == ip_network("2001:db8:17::/48") and v6.next_hop == ip_address("::ffff:10.255.0.2")
    assert v6.med == 0
    withdraws = [p for u in updates for p in u.withdraw]
    assert ip_network("153.18.0.0/16") in withdraws and ip_network("2001:db8:17::/48") in withdraws
    eors = [(e.afi, e.safi) for e in events if isinstance(e, EndOfRib)]
    assert eors[:2] == [("ipv6", "unicast"), ("ipv4", "unicast")]
    subtypes = [e.subtype for e in events if isinstance(e, RouteRefresh)]
    assert subtypes == ["begin", "end", "query"]


def test_real_session_drives_the_rib() -> None:
    """Replay the captured session into a RIB the way the daemon will."""
    rib = Rib(65001, [ip_network("153.16.0.0/12"), ip_network("2001:db8::/32")],
              [PeerInfo("frr", 65002, (ip_address("10.255.0.2"),))])
    reader = ApiReader()
    for n, line in enumerate(sample_lines()):
        event = reader.feed(line)
        if isinstance(event, PeerState | RouteUpdate | EndOfRib | RouteRefresh):
            peer = rib.peer_name_for(event.neighbor.peer)
            assert peer == "frr"
        if isinstance(event, PeerState) and event.state == "up":
            rib.peer_up(peer, float(n))
        elif isinstance(event, PeerState) and event.state == "down":
            rib.peer_down(peer, event.reason, float(n))
        elif isinstance(event, RouteUpdate):
            rib.apply(event.to_rib(peer), float(n))
        elif isinstance(event, EndOfRib):
            rib.end_of_rib(peer, event.afi)
        elif isinstance(event, RouteRefresh) and event.subtype == "begin":
            rib.refresh_begin(peer, event.afi)
        elif isinstance(event, RouteRefresh) and event.subtype == "end":
            rib.refresh_end(peer, event.afi)
        if n == 8:  # after the first EoRs
            assert {str(p.prefix) for p in rib.routes()} == {"153.17.0.0/16", "153.18.0.0/16",
                                                            "2001:db8:17::/48"}
    # The session ended with ExaBGP stopping: everything withdrawn.
    assert len(rib) == 0
    assert reader.counters["malformed"] == 0
    # 153.16/16, 153.19/16 and 153.20/16 came back through AS 65001: refused every time.
    assert rib.drops.get("frr", DropReason.OWN_ASN) >= 6


def test_as_path_older_list_form_and_as_set() -> None:
    body = ('"direction": "receive", "message": { "update": { "attribute": { "origin": "egp", '
            '"as-path": [ 65002, 65003, [ 65010, 65011 ] ], "community": [ [ 65002, 100 ] ] }, '
            '"announce": { "ipv4 unicast": { "10.255.0.2": [ "153.16.0.0/16" ] } } } }')
    ev = parse_line(header("update", body))
    assert isinstance(ev, RouteUpdate)
    a = ev.announce[0]
    assert a.as_path == (65002, 65003) and a.as_set == (65010, 65011)
    assert a.origin == "egp" and a.communities == ((65002, 100),)


def test_as_path_segments_keep_wire_order() -> None:
    path = {"1": {"element": "as-set", "value": [7, 8]}, "0": {"element": "as-sequence", "value": [1, 2]},
            "2": {"element": "confed-sequence", "value": [9]}}
    body = ('"direction": "receive", "message": { "update": { "attribute": { "as-path": '
            + json.dumps(path)
            + ' }, "announce": { "ipv4 unicast": { "10.255.0.2": [ { "nlri": "1.0.0.0/8" } ] } } } }')
    ev = parse_line(header("update", body))
    assert isinstance(ev, RouteUpdate)
    assert ev.announce[0].as_path == (1, 2) and ev.announce[0].as_set == (7, 8)


def test_unsupported_family_is_skipped_and_counted() -> None:
    body = ('"direction": "receive", "message": { "update": { "announce": { '
            '"ipv4 flow": { "no-nexthop": [ { "destination-ipv4": [ "10.0.0.0/8" ] } ] }, '
            '"ipv4 unicast": { "10.255.0.2": [ { "nlri": "153.16.0.0/16" }, { "nlri": "bogus" } ] } }, '
            '"withdraw": { "l2vpn vpls": [ {} ] } } }')
    reader = ApiReader()
    ev = reader.feed(header("update", body))
    assert isinstance(ev, RouteUpdate)
    assert [str(a.prefix) for a in ev.announce] == ["153.16.0.0/16"] and ev.skipped == 3
    assert reader.counters["nlri-skipped"] == 3


def test_null_next_hop_skips_its_nlri() -> None:
    body = ('"direction": "receive", "message": { "update": { "announce": { "ipv4 unicast": { '
            '"null": [ { "nlri": "153.16.0.0/16" } ] } } } }')
    ev = parse_line(header("update", body))
    assert isinstance(ev, RouteUpdate) and ev.announce == () and ev.skipped == 1


def test_uninteresting_messages_are_ignored_and_counted() -> None:
    reader = ApiReader()
    assert reader.feed(header("keepalive", '"direction": "receive"')) is None
    sent = header("update", '"direction": "send", "message": { "update": { } }')
    assert reader.feed(sent) is None
    assert reader.feed("") is None
    assert reader.counters["ignored:keepalive"] == 1 and reader.counters["ignored:update-sent"] == 1


@pytest.mark.parametrize("line", [
    "{", "[]", "42", "not json", '{"type": "state"}', b"\xff\xfe",
    header("state", '"state": 7'),
    header("update", '"direction": "sideways", "message": {}'),
    header("update", '"direction": "receive", "message": { "update": { "announce": [] } }'),
    header("update", '"direction": "receive", "message": { "update": { "attribute": { "origin": "x" } } }'),
    header("update", '"direction": "receive", "message": { "update": { "attribute": { "med": -1 } } }'),
    header("open", '"direction": "receive", "open": { "asn": 1, "hold_time": 90, "router_id": "::1" }'),
    header("notification", '"direction": "receive", "notification": { "code": 999, "subcode": 1 }'),
    '{"type": "state", "neighbor": {"address": {"local": "1.1.1.1", "peer": "x"}, "asn": {}}}',
    "[" * 100_000,
])
def test_malformed_lines_raise_the_declared_error(line: str | bytes) -> None:
    with pytest.raises(ExabgpApiError):
        parse_line(line)
    reader = ApiReader()
    assert reader.feed(line) is None
    assert reader.counters["malformed"] == 1 and reader.last_error


KEYS = ["type", "neighbor", "address", "asn", "local", "peer", "message", "update", "announce", "withdraw",
        "attribute", "as-path", "nlri", "eor", "afi", "safi", "direction", "state", "open", "router_id",
        "hold_time", "route-refresh", "notification", "code", "subcode", "community", "med", "origin", "0",
        "element", "value", "ipv4 unicast", "10.0.0.2"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.sampled_from(["10.0.0.1", "153.16.0.0/16", "ipv4 unicast", "ipv6 unicast", "as-sequence", "as-set",
                       "up", "receive", "eor", "update", "state"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(KEYS),
        children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_fuzzed_json_never_raises_anything_else(value: Any) -> None:
    with contextlib.suppress(ExabgpApiError):
        parse_line(json.dumps(value))


def _mutate(obj: Any, path: list[Any], new: Any) -> Any:
    if not path:
        return new
    key = path[0]
    if isinstance(obj, dict) and obj:
        k = list(obj)[key % len(obj)]
        return {**obj, k: _mutate(obj[k], path[1:], new)}
    if isinstance(obj, list) and obj:
        i = key % len(obj)
        return [*obj[:i], _mutate(obj[i], path[1:], new), *obj[i + 1:]]
    return new


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(0, 50), max_size=6), json_values)
def test_mutated_real_lines_never_raise_anything_else(pick: int, path: list[int], new: Any) -> None:
    lines = [line for line in sample_lines() if line.startswith("{")]
    obj = json.loads(lines[pick % len(lines)])
    with contextlib.suppress(ExabgpApiError):
        parse_line(json.dumps(_mutate(obj, path, new)))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_random_bytes_never_raise_anything_else(data: bytes | str) -> None:
    reader = ApiReader()
    reader.feed(data)  # must not raise at all


def test_commands_exabgp_5_syntax() -> None:
    peer = ip_address("10.255.0.2")
    assert announce_route("153.16.0.0/16") == "announce route 153.16.0.0/16 next-hop self"
    assert announce_route(ip_network("153.16.0.0/16"), neighbor=peer) == (
        "neighbor 10.255.0.2 announce route 153.16.0.0/16 next-hop self")
    mapped = ip_address("::ffff:10.255.0.1")
    assert announce_route("2001:db8:16::/48", next_hop=mapped, neighbor=peer) == (
        f"neighbor 10.255.0.2 announce route 2001:db8:16::/48 next-hop {mapped}")
    assert withdraw_route("153.20.0.0/16", neighbor=peer) == (
        "neighbor 10.255.0.2 withdraw route 153.20.0.0/16 next-hop self")
    assert teardown(peer) == "neighbor 10.255.0.2 teardown 2"
    assert teardown(peer, 1) == "neighbor 10.255.0.2 teardown 1"
    assert route_refresh(peer, "ipv6") == "neighbor 10.255.0.2 announce route-refresh ipv6 unicast"


@pytest.mark.parametrize("call", [
    lambda: announce_route("153.16.0.1/16"),
    lambda: announce_route("153.16.0.0/16\nteardown 2"),
    lambda: withdraw_route("nonsense"),
    lambda: teardown(ip_address("10.0.0.1"), 300),
    lambda: route_refresh(ip_address("10.0.0.1"), "ipv4", "flow"),
])
def test_bad_command_arguments_are_refused(call: Any) -> None:
    with pytest.raises(ExabgpApiError):
        call()
