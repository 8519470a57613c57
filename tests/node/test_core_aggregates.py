"""NodeCore with ``[[eid.aggregates]]``: what ExaBGP is told (RFC 6836 §7.1, RFC 4271 §9.2.2.2)."""

from __future__ import annotations

import json
from ipaddress import ip_network
from pathlib import Path

import pytest

from alt_router.api.view import event_dict
from alt_router.node.config import ConfigError, parse_config
from alt_router.node.core import NodeCore
from alt_router.node.daemon import Node
from alt_router.node.view import DaemonView
from alt_router.rib.events import AggregateEvent
from tests.node.test_daemon_core import CONFIG, state, update, withdraw

AGGREGATES = """
[[eid.aggregates]]
prefix = "153.24.0.0/14"
summary_only = true
[[eid.aggregates]]
prefix = "153.28.0.0/14"
as_set = true
"""


def make(extra: str = AGGREGATES) -> NodeCore:
    text = CONFIG.replace('accept = ["153.16.0.0/12", "2001:db8::/32"]\n',
                          'accept = ["153.16.0.0/12", "2001:db8::/32"]\n' + extra)
    core = NodeCore(parse_config(text))
    core.on_line(state("a", "up"), 1.0)
    core.on_line(state("c", "up"), 1.0)
    return core


def test_summary_only_aggregate_replaces_its_more_specifics() -> None:
    core = make()
    cmds = core.on_line(update("a", "10.255.1.1", ["153.25.1.0/24"], [65001]), 2.0)
    # The aggregate goes to both peers with ATOMIC_AGGREGATE and AGGREGATOR; the /24 to nobody.
    assert cmds == [
        "neighbor 10.255.1.1 announce route 153.24.0.0/14 next-hop self origin igp atomic-aggregate "
        "aggregator ( 65002:192.0.2.2 )",
        "neighbor 10.255.2.2 announce route 153.24.0.0/14 next-hop self origin igp atomic-aggregate "
        "aggregator ( 65002:192.0.2.2 )",
    ]
    assert core.suppressed == {core.rib.get("153.25.1.0/24").prefix: core.aggregator.specs()[0].prefix}  # type: ignore[union-attr]
    assert core.rib.lookup("153.25.1.9") is not None  # still forwarded by
    # A second contributor changes nothing on the wire.
    assert core.on_line(update("a", "10.255.1.1", ["153.26.9.0/24"], [65001]), 3.0) == []
    assert core.on_line(withdraw("a", ["153.25.1.0/24"]), 4.0) == []
    # The last one goes: the aggregate is withdrawn.
    assert core.on_line(withdraw("a", ["153.26.9.0/24"]), 5.0) == [
        "neighbor 10.255.1.1 withdraw route 153.24.0.0/14 next-hop self",
        "neighbor 10.255.2.2 withdraw route 153.24.0.0/14 next-hop self",
    ]
    assert core.suppressed == {}


def test_as_set_aggregate_is_not_sent_to_a_contributing_as() -> None:
    core = make()
    cmds = core.on_line(update("a", "10.255.1.1", ["153.29.0.0/24"], [65001, 65010]), 2.0)
    agg = [c for c in cmds if "153.28.0.0/14" in c]
    # 65001 is in the AS_SET: peer a would refuse it anyway (its own AS), so it is withdrawn there.
    assert agg == [
        "neighbor 10.255.1.1 withdraw route 153.28.0.0/14 next-hop self",
        "neighbor 10.255.2.2 announce route 153.28.0.0/14 next-hop self origin igp "
        "as-path [ 65002 ] ( 65001 65010 ) aggregator ( 65002:192.0.2.2 )",
    ]
    # Not summary-only: the more-specific is exported too.
    assert any("announce route 153.29.0.0/24" in c for c in cmds)


