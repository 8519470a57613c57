"""The node config's pydantic models: one JSON Schema for editors, every problem reported by dotted key."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from alt_router.cli import main
from alt_router.node.config import ConfigError, parse_config
from tests.node.test_node_config import MINIMAL, problems

ROOT = Path(__file__).resolve().parents[2]
NODE_EXAMPLES = sorted((ROOT / "docs" / "examples").glob("node-*.toml"))
LAB_FILES = [*sorted((ROOT / "tests" / "integration" / "topologies").glob("*.toml")),
             ROOT / "alt_router" / "data" / "demo.toml"]


def schema(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["config-schema", *args]) == 0
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


def test_config_schema_prints_the_node_file_schema(capsys: pytest.CaptureFixture[str]) -> None:
    s = schema(capsys)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    props = s["properties"]
    assert isinstance(props, dict)
    assert set(props) == {"node", "eid", "peers", "exabgp", "frr", "api", "map_resolver", "map_server",
                          "etr", "icmp"}
    assert s["required"] == ["node", "eid"]
    assert s["additionalProperties"] is False  # unknown keys are errors in the editor too
    defs = s["$defs"]
    assert isinstance(defs, dict)
    node = defs["NodeModel"]["properties"]
    assert node["bgp"]["enum"] == ["exabgp", "frr"] and node["bgp"]["default"] == "exabgp"
    assert node["asn"]["minimum"] == 1 and node["asn"]["maximum"] == 0xFFFFFFFF
    assert all(p.get("description") for p in node.values())  # what an editor shows on hover
    assert set(defs["FrrModel"]["properties"]) == {"bin_dir", "vtysh", "pathspace", "vrf"}
    # TOML has no null: optional keys are simply left out.
    assert "null" not in json.dumps(s)


def test_config_schema_lab(capsys: pytest.CaptureFixture[str]) -> None:
    s = schema(capsys, "--lab")
    props = s["properties"]
    assert isinstance(props, dict) and {"name", "hosts", "links", "segments", "alt"} <= set(props)
    defs = s["$defs"]
    assert isinstance(defs, dict)
    assert defs["AltNodeModel"]["properties"]["bgp"]["enum"] == ["exabgp", "frr"]
    assert defs["AltModel"]["required"] == ["nodes"]


@pytest.mark.parametrize("lab", [False, True])
def test_schema_is_valid_draft_2020_12_and_accepts_the_shipped_files(
    lab: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    s = schema(capsys, *(["--lab"] if lab else []))
    jsonschema.Draft202012Validator.check_schema(s)
    validator = jsonschema.Draft202012Validator(s)
    for path in LAB_FILES if lab else NODE_EXAMPLES:
        assert list(validator.iter_errors(tomllib.loads(path.read_text()))) == [], path
    if not lab:
        bad = tomllib.loads(MINIMAL.replace("[node]", "[node]\nmax_prefixes = 5"))
        assert [e.validator for e in validator.iter_errors(bad)] == ["additionalProperties"]


def test_three_problems_are_reported_together_with_dotted_keys() -> None:
    text = (MINIMAL.replace("asn = 65002", "asn = 70000000000")
            .replace('router_id = "192.0.2.1"', 'router_id = "192.0.2.1"\nfib = "hash"')
            + '\n[api]\nport = "8179"\n')
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="node.toml")
    assert info.value.problems == (
        "node.fib: 'hash' is not one of 'dir24' or 'tree'",
        "peers[0].asn: 70000000000 is out of range 1..4294967295",
        "api.port: must be an integer, not a string",
    )
    assert str(info.value).startswith("3 problems in node.toml:\n  node.toml: node.fib: ")


def test_unknown_key_is_rejected_with_its_dotted_path() -> None:
    errs = problems(MINIMAL.replace('remote = "198.51.100.2"', 'remote = "198.51.100.2"\nmtu = 1400'))
    assert errs == ["peers[0].underlay.mtu: unknown key"]
    errs = problems(MINIMAL + '\n[etr]\n[[etr.mappings]]\neid_prefix = "153.16.1.0/24"\n'
                    'rlocs = [{ address = "192.0.2.9", prio = 1 }]\n')
    assert errs == ["etr.mappings[0].rlocs[0].prio: unknown key"]


def test_a_bad_section_does_not_hide_a_cross_key_problem_elsewhere() -> None:
    # [api] fails its model; the tunnel pair is still checked against its subnet.
    text = (MINIMAL.replace('remote_ipv4 = "10.255.1.2"', 'remote_ipv4 = "10.255.2.2"')
            + "\n[api]\nport = 0\n")
    errs = problems(text)
    assert errs == [
        "api.port: 0 is out of range 1..65535",
        "peers[0].tunnel.remote_ipv4: 10.255.2.2 is not inside the local tunnel subnet 10.255.1.0/30",
    ]


def test_a_bad_key_of_a_peer_does_not_hide_its_tunnel_problem() -> None:
    text = MINIMAL.replace("asn = 65002", "asn = 70000000000").replace(
        'remote_ipv4 = "10.255.1.2"', 'remote_ipv4 = "10.255.2.2"')
    assert problems(text) == [
        "peers[0].asn: 70000000000 is out of range 1..4294967295",
        "peers[0].tunnel.remote_ipv4: 10.255.2.2 is not inside the local tunnel subnet 10.255.1.0/30",
    ]


def test_a_bad_peer_does_not_hide_the_others() -> None:
    second = MINIMAL[MINIMAL.index("[[peers]]"):].replace('name = "b"', 'name = "c"')
    third = second.replace('asn = 65002', 'asn = "x"')
    errs = problems(MINIMAL + second + third)
    assert "peers[2].asn: must be an integer, not a string" in errs
    assert any(e.startswith("peers[1].tunnel: remote address 10.255.1.2 is already used by peers[0]")
               for e in errs)


def test_bgp_speaker_and_frr_table() -> None:
    cfg = parse_config(MINIMAL.replace("[node]", '[node]\nbgp = "frr"') + '\n[frr]\nvrf = "alt"\n')
    assert cfg.node.bgp == "frr" and cfg.frr.vrf == "alt" and cfg.frr_pathspace == "a"
    assert cfg.frr.bin_dir == Path("/usr/lib/frr") and cfg.frr.vtysh == "vtysh"
    assert parse_config(MINIMAL).node.bgp == "exabgp"
    errs = problems(MINIMAL.replace("[node]", '[node]\nbgp = "bird"')
                    + '\n[frr]\npathspace = "a b"\nbin_dir = ""\n')
    assert errs == [
        "node.bgp: 'bird' is not one of 'exabgp' or 'frr'",
        "frr.bin_dir: must not be empty",
        "frr.pathspace: 'a b' is not a valid name (letters, digits, '-', '_', '.')",
    ]


def test_strict_types_no_coercion() -> None:
    # TOML has types: "65001" or true for an integer is a mistake, not something to convert.
    assert problems(MINIMAL.replace("asn = 65001", 'asn = "65001"')) == [
        "node.asn: must be an integer, not a string"]
    assert problems(MINIMAL + "\n[map_resolver]\nenabled = 1\n") == [
        "map_resolver.enabled: must be true or false, not an integer"]
    assert problems(MINIMAL + "\n[icmp]\nburst = true\n") == ["icmp.burst: must be an integer, not a boolean"]
    assert problems(MINIMAL + "\n[api]\n[api.x]\n") == ["api.x: unknown key"]
    assert problems("etr = 5\n" + MINIMAL) == ["etr: must be a table, not an integer"]
