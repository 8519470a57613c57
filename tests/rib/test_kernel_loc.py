"""The FRR-mode Loc-RIB (``rib/kernel_loc.py`` behind ``Rib.mirror_kernel``) answers every query as the
ExaBGP mode's pytricia Loc-RIB does for the same routes (issue 10: API output unchanged)."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest

from alt_router.api.query import RoutesQuery, select_routes
from alt_router.rib import Rib
from alt_router.rib.kernel_loc import KernelLoc, SortedKeys, Via, int_key, path_of, text_key
from alt_router.rib.paths import NO_ATTRIBUTES, Path, PeerInfo
from alt_router.rib.table import DualTable

B_ADDR, C_ADDR = IPv4Address("10.255.0.2"), IPv4Address("10.255.0.6")
B6 = IPv6Address("fd00::2")
PEERS = [PeerInfo("b", 65001, (B_ADDR, B6)), PeerInfo("c", 65002, (C_ADDR,))]
HOP_B = ("b", B_ADDR, B_ADDR, "b", NO_ATTRIBUTES)
HOP_C = ("c", C_ADDR, C_ADDR, "c", NO_ATTRIBUTES)
HOP_B6 = ("b", B6, IPv6Address("fe80::2"), "b", NO_ATTRIBUTES)


def random_prefix(rng: random.Random) -> str:
    if rng.random() < 0.2:
        plen = rng.choice([0, 16, 32, 48, 64, 128])
        net = rng.getrandbits(16) << 112 if plen else 0
        return str(ip_network((net >> (128 - plen) << (128 - plen) if plen else 0, plen)))
    # Short IPv4 prefixes are rare: each paints up to 2^24 FIB entries.
    plen = rng.choice([0, 8, 12, 16, 20, 24, 24, 24, 24, 25, 28, 32]) if rng.random() < 0.1 else rng.choice(
        [16, 20, 24, 24, 24, 25, 28, 32])
    net = (153 << 24 | rng.getrandbits(12) << 8 | rng.getrandbits(8)) if plen else 0
    return str(ip_network((net >> (32 - plen) << (32 - plen) if plen else 0, plen)))


def test_sorted_keys_is_a_sorted_set() -> None:
    rng = random.Random(1)
    keys = SortedKeys()
    SortedKeys.LOAD, load = 4, SortedKeys.LOAD  # small blocks: splits and emptied blocks happen
    try:
        model: set[int] = set()
        for _ in range(3000):
            k = rng.randrange(400)
            if rng.random() < 0.6:
                assert keys.add(k) == (k not in model)
                model.add(k)
            else:
                assert keys.discard(k) == (k in model)
                model.discard(k)
            assert len(keys) == len(model)
        assert list(keys.after(None)) == sorted(model)
        assert list(keys.after(200)) == sorted(k for k in model if k > 200)
        assert list(keys.between(50, 150)) == sorted(k for k in model if 50 <= k <= 150)
        assert all((k in keys) == (k in model) for k in range(410))
    finally:
        SortedKeys.LOAD = load


def test_int_keys_round_trip_and_refuse_bad_text() -> None:
    texts = ["0.0.0.0/0", "153.16.1.0/24", "255.255.255.255/32", "::/0", "2001:db8::/32", "::ffff:0:0/96"]
    for text in texts:
        v6, ikey = int_key(text)
        assert text_key(v6, ikey) == str(ip_network(text))
        assert ikey == int(ip_network(text).network_address) << 8 | ip_network(text).prefixlen
    for bad in ["153.16.1.1/24", "153.16.1.0", "153.16.1.0/33", "x/8", "2001:db8::1/32"]:
        with pytest.raises(ValueError, match="not a prefix"):
            int_key(bad)


@pytest.mark.parametrize("seed", range(6))
def test_mirror_answers_like_the_pytricia_loc_rib(seed: int) -> None:
    rng = random.Random(seed)
    rib = Rib(65000, [], PEERS)
    rib.mirror_kernel()
    ref: DualTable[Path] = DualTable("dir24")
    now = 0.0
    for _ in range(60):
        now += 1.0
        batch: list[tuple[str, int, Via | None]] = []
        vias = {id(h): (h, now) for h in (HOP_B, HOP_C, HOP_B6)}
        for _ in range(rng.randrange(1, 40)):
            key = random_prefix(rng)
            v6, ikey = int_key(key)
            if rng.random() < 0.35:
                batch.append((key, ikey, None))
                if key in ref:
                    ref.delete(key)
            else:
                hop = HOP_B6 if v6 else rng.choice([HOP_B, HOP_C])
                via = vias[id(hop)]
                held = ref.get(key)
                if held is None or held.next_hop != hop[2]:  # the same hop again keeps learned_at
                    ref.insert(key, path_of(key, via))
                batch.append((key, ikey, via))
        rib.apply_kernel_routes(batch)
    assert len(rib) == len(ref)
    assert list(rib.routes()) == [p for _, p in ref]
    assert rib.routes_after(None, 10**6) == [p for _, p in ref.items_after(None, 10**6)]
    for _ in range(200):
        probe = random_prefix(rng)
        assert rib.get(probe) == ref.get(probe)
        assert rib.routes_after(probe, 7) == [p for _, p in ref.items_after(probe, 7)]
        assert rib.covered(probe) == [p for _, p in ref.covered(probe)]
        assert rib.covering(probe) == [p for _, p in ref.covering(probe)]
        net = ip_network(probe)
        address = net.network_address + rng.randrange(net.num_addresses)
        found = ref.lookup(address)
        assert rib.lookup(address) == (None if found is None else found[1])
        assert rib.lookup_packed(address.packed) == (None if found is None else found[1])
    for path in rib.routes():  # learned_at too, which equality ignores
        held = ref.get(path.key)
        assert held is not None and held.learned_at == path.learned_at


def test_delete_hands_the_space_back_to_the_covering_route() -> None:
    loc = KernelLoc()
    via = (HOP_B, 1.0)
    for key in ["153.0.0.0/8", "153.16.0.0/16", "153.16.1.0/24", "153.16.1.128/25"]:
        loc.set(*int_key(key), via)
    assert loc.delete(*int_key("153.16.1.0/24")) == via
    assert loc.lookup(ip_address("153.16.1.9").packed) == ("153.16.0.0/16", via)
    assert loc.lookup(ip_address("153.16.1.200").packed) == ("153.16.1.128/25", via)
    loc.delete(*int_key("153.16.0.0/16"))
    assert loc.lookup(ip_address("153.16.1.9").packed) == ("153.0.0.0/8", via)
    assert loc.delete(*int_key("153.16.0.0/16")) is None
    assert len(loc) == 2


def test_a_resynchronising_dump_changes_nothing_and_keeps_learned_at() -> None:
    rib = Rib(65000, [], PEERS)
    first = [(k, int_key(k)[1], (HOP_B, 1.0)) for k in ("153.16.1.0/24", "153.16.2.0/24")]
    assert rib.apply_kernel_routes(first) == 2
    seq = rib.stream.last_seq
    # An equal hop that is another object (the decoder's cache was reset) is no change either.
    again = [(k, i, ((*HOP_B[:2], IPv4Address(str(B_ADDR)), *HOP_B[3:]), 2.0)) for k, i, _ in first]
    assert rib.apply_kernel_routes(again) == 0 and rib.stream.last_seq == seq  # type: ignore[arg-type]
    assert [p.learned_at for p in rib.routes()] == [1.0, 1.0]


def test_routes_by_peer_in_frr_mode_are_the_routes_via_its_tunnel_address() -> None:
    """/v1/routes?peer=X in FRR mode: the routes whose kernel next hop is X's tunnel address."""
    rib = Rib(65000, [], PEERS)
    routes = [(f"153.16.{i}.0/24", HOP_B if i % 3 else HOP_C) for i in range(30)]
    routes.append(("2001:db8::/32", HOP_B6))
    rib.apply_kernel_routes([(k, int_key(k)[1], (hop, 5.0)) for k, hop in routes])
    via_c = [k for k, hop in routes if hop is HOP_C]
    page = select_routes(rib, RoutesQuery(peer="c", limit=4))
    assert page["total"] == len(via_c) == 10
    assert [r["prefix"] for r in page["routes"]] == via_c[:4]
    assert all(r["best"] and r["next_hop"] == str(C_ADDR) for r in page["routes"])
    seen = [r["prefix"] for r in page["routes"]]
    while page["next_cursor"] is not None:
        page = select_routes(rib, RoutesQuery(peer="c", limit=4, cursor=ip_network(page["next_cursor"])))
        seen += [r["prefix"] for r in page["routes"]]
    assert seen == via_c
    # Peer b's tunnel addresses are 10.255.0.2 and fd00::2; its IPv6 route goes via fe80::2.
    assert select_routes(rib, RoutesQuery(peer="b", limit=100))["total"] == 20
    with_prefix = select_routes(rib, RoutesQuery(prefix=ip_network("153.16.0.0/20"), match="longer",
                                                 peer="c", limit=100))
    assert [r["prefix"] for r in with_prefix["routes"]] == [k for k in via_c if int(k.split(".")[2]) < 16]
