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
