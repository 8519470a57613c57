"""Rendering ExaBGP's configuration from a node config, checked by ExaBGP's own validator."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from ipaddress import ip_address
from pathlib import Path

import pytest

from alt_router.bgp.exabgp_config import (
    ExabgpConfigError,
    exabgp_stop_grace,
    next_hop_for,
    render_exabgp_config,
)
from alt_router.bgp.supervisor import exabgp_env
from alt_router.node.config import NodeConfig, load_config, parse_config
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
RUN = f"{sys.executable} -c pass"


def node_a() -> NodeConfig:
    return load_config(EXAMPLES / "node-a.toml")


def neighbor_block(text: str, address: str) -> str:
    start = text.index(f"neighbor {address} {{")
    return text[start:text.index("\n}\n", start)]


def test_one_neighbor_per_peer_on_tunnel_addresses() -> None:
    text = render_exabgp_config(node_a(), RUN)
    b = neighbor_block(text, "10.255.1.2")
    for line in ("local-address 10.255.1.1;", "local-as 65001;", "peer-as 65002;", "router-id 192.0.2.1;",
                 "hold-time 90;", 'md5-password "alt-a-b";', "ipv4 unicast;", "ipv6 unicast;",
                 "route-refresh;", "processes [ alt-router ];", "neighbor-changes;",
                 "receive { parsed; update; refresh; notification; open; }",
                 "route 153.16.0.0/16 next-hop self;", "route 2001:db8:a::/48 next-hop fd00:255:1::1;"):
        assert line in b, line
    c = neighbor_block(text, "10.255.2.2")
    assert "peer-as 65003;" in c and "md5-password" not in c and "ipv6 unicast" not in c
    assert "2001:db8:a::/48" not in c  # c only carries IPv4
    assert "graceful-restart" not in text  # see the module docstring: it breaks teardown
    assert f"run {RUN};" in text and "encoder json;" in text


def test_ipv6_next_hop_on_ipv4_only_tunnel_is_mapped() -> None:
    cfg = node_a()
    c = cfg.peers[1]
    c6 = dataclasses.replace(c, families=("ipv4", "ipv6"))
    v6 = cfg.eid.announce[1]
    assert next_hop_for(c6, v6) == str(ip_address("::ffff:10.255.2.1"))
    assert next_hop_for(c6, cfg.eid.announce[0]) == "self"


def test_ipv4_prefix_over_ipv6_only_tunnel_uses_no_self() -> None:
    text = (EXAMPLES / "node-a.toml").read_text()
    cfg = parse_config(text)
    b = cfg.peers[0]
    v6_only = dataclasses.replace(b, tunnel=dataclasses.replace(b.tunnel, local_ipv4=None, remote_ipv4=None))
    assert next_hop_for(v6_only, cfg.eid.announce[1]) == "self"
    with pytest.raises(ExabgpConfigError, match="no IPv4 tunnel address"):
        next_hop_for(v6_only, cfg.eid.announce[0])


@pytest.mark.parametrize("bad", ['pa"ss', "pa;ss", "a\nb", "x}"])
def test_unrenderable_password_is_refused(bad: str) -> None:
    cfg = node_a()
    peer = dataclasses.replace(cfg.peers[0], md5_password=bad)
    with pytest.raises(ExabgpConfigError, match="md5_password"):
        render_exabgp_config(dataclasses.replace(cfg, peers=(peer,)), RUN)


def test_bad_run_command_or_process_name() -> None:
    with pytest.raises(ExabgpConfigError):
        render_exabgp_config(node_a(), "bridge; rm -rf /")
    with pytest.raises(ExabgpConfigError):
        render_exabgp_config(node_a(), RUN, process="a b")


def test_committed_example_matches_the_renderer() -> None:
    """exabgp.conf.d/node-a.conf is documentation: it must be what the code renders today."""
    example = (ROOT / "exabgp.conf.d" / "node-a.conf").read_text()
    rendered = render_exabgp_config(node_a(), "/usr/local/bin/alt-router exabgp-bridge")
    assert rendered[rendered.index("\nprocess "):] == example[example.index("\nprocess "):]


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("node-*.toml")))
def test_exabgp_validates_the_rendering(tmp_path: Path, name: str) -> None:
    exabgp = require_tool("exabgp")
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_exabgp_config(load_config(EXAMPLES / name), RUN))
    proc = subprocess.run([exabgp, "validate", "-n", "-r", str(conf)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_exabgp_validator_catches_a_broken_rendering(tmp_path: Path) -> None:
    """The validation above can fail: a neighbor with an invalid keyword is refused."""
    exabgp = require_tool("exabgp")
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_exabgp_config(node_a(), RUN).replace("hold-time 90;", "hold-time 90;\n bogus 1;"))
    proc = subprocess.run([exabgp, "validate", str(conf)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode != 0


def test_every_neighbor_listens_on_its_local_address() -> None:
    # ExaBGP only connects out by default: two alt-router nodes would never establish.
    text = render_exabgp_config(node_a(), RUN)
    blocks = text.split("\nneighbor ")[1:]
    assert blocks and all("\n    listen 179;\n" in b for b in blocks)
    assert text.count("listen 179;") == len(node_a().peers)


def test_stop_grace_grows_with_the_table_within_bounds() -> None:
    assert exabgp_stop_grace(0) == 5.0
    assert exabgp_stop_grace(-1) == 5.0
    assert exabgp_stop_grace(1_000_000) == pytest.approx(25.0)
    assert exabgp_stop_grace(1_000_000) > exabgp_stop_grace(100_000) > exabgp_stop_grace(0)
    assert exabgp_stop_grace(10**9) == 120.0


def test_exabgp_keeps_no_adj_rib_in_of_its_own() -> None:
    # The daemon's RIB is the Adj-RIB-In; ExaBGP's default copy doubled the memory of a full table.
    text = render_exabgp_config(node_a(), RUN)
    assert text.count("    adj-rib-in false;\n") == len(node_a().peers)


def _exabgp_log_settings(exabgp: str, env: dict[str, str]) -> dict[str, str]:
    """The [exabgp.log] section ExaBGP itself reports for ``env`` (``exabgp env``)."""
    proc = subprocess.run([exabgp, "env"], check=False, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout.split("[exabgp.log]", 1)[1].split("\n\n", 1)[0]
    return {k.strip(): v.strip().strip("'") for k, _, v in
            (line.partition("=") for line in section.splitlines() if "=" in line)}


def test_exabgp_logs_no_per_update_lines(tmp_path: Path) -> None:
    """ExaBGP's own log stays bounded: no line per route, message, packet or parsed attribute."""
    env = exabgp_env(tmp_path, "a")
    assert env["exabgp.log.level"] == "WARNING"
    for category in ("all", "packets", "message", "routes", "rib", "parser", "timers", "statistics"):
        assert env[f"exabgp.log.{category}"] == "false"
    assert env["exabgp.log.destination"] == str(tmp_path / "exabgp.log")
    # And ExaBGP 5.0 reads them as meant (a misspelt option would be ignored silently).
    settings = _exabgp_log_settings(require_tool("exabgp"), env)
    assert settings["level"] == "WARNING"
    for category in ("all", "packets", "message", "routes", "rib", "parser", "timers", "statistics"):
        assert settings[category] == "false", category
    assert settings["destination"] == str(tmp_path / "exabgp.log")
