"""The ALT overlay's datagram path: Map-Requests routed hop by hop on the BGP-learned EID prefixes."""

from alt_router.alt.forwarder import LOCAL, AltForwarder, RouteSource

__all__ = ["LOCAL", "AltForwarder", "RouteSource"]
