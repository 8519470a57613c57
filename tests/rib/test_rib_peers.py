"""Peers added, updated and removed while the RIB runs (a config reload)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from alt_router.rib import (
    AnnouncedRoute,
    DropReason,
    PeerDown,
    PeerInfo,
    Rib,
    RouteChange,
    TeardownPeer,
    Update,
)

B = PeerInfo("b", 65002, (ip_address("10.255.1.2"),), max_prefix=100)
C = PeerInfo("c", 65003, (ip_address("10.255.2.2"),), max_prefix=100)
ACCEPT = [ip_network("153.16.0.0/12")]


def ann(prefix: str, peer: PeerInfo, path: tuple[int, ...] = ()) -> AnnouncedRoute:
    return AnnouncedRoute(ip_network(prefix), peer.addresses[0], path or (peer.asn,))


def test_an_added_peer_is_known_by_address_and_its_routes_are_accepted() -> None:
    rib = Rib(65001, ACCEPT, [B])
    assert rib.peer_name_for("10.255.2.2") is None
    rib.add_peer(C)
    assert rib.peer_name_for("10.255.2.2") == "c"
    assert rib.peer("c") is not None and not rib.peer("c").up  # type: ignore[union-attr]
    rib.peer_up("c", 1.0)
    rib.apply(Update("c", (ann("153.16.3.0/24", C),)), 2.0)
    path = rib.get("153.16.3.0/24")
    assert path is not None and path.peer == "c" and path.next_hop_peer == "c"
    with pytest.raises(ValueError, match="configured already"):
        rib.add_peer(C)


def test_removing_a_peer_withdraws_its_routes_and_falls_back_to_another_path() -> None:
    rib = Rib(65001, ACCEPT, [B, C])
    for peer in (B, C):
        rib.peer_up(peer.name, 1.0)
    rib.apply(Update("c", (ann("153.16.3.0/24", C), ann("153.16.4.0/24", C))), 2.0)
    rib.apply(Update("b", (ann("153.16.4.0/24", B, (65002, 65009, 65003)),)), 2.0)
    out = rib.remove_peer("c", 3.0)
    kinds = {(c.kind, str(c.prefix)) for c in out if isinstance(c, RouteChange)}
    assert kinds == {("withdraw", "153.16.3.0/24"), ("change", "153.16.4.0/24")}
    assert any(isinstance(e, PeerDown) and e.reason == "removed from the config" for e in out)
    assert rib.get("153.16.3.0/24") is None
    assert rib.get("153.16.4.0/24").peer == "b"  # type: ignore[union-attr]
    assert rib.peer("c") is None and rib.peer_name_for("10.255.2.2") is None
    assert [s.info.name for s in rib.peers()] == ["b"]
    # A route naming the removed peer's address as next hop is now a counted drop, not a crash.
    rib.apply(Update("b", (AnnouncedRoute(ip_network("153.16.5.0/24"), C.addresses[0], (65002,)),)), 4.0)
    assert rib.get("153.16.5.0/24") is None
    assert rib.drops.get("b", DropReason.UNKNOWN_NEXT_HOP) == 1
    assert rib.remove_peer("c", 5.0) == []


def test_removing_the_only_peer_empties_the_table() -> None:
    rib = Rib(65001, ACCEPT, [B])
    rib.peer_up("b", 1.0)
    rib.apply(Update("b", (ann("153.16.3.0/24", B),)), 2.0)
    rib.remove_peer("b", 3.0)
    assert len(rib) == 0 and list(rib.peers()) == []


def test_a_lower_max_prefix_applies_to_the_next_update_without_a_reset() -> None:
    rib = Rib(65001, ACCEPT, [B])
    rib.peer_up("b", 1.0)
    rib.apply(Update("b", (ann("153.16.1.0/24", B), ann("153.16.2.0/24", B))), 2.0)
    rib.update_peer(PeerInfo("b", 65002, B.addresses, max_prefix=2))
    assert rib.peer("b").up  # type: ignore[union-attr]
    out = rib.apply(Update("b", (ann("153.16.3.0/24", B),)), 3.0)
    assert TeardownPeer("b", "max-prefix 2 exceeded") in out
    with pytest.raises(ValueError, match="addresses"):
        rib.update_peer(PeerInfo("b", 65002, C.addresses))
