"""``alt-router config-schema [--lab]``: the JSON Schema of a node config file (or of a lab file).

Generated from the pydantic models that validate the files (``alt_router.node.config_model``,
``alt_router.lab.topology_model``), so it never drifts from what ``alt-router check`` accepts.
TOML-aware editors (Taplo, Even Better TOML) use it for completion, hover text and validation:
docs/configuration.md, "Editor support".  What a schema cannot say (a tunnel address inside its
subnet, sites that overlap, hosts that exist) is still checked by ``alt-router check`` / ``lab up``.
"""

from __future__ import annotations

import argparse
import json

from alt_router.lab.topology_model import LabFile
from alt_router.node.config_model import NodeFile
from alt_router.validation import json_schema


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "config-schema",
        help="print the JSON Schema of the node config (or, with --lab, of a lab file)",
        description="Print a JSON Schema (draft 2020-12) for TOML-aware editors, e.g. "
        "`alt-router config-schema > node.schema.json` and `#:schema ./node.schema.json` "
        "as the first line of the TOML file.",
    )
    p.add_argument("--lab", action="store_true", help="the schema of an ALT lab file instead")
    p.set_defaults(func=run)


def schema(lab: bool = False) -> dict[str, object]:
    if lab:
        return json_schema(LabFile, "alt-router ALT lab file")
    return json_schema(NodeFile, "alt-router node configuration")


def run(args: argparse.Namespace) -> int:
    print(json.dumps(schema(args.lab), indent=2, ensure_ascii=False))
    return 0
