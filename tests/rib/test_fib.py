"""The DIR-24-8 IPv4 FIB: exact against pytricia under any insert/delete sequence, edge cases, bad input."""

from __future__ import annotations

import weakref
from ipaddress import IPv4Network, ip_address, ip_network

import pytest
import pytricia
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alt_router.node.config import ConfigError, parse_config
from alt_router.rib.fib import Dir24Fib, FibError
from alt_router.rib.paths import Attributes, Batch, PeerInfo, Update
from alt_router.rib.rib import Rib
from alt_router.rib.table import DualTable, LpmTable, TableError

# Prefixes cluster around a few anchors so that random ones nest deeply: a /24 with /25../32
# inside it and /8../23 around it, on both sides of a /24 and a /16 boundary, and at both ends
# of the address space.
ANCHORS = [0x0A0102C5, 0x0A010280, 0x0A0102FF, 0x0A010300, 0x0A01FFFF, 0x0A020000, 0x00000000, 0xFFFFFFFF]
# Every length 0..32; the short ones, which rewrite up to 2^24 entries each, less often.
LENGTHS = st.one_of(st.integers(0, 32), st.integers(20, 32), st.integers(23, 26))


def net_of(anchor: int, length: int) -> int:
    return anchor >> (32 - length) << (32 - length) if length else 0


@st.composite
def prefixes(draw: st.DrawFn) -> tuple[int, int]:
    flip = draw(st.sampled_from([0, 0, 0, 1 << 4, 1 << 8, 1 << 12, 1 << 20]))
    anchor = draw(st.sampled_from(ANCHORS)) ^ flip
    length = draw(LENGTHS)
    return net_of(anchor, length), length


def text(prefix: tuple[int, int]) -> str:
    return str(IPv4Network(prefix))


def edges(present: set[tuple[int, int]]) -> set[int]:
    """Both ends of every prefix and the addresses just outside and just inside them."""
    out: set[int] = set()
    for net, length in present:
        last = net + (1 << (32 - length)) - 1
        out.update(a for a in (net - 1, net, net + 1, last - 1, last, last + 1) if 0 <= a <= 0xFFFFFFFF)
    return out


def assert_matches(table: LpmTable[int], ref: pytricia.PyTricia, addresses: set[int]) -> None:
    for a in addresses:
        packed = a.to_bytes(4, "big")
        want = ref.get(packed)
        assert table.lookup_packed(packed) == want, f"{ip_address(a)}: want {want}"
        key = ref.get_key(packed)
        found = table.lookup(ip_address(a))
        assert (None if found is None else str(found[0])) == key, f"{ip_address(a)}"


# Each scenario runs in a helper that returns its failure as text: hypothesis keeps the traceback
# of every failing example while it shrinks, and a traceback keeps its frames' tables alive (up to
# 80 MiB of touched pages each), so no frame holding a FIB may appear in one.

def run_table_ops(ops: list[tuple[str, tuple[int, int], int]], extra: list[int]) -> str | None:
    table: LpmTable[int] = LpmTable(4, "dir24")
    ref = pytricia.PyTricia(32)
    present: set[tuple[int, int]] = set()
    try:
        for step, (action, drawn, value) in enumerate(ops):
            # "remove" takes a prefix that is there (the drawn one is mostly not).
            prefix = sorted(present)[value % len(present)] if action == "remove" and present else drawn
            key = text(prefix)
            if action == "insert":
                # Few distinct values: neighbours holding equal values must stay independent.
                table.insert(key, value)
                ref[key] = value
                present.add(prefix)
            else:
                assert table.delete(key) is (prefix in present)
                if prefix in present:
                    del ref[key]
                    present.discard(prefix)
            assert len(table) == len(present), f"step {step}"
            assert_matches(table, ref, edges(present) | set(extra) | {0, 0xFFFFFFFF})
    except AssertionError as exc:
        return str(exc)
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(st.tuples(st.sampled_from(["insert", "insert", "delete", "remove"]), prefixes(),
                           st.integers(0, 3)), min_size=1, max_size=25),
    extra=st.lists(st.integers(0, 0xFFFFFFFF), max_size=20),
)
def test_fib_matches_pytricia_after_every_step(
    ops: list[tuple[str, tuple[int, int], int]], extra: list[int],
) -> None:
    failure = run_table_ops(ops, extra)
    assert failure is None, failure


