"""The RIB's bulk path: batches of prefix text sharing attributes, lazy prefixes, link-local next hops."""

from __future__ import annotations

import pickle
from ipaddress import IPv4Network, IPv6Address, ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alt_router.rib import DropReason, PeerInfo, Rib, RouteChange, TeardownPeer, Update
from alt_router.rib.paths import Attributes, Batch, Path, prefix_key

LOCAL_AS = 65001
B = PeerInfo("b", 65002, (ip_address("10.255.1.2"), ip_address("fd00:1::2")), max_prefix=10)
C = PeerInfo("c", 65003, (ip_address("10.255.2.2"),), max_prefix=100)
ATTRS = Attributes((65002,))


def make_rib(*up: str) -> Rib:
    rib = Rib(LOCAL_AS, [ip_network("153.16.0.0/12"), ip_network("2001:db8::/32")], [B, C])
    for name in up:
        rib.peer_up(name, now=1.0)
    return rib


def batch(*prefixes: str, nh: str = "10.255.1.2", attrs: Attributes = ATTRS) -> Batch:
    return Batch(ip_address(nh), attrs, prefixes)


def kinds(out: list[object]) -> list[tuple[str, str]]:
    return [(c.kind, c.key) for c in out if isinstance(c, RouteChange)]


def test_a_batch_is_applied_with_one_shared_attributes_object() -> None:
    rib = make_rib("b")
    out = rib.apply(Update("b", batches=(batch("153.16.0.0/24", "153.16.1.0/24", "2001:db8:1::/48",
                                                nh="fd00:1::2"),)), now=2.0)
    # The IPv4 NLRI with an IPv6 next hop are still the peer's (same tunnel): all three land.
    assert kinds(out) == [("add", "153.16.0.0/24"), ("add", "153.16.1.0/24"), ("add", "2001:db8:1::/48")]
    paths = [rib.get(p) for p in ("153.16.0.0/24", "153.16.1.0/24", "2001:db8:1::/48")]
    assert all(p is not None and p.attributes is ATTRS for p in paths)
    # The tie-break address is the session address of the prefix's family.
    want = [ip_address("10.255.1.2")] * 2 + [ip_address("fd00:1::2")]
    assert [p.peer_address for p in paths if p] == want
    assert rib.lookup_packed(ip_address("153.16.1.7").packed) is paths[1]
    assert rib.stats["accepted"] == 3


def test_batch_drops_are_counted_per_reason_and_replace_older_paths() -> None:
    rib = make_rib("b")
    rib.apply(Update("b", batches=(batch("153.16.0.0/24", "153.16.1.0/24"),)))
    # Outside the EID space: dropped one by one, the others in the batch still land.
    rib.apply(Update("b", batches=(batch("10.0.0.0/8", "153.16.2.0/24"),)))
    assert rib.drops.get("b", DropReason.OUTSIDE_EID_SPACE) == 1 and rib.get("153.16.2.0/24") is not None
    # Our AS in the path refuses the whole batch, and withdraws what the batch replaces (RFC 7606 §2).
    out = rib.apply(Update("b", batches=(batch("153.16.0.0/24", "153.16.9.0/24",
                                               attrs=Attributes((65002, LOCAL_AS))),)))
    assert kinds(out) == [("withdraw", "153.16.0.0/24")]
    assert rib.drops.get("b", DropReason.OWN_ASN) == 2
    out = rib.apply(Update("b", batches=(batch("153.16.1.0/24", nh="192.0.2.9"),)))
    assert kinds(out) == [("withdraw", "153.16.1.0/24")]
    assert rib.drops.get("b", DropReason.UNKNOWN_NEXT_HOP) == 1


def test_reannouncing_identical_attributes_is_not_a_change_but_new_ones_are() -> None:
    rib = make_rib("b")
    rib.apply(Update("b", batches=(batch("153.16.0.0/24"),)), now=2.0)
    same = Attributes((65002,))  # equal to ATTRS, another object
    assert rib.apply(Update("b", batches=(batch("153.16.0.0/24", attrs=same),)), now=3.0) == []
    path = rib.get("153.16.0.0/24")
    assert path is not None and path.learned_at == 2.0
    out = rib.apply(Update("b", batches=(batch("153.16.0.0/24", attrs=Attributes((65002, 65009))),)), now=4.0)
    assert kinds(out) == [("change", "153.16.0.0/24")]


def test_withdraw_keys_and_max_prefix_inside_a_batch() -> None:
    rib = make_rib("b")
    rib.apply(Update("b", batches=(batch("153.16.0.0/24", "153.16.1.0/24"),)))
    out = rib.apply(Update("b", withdraw_keys=("153.16.0.0/24", "153.16.7.0/24")))
    assert kinds(out) == [("withdraw", "153.16.0.0/24")] and rib.stats["withdrawn"] == 2
    # Peer b may hold 10: the 11th prefix tears the session down and the rest is refused.
    many = tuple(f"153.17.{i}.0/24" for i in range(12))
    out = rib.apply(Update("b", batches=(batch(*many[:6]), batch(*many[6:]))), now=5.0)
    assert isinstance(out[-1], TeardownPeer) and out[-1].peer == "b"
    assert rib.drops.get("b", DropReason.MAX_PREFIX) == 3  # 12 offered, 9 fitted beside the 1 held
    assert len(rib) == 0 and not rib.peer("b").up  # type: ignore[union-attr]