def test_run_time_origination_contributes_and_is_hidden() -> None:
    # [eid].announce (153.17.0.0/16) is under no aggregate here.
    # A Map-Server's site prefix under a summary-only aggregate: the ALT sees only the aggregate.
    core = make()
    cmds = core.announce("153.27.1.0/24")
    assert [c.split(" route ")[1].split()[0] for c in cmds] == ["153.24.0.0/14", "153.24.0.0/14"]
    assert "153.27.1.0/24" not in " ".join(core.on_bridge_connected())
    assert "153.24.0.0/14" in " ".join(core.on_bridge_connected())
    cmds = core.withdraw("153.27.1.0/24")
    assert all("withdraw route 153.24.0.0/14" in c for c in cmds) and len(cmds) == 2


def test_always_aggregate_is_announced_when_the_bridge_connects() -> None:
    core = make('[[eid.aggregates]]\nprefix = "153.20.0.0/14"\nalways = true\n')
    cmds = core.on_bridge_connected()
    assert sum("announce route 153.20.0.0/14" in c for c in cmds) == 2


def test_transit_as_set_is_rendered_after_the_sequence() -> None:
    # ExaBGP parses "as-path [ 65002 65001 ] ( 65010 )" and refuses "[ 65002 65001 ( 65010 ) ]".
    core = make("")
    line = update("a", "10.255.1.1", ["153.25.1.0/24"], [65001])
    line = line.replace('"as-path": {"0": {"element": "as-sequence", "value": [65001]}}',
                        '"as-path": {"0": {"element": "as-sequence", "value": [65001]}, '
                        '"1": {"element": "as-set", "value": [65010]}}')
    [cmd] = core.on_line(line, 2.0)
    assert cmd.endswith("as-path [ 65002 65001 ] ( 65010 )"), cmd


def test_snapshot_shows_aggregates() -> None:
    core = make()
    core.on_line(update("a", "10.255.1.1", ["153.25.1.0/24"], [65001]), 2.0)
    aggs = {a["prefix"]: a for a in core.snapshot(3.0)["aggregates"]}
    assert aggs["153.24.0.0/14"]["active"] and aggs["153.24.0.0/14"]["suppressed"] == 1
    assert not aggs["153.28.0.0/14"]["active"]