def run_fib_ops(ops: list[tuple[bool, tuple[int, int]]]) -> str | None:
    fib: Dir24Fib[str] = Dir24Fib()
    ref = pytricia.PyTricia(32)
    try:
        for is_insert, (net, length) in ops:
            key = text((net, length))
            if is_insert:
                assert fib.insert(net, length, key) is not ref.has_key(key)
                ref[key] = key
            elif ref.has_key(key):
                parent = ref.parent(key)
                covering = None if parent is None else (int(ip_network(parent).network_address),
                                                       ip_network(parent).prefixlen)
                assert fib.delete(net, length, covering) is True
                del ref[key]
            else:
                assert fib.delete(net, length, None) is False
            assert ((net, length) in fib) is bool(ref.has_key(key))
            for a in edges({(net, length)}) | {0, 0xFFFFFFFF}:
                packed = a.to_bytes(4, "big")
                assert fib.lookup_packed(packed) == ref.get(packed), f"{ip_address(a)}"
    except AssertionError as exc:
        return str(exc)
    return None


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), prefixes()), min_size=1, max_size=30))
def test_fib_alone_with_the_trees_parent_as_covering(ops: list[tuple[bool, tuple[int, int]]]) -> None:
    failure = run_fib_ops(ops)
    assert failure is None, failure


# --- edge cases ------------------------------------------------------------------------------

def table_of(*prefixes: str) -> LpmTable[str]:
    t: LpmTable[str] = LpmTable(4, "dir24")
    for p in prefixes:
        t.insert(p, p)
    return t


def at(t: LpmTable[str], address: str) -> str | None:
    return t.lookup_packed(ip_address(address).packed)


def test_default_route_covers_everything_until_deleted() -> None:
    t = table_of("0.0.0.0/0", "10.0.0.0/8")
    assert at(t, "0.0.0.0") == at(t, "255.255.255.255") == at(t, "9.255.255.255") == "0.0.0.0/0"
    assert at(t, "10.0.0.0") == at(t, "10.255.255.255") == "10.0.0.0/8"
    assert t.delete("0.0.0.0/0")
    assert at(t, "9.255.255.255") is None and at(t, "10.1.2.3") == "10.0.0.0/8"
    t.insert("0.0.0.0/0", "again")
    assert at(t, "11.0.0.0") == "again" and at(t, "10.1.2.3") == "10.0.0.0/8"
    assert t.delete("10.0.0.0/8")
    assert at(t, "10.1.2.3") == "again"


def test_host_route_matches_one_address() -> None:
    t = table_of("10.1.2.0/24", "10.1.2.7/32", "255.255.255.255/32")
    assert at(t, "10.1.2.7") == "10.1.2.7/32"
    assert at(t, "10.1.2.6") == at(t, "10.1.2.8") == "10.1.2.0/24"
    assert at(t, "255.255.255.255") == "255.255.255.255/32" and at(t, "255.255.255.254") is None
    assert t.lookup("10.1.2.7") == (ip_network("10.1.2.7/32"), "10.1.2.7/32")


def test_24_boundaries() -> None:
    t = table_of("10.1.2.0/24", "10.1.3.0/25")
    assert at(t, "10.1.1.255") is None
    assert at(t, "10.1.2.0") == at(t, "10.1.2.255") == "10.1.2.0/24"
    assert at(t, "10.1.3.0") == at(t, "10.1.3.127") == "10.1.3.0/25"
    assert at(t, "10.1.3.128") is None


def test_deleting_a_covering_prefix_keeps_its_more_specifics() -> None:
    t = table_of("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.128/25", "10.1.3.0/24")
    assert t.delete("10.1.0.0/16")
    assert at(t, "10.1.2.1") == "10.1.2.0/24"
    assert at(t, "10.1.2.200") == "10.1.2.128/25"
    assert at(t, "10.1.3.9") == "10.1.3.0/24"
    assert at(t, "10.1.4.9") == "10.0.0.0/8"  # the /16's own space falls back to the /8
    assert t.delete("10.1.2.0/24")  # the base of a level-2 block: its block falls back too
    assert at(t, "10.1.2.1") == "10.0.0.0/8" and at(t, "10.1.2.200") == "10.1.2.128/25"
    assert t.delete("10.0.0.0/8")
    assert at(t, "10.1.2.1") is None and at(t, "10.1.2.200") == "10.1.2.128/25"
    assert t.lookup("10.1.2.1") is None


