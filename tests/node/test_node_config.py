"""Node configuration: valid files load into typed sections; every problem is reported by key."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address, ip_network
from pathlib import Path

import pytest

from alt_router.cli import main
from alt_router.node.config import ConfigError, load_config, parse_config

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"

MINIMAL = """
[node]
name = "a"
asn = 65001
router_id = "192.0.2.1"

[eid]
announce = ["153.16.0.0/16"]
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
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="node.toml")
    return list(info.value.problems)


def test_minimal_config_gets_documented_defaults() -> None:
    cfg = parse_config(MINIMAL)
    assert cfg.node.tunnel_mode == "auto"
    assert cfg.node.asn == 65001
    peer = cfg.peers[0]
    assert peer.max_prefix == 10_000
    assert peer.hold_time == 90
    assert peer.key is None and peer.md5_password is None
    assert peer.families == ("ipv4",)  # only IPv4 EID space is accepted
    assert peer.tunnel.session == (ip_address("10.255.1.1"), ip_address("10.255.1.2"))
    assert cfg.api.listen == IPv4Address("127.0.0.1") and cfg.api.port == 8179
    assert not cfg.map_resolver.enabled and not cfg.map_server.enabled and not cfg.etr.enabled
    assert cfg.exabgp.config is None and cfg.exabgp.binary == "exabgp"
    assert cfg.peer_by_address("10.255.1.2") is peer
    assert cfg.peer_by_address("10.255.1.9") is None
    assert cfg.peer_by_address("garbage") is None


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("node-*.toml")))
def test_example_configs_load(name: str) -> None:
    cfg = load_config(EXAMPLES / name)
    assert cfg.source.endswith(name)
    assert cfg.peers


def test_example_a_per_peer_override_and_sections() -> None:
    cfg = load_config(EXAMPLES / "node-a.toml")
    b, c = cfg.peers
    assert b.max_prefix == 10_000 and c.max_prefix == 500
    assert b.families == ("ipv4", "ipv6") and c.families == ("ipv4",)
    assert cfg.map_server.sites[0].algorithm == "hmac-sha256-128"
    assert cfg.map_server.sites[0].eid_prefixes == (ip_network("153.16.1.0/24"),)
    assert cfg.map_resolver.enabled and cfg.map_resolver.rate_limit == 100.0


def test_error_names_file_dotted_key_and_problem() -> None:
    text = MINIMAL + "max_prefix = 0\n"  # lands in [peers.tunnel]: an unknown key there
    errs = problems(text.replace('asn = 65002', 'asn = 65002\nmax_prefix = -5'))
    assert any(e.startswith("peers[0].max_prefix:") and "out of range" in e for e in errs)
    assert any(e.startswith("peers[0].tunnel.max_prefix:") and "unknown key" in e for e in errs)
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="/etc/alt/node.toml")
    assert "/etc/alt/node.toml: peers[0].tunnel.max_prefix: unknown key" in str(info.value)


def test_all_problems_reported_together() -> None:
    text = MINIMAL.replace('asn = 65001', 'asn = 0').replace('"192.0.2.1"', '"not-an-ip"')
    text = text.replace('hold', 'x') + '\n[api]\nport = 70000\n'
    errs = problems(text)
    keys = {e.split(":")[0] for e in errs}
    assert {"node.asn", "node.router_id", "api.port"} <= keys


def test_unknown_keys_and_sections_are_errors() -> None:
    errs = problems(MINIMAL.replace("[node]", "[node]\nmax_prefixes = 5") + "\n[bogus]\nx = 1\n")
    assert "node.max_prefixes: unknown key" in errs
    assert "bogus: unknown key" in errs


