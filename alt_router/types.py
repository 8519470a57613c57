"""The address and prefix types every layer shares, defined once (issue 13).

A low module: it imports nothing from the package, so the codec, the RIB, the roles and the
edge can all use it without a dependency on each other.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
Prefix = IPv4Network | IPv6Network

__all__ = ["IPAddress", "Prefix"]
