"""The FRR-mode tests' topologies, by file name, from ``frr/``: the lab and the node configs.

A test names the files it runs (``frr_lab("lab_veth.toml", name)``, ``frr_node("node_one_peer.toml",
state_dir=...)``); what only that test needs (a password, a max-prefix) it sets on the parsed
config with ``dataclasses.replace``.  They live in a directory of their own:
tests/node/test_config_schema.py checks every ``topologies/*.toml`` as an ``[alt]`` lab file.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from alt_router.lab import Topology
from alt_router.node.config import NodeConfig, parse_config

FILES = Path(__file__).parent / "frr"


def frr_lab(file: str, name: str) -> Topology:
    """``frr/FILE`` (a lab topology) with its name replaced by ``name`` (the test's per-run lab name)."""
    data = tomllib.loads((FILES / file).read_text())
    data["name"] = name
    return Topology.from_dict(data)


def frr_node(file: str, *, state_dir: Path, **tables: dict[str, str | int]) -> NodeConfig:
    """``frr/FILE`` (a node config) with ``[node] state_dir`` and the keys of ``tables`` set, e.g.
    ``frr={"bin_dir": ...}``, ``api={"port": ...}``: what is only known when the test runs."""
    text = (FILES / file).read_text()
    for table, keys in {"node": {"state_dir": str(state_dir)}, **tables}.items():
        lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items())
        header = f"[{table}]\n"
        # A table's keys must come before the next table: right after its header.
        text = text.replace(header, header + lines, 1) if header in text else f"{text}\n{header}{lines}"
    return parse_config(text, source=str(FILES / file))
