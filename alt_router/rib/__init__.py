"""The ALT RIB: routes learned over the ALT's BGP sessions and the LPM table Map-Request forwarding uses."""

from alt_router.rib.events import EventStream, PeerDown, PeerUp, Record, RouteChange, StreamGap
from alt_router.rib.paths import AnnouncedRoute, Path, PeerInfo, Update
from alt_router.rib.policy import DropReason, TeardownPeer
from alt_router.rib.rib import Rib
from alt_router.rib.table import DualTable, LpmTable, TableError

__all__ = [
    "AnnouncedRoute", "DropReason", "DualTable", "EventStream", "LpmTable", "Path", "PeerDown", "PeerInfo",
    "PeerUp", "Record", "Rib", "RouteChange", "StreamGap", "TableError", "TeardownPeer", "Update",
]