@pytest.mark.parametrize(("extra", "problem"), [
    ('[[eid.aggregates]]\nprefix = "10.0.0.0/8"\n', "outside the accepted EID space"),
    ('[[eid.aggregates]]\nprefix = "153.24.0.0/14"\n[[eid.aggregates]]\nprefix = "153.24.0.0/14"\n',
     "already aggregated"),
    ('[[eid.aggregates]]\nprefix = "153.24.0.0/14"\nsummary = true\n', "unknown key"),
])
def test_bad_aggregate_config(extra: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        make(extra)


def test_aggregate_events_and_the_active_set_follow_origination() -> None:
    """The event stream tells originate / change / withdraw; the listener (the forwarder's discard
    table, RFC 6836 §7.1) hears every change of the active set, and nothing else."""
    core = make()
    heard: list[list[str]] = []
    core.watch_aggregates(lambda prefixes: heard.append([str(p) for p in prefixes]))
    assert heard == [[]]
    seq = core.rib.stream.last_seq
    core.on_line(update("a", "10.255.1.1", ["153.29.0.0/24"], [65001]), 2.0)
    core.on_line(update("a", "10.255.1.1", ["153.29.1.0/24"], [65001, 65010]), 3.0)  # AS_SET grows
    core.on_line(update("a", "10.255.1.1", ["153.29.2.0/24"], [65001]), 3.5)  # nothing new to tell
    core.on_line(withdraw("a", ["153.29.0.0/24", "153.29.1.0/24", "153.29.2.0/24"]), 4.0)
    events = [r for r in core.rib.stream.since(seq) if isinstance(r.event, AggregateEvent)]
    assert [(r.event.kind, str(r.event.prefix)) for r in events] == [  # type: ignore[union-attr]
        ("originate", "153.28.0.0/14"), ("change", "153.28.0.0/14"),
        ("change", "153.28.0.0/14"),  # 65010's contributor left first: the AS_SET shrinks
        ("withdraw", "153.28.0.0/14")]
    assert heard == [[], ["153.28.0.0/14"], []]
    name, data = event_dict(events[1])
    assert name == "aggregate"
    assert data["as_set"] == [65001, 65010] and data["atomic_aggregate"] is False
    # A new bridge re-sends the aggregates without inventing events.
    core.on_line(update("a", "10.255.1.1", ["153.29.0.0/24"], [65001]), 5.0)
    seq = core.rib.stream.last_seq
    assert any("153.28.0.0/14" in c for c in core.on_bridge_connected())
    assert core.rib.stream.since(seq) == []
    assert core.active_aggregates() == [ip_network("153.28.0.0/14")]


def test_suppressed_by_names_the_summary_only_aggregate() -> None:
    core = make()
    core.on_line(update("a", "10.255.1.1", ["153.25.1.0/24", "153.29.1.0/24"], [65001]), 2.0)
    assert core.suppressed_by(ip_network("153.25.1.0/24")) == ip_network("153.24.0.0/14")
    assert core.suppressed_by(ip_network("153.29.1.0/24")) is None  # not summary-only
    view = {v["prefix"]: v for v in core.aggregates_view()}
    assert view["153.24.0.0/14"]["suppressed_sample"] == ["153.25.1.0/24"]


def test_a_transit_node_passes_atomic_aggregate_and_aggregator_on() -> None:
    """RFC 4271 §5.1.6-§5.1.7: a BGP speaker propagating an aggregate keeps ATOMIC_AGGREGATE and
    AGGREGATOR, so the top of the ALT and its FRR/BIRD peers still see who aggregated."""
    core = make("")
    line = json.loads(update("a", "10.255.1.1", ["153.20.0.0/14"], [65001]))
    attrs = line["neighbor"]["message"]["update"]["attribute"]
    attrs["atomic-aggregate"] = True
    attrs["aggregator"] = "65001:192.0.2.1"
    cmds = core.on_line(json.dumps(line), 2.0)
    assert cmds == ["neighbor 10.255.2.2 announce route 153.20.0.0/14 next-hop self origin igp "
                    "as-path [ 65002 65001 ] atomic-aggregate aggregator ( 65001:192.0.2.1 )"]
    attrs["aggregator"] = "65001:not-an-address"
    assert core.on_line(json.dumps(line), 3.0) == []
    assert core.reader.counters["malformed"] == 1


def test_the_node_feeds_its_forwarder_and_its_api_view(tmp_path: Path) -> None:
    """The daemon's wiring: active aggregates become the forwarder's discard table (RFC 6836 §7.1),
    and the API view shows the aggregates and, on a lookup, what suppresses a route."""
    text = CONFIG.replace('state_dir = "/nonexistent"', f'state_dir = "{tmp_path}"').replace(
        'accept = ["153.16.0.0/12", "2001:db8::/32"]\n',
        'accept = ["153.16.0.0/12", "2001:db8::/32"]\n' + AGGREGATES)
    node = Node(parse_config(text), with_tunnels=False)
    assert node.mapping is not None
    assert node.mapping.forwarder.discard_prefixes() == []
    node.core.on_line(state("a", "up"), 1.0)
    node.core.on_line(update("a", "10.255.1.1", ["153.25.1.0/24"], [65001]), 2.0)
    assert node.mapping.forwarder.discard_prefixes() == [ip_network("153.24.0.0/14")]
    view = DaemonView(node)
    found = view.lookup("153.25.1.9")
    assert found is not None and found["suppressed_by"] == "153.24.0.0/14"
    assert [a["prefix"] for a in view.aggregates() if a["active"]] == ["153.24.0.0/14"]
    node.core.on_line(withdraw("a", ["153.25.1.0/24"]), 3.0)
    assert node.mapping.forwarder.discard_prefixes() == []
