"""The ALT lab layer without namespaces: topology parsing, generated node configs, convergence
expectations, the state file, ``lab status`` of absent labs, logfmt logging and the reload plan."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from dataclasses import replace
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from alt_router.cli import main
from alt_router.commands.lab import demo_topology_path, lab_name
from alt_router.lab.alt_runner import (
    LabDir,
    LabState,
    NodeConfigError,
    NodeProbe,
    ProcRecord,
    leftovers,
    status_lines,
    up,
)
from alt_router.lab.alt_topology import AltTopology, AltTopologyError
from alt_router.lab.netns import list_netns
from alt_router.lab.topology import TopologyError
from alt_router.node.config import parse_config
from alt_router.node.logging import LogfmtFormatter, quote, setup
from alt_router.node.reload import plan
from tests.conftest import run_lab_name

DEMO = demo_topology_path().read_text()


def demo() -> AltTopology:
    return AltTopology.from_toml(DEMO)


# --- topology ---------------------------------------------------------------------------------------------


def test_bundled_demo_parses_into_roles_tunnels_and_an_etr() -> None:
    alt = demo()
    assert alt.name == "demo"
    assert {n.host: n.roles for n in alt.nodes} == {
        "mr": ("alt", "map-resolver"), "core": ("alt",), "ms": ("alt", "map-server"),
    }
    assert [(t.a, t.b, t.key) for t in alt.tunnels] == [("mr", "core", 1), ("core", "ms", 2)]
    assert alt.etrs[0].host == "etr" and alt.etrs[0].map_server == "ms"
    assert alt.demo is not None and alt.demo.eid == ip_address("153.16.1.7")


def test_every_generated_node_config_is_a_valid_node_config(tmp_path: Path) -> None:
    alt = demo()
    for node in alt.nodes:
        cfg = parse_config(alt.node_config(node.host, tmp_path / node.host), node.host)
        assert cfg.node.asn == node.asn
        assert cfg.node.tunnel_mode == "userspace"
        assert {p.name for p in cfg.peers} == {e.remote for e in alt.tunnels_of(node.host)}
    ms = parse_config(alt.node_config("ms", tmp_path), "ms")
    assert ms.map_server.enabled and ms.map_server.sites[0].eid_prefixes == (ip_network("153.16.1.0/24"),)
    assert not ms.map_resolver.enabled
    assert parse_config(alt.node_config("mr", tmp_path), "mr").map_resolver.enabled


def test_the_two_ends_of_a_tunnel_mirror_each_other() -> None:
    alt = demo()
    tunnel = alt.tunnels[1]
    core, ms = alt.ends(tunnel, "core"), alt.ends(tunnel, "ms")
    assert (core.underlay_local, core.underlay_remote) == (ms.underlay_remote, ms.underlay_local)
    assert core.inner4_local.split("/")[0] == ms.inner4_remote
    assert ms.inner6_local.split("/")[0] == core.inner6_remote
    # The second tunnel takes the second /30 of the pool: no two tunnels share a subnet.
    assert core.inner4_local == "10.255.0.5/30"
    assert alt.ends(alt.tunnels[0], "mr").inner4_local == "10.255.0.1/30"


def test_expected_routes_are_what_every_other_reachable_node_originates() -> None:
    alt = demo()
    assert alt.expected_routes("mr") == {"153.16.0.0/16", "2001:db8:16::/48"}
    assert alt.expected_routes("core") == {"153.16.0.0/16", "2001:db8:16::/48", "153.17.0.0/16",
                                           "2001:db8:17::/48"}
    # A node nobody tunnels to cannot learn anything.
    lonely = DEMO.replace('[alt.nodes.core]', '[alt.nodes.itr]\nasn = 65009\nrouter_id = "192.0.2.9"\n'
                          'announce = ["153.30.0.0/16"]\n\n[alt.nodes.core]')
    alt2 = AltTopology.from_toml(lonely)
    assert alt2.expected_routes("itr") == set()
    assert "153.30.0.0/16" not in alt2.expected_routes("mr")


def test_etr_command_line_uses_the_shared_segment_addresses() -> None:
    alt = demo()
    argv = alt.etr_argv(alt.etrs[0])
    assert argv[argv.index("--map-server") + 1] == "10.0.0.13"
    assert argv[argv.index("--rloc") + 1] == "10.0.0.2"
    assert argv[argv.index("--eid") + 1] == "153.16.1.0/24"
    assert "--alg" not in argv and "--register-port" not in argv


def test_site_and_etr_algorithm_and_an_ephemeral_register_port(tmp_path: Path) -> None:
    # An HMAC-SHA-1 site whose ETR registers from an ephemeral port (RFC 9301 §5.6).
    text = DEMO.replace('key = "demo-site1-key", eid_prefixes', 'key = "demo-site1-key", '
                        'algorithm = "hmac-sha1-96", eid_prefixes', 1)
    text = text.replace('eids = ["153.16.1.0/24"]', 'eids = ["153.16.1.0/24"]\nalgorithm = "hmac-sha1-96"\n'
                        'register_port = 0', 1)
    alt = AltTopology.from_toml(text)
    assert parse_config(alt.node_config("ms", tmp_path), "ms").map_server.sites[0].algorithm == "hmac-sha1-96"
    argv = alt.etr_argv(alt.etrs[0])
    assert argv[argv.index("--alg") + 1] == "hmac-sha1-96"
    assert argv[argv.index("--register-port") + 1] == "0"
    # The ETR's algorithm must be its site's, or every Map-Register would be refused.
    with pytest.raises(AltTopologyError, match=r"alt\.etrs\.etr\.algorithm: the site on 'ms'"):
        AltTopology.from_toml(text.replace('algorithm = "hmac-sha1-96"\nregister_port', 'register_port'))
    with pytest.raises(AltTopologyError, match=r"sites\[0\]\.algorithm: 'md5' is not one of"):
        AltTopology.from_toml(text.replace('algorithm = "hmac-sha1-96", eid', 'algorithm = "md5", eid'))
    with pytest.raises(AltTopologyError,
                       match=r"alt\.etrs\.etr\.register_port: 70000 is out of range 0\.\.65535"):
        AltTopology.from_toml(text.replace("register_port = 0", "register_port = 70000"))


def test_extra_toml_is_appended_to_a_node_config(tmp_path: Path) -> None:
    text = DEMO.replace('map_resolver = true', 'map_resolver = true\nextra = """\n[api]\nport = 8180\n"""')
    alt = AltTopology.from_toml(text)
    assert parse_config(alt.node_config("mr", tmp_path), "mr").api.port == 8180


@pytest.mark.parametrize(("change", "message"), [
    (("[alt.demo]", "[alt.nope]"), "alt.nope: unknown key"),
    (('between = ["core", "ms"]', 'between = ["core", "core"]'), "alt.tunnels[1].between: a tunnel joins"),
    (('between = ["core", "ms"]', 'between = ["core", "itr"]'), "neither an alt.nodes nor"),
    (('key = "demo-site1-key"\neids', 'key = "wrong"\neids'), "alt.etrs.etr.key: no site on 'ms'"),
    (('map_resolver = "mr"', 'map_resolver = "core"'), "alt.demo.map_resolver: 'core' is not"),
    (('announce = ["153.17.0.0/16"', 'announce = ["10.0.0.0/8"'), "mr.announce[0]: 10.0.0.0/8 is outside"),
    (('router_id = "192.0.2.1"', 'router_id = "2001:db8::1"'),
     "alt.nodes.mr.router_id: '2001:db8::1' is not an IPv4 address"),
    (('asn = 65001', 'asn = "x"'), "alt.nodes.mr.asn: must be an integer, not a string"),
    (('between = ["mr", "core"]', 'between = ["mr", "core"]\nkey = -1'), "alt.tunnels[0].key"),
])
def test_a_bad_alt_table_names_the_offending_key(change: tuple[str, str], message: str) -> None:
    assert change[0] in DEMO
    with pytest.raises(AltTopologyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        AltTopology.from_toml(DEMO.replace(*change, 1))


def test_a_tunnel_needs_a_shared_link_or_segment() -> None:
    text = DEMO.replace('{ host = "ms",   ifname = "eth0", addresses = ["10.0.0.13/24"] },', "")
    text = text.replace("[hosts.ms]", '[hosts.ms]\n\n[[links]]\na = { host = "ms", ifname = "x" }\n'
                        'b = { host = "etr", ifname = "x" }')
    with pytest.raises(AltTopologyError, match=r"alt.tunnels\[1\]: hosts 'core' and 'ms' share no link"):
        AltTopology.from_toml(text)


def test_a_plain_lab_file_is_not_an_alt_lab_and_bad_toml_is_reported() -> None:
    with pytest.raises(AltTopologyError, match="alt: missing"):
        AltTopology.from_toml('name = "x"\n[hosts.a]\n')
    with pytest.raises(AltTopologyError, match="not valid TOML"):
        AltTopology.from_toml("name = \n")
    with pytest.raises(TopologyError, match=r"hosts\.a\.bogus: unknown key"):
        AltTopology.from_toml('name = "x"\n[hosts.a]\nbogus = 1\n[alt.nodes]\n')


def test_frr_router_host_gets_an_ipv4_session_and_a_tunnel_process(tmp_path: Path) -> None:
    text = DEMO.replace("[hosts.etr]", "[hosts.etr]\n[hosts.f]").replace(
        '{ host = "ms",', '{ host = "f", ifname = "eth0", addresses = ["10.0.0.20/24"] },\n  { host = "ms",')
    text += ('\n[alt.routers.f]\ndaemon = "frr"\nasn = 65010\nrouter_id = "192.0.2.20"\n'
             'announce = ["153.19.0.0/16", "10.99.0.0/16"]\n\n[[alt.tunnels]]\nbetween = ["f", "mr"]\n'
             'md5_password = "s3cret"\n')
    alt = AltTopology.from_toml(text)
    mr = parse_config(alt.node_config("mr", tmp_path), "mr")
    f_peer = mr.peer("f")
    assert f_peer is not None and f_peer.families == ("ipv4",) and f_peer.md5_password == "s3cret"
    conf = alt.frr_config("f")
    assert "neighbor 10.255.0.10 remote-as 65001" in conf and "password s3cret" in conf
    assert "timers 3 9" in conf
    # Only prefixes inside the EID space are expected in the ALT.
    assert "153.19.0.0/16" in alt.expected_routes("mr") and "10.99.0.0/16" not in alt.expected_routes("mr")
    argv = alt.tunnel_argv(alt.ends(alt.tunnels[-1], "f"))
    assert argv[argv.index("--key") + 1] == "3" and argv[argv.index("--address") + 1] == "10.255.0.9/30"


def test_lab_up_checks_every_node_config_before_it_builds_anything(tmp_path: Path) -> None:
    # A site outside [eid].accept (and an overlap) is what `alt-router check` refuses (issue 11).
    text = DEMO.replace('eid_prefixes = ["153.16.1.0/24"] }]',
                        'eid_prefixes = ["153.16.1.0/24", "10.1.0.0/16"] }, '
                        '{ name = "site2", key = "k2", eid_prefixes = ["153.16.1.128/25"] }]')
    alt = AltTopology.from_toml(text, name=run_lab_name("badcfg"))
    out = io.StringIO()
    with pytest.raises(NodeConfigError) as info:
        up(alt, root=tmp_path, out=out)
    message = str(info.value)
    config = LabDir(alt.name, tmp_path).node_config("ms")
    assert "nothing was built" in message
    assert f"node ms: 2 problems in {config}:" in message
    assert f"{config}: map_server.sites[0].eid_prefixes[1]: 10.1.0.0/16 is outside the accepted" in message
    assert "map_server.sites[1].eid_prefixes[0]: 153.16.1.128/25 overlaps 153.16.1.0/24" in message
    assert "node mr" not in message and "node core" not in message
    # Nothing was started or created: no namespace, no state.
    assert not [n for n in list_netns() if n.startswith(f"ar-{alt.name}-")]
    assert not (tmp_path / alt.name).exists() and out.getvalue() == ""


def test_lab_command_reports_a_bad_node_config_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the root check comes first")
    bad = tmp_path / "bad.toml"
    bad.write_text(DEMO.replace('"153.16.1.0/24"] }]', '"10.1.0.0/24"] }]'))
    name = run_lab_name("badcli")
    assert main(["lab", "--state-root", str(tmp_path), "up", str(bad), "--name", name]) == 2
    err = capsys.readouterr().err
    assert "node ms:" in err and "map_server.sites[0].eid_prefixes[0]: 10.1.0.0/24 is outside" in err
    assert not [n for n in list_netns() if n.startswith(f"ar-{name}-")]


def test_the_lab_name_can_be_given_on_the_command_line() -> None:
    assert AltTopology.from_toml(DEMO, name="demox1").name == "demox1"
    with pytest.raises(TopologyError, match="name: bad name 'Demo'"):
        AltTopology.from_toml(DEMO, name="Demo")
    bad = (["demo", "--name", "Demo"], ["lab", "demo", "--name", "x-y"], ["lab", "up", "f", "--name", ""])
    for argv in bad:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2


# --- state and status -------------------------------------------------------------------------------------


def test_state_file_round_trips(tmp_path: Path) -> None:
    ld = LabDir("x", tmp_path)
    state = LabState("x", "/t.toml", "up", 1.0, ["ar-x-a"], {"a": {"roles": ["alt"]}},
                     [ProcRecord("a", "alt-router", 1, 2, "/l", ["run"])])
    ld.save(state)
    assert ld.load() == state
    ld.state_file.write_text("{not json")
    with pytest.raises(Exception, match="damaged"):
        ld.load()


def test_status_of_an_absent_lab_says_so(tmp_path: Path) -> None:
    lines, status = status_lines("zzabsent", tmp_path)
    assert status == 3 and lines == ["lab zzabsent: not running"]
    assert leftovers("zzabsent", tmp_path) == []


def test_status_of_a_lab_whose_processes_are_gone_is_degraded(tmp_path: Path) -> None:
    ld = LabDir("zzgone", tmp_path)
    ld.save(LabState("zzgone", "", "converged", 0.0, ["ar-zzgone-a"],
                     processes=[ProcRecord("a", "etr", 2**22 + 1, 1, "/nope.log", ["etr"])]))
    lines, status = status_lines("zzgone", tmp_path)
    assert status == 1
    text = "\n".join(lines)
    assert "namespaces missing: ar-zzgone-a" in text and "NOT running" in text


def test_lab_name_from_file_or_name(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_text(DEMO)
    assert lab_name(str(path)) == "demo"
    assert lab_name("mylab") == "mylab"
    with pytest.raises(AltTopologyError, match="no such topology file"):
        lab_name(str(tmp_path / "missing.toml"))


def test_node_probe_convergence_rule() -> None:
    view = NodeProbe("a", True, 2, 2, frozenset({"p1", "p2"}))
    assert view.converged({"p1"}) and not view.converged({"p3"})
    assert not NodeProbe("a", True, 1, 2, frozenset({"p1"})).converged({"p1"})
    assert not NodeProbe("a", False, 0, 0, frozenset(), "no socket").converged(set())


@pytest.mark.skipif(os.geteuid() == 0, reason="checks the refusal without root")
def test_lab_refuses_without_root(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "status", "demo"]) == 2
    assert "needs root" in capsys.readouterr().err


def test_lab_up_with_a_bad_topology_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the root check comes first")
    bad = tmp_path / "bad.toml"
    bad.write_text(DEMO.replace("[alt.demo]", "[alt.nope]"))
    assert main(["lab", "--state-root", str(tmp_path), "up", str(bad)]) == 2
    assert "alt.nope: unknown key" in capsys.readouterr().err


# --- logging ----------------------------------------------------------------------------------------------


def _record(msg: str, *args: object, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("alt_router.x", level, __file__, 1, msg, args, None)
    for k, v in extra.items():
        setattr(record, k, v)
    return record


def test_logfmt_line_has_level_logger_message_and_context() -> None:
    line = LogfmtFormatter().format(_record("peer %s is up", "b", peer="b", routes=3))
    assert line.startswith("time=") and line.split(" ")[0].endswith("Z")
    assert ' level=info logger=alt_router.x msg="peer b is up" peer=b routes=3' in line


def test_logfmt_quotes_what_would_break_the_line() -> None:
    assert quote("plain") == "plain"
    assert quote("two words") == '"two words"'
    assert quote('say "hi"') == '"say \\"hi\\""'
    assert quote("a=b") == '"a=b"'
    assert quote("") == '""'
    assert quote("line\nbreak") == '"line\\nbreak"'
    assert "\n" not in LogfmtFormatter().format(_record("multi\nline"))


def test_under_journald_no_time_and_a_priority_prefix() -> None:
    out = io.StringIO()
    handler = setup(logging.INFO, stream=out, environ={"JOURNAL_STREAM": "8:1234"})
    try:
        logging.getLogger("alt_router.t").warning("careful", extra={"peer": "c"})
        logging.getLogger("alt_router.t").debug("hidden")
    finally:
        logging.getLogger().removeHandler(handler)
    assert out.getvalue() == "<4>level=warning logger=alt_router.t msg=careful peer=c\n"


def test_exceptions_are_kept_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = LogfmtFormatter(timestamps=False).format(record)
    assert "\n" not in line and "ValueError: boom" in line


# --- reload plan ------------------------------------------------------------------------------------------


def test_reload_plan_applies_announcements_live(tmp_path: Path) -> None:
    old = parse_config(demo().node_config("mr", tmp_path), "mr")
    announce = (ip_network("153.17.0.0/16"), ip_network("153.18.0.0/16"))
    new = replace(old, eid=replace(old.eid, announce=announce))
    p = plan(old, new)
    assert p.announce == (ip_network("153.18.0.0/16"),)
    assert p.withdraw == (ip_network("2001:db8:17::/48"),)
    assert p.restart == () and p.live_changes
    assert plan(old, old).summary() == "nothing to apply"


def test_reload_plan_names_what_needs_a_restart(tmp_path: Path) -> None:
    old = parse_config(demo().node_config("core", tmp_path), "core")
    new = replace(old, peers=old.peers[:1], node=replace(old.node, asn=65099))
    p = plan(old, new)
    # Removing a peer is applied live; a new ASN is not, and is named as needing a restart.
    assert p.peers_removed == ("ms",) and p.live_changes
    assert p.restart == ("node.asn changed",)
    changed = replace(old, peers=(replace(old.peers[0], hold_time=30), old.peers[1]))
    assert plan(old, changed).restart == ("peers changed: mr",)
    assert "needs a restart: peers changed: mr" in plan(old, changed).summary()


def test_demo_sample_still_decodes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--sample", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and all("message" in json.loads(line) for line in lines)
