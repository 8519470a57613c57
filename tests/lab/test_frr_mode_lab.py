"""What ``alt-router lab up`` gives an FRR-integrated node (``[alt.nodes.X] bgp = "frr"``, issue 10):
its generated config, and a state dir the frr user can reach.  Pure: no namespaces, no root."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from alt_router.lab.alt_runner import LabDir, NodeConfigError, check_node_configs, make_searchable
from alt_router.lab.alt_topology import AltTopology
from alt_router.lab.processes import LabError
from alt_router.node.config import parse_config
from tests.conftest import require_tool

TOPOLOGY = Path(__file__).parents[1] / "integration" / "topologies" / "frr_mixed.toml"


@pytest.fixture
def alt() -> AltTopology:
    return AltTopology.from_toml(TOPOLOGY, name="frrlab")


def test_an_frr_mode_node_config_names_its_speaker_and_a_pathspace_of_its_lab(alt: AltTopology) -> None:
    config = parse_config(alt.node_config("fa", Path("/run/x/fa")), "fa.toml")
    assert config.node.bgp == "frr"
    # -N is machine-wide and host names repeat across labs: the lab's name is in it.
    assert config.frr_pathspace == "frrlab-fa"
    assert [p.name for p in config.peers] == ["mr", "ms"]


def test_an_exabgp_mode_node_config_has_no_frr_table(alt: AltTopology) -> None:
    text = alt.node_config("mr", Path("/run/x/mr"))
    assert "[frr]" not in text
    assert parse_config(text, "mr.toml").node.bgp == "exabgp"


def test_an_frr_table_in_extra_replaces_the_generated_one(alt: AltTopology) -> None:
    nodes = tuple(replace(n, extra='[frr]\npathspace = "mine"\n') if n.host == "fb" else n for n in alt.nodes)
    text = replace(alt, nodes=nodes).node_config("fb", Path("/run/x/fb"))
    assert text.count("[frr]") == 1
    assert parse_config(text, "fb.toml").frr_pathspace == "mine"


def test_the_state_dir_is_made_searchable_inside_the_lab_only() -> None:
    # Not pytest's tmp_path: its base directory is root-only, as no lab root may be.
    top = Path(tempfile.mkdtemp(prefix="alt-router-frrlab-"))
    try:
        _check_searchable(top)
    finally:
        top.chmod(0o755)
        shutil.rmtree(top)


def _check_searchable(top: Path) -> None:
    outside = top / "outside"
    lab = outside / "lab"
    state = lab / "nodes" / "fa" / "state"
    state.mkdir(parents=True)
    for d in (lab / "nodes" / "fa", lab / "nodes", lab):
        d.chmod(0o700)
    outside.chmod(0o755)
    top.chmod(0o755)
    make_searchable(state, lab)
    for d in (state, lab / "nodes" / "fa", lab / "nodes", lab):
        assert d.stat().st_mode & 0o777 == 0o755, d
    outside.chmod(0o700)
    with pytest.raises(LabError, match=f"{outside} is not searchable"):
        make_searchable(state, lab)
    assert outside.stat().st_mode & 0o777 == 0o700  # not the lab's to change


def test_up_refuses_an_frr_mode_node_without_frr_before_building_anything(alt: AltTopology) -> None:
    require_tool("zebra", "/usr/lib/frr/zebra")  # the other FRR-mode nodes find theirs
    nodes = tuple(replace(n, extra='[frr]\nbin_dir = "/nonexistent/frr"\n') if n.host == "fa" else n
                  for n in alt.nodes)
    with pytest.raises(NodeConfigError) as info:
        check_node_configs(replace(alt, nodes=nodes), LabDir("frrlab", Path("/nonexistent/root")))
    text = str(info.value)
    assert "node fa: bgp = \"frr\" needs /nonexistent/frr/zebra" in text, text
    assert "node fb" not in text  # the others have FRR where it is installed