def test_replace_value_even_when_fully_shadowed() -> None:
    t = table_of("10.1.2.0/24", "10.1.2.0/25", "10.1.2.128/25", "10.1.2.64/26")
    t.insert("10.1.2.0/24", "new")  # every address of the /24 belongs to a /25 or /26
    t.insert("10.1.2.64/26", "new26")
    assert at(t, "10.1.2.65") == "new26" and at(t, "10.1.2.1") == "10.1.2.0/25"
    assert t.delete("10.1.2.0/25")
    assert at(t, "10.1.2.1") == "new" and at(t, "10.1.2.65") == "new26"
    assert len(t) == 3


def test_a_block_under_a_new_24_collapses_to_it() -> None:
    t = table_of("10.0.0.0/8", "10.1.2.128/25")
    t.insert("10.1.2.0/24", "10.1.2.0/24")  # arrives after its more-specific: becomes the block's base
    assert t.delete("10.1.2.128/25")
    assert at(t, "10.1.2.200") == at(t, "10.1.2.1") == "10.1.2.0/24"
    t.insert("10.1.2.0/24", "replaced")
    assert at(t, "10.1.2.200") == "replaced"
    t.insert("10.1.2.64/26", "26")
    assert t.delete("10.1.2.0/24")  # the base goes: the block falls back to the /8
    assert t.delete("10.1.2.64/26")
    assert at(t, "10.1.2.200") == at(t, "10.1.2.65") == "10.0.0.0/8"


def test_level2_blocks_are_reused() -> None:
    t = table_of("10.0.0.0/8")
    fib = t._fib
    assert fib is not None
    for _ in range(3):
        for c in range(4):
            t.insert(f"10.1.{c}.16/28", "x")
        assert at(t, "10.1.3.17") == "x" and at(t, "10.1.3.33") == "10.0.0.0/8"
        for c in range(4):
            t.delete(f"10.1.{c}.16/28")
        assert at(t, "10.1.3.17") == "10.0.0.0/8"
    # Four blocks at most, whatever the churn: emptied blocks go back to the free list.
    assert len(fib._l2) == 4 * 256


def test_a_deleted_routes_value_is_released() -> None:
    class Hop:
        pass

    t: LpmTable[Hop] = LpmTable(4, "dir24")
    for key in ("10.1.0.0/16", "10.1.2.0/24", "10.1.2.4/30"):
        hop = Hop()
        t.insert(key, hop)
        ref = weakref.ref(hop)
        del hop
        assert t.delete(key)
        assert ref() is None, key  # the FIB does not keep a route's value alive after it is gone


def test_equal_values_stay_per_prefix() -> None:
    t: LpmTable[str] = LpmTable(4, "dir24")
    t.insert("10.1.0.0/16", "hop")
    t.insert("10.1.2.0/24", "hop")
    t.insert("10.1.2.0/24", "other")
    assert at(t, "10.1.2.1") == "other" and at(t, "10.1.3.1") == "hop"  # type: ignore[arg-type]


# --- bad input -------------------------------------------------------------------------------

def test_lookup_of_wrong_lengths_is_none() -> None:
    t = table_of("0.0.0.0/0")
    for bad in (b"", b"\x0a\x01\x02", b"\x00\x0a\x01\x02\x03", bytes(16)):
        assert t.lookup_packed(bad) is None
    fib: Dir24Fib[int] = Dir24Fib()
    assert fib.lookup(b"\x01\x02") is None
    d: DualTable[str] = DualTable("dir24")
    d.insert("2001:db8::/32", "v6")
    d.insert("0.0.0.0/0", "v4")
    assert d.lookup_packed(ip_address("2001:db8::1").packed) == "v6"
    assert d.lookup_packed(b"\x01\x02") is None


@pytest.mark.parametrize(
    ("network", "length"), [(0x0A000001, 24), (0, 33), (0, -1), (1 << 32, 32), (-256, 24)])
def test_fib_refuses_bad_prefixes(network: int, length: int) -> None:
    fib: Dir24Fib[int] = Dir24Fib()
    with pytest.raises(FibError):
        fib.insert(network, length, 1)
    with pytest.raises(FibError):
        fib.get(network, length)
    assert (network, length) not in fib
    assert "10.0.0.0/8" not in fib and len(fib) == 0