@pytest.mark.parametrize(("edit", "key", "fragment"), [
    (('asn = 65002', 'asn = 65002\nhold_time = 2'), "peers[0].hold_time", "0 or 3..65535"),
    (('asn = 65002', 'asn = 65002\nhold_time = 65536'), "peers[0].hold_time", "out of range"),
    (('asn = 65002', 'asn = 65002\nkey = 4294967296'), "peers[0].key", "out of range"),
    (('asn = 65002', 'asn = 65002\nmd5_password = ""'), "peers[0].md5_password", "empty"),
    (('asn = 65002', 'asn = 65002\nmd5_password = "' + "x" * 81 + '"'), "peers[0].md5_password", "80"),
    (('asn = 65002', 'asn = 23456'), "peers[0].asn", "AS_TRANS"),
    (('"153.16.0.0/16"]', '"153.16.0.1/16"]'), "eid.announce[0]", "did you mean 153.16.0.0/16"),
    (('announce = ["153.16.0.0/16"]', 'announce = ["10.0.0.0/8"]'), "eid.announce[0]", "outside"),
    (('accept = ["153.16.0.0/12"]', ''), "eid.accept", "missing"),
    (('remote_ipv4 = "10.255.1.2"', 'remote_ipv4 = "10.255.2.2"'), "peers[0].tunnel.remote_ipv4", "inside"),
    (('remote_ipv4 = "10.255.1.2"', 'remote_ipv4 = "10.255.1.1"'), "peers[0].tunnel.remote_ipv4", "local"),
    (('local_ipv4 = "10.255.1.1/30"', 'local_ipv4 = "10.255.1.1"'), "peers[0].tunnel.local_ipv4",
     "prefix length"),
    (('remote_ipv4 = "10.255.1.2"', ''), "peers[0].tunnel.remote_ipv4", "go together"),
    (('remote = "198.51.100.2"', 'remote = "2001:db8::2"'), "peers[0].underlay.remote", "famil"),
    (('router_id = "192.0.2.1"', 'router_id = "192.0.2.1"\ntunnel_mode = "gre"'), "node.tunnel_mode",
     "not one of"),
    (('router_id = "192.0.2.1"', 'router_id = "2001:db8::1"'), "node.router_id", "IPv4"),
    (('asn = 65002', 'asn = 65002\nfamilies = ["ipv5"]'), "peers[0].families[0]",
     "'ipv5' is not one of 'ipv4' or 'ipv6'"),
    (('asn = 65002', 'asn = 65002\nfamilies = []'), "peers[0].families", "at least one"),
    (('asn = 65002', 'asn = 65002\nmax_prefix = 1.5'), "peers[0].max_prefix", "must be an integer"),
    (('asn = 65002', 'asn = 65002\ndescription = 7'), "peers[0].description", "must be a string"),
    (('name = "b"', 'name = "b c"'), "peers[0].name", "not a valid name"),
    (('[[peers]]', '[peers]'), "peers", "array of tables"),
])
def test_bad_values_name_their_key(edit: tuple[str, str], key: str, fragment: str) -> None:
    old, new = edit
    assert old in MINIMAL
    errs = problems(MINIMAL.replace(old, new))
    assert any(e.startswith(f"{key}:") and fragment in e for e in errs), errs


def test_duplicate_peer_names_and_addresses() -> None:
    second = MINIMAL[MINIMAL.index("[[peers]]"):].replace('asn = 65002', 'asn = 65003\nkey = 7')
    errs = problems(MINIMAL + second)
    assert any(e.startswith("peers[1].name:") and "already used by peers[0]" in e for e in errs)
    assert any(e.startswith("peers[1].tunnel:") and "10.255.1.2" in e for e in errs)


def test_same_underlay_pair_needs_distinct_gre_keys() -> None:
    second = (MINIMAL[MINIMAL.index("[[peers]]"):].replace('name = "b"', 'name = "c"')
              .replace("10.255.1.", "10.255.9."))
    errs = problems(MINIMAL + second)
    assert any(e.startswith("peers[1].key:") and "GRE key" in e for e in errs)
    ok = MINIMAL + second.replace('asn = 65002', 'asn = 65002\nkey = 9')
    assert len(parse_config(ok).peers) == 2


