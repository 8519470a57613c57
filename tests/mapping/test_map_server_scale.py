"""The Map-Server's fast paths (issue 9 part 3) answer exactly as the full decode-and-encode path does.

A refresh whose record repeats the registered one is not decoded again, and the Map-Notify is
made from the Map-Register's bytes: these tests pin that the outcome is the same as building it
from decoded objects (RFC 9301 §5.6, §5.7), including for records our encoder would not
reproduce byte for byte, and that the chunked sorted list under paging and negative replies
behaves as a sorted list.
"""

from __future__ import annotations

import random
import struct
from ipaddress import IPv4Address, ip_network

from hypothesis import given, settings
from hypothesis import strategies as st

from alt_router.lisp import MapNotify, decode, sign_like, verify
from alt_router.lisp.auth import authenticate, authenticate_decoded, notify_from_register
from alt_router.mapping.actions import SendUdp
from alt_router.mapping.map_server import MapServer, Site
from alt_router.mapping.negative import PrefixSet, SortedList, pack, unpack

from . import peer_vectors as pv

KEY = "scale-key"
SITE = Site("big", KEY, pv.SHA256, (ip_network("153.16.0.0/16"),), accept_more_specifics=True)
RLOC = IPv4Address("198.51.100.30")


def reg(prefix: str = "153.16.1.0/24", *, rloc: str = str(RLOC), **kw: object) -> bytes:
    return pv.map_register(KEY, pv.record(prefix, pv.locator(rloc)), **kw)  # type: ignore[arg-type]


def notify_of(out: list[object]) -> bytes:
    (send,) = [a for a in out if isinstance(a, SendUdp)]
    return send.payload


def test_the_notify_from_bytes_equals_the_signed_decoded_notify_rfc9301_5_7() -> None:
    """RFC 9301 §5.7: same nonce, key ID, algorithm, records; MAC as long as the Map-Register's."""
    for alg, length in ((pv.SHA256, 32), (pv.SHA256, 16), (pv.SHA1, 20), (pv.SHA1, 12)):
        data = pv.map_register(KEY, pv.record("153.16.1.0/24", pv.locator(str(RLOC))), alg=alg,
                               auth_len=length, nonce=77, xtr_id=5)
        msg = decode(data)
        end = len(data) - 24  # the xTR-ID/site-ID trailer is not copied (no I bit in §5.7)
        want = sign_like(MapNotify(msg.nonce, msg.records, key_id=0, algorithm_id=alg), KEY, data).encode()
        got = notify_from_register(data, end, KEY)
        assert got == want and verify(got, KEY)


def test_authenticate_decoded_agrees_with_authenticate() -> None:
    for kw in ({}, {"xtr_id": 9}, {"xtr_id": 9, "mac_over_trailer": True}, {"auth_len": 16}):
        data = reg(**kw)
        trailer = "xtr_id" in kw
        assert authenticate_decoded(data, KEY, xtr_trailer=trailer) == authenticate(data, KEY)
        assert authenticate_decoded(data, "wrong", xtr_trailer=trailer) is None


def test_a_refresh_with_the_same_record_keeps_answering_and_a_changed_record_replaces_it() -> None:
    ms = MapServer([SITE])
    ms.handle_register(reg(nonce=1), RLOC, 4342, 0.0)
    first = notify_of(ms.handle_register(reg(nonce=2), RLOC, 4342, 10.0))
    assert verify(first, KEY) and decode(first).nonce == 2
    (r,) = ms.registrations()
    assert r.registered_at == 10.0 and r.expires == 190.0
    # The same prefix, another RLOC: decoded again, and the new RLOC is the one registered.
    ms.handle_register(reg(rloc="192.0.2.7", nonce=3), RLOC, 4342, 20.0)
    (r,) = ms.registrations()
    assert [str(loc.address) for loc in r.record.locators] == ["192.0.2.7"]
    assert r.etr_address == IPv4Address("192.0.2.7")


def test_a_record_with_reserved_bits_gets_the_re_encoded_notify() -> None:
    """A record our encoder does not reproduce byte for byte: the Map-Notify is built as before."""
    record = bytearray(pv.record("153.16.1.0/24", pv.locator(str(RLOC))))
    record[8] |= 0x80  # reserved bits beside the Map-Version Number
    data = pv.map_register(KEY, bytes(record), nonce=4)
    ms = MapServer([SITE])
    for nonce in (4, 5):
        data = pv.map_register(KEY, bytes(record), nonce=nonce)
        payload = notify_of(ms.handle_register(data, RLOC, 4342, float(nonce)))
        msg = decode(data)
        want = sign_like(MapNotify(msg.nonce, msg.records, algorithm_id=pv.SHA256), KEY, data).encode()
        assert payload == want and bytes(record) not in payload


def test_a_malformed_register_is_counted_whether_or_not_its_prefix_is_registered() -> None:
    ms = MapServer([SITE])
    good = reg(nonce=1)
    ms.handle_register(good, RLOC, 4342, 0.0)
    for bad in (good[:-1], good + b"\0", good[:14], struct.pack("!I", 3 << 28 | 1) + bytes(12)):
        assert ms.handle_register(bad, RLOC, 4342, 1.0) == []
    assert ms.counters["malformed"] == 4 and len(ms) == 1


def test_packed_prefixes_round_trip_and_sort_by_family_network_length() -> None:
    nets = [ip_network(p) for p in ("10.0.0.0/8", "10.0.0.0/16", "9.0.0.0/8", "::/0", "2001:db8::/32",
                                     "0.0.0.0/0", "255.255.255.255/32", "ffff::/16")]
    assert [unpack(pack(n)) for n in nets] == nets
    key = lambda n: (n.version, int(n.network_address), n.prefixlen)  # noqa: E731
    assert sorted(nets, key=pack) == sorted(nets, key=key)


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 3000)), max_size=3000),
       probe=st.integers(-1, 3001))
def test_the_chunked_sorted_list_is_a_sorted_list(ops: list[tuple[bool, int]], probe: int) -> None:
    s, model = SortedList(), []
    for add, x in ops:
        if add:
            s.add(x)
            model.append(x)
        elif x in model:
            assert s.remove(x)
            model.remove(x)
        else:
            assert not s.remove(x)
    model.sort()
    assert list(s) == model and len(s) == len(model)
    assert list(s.after(probe)) == [x for x in model if x > probe]
    assert list(s.before(probe)) == [x for x in reversed(model) if x < probe]
    assert (probe in s) == (probe in model)


def test_a_large_prefix_set_keeps_answering_as_a_fresh_one() -> None:
    rng = random.Random(5)
    prefixes = {ip_network((rng.getrandbits(24) << 8, 28), strict=False) for _ in range(3000)}
    live = PrefixSet()
    for p in prefixes:
        live.add(p)
    gone = set(list(prefixes)[:1000])
    for p in gone:
        live.discard(p)
    fresh = PrefixSet(prefixes - gone)
    for _ in range(200):
        eid = IPv4Address(rng.getrandbits(32))
        assert live.uncovered(eid, 4) == fresh.uncovered(eid, 4)