def test_fib_refuses_inconsistent_deletes_and_bad_text() -> None:
    fib: Dir24Fib[int] = Dir24Fib()
    fib.insert(0x0A000000, 8, 1)
    fib.insert(0x0A010000, 16, 2)
    with pytest.raises(FibError):  # not in the FIB
        fib.delete(0x0A010000, 16, (0x0B000000, 8))
    with pytest.raises(FibError):  # in the FIB, but does not cover it
        fib.insert(0x0B000000, 8, 3)
        fib.delete(0x0A010000, 16, (0x0B000000, 8))
    assert fib.get(0x0A010000, 16) == 2  # nothing half-done
    with pytest.raises(FibError):
        fib.insert_key("10.1.2.0/x", 1)
    for bad in ("ten/8", "ten/24", "10.0.0.0/"):
        with pytest.raises(FibError):
            fib.insert_key(bad, 1)
    with pytest.raises(FibError):
        fib.delete_key("10.0.0.0/8", "nonsense")
    assert len(fib) == 3


def test_table_refuses_unknown_fib_and_ipv6_addresses() -> None:
    with pytest.raises(TableError):
        LpmTable(4, "trie")  # type: ignore[arg-type]
    assert LpmTable[int](6, "dir24").fib == "tree"  # IPv6 always uses the tree
    t = table_of("10.0.0.0/8")
    with pytest.raises(TableError):
        t.lookup("2001:db8::1")


ATTRS = Attributes((65002,))


# --- wiring ----------------------------------------------------------------------------------

def test_rib_lookups_agree_between_fib_kinds() -> None:
    peer = PeerInfo("b", 65002, (ip_address("10.255.0.2"), ip_address("fd00::2")))
    ribs = {kind: Rib(65001, [ip_network("0.0.0.0/0"), ip_network("::/0")], [peer], fib=kind)
            for kind in ("dir24", "tree")}
    assert ribs["dir24"]._loc.v4.fib == "dir24" and ribs["tree"]._loc.v4.fib == "tree"
    for rib in ribs.values():
        rib.peer_up("b", 0.0)
        rib.apply(Update("b", batches=(
            Batch(ip_address("10.255.0.2"), ATTRS, ("153.16.0.0/16", "153.16.1.0/24", "153.16.1.128/25")),
            Batch(ip_address("fd00::2"), ATTRS, ("2001:db8::/32",)),
        )), 1.0)
    for address in ("153.16.1.1", "153.16.1.200", "153.16.2.2", "153.17.0.0", "2001:db8::1", "nonsense"):
        want, got = ribs["tree"].lookup(address), ribs["dir24"].lookup(address)
        assert (want.key if want else None) == (got.key if got else None), address
    fib_rib = ribs["dir24"]
    best = fib_rib.lookup("153.16.1.200")
    assert best is not None and best.key == "153.16.1.128/25"
    assert fib_rib.lookup_packed(ip_address("153.16.1.200").packed) is best
    v6 = fib_rib.lookup_packed(ip_address("2001:db8::1").packed)  # past the IPv4 closure to the tree
    assert v6 is not None and v6.key == "2001:db8::/32"
    for bad in (b"", b"\x99\x10\x01", bytes(5), bytes(15), bytes(17)):
        assert fib_rib.lookup_packed(bad) is None and ribs["tree"].lookup_packed(bad) is None
    fib_rib.apply(Update("b", withdraw_keys=("153.16.1.128/25",)), 2.0)
    after = fib_rib.lookup("153.16.1.200")
    assert after is not None and after.key == "153.16.1.0/24"
    fib_rib.peer_down("b", "test", 3.0)
    assert fib_rib.lookup("153.16.1.200") is None and fib_rib.lookup("2001:db8::1") is None


NODE = """
[node]
name = "n"
asn = 65001
router_id = "192.0.2.1"
{fib}
[eid]
accept = ["153.16.0.0/12"]
"""


def test_config_fib_key() -> None:
    assert parse_config(NODE.format(fib="")).node.fib == "dir24"
    assert parse_config(NODE.format(fib='fib = "tree"')).node.fib == "tree"
    with pytest.raises(ConfigError, match=r"node\.fib"):
        parse_config(NODE.format(fib='fib = "radix"'))