def test_link_local_next_hop_belongs_to_the_session_peer() -> None:
    rib = make_rib("b", "c")
    ll = "fe80::5054:ff:fe12:3456"
    out = rib.apply(Update("b", batches=(batch("2001:db8:b::/48", nh=ll),)))
    assert kinds(out) == [("add", "2001:db8:b::/48")]
    path = rib.get("2001:db8:b::/48")
    assert path is not None and path.next_hop == IPv6Address(ll) and path.next_hop_peer == "b"
    assert rib.next_hop_peer("b", ip_address(ll)) == "b"
    assert rib.next_hop_peer("b", ip_address("fd00:9::1")) is None  # global and unknown: still dropped
    # A link-local next hop can only mean the sender: c's route with one maps to c, not b.
    rib.apply(Update("c", batches=(batch("2001:db8:c::/48", nh=ll, attrs=Attributes((65003,))),)))
    path = rib.get("2001:db8:c::/48")
    assert path is not None and path.next_hop_peer == "c"
    assert rib.drops.total(DropReason.UNKNOWN_NEXT_HOP) == 0


def test_stale_marks_survive_only_until_reannounced_or_swept() -> None:
    rib = make_rib("b")
    rib.apply(Update("b", batches=(batch("153.16.0.0/24", "153.16.1.0/24", "153.16.2.0/24"),)))
    rib.refresh_begin("b", "ipv4")
    rib.apply(Update("b", batches=(batch("153.16.1.0/24"),)))
    rib.apply(Update("b", withdraw_keys=("153.16.2.0/24",)))
    out = rib.refresh_end("b", "ipv4")
    assert kinds(out) == [("withdraw", "153.16.0.0/24")] and rib.stats["swept"] == 1
    assert rib.refresh_end("b", "ipv4") == []


def test_path_builds_its_prefix_on_demand_and_stays_immutable() -> None:
    attrs = Attributes((65002, 65003), (7,), "egp", 5, ((65002, 1),))
    nh = ip_address("10.255.1.2")
    lazy = Path.from_key("153.16.0.0/24", "b", nh, nh, "b", attrs, 1.0)
    eager = Path(ip_network("153.16.0.0/24"), "b", ip_address("10.255.1.2"), ip_address("10.255.1.2"), "b",
                 (65002, 65003), (7,), "egp", 5, ((65002, 1),), learned_at=9.0)
    assert lazy.prefix == IPv4Network("153.16.0.0/24") and lazy.prefix is lazy.prefix
    assert lazy == eager and hash(lazy) == hash(eager)  # learned_at is not part of the route
    assert (lazy.as_path, lazy.as_set, lazy.origin, lazy.med, lazy.communities) == (
        (65002, 65003), (7,), "egp", 5, ((65002, 1),))
    assert lazy.path_length == 3 and lazy.afi == "ipv4"
    assert lazy != Path.from_key("153.16.0.0/24", "c", ip_address("10.255.1.2"), ip_address("10.255.1.2"),
                                 "b", attrs, 1.0)
    with pytest.raises(AttributeError):
        lazy.peer = "x"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(lazy)) == lazy
    assert "153.16.0.0/24" in repr(lazy)
    assert Path("2001:db8::/32", "b", ip_address("fd00:1::2"), ip_address("fd00:1::2")).key == "2001:db8::/32"


@pytest.mark.parametrize("bad", ["153.16.0.1/24", "153.16.0.0/33", "153.16.0.0", "153.16.0/24", "01.2.3.0/24",
                                 "1.2.3.0/024", "1.2.3.0/-1", " 1.2.3.0/24", "1.2.3.0/2x", "", "/24",
                                 "2001:db8::1/32", "2001:db8::/129", "zz::/8", "153.16.0.0/"])
def test_prefix_key_refuses_what_ip_network_refuses(bad: str) -> None:
    assert prefix_key(bad) is None


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
        lambda t: ip_network((t[0], t[1]), strict=False)),
    st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)).map(
        lambda t: ip_network((t[0], t[1]), strict=False)),
))
def test_prefix_key_is_the_canonical_text(net: IPv4Network) -> None:
    assert prefix_key(str(net)) == str(net)
    assert Path.from_key(str(net), "b", ip_address("10.0.0.1"), ip_address("10.0.0.1"), "b",
                         ATTRS, 0.0).prefix == net


def test_the_only_peer_going_down_withdraws_each_route_once() -> None:
    rib = Rib(LOCAL_AS, [ip_network("153.16.0.0/12"), ip_network("2001:db8::/32")], [B])
    rib.peer_up("b", 1.0)
    rib.apply(Update("b", batches=(batch("153.16.0.0/24", "153.16.1.0/24"),
                                   batch("2001:db8:1::/48", nh="fd00:1::2"))))
    out = rib.peer_down("b", "gone", 2.0)
    assert sorted(kinds(out)) == [("withdraw", "153.16.0.0/24"), ("withdraw", "153.16.1.0/24"),
                                  ("withdraw", "2001:db8:1::/48")]
    assert len(rib) == 0 and rib.lookup("153.16.0.1") is None and rib.lookup("2001:db8:1::1") is None
    assert rib.stream.last_seq == 1 + 3 + 3 + 1  # up, three adds, three withdraws, down
    rib.peer_up("b", 3.0)  # and it can come back
    rib.apply(Update("b", batches=(batch("153.16.0.0/24"),)))
    assert len(rib) == 1
