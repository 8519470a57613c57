"""Everything ``alt-router run`` derives from a node config, checked without running anything.

``alt-router check`` prints what this returns; ``alt-router lab up`` runs it on every node config it
generates before it builds anything, so a lab never starts a node that ``check`` would refuse.
"""

from __future__ import annotations

from alt_router.bgp.exabgp_config import ExabgpConfigError
from alt_router.gre.config import TunnelConfigError
from alt_router.node.config import ConfigError, NodeConfig, parse_config
from alt_router.node.exabgp import exabgp_config_text
from alt_router.node.tunnels import tunnel_configs


class CheckError(Exception):
    """A node config that ``alt-router run`` would refuse; the message names the file and the key."""


def check_config(config: NodeConfig) -> str:
    """Everything ``alt-router run`` derives from a parsed config; returns the ExaBGP config text."""
    try:
        tunnel_configs(config)
        if config.exabgp.config is not None:
            text = config.exabgp.config.read_text()
            return f"# operator-supplied ExaBGP config {config.exabgp.config}, used as is\n{text}"
        return exabgp_config_text(config)
    except (ExabgpConfigError, TunnelConfigError, OSError) as exc:
        raise CheckError(f"{config.source}: {exc}") from exc


def check_config_text(text: str, source: str) -> str:
    """``alt-router check`` on config ``text`` read from ``source`` (a file name, for the messages)."""
    try:
        config = parse_config(text, source=source)
    except ConfigError as exc:
        raise CheckError(str(exc)) from exc
    return check_config(config)
