"""The [map_resolver] and [etr] keys added for issues 11 and 12: defaults, values, errors by key."""

from __future__ import annotations

import pytest

from alt_router.node.config import ConfigError, parse_config

BASE = """
[node]
name = "a"
asn = 65001
router_id = "192.0.2.1"
[eid]
accept = ["153.16.0.0/12"]
"""
ETR = """
[etr]
[[etr.map_servers]]
address = "198.51.100.1"
key = "k"
{ms_extra}
[[etr.mappings]]
eid_prefix = "153.16.1.0/24"
[[etr.mappings.rlocs]]
address = "203.0.113.9"
{rloc_extra}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="node.toml")
    return list(info.value.problems)


def test_map_resolver_defaults() -> None:
    mr = parse_config(BASE + "[map_resolver]\n").map_resolver
    assert (mr.rate_limit, mr.rate_burst) == (100.0, 200)
    assert (mr.global_rate_limit, mr.global_rate_burst, mr.rate_limit_prefixes) == (1000.0, 2000, 16384)
    assert mr.outage_negative_ttl == 1


def test_map_resolver_new_keys_and_their_errors() -> None:
    mr = parse_config(BASE + "[map_resolver]\nglobal_rate_limit = 50\nrate_limit_prefixes = 10\n"
                      "outage_negative_ttl = 0\n").map_resolver
    assert (mr.global_rate_limit, mr.global_rate_burst, mr.rate_limit_prefixes) == (50.0, 100, 10)
    assert mr.outage_negative_ttl == 0
    errs = problems(BASE + "[map_resolver]\nglobal_rate_limit = 0\noutage_negative_ttl = 16\n"
                    "rate_limit_prefixes = 0\nglobal_rate_burst = true\n")
    for key in ("global_rate_limit", "outage_negative_ttl", "rate_limit_prefixes", "global_rate_burst"):
        assert any(e.startswith(f"map_resolver.{key}:") for e in errs), (key, errs)


def test_etr_auth_length_and_rloc_local() -> None:
    etr = parse_config(BASE + ETR.format(ms_extra="", rloc_extra="")).etr
    assert etr.map_servers[0].auth_length == "full" and etr.mappings[0].rlocs[0].local
    text = BASE + ETR.format(ms_extra='auth_length = "truncated"', rloc_extra="local = false")
    etr = parse_config(text).etr
    assert etr.map_servers[0].auth_length == "truncated" and not etr.mappings[0].rlocs[0].local
    errs = problems(BASE + ETR.format(ms_extra='auth_length = "short"', rloc_extra='local = "no"'))
    assert any(e.startswith("etr.map_servers[0].auth_length:") for e in errs), errs
    assert any(e.startswith("etr.mappings[0].rlocs[0].local:") for e in errs), errs
