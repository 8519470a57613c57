"""Everything ``alt-router run`` derives from a node config, checked without running anything.

``alt-router check`` prints what this returns; ``alt-router lab up`` runs it on every node config it
generates before it builds anything, so a lab never starts a node that ``check`` would refuse.
"""

from __future__ import annotations

from alt_router.bgp.exabgp_config import ExabgpConfigError
from alt_router.bgp.frr_config import FrrConfigError, render_frr_config
from alt_router.gre.config import TunnelConfigError
from alt_router.node.config import ConfigError, NodeConfig, parse_config
from alt_router.node.exabgp import exabgp_config_text
from alt_router.node.tunnels import tunnel_configs


class CheckError(Exception):
    """A node config that ``alt-router run`` would refuse; the message names the file and the key."""


def check_config(config: NodeConfig) -> str:
    """Everything ``alt-router run`` derives from a parsed config; returns the ExaBGP config text
    (``bgp = "frr"``: what the node will run instead, and FRR's two config texts)."""
    try:
        tunnel_configs(config)
        if config.node.bgp == "frr":
            return frr_check_text(config)
        if config.exabgp.config is not None:
            text = config.exabgp.config.read_text()
            return f"# operator-supplied ExaBGP config {config.exabgp.config}, used as is\n{text}"
        return exabgp_config_text(config)
    except (ExabgpConfigError, FrrConfigError, TunnelConfigError, OSError) as exc:
        raise CheckError(f"{config.source}: {exc}") from exc


def frr_check_text(config: NodeConfig) -> str:
    """What FRR mode will do, as comments, then the zebra and bgpd configs it will write."""
    rendered = render_frr_config(config, vrf=config.frr.vrf)
    run_dir = config.node.state_dir / "frr"
    vrf = config.frr.vrf
    table = f"kernel VRF {vrf}" if vrf else "the main table of the node's network namespace"
    lines = [
        "# bgp = \"frr\": no ExaBGP.  The node runs its own FRR instance as the ALT's BGP speaker:",
        f"#   {config.frr.bin_dir / 'zebra'} then {config.frr.bin_dir / 'bgpd'}, -N {config.frr_pathspace}, "
        f"files and vty sockets in {run_dir} (owned by frr)",
        f"#   query it with: {config.frr.vtysh} --vty_socket {run_dir} -c 'show bgp summary'",
        f"#   ALT routes: installed by zebra in {table}, read back into the RIB over netlink",
        "#   forwarding: the kernel's (GRE tunnels without the userspace forwarder)",
        f"# --- {run_dir / 'zebra.conf'}",
        rendered.zebra.rstrip("\n"),
        f"# --- {run_dir / 'bgpd.conf'}",
        rendered.bgpd,
    ]
    return "\n".join(lines)


def check_config_text(text: str, source: str) -> str:
    """``alt-router check`` on config ``text`` read from ``source`` (a file name, for the messages)."""
    try:
        config = parse_config(text, source=source)
    except ConfigError as exc:
        raise CheckError(str(exc)) from exc
    return check_config(config)