def test_not_toml_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[node\n", source="x.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(bad)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_api_token_required_off_loopback() -> None:
    errs = problems(MINIMAL + '\n[api]\nlisten = "0.0.0.0"\n')
    assert any(e.startswith("api.token:") for e in errs)
    cfg = parse_config(MINIMAL + '\n[api]\nlisten = "0.0.0.0"\ntoken = "t"\n')
    assert cfg.api.token == "t"


def test_map_server_sites() -> None:
    text = MINIMAL.replace('accept = ["153.16.0.0/12"]', 'accept = ["153.16.0.0/12", "2001:db8::/32"]') + """
[map_server]
[[map_server.sites]]
name = "s1"
key = "k"
algorithm = "hmac-sha1-96"
eid_prefixes = ["153.16.1.0/24", "2001:db8:1::/48"]
always_announce = true
"""
    cfg = parse_config(text)
    assert cfg.map_server.enabled  # the section's presence enables it
    site = cfg.map_server.sites[0]
    assert site.algorithm == "hmac-sha1-96" and site.always_announce and not site.accept_more_specifics
    errs = problems(text.replace('"hmac-sha1-96"', '"md5"').replace('key = "k"\n', ''))
    assert any(e.startswith("map_server.sites[0].algorithm:") for e in errs)
    assert any(e.startswith("map_server.sites[0].key:") and "missing" in e for e in errs)
    errs = problems(MINIMAL + "\n[map_server]\nenabled = true\n")
    assert any(e.startswith("map_server.sites:") for e in errs)
    assert not parse_config(MINIMAL + "\n[map_server]\nenabled = false\n").map_server.enabled


SITE = """
[[map_server.sites]]
name = "{name}"
key = "k"
eid_prefixes = {prefixes}
"""


def sites(*specs: tuple[str, str], extra: str = "") -> str:
    return MINIMAL + "\n[map_server]\n" + extra + "".join(
        SITE.format(name=name, prefixes=prefixes) for name, prefixes in specs)


def test_a_site_prefix_outside_the_accepted_eid_space_is_an_error() -> None:
    # The site's aggregate would be announced into the ALT and refused by every node that
    # accepts only [eid].accept (RFC 6833 §4.2: the Map-Server advertises its sites' EID-prefixes).
    errs = problems(sites(("s1", '["153.16.1.0/24", "10.1.0.0/16", "2001:db8:1::/48"]')))
    assert errs == [
        "map_server.sites[0].eid_prefixes[1]: 10.1.0.0/16 is outside the accepted EID space (eid.accept)",
        "map_server.sites[0].eid_prefixes[2]: 2001:db8:1::/48 is outside the accepted EID space (eid.accept)",
    ]
    with pytest.raises(ConfigError, match=r"node\.toml: map_server\.sites\[0\]\.eid_prefixes\[1\]"):
        parse_config(sites(("s1", '["153.16.1.0/24", "10.1.0.0/16"]')), source="node.toml")


def test_overlapping_sites_are_an_error_unless_allowed() -> None:
    text = sites(("s1", '["153.16.0.0/16"]'), ("s2", '["153.17.0.0/16"]'), ("s3", '["153.16.4.0/24"]'))
    errs = problems(text)
    assert len(errs) == 1 and errs[0].startswith(
        "map_server.sites[2].eid_prefixes[0]: 153.16.4.0/24 overlaps 153.16.0.0/16 of site 's1' "
        "(map_server.sites[0])"), errs
    # Allowed for the whole Map-Server, or for one site of the pair.
    cfg = parse_config(text.replace("[map_server]\n", "[map_server]\nallow_overlapping_sites = true\n"))
    assert cfg.map_server.allow_overlapping_sites and len(cfg.map_server.sites) == 3
    cfg = parse_config(text.replace('eid_prefixes = ["153.16.4.0/24"]',
                                    'eid_prefixes = ["153.16.4.0/24"]\nallow_overlap = true'))
    assert [s.allow_overlap for s in cfg.map_server.sites] == [False, False, True]
    # Different sites of different address families never overlap; a site's own prefixes may nest.
    parse_config(sites(("s1", '["153.16.0.0/16", "153.16.1.0/24"]'), ("s2", '["153.17.0.0/16"]')))


def test_alt_router_check_reports_site_problems_by_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "ms.toml"
    conf.write_text(sites(("s1", '["153.16.0.0/16", "10.1.0.0/16"]'), ("s2", '["153.16.4.0/24"]')))
    assert main(["check", "-c", str(conf)]) == 2
    err = capsys.readouterr().err
    assert f"2 problems in {conf}:" in err
    assert f"{conf}: map_server.sites[0].eid_prefixes[1]: 10.1.0.0/16 is outside" in err
    assert f"{conf}: map_server.sites[1].eid_prefixes[0]: 153.16.4.0/24 overlaps 153.16.0.0/16" in err


def test_etr_section() -> None:
    text = MINIMAL + """
[etr]
register_interval = 30
[[etr.map_servers]]
address = "198.51.100.9"
key = "k"
[[etr.mappings]]
eid_prefix = "153.16.1.0/24"
[[etr.mappings.rlocs]]
address = "203.0.113.1"
priority = 2
weight = 50
"""
    cfg = parse_config(text)
    assert cfg.etr.enabled and cfg.etr.register_interval == 30
    assert cfg.etr.map_servers[0].algorithm == "hmac-sha256-128"
    rloc = cfg.etr.mappings[0].rlocs[0]
    assert (rloc.priority, rloc.weight) == (2, 50)
    errs = problems(text.replace("priority = 2", "priority = 256"))
    assert any(e.startswith("etr.mappings[0].rlocs[0].priority:") for e in errs)
    no_rlocs = text[: text.index("[[etr.mappings.rlocs]]")]
    errs = problems(no_rlocs)
    assert any(e.startswith("etr.mappings[0].rlocs:") for e in errs)


def test_map_resolver_rate_limit() -> None:
    cfg = parse_config(MINIMAL + "\n[map_resolver]\nrate_limit = 5\n")
    mr = cfg.map_resolver
    assert mr.enabled and mr.rate_limit == 5.0 and mr.rate_burst == 10
    errs = problems(MINIMAL + "\n[map_resolver]\nrate_limit = 0\n")
    assert any(e.startswith("map_resolver.rate_limit:") for e in errs)
    errs = problems(MINIMAL + "\n[map_resolver]\nrate_limit = true\n")
    assert any(e.startswith("map_resolver.rate_limit:") for e in errs)


def test_ipv6_only_tunnel_and_family_defaults() -> None:
    text = (MINIMAL.replace('accept = ["153.16.0.0/12"]', 'accept = ["153.16.0.0/12", "2001:db8::/32"]')
            .replace('local_ipv4 = "10.255.1.1/30"\nremote_ipv4 = "10.255.1.2"',
                     'local_ipv6 = "fd00::1/64"\nremote_ipv6 = "fd00::2"'))
    peer = parse_config(text).peers[0]
    assert peer.families == ("ipv4", "ipv6")
    assert peer.tunnel.session == (ip_address("fd00::1"), ip_address("fd00::2"))
    errs = problems(text.replace('local_ipv6 = "fd00::1/64"', 'local_ipv6 = "10.0.0.1/24"'))
    assert any(e.startswith("peers[0].tunnel.local_ipv6:") and "IPv6" in e for e in errs)
