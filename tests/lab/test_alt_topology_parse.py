"""The lab file's [alt] table: validated by its pydantic models, every problem listed by dotted key."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from alt_router.lab.alt_topology import AltTopology, AltTopologyError
from alt_router.lab.topology_model import AltModel
from tests.lab.test_lab_command import DEMO


def problems(text: str) -> list[str]:
    with pytest.raises(AltTopologyError) as info:
        AltTopology.from_toml(text)
    return str(info.value).splitlines()


def test_the_demo_parses_with_its_defaults() -> None:
    alt = AltTopology.from_toml(DEMO)
    assert [n.host for n in alt.nodes] == ["mr", "core", "ms"]
    assert [n.bgp for n in alt.nodes] == ["exabgp"] * 3
    assert alt.tunnel_v4 == ip_network("10.255.0.0/16") and alt.hold_time == 9
    assert [t.key for t in alt.tunnels] == [1, 2]  # index + 1 when not given
    assert alt.etrs[0].register_interval == 5 and alt.etrs[0].register_port is None
    assert alt.demo is not None and alt.demo.map_resolver == "mr"


def test_every_field_problem_of_alt_is_listed_at_once() -> None:
    text = (DEMO.replace("asn = 65001", 'asn = "65001"')
            .replace('router_id = "192.0.2.10"', 'router_id = "192.0.2.10"\nbgp = "bird"\nmtu = 1400')
            .replace("hold_time = 9", "hold_time = 2"))
    assert problems(text) == [
        "alt.hold_time: 2 is out of range 3..65535",
        "alt.nodes.mr.asn: must be an integer, not a string",
        "alt.nodes.core.bgp: 'bird' is not one of 'exabgp' or 'frr'",
        "alt.nodes.core.mtu: unknown key",
    ]


def test_every_cross_check_problem_is_listed_at_once() -> None:
    text = (DEMO.replace('itrs = ["itr"]', 'itrs = ["itr", "nobody"]')
            .replace('map_resolver = "mr"', 'map_resolver = "core"')
            .replace('key = "demo-site1-key"\neids', 'key = "wrong"\neids'))
    assert problems(text) == [
        "alt.etrs.etr.key: no site on 'ms' has this key",
        "alt.itrs[1]: unknown host 'nobody'",
        "alt.demo.map_resolver: 'core' is not an ALT node with map_resolver = true",
    ]


def test_a_tunnel_pool_that_is_too_small_or_of_the_wrong_family() -> None:
    text = DEMO.replace("hold_time = 9",
                        'hold_time = 9\ntunnel_v4 = "10.255.0.0/29"\ntunnel_v6 = "10.0.0.0/8"')
    assert problems(text) == [
        "alt.tunnel_v4: '10.255.0.0/29': the pool is too small (at most /28)",
        "alt.tunnel_v6: '10.0.0.0/8' is not an IPv6 prefix",
    ]


def test_a_tunnel_joins_exactly_two_hosts() -> None:
    text = DEMO.replace('between = ["mr", "core"]', 'between = ["mr", "core", "ms"]')
    assert problems(text) == ["alt.tunnels[0].between: must list at most 2 entries"]


def test_router_families_max_prefix_and_etr_proxy_reply() -> None:
    text = (DEMO.replace("[hosts.etr]", "[hosts.etr]\n[hosts.r]")
            .replace('{ host = "ms",', '{ host = "r", ifname = "eth0", addresses = ["10.0.0.20/24"] },\n'
                     '  { host = "ms",')
            .replace('eids = ["153.16.1.0/24"]', 'eids = ["153.16.1.0/24"]\nproxy_reply = true')
            + '\n[alt.routers.r]\ndaemon = "frr"\nasn = 65100\nrouter_id = "192.0.2.50"\n'
            'families = ["ipv4", "ipv6"]\nmax_prefix = 50\n\n[[alt.tunnels]]\nbetween = ["r", "core"]\n')
    alt = AltTopology.from_toml(text)
    assert alt.router("r").families == ("ipv4", "ipv6") and alt.router("r").max_prefix == 50
    assert alt.etrs[0].proxy_reply
    assert problems(text.replace("max_prefix = 50", "max_prefix = 0")) == [
        "alt.routers.r.max_prefix: 0 is out of range 1..10000000"]
    assert problems(text.replace('daemon = "frr"', 'daemon = "gobgp"')) == [
        "alt.routers.r.daemon: 'gobgp' is not one of 'frr' or 'bird'"]


def test_the_model_describes_every_key() -> None:
    # Editors show these on hover (alt-router config-schema --lab).
    for model in (AltModel, *(f.annotation for f in AltModel.model_fields.values()
                              if isinstance(f.annotation, type))):
        assert model.__doc__
    assert all(f.description for f in AltModel.model_fields.values())
