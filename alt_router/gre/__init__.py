"""GRE tunnels (RFC 2784, RFC 2890) for the ALT overlay: header codec, userspace and kernel data paths.

``make_tunnels(configs, mode)`` is the entry point; ``Engine`` is the userspace
data path with its inner-packet hook, for code that forwards between tunnels.
"""

from alt_router.gre.config import TunnelConfig, TunnelConfigError, load_toml
from alt_router.gre.dataplane import DELIVER, Deliver, Drop, Forward, InnerHook, Local, Verdict
from alt_router.gre.header import GreError, GreHeader, decode, encode
from alt_router.gre.tunnel import ModeError, Tunnels, choose_mode, make_tunnels

__all__ = [
    "DELIVER",
    "Deliver",
    "Drop",
    "Forward",
    "GreError",
    "GreHeader",
    "InnerHook",
    "Local",
    "ModeError",
    "TunnelConfig",
    "TunnelConfigError",
    "Tunnels",
    "Verdict",
    "choose_mode",
    "decode",
    "encode",
    "load_toml",
    "make_tunnels",
]
