from __future__ import annotations

from ipaddress import ip_address

from alt_router.rib.table import DualTable


def test_lookup_packed_matches_lookup() -> None:
    t: DualTable[str] = DualTable()
    t.insert("153.16.0.0/16", "short")
    t.insert("153.16.1.0/24", "long")
    t.insert("2001:db8::/32", "v6")
    for addr, want in [("153.16.1.9", "long"), ("153.16.2.9", "short"), ("10.0.0.1", None),
                       ("2001:db8::1", "v6"), ("2001:db9::1", None)]:
        assert t.lookup_packed(ip_address(addr).packed) == want
        assert (t.lookup(addr) or (None, None))[1] == want
    assert t.lookup_packed(b"\x01\x02") is None  # neither 4 nor 16 bytes


def test_length_is_counted_not_walked() -> None:
    t: DualTable[str] = DualTable()
    t.insert("153.16.0.0/16", "a")
    t.insert("153.16.0.0/16", "b")  # a replacement is not a new entry
    t.v4.set_key("153.17.0.0/16", "c", new=True)
    t.v4.set_key("153.17.0.0/16", "d", new=False)
    t.insert("2001:db8::/32", "v6")
    assert len(t) == 3 and len(t.v4) == 2
    assert [p for p, _ in t.covered("153.0.0.0/8")]  # inserts and removes a placeholder
    assert t.delete("153.16.0.0/16") and not t.delete("153.16.0.0/16")
    t.v4.delete_key("153.17.0.0/16")
    assert len(t) == 1 == len(list(t))
    assert list(t.v6.values()) == ["v6"]
    assert t.for_key("2001:db8::/32") is t.v6 and t.for_key("153.16.0.0/16") is t.v4
    assert t.v4.best_for_key("153.16.1.0/24") is None and t.v6.best_for_key("2001:db8:1::/48") == "v6"
