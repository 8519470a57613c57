"""The ALT RIB: best path, policy drops with counters, max-prefix, peer down, EoR sweep."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address, ip_network

import pytest

from alt_router.rib import (
    AnnouncedRoute,
    DropReason,
    PeerDown,
    PeerInfo,
    PeerUp,
    Rib,
    RouteChange,
    TeardownPeer,
    Update,
)

LOCAL_AS = 65001
PEERS = [
    PeerInfo("b", 65002, (ip_address("10.255.1.2"), ip_address("fd00:1::2")), max_prefix=5),
    PeerInfo("c", 65003, (ip_address("10.255.2.2"),), max_prefix=100),
    PeerInfo("d", 65004, (ip_address("10.255.0.6"),), max_prefix=100),
]
NH = {"b": ip_address("10.255.1.2"), "c": ip_address("10.255.2.2"), "d": ip_address("10.255.0.6")}


def ann(prefix: str, peer: str, path: tuple[int, ...] = (), next_hop: str | None = None) -> AnnouncedRoute:
    nh = ip_address(next_hop) if next_hop else NH[peer]
    return AnnouncedRoute(ip_network(prefix), nh, path or (PEERS_ASN[peer],))


PEERS_ASN = {p.name: p.asn for p in PEERS}


def make_rib(*up: str) -> Rib:
    rib = Rib(LOCAL_AS, [ip_network("153.16.0.0/12"), ip_network("2001:db8::/32")], PEERS)
    for name in up:
        rib.peer_up(name, now=1.0)
    return rib


def changes(out: list[object]) -> list[tuple[str, str, str | None, str | None]]:
    return [(c.kind, str(c.prefix), c.old.peer if c.old else None, c.new.peer if c.new else None)
            for c in out if isinstance(c, RouteChange)]


def test_announce_then_lookup_and_withdraw() -> None:
    rib = make_rib("b")
    out = rib.apply(Update("b", (ann("153.16.0.0/16", "b"),)), now=2.0)
    assert changes(out) == [("add", "153.16.0.0/16", None, "b")]
    best = rib.lookup("153.16.1.1")
    assert best is not None and best.peer == "b" and best.next_hop_peer == "b" and best.learned_at == 2.0
    assert rib.lookup("153.17.0.1") is None and rib.lookup("garbage") is None
    out = rib.apply(Update("b", withdraw=(ip_network("153.16.0.0/16"),)))
    assert changes(out) == [("withdraw", "153.16.0.0/16", "b", None)]
    assert rib.lookup("153.16.1.1") is None and len(rib) == 0


def test_longest_match_across_peers() -> None:
    rib = make_rib("b", "c")
    rib.apply(Update("b", (ann("153.16.0.0/12", "b"),)))
    rib.apply(Update("c", (ann("153.17.1.0/24", "c"),)))
    assert rib.lookup("153.17.1.9").peer == "c"  # type: ignore[union-attr]
    assert rib.lookup("153.17.2.9").peer == "b"  # type: ignore[union-attr]
    assert [p.peer for p in rib.covering("153.17.1.0/24")] == ["c", "b"]
    assert [str(p.prefix) for p in rib.covered("153.16.0.0/12")] == ["153.16.0.0/12", "153.17.1.0/24"]


def test_best_path_shortest_as_path_wins() -> None:
    rib = make_rib("b", "c")
    rib.apply(Update("b", (ann("153.18.0.0/16", "b", (65002, 65009, 65010)),)))
    out = rib.apply(Update("c", (ann("153.18.0.0/16", "c", (65003, 65010)),)))
    assert changes(out) == [("change", "153.18.0.0/16", "b", "c")]
    # Withdrawing the best falls back to the other path.
    out = rib.apply(Update("c", withdraw=(ip_network("153.18.0.0/16"),)))
    assert changes(out) == [("change", "153.18.0.0/16", "c", "b")]
    assert [p.peer for p in rib.paths("153.18.0.0/16")] == ["b"]


def test_as_set_counts_as_one() -> None:
    rib = make_rib("b", "c")
    aset = AnnouncedRoute(ip_network("153.18.0.0/16"), NH["b"], (65002,), as_set=(1, 2, 3, 4))
    rib.apply(Update("b", (aset,)))
    rib.apply(Update("c", (ann("153.18.0.0/16", "c", (65003, 65010, 65011)),)))
    assert rib.get("153.18.0.0/16").peer == "b"  # type: ignore[union-attr]


def test_tie_broken_by_router_id_then_peer_address() -> None:
    rib = make_rib()
    rib.peer_up("b", 1.0, router_id=IPv4Address("192.0.2.9"))
    rib.peer_up("c", 1.0, router_id=IPv4Address("192.0.2.3"))
    rib.apply(Update("b", (ann("153.18.0.0/16", "b"),)))
    rib.apply(Update("c", (ann("153.18.0.0/16", "c"),)))
    assert rib.get("153.18.0.0/16").peer == "c"  # type: ignore[union-attr]
    # Without router-ids the lowest peer address decides: d (10.255.0.6) < b (10.255.1.2).
    rib2 = make_rib("b", "d")
    rib2.apply(Update("b", (ann("153.18.0.0/16", "b"),)))
    rib2.apply(Update("d", (ann("153.18.0.0/16", "d"),)))
    assert rib2.get("153.18.0.0/16").peer == "d"  # type: ignore[union-attr]
    assert [p.peer for p in rib2.paths("153.18.0.0/16")] == ["d", "b"]


def test_identical_reannouncement_is_not_an_event() -> None:
    rib = make_rib("b")
    rib.apply(Update("b", (ann("153.16.0.0/16", "b"),)), now=1.0)
    assert changes(rib.apply(Update("b", (ann("153.16.0.0/16", "b"),)), now=5.0)) == []
    out = rib.apply(Update("b", (ann("153.16.0.0/16", "b", (65002, 65005)),)))
    assert changes(out) == [("change", "153.16.0.0/16", "b", "b")]


def test_own_asn_is_dropped_and_counted() -> None:
    rib = make_rib("b")
    out = rib.apply(Update("b", (ann("153.16.0.0/16", "b", (65002, LOCAL_AS)),)))
    assert out == [] and rib.lookup("153.16.0.1") is None
    assert rib.drops.get("b", DropReason.OWN_ASN) == 1
    own_in_set = AnnouncedRoute(ip_network("153.17.0.0/16"), NH["b"], (65002,), as_set=(LOCAL_AS,))
    rib.apply(Update("b", (own_in_set,)))
    assert rib.drops.get("b", DropReason.OWN_ASN) == 2
    assert rib.drops.as_dict() == {"b": {"own-asn": 2}}


def test_refused_replacement_withdraws_the_old_path() -> None:
    rib = make_rib("b")
    rib.apply(Update("b", (ann("153.16.0.0/16", "b"),)))
    out = rib.apply(Update("b", (ann("153.16.0.0/16", "b", (65002, LOCAL_AS)),)))
    assert changes(out) == [("withdraw", "153.16.0.0/16", "b", None)]
    assert rib.adj_rib_in("b") == {}


def test_outside_eid_space_is_dropped() -> None:
    rib = make_rib("b")
    rib.apply(Update("b", (ann("10.0.0.0/8", "b"), ann("153.0.0.0/8", "b"), ann("153.16.1.0/24", "b"))))
    assert rib.drops.get("b", DropReason.OUTSIDE_EID_SPACE) == 2  # 153/8 is wider than the accepted /12
    assert len(rib) == 1


def test_unknown_next_hop_is_dropped_known_third_party_accepted() -> None:
    rib = make_rib("b")
    rib.apply(Update("b", (ann("153.16.0.0/16", "b", next_hop="10.9.9.9"),)))
    assert rib.drops.get("b", DropReason.UNKNOWN_NEXT_HOP) == 1
    rib.apply(Update("b", (ann("153.17.0.0/16", "b", next_hop="10.255.2.2"),)))
    assert rib.get("153.17.0.0/16").next_hop_peer == "c"  # type: ignore[union-attr]


def test_ipv6_route_with_ipv4_mapped_next_hop() -> None:
    rib = make_rib("b")
    rib.apply(Update("b", (ann("2001:db8:17::/48", "b", next_hop="::ffff:10.255.1.2"),)))
    best = rib.lookup("2001:db8:17::1")
    assert best is not None and best.next_hop_peer == "b"


def test_updates_from_unknown_or_down_peers_are_counted_drops() -> None:
    rib = make_rib()
    assert rib.apply(Update("b", (ann("153.16.0.0/16", "b"),))) == []
    assert rib.drops.get("b", DropReason.PEER_NOT_UP) == 1
    assert rib.apply(Update("zz", (ann("153.16.0.0/16", "b"),))) == []
    assert rib.drops.get("zz", DropReason.UNKNOWN_PEER) == 1


def test_max_prefix_tears_down_and_withdraws() -> None:
    rib = make_rib("b", "c")
    rib.apply(Update("c", (ann("153.20.0.0/16", "c"),)))
    first = tuple(ann(f"153.16.{i}.0/24", "b") for i in range(5))
    rib.apply(Update("b", first))
    assert len(rib.adj_rib_in("b")) == 5
    # Re-announcing a held prefix does not count against the limit.
    assert not any(isinstance(o, TeardownPeer) for o in rib.apply(Update("b", (first[0],))))
    out = rib.apply(Update("b", (ann("153.16.9.0/24", "b"), ann("153.16.10.0/24", "b"))), now=7.0)
    assert [o for o in out if isinstance(o, TeardownPeer)] == [TeardownPeer("b", "max-prefix 5 exceeded")]
    assert sum(1 for c in changes(out) if c[0] == "withdraw") == 5
    assert any(isinstance(o, PeerDown) and o.peer == "b" for o in out)
    assert rib.drops.get("b", DropReason.MAX_PREFIX) == 2
    assert rib.adj_rib_in("b") == {} and len(rib) == 1
    assert not rib.peer("b").up  # type: ignore[union-attr]
    # Until the session comes back, further updates are ignored.
    rib.apply(Update("b", (ann("153.16.0.0/24", "b"),)))
    assert len(rib) == 1 and rib.drops.get("b", DropReason.PEER_NOT_UP) == 1


def test_peer_down_withdraws_only_that_peer() -> None:
    rib = make_rib("b", "c")
    rib.apply(Update("b", (ann("153.16.0.0/16", "b"), ann("153.18.0.0/16", "b"))))
    rib.apply(Update("c", (ann("153.18.0.0/16", "c", (65003, 65004)),)))
    out = rib.peer_down("b", "hold timer expired", now=9.0)
    assert sorted(changes(out)) == [("change", "153.18.0.0/16", "b", "c"),
                                    ("withdraw", "153.16.0.0/16", "b", None)]
    assert out[-1] == PeerDown("b", "hold timer expired", 9.0)
    assert rib.peer_down("b", "again", now=10.0) == []  # idempotent
    assert rib.peer("b").last_down_reason == "hold timer expired"  # type: ignore[union-attr]


def test_restart_then_end_of_rib_sweeps_stale_routes() -> None:
    rib = make_rib("b")
    rib.apply(Update("b", (ann("153.16.0.0/16", "b"), ann("153.17.0.0/16", "b"),
                           ann("2001:db8:1::/48", "b", next_hop="fd00:1::2"))))
    # The session restarted without a down being seen (e.g. ExaBGP restarted).
    rib.peer_up("b", now=20.0)
    assert len(rib) == 3  # stale routes still forward until End-of-RIB
    rib.apply(Update("b", (ann("153.16.0.0/16", "b"),)))
    out = rib.end_of_rib("b", "ipv4")
    assert changes(out) == [("withdraw", "153.17.0.0/16", "b", None)]
    assert rib.get("2001:db8:1::/48") is not None  # the IPv6 EoR has not come yet
    assert changes(rib.end_of_rib("b", "ipv6")) == [("withdraw", "2001:db8:1::/48", "b", None)]
    assert rib.stats["swept"] == 2
    assert rib.end_of_rib("b", "ipv4") == []  # a second EoR finds nothing stale
    assert rib.end_of_rib("zz", "ipv4") == [] and rib.end_of_rib("b", "l2vpn") == []


def test_enhanced_route_refresh_sweeps_what_was_not_resent() -> None:
    rib = make_rib("b")
    rib.apply(Update("b", (ann("153.16.0.0/16", "b"), ann("153.17.0.0/16", "b"))))
    rib.apply(Update("b", (ann("2001:db8:1::/48", "b", next_hop="fd00:1::2"),)))
    rib.refresh_begin("b", "ipv4")
    rib.apply(Update("b", (ann("153.17.0.0/16", "b"),)))
    out = rib.refresh_end("b", "ipv4")
    assert changes(out) == [("withdraw", "153.16.0.0/16", "b", None)]
    # An unsolicited IPv6 EoR must not sweep IPv6 routes: the refresh was for IPv4 only.
    assert rib.end_of_rib("b", "ipv6") == [] and rib.get("2001:db8:1::/48") is not None


def test_events_published_on_the_stream_in_order() -> None:
    rib = make_rib()
    rib.peer_up("b", now=1.0)
    rib.apply(Update("b", (ann("153.16.0.0/16", "b"),)))
    rib.peer_down("b", "bye", now=3.0)
    events = [r.event for r in rib.stream.since(0)]
    assert events[0] == PeerUp("b", 1.0)
    assert isinstance(events[1], RouteChange) and events[1].kind == "add"
    assert isinstance(events[2], RouteChange) and events[2].kind == "withdraw"
    assert events[3] == PeerDown("b", "bye", 3.0)
    assert [r.seq for r in rib.stream.since(0)] == [1, 2, 3, 4]


def test_peer_name_for_address_and_unknown_peer_state() -> None:
    rib = make_rib()
    assert rib.peer_name_for("fd00:1::2") == "b"
    assert rib.peer_name_for("10.255.2.2") == "c"
    assert rib.peer_name_for("10.1.1.1") is None and rib.peer_name_for("junk") is None
    assert rib.peer_up("zz", 1.0) == [] and rib.peer_down("zz", "x", 1.0) == []


@pytest.mark.parametrize("n", [2000])
def test_bulk_load_and_withdraw(n: int) -> None:
    peers = [PeerInfo("b", 65002, (ip_address("10.255.1.2"),), max_prefix=n)]
    rib = Rib(LOCAL_AS, [ip_network("153.0.0.0/8")], peers)
    rib.peer_up("b", 0.0)
    anns = tuple(
        AnnouncedRoute(ip_network(((153 << 24) + (i << 8), 24)), NH["b"], (65002,)) for i in range(n)
    )
    rib.apply(Update("b", anns))
    assert len(rib) == n
    rib.peer_down("b", "done", 1.0)
    assert len(rib) == 0 and len(list(rib.routes())) == 0
