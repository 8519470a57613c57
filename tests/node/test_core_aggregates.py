"""NodeCore with ``[[eid.aggregates]]``: what ExaBGP is told (RFC 6836 §7.1, RFC 4271 §9.2.2.2)."""

from __future__ import annotations

import pytest

from alt_router.node.config import ConfigError, parse_config
from alt_router.node.core import NodeCore
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
