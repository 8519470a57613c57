"""The ETR core: periodic authenticated Map-Registers, Map-Notify checks, Map-Replies."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address, ip_network

from alt_router.lisp import ECM, HMAC_SHA_256_128, MapNotify, MapRegister, MapReply, decode, sign, verify
from alt_router.mapping.actions import SendUdp
from alt_router.mapping.etr import EidMapping, Etr, MapServerTarget
from alt_router.mapping.map_server import MapServer
from alt_router.node.config import Rloc, SiteConfig

from .util import ITR, ecm_request, map_request

MS = IPv4Address("198.51.100.1")
RLOC = IPv4Address("192.0.2.1")


def etr(proxy: bool = False) -> Etr:
    counter = itertools.count(1000)
    mappings = [
        EidMapping(ip_network("10.1.0.0/16"), (Rloc(RLOC, 1, 100), Rloc(IPv4Address("192.0.2.2"), 2, 50)),
                   ttl=30),
        EidMapping(ip_network("10.1.5.0/24"), (Rloc(RLOC, 1, 100),), ttl=5),
    ]
    return Etr(mappings, [MapServerTarget(MS, "k", HMAC_SHA_256_128, 4350)], register_interval=60,
               proxy_reply=proxy, port=4399, nonce=lambda: next(counter))


def test_registers_at_once_then_every_interval_with_fresh_nonces() -> None:
    e = etr(proxy=True)
    (first,) = e.tick(0.0)
    assert isinstance(first, SendUdp) and (first.dst, first.dport, first.sport) == (MS, 4350, 4399)
    msg = decode(first.payload)
    assert isinstance(msg, MapRegister)
    assert msg.want_map_notify and msg.proxy_reply and msg.algorithm_id == HMAC_SHA_256_128
    assert verify(first.payload, "k") and not verify(first.payload, "other")
    assert [(str(r.eid), r.mask_len, r.ttl) for r in msg.records] == [
        ("10.1.5.0", 24, 5), ("10.1.0.0", 16, 30)]
    assert [(loc.address, loc.priority, loc.weight) for loc in msg.records[1].locators] == [
        (RLOC, 1, 100), (IPv4Address("192.0.2.2"), 2, 50)]
    e.handle(notify_for(first.payload, "k"), MS, 4350, 0.5)  # confirmed: next round is a full interval away
    assert e.tick(59.9) == []
    (again,) = e.tick(60.0)
    assert decode(again.payload).nonce != msg.nonce  # type: ignore[union-attr]
    assert e.next_deadline() == 61.0  # not confirmed yet: asked again in a second


def notify_for(register: bytes, key: str) -> bytes:
    msg = decode(register)
    assert isinstance(msg, MapRegister)
    return sign(MapNotify(msg.nonce, msg.records, algorithm_id=HMAC_SHA_256_128), key).encode()


def test_unconfirmed_registers_are_retried_with_backoff_until_a_map_notify() -> None:
    e = etr()
    sent = [0.0]
    (reg,) = e.tick(0.0)
    now = 0.0
    while now < 40.0:
        now = e.next_deadline()
        out = e.tick(now)
        assert len(out) == 1 and decode(out[0].payload).nonce != decode(reg.payload).nonce  # type: ignore[union-attr]
        reg = out[0]
        sent.append(now)
    # 1, 2, 4, 8, 16 s apart, then capped at the 60 s register interval.
    assert [b - a for a, b in itertools.pairwise(sent)][:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    e.handle(notify_for(reg.payload, "k"), MS, 4350, now + 0.1)  # type: ignore[union-attr]
    assert e.next_deadline() == now + 60.0
    (nxt,) = e.tick(now + 60.0)
    e.handle(notify_for(nxt.payload, "k"), MS, 4350, now + 60.2)  # type: ignore[union-attr]
    assert e.next_deadline() == now + 120.0  # the backoff was reset by the confirmation


def test_map_notify_must_match_a_nonce_and_verify() -> None:
    e = etr()
    (reg,) = e.tick(0.0)
    assert e.handle(notify_for(reg.payload, "wrong"), MS, 4350, 1.0) == []  # type: ignore[union-attr]
    assert e.counters["map-notify-bad-auth"] == 1 and e.last_notify == {}
    e.handle(notify_for(reg.payload, "k"), MS, 4350, 2.0)  # type: ignore[union-attr]
    assert e.counters["map-notify"] == 1 and e.last_notify == {MS: 2.0}
    e.handle(notify_for(reg.payload, "k"), MS, 4350, 3.0)  # type: ignore[union-attr]  # replayed
    assert e.counters["map-notify-unknown-nonce"] == 1


def test_plain_map_request_answered_from_the_longest_prefix() -> None:
    e = etr()
    (out,) = e.handle(map_request("10.1.5.9", nonce=5).encode(), IPv4Address("203.0.113.5"), 40001, 0.0)
    assert isinstance(out, SendUdp) and (out.dst, out.dport, out.sport) == (ITR, 40001, 4399)
    reply = decode(out.payload)
    assert isinstance(reply, MapReply) and reply.nonce == 5
    (rec,) = reply.records
    assert (str(rec.eid), rec.mask_len, rec.ttl, rec.authoritative) == ("10.1.5.0", 24, 5, True)


def test_ecm_map_request_replies_to_the_inner_source_port() -> None:
    e = etr()
    (out,) = e.handle(ecm_request("10.1.9.9", nonce=6, sport=50555), MS, 4342, 0.0)
    assert isinstance(out, SendUdp) and (out.dst, out.dport) == (ITR, 50555)
    reply = decode(out.payload)
    assert isinstance(reply, MapReply) and reply.records[0].mask_len == 16


def test_not_ours_malformed_and_unexpected() -> None:
    e = etr()
    assert e.handle(map_request("10.2.0.1").encode(), ITR, 1, 0.0) == []
    assert e.handle(b"\x10", ITR, 1, 0.0) == []
    assert e.handle(MapReply(1, ()).encode(), ITR, 1, 0.0) == []
    assert e.handle(ECM(MapReply(1, ()), ITR, IPv4Address("10.1.0.1")).encode(), ITR, 1, 0.0) == []
    assert e.counters["not-authoritative"] == 1
    assert e.counters["malformed"] == 1
    assert e.counters["unexpected"] == 2


def test_etr_and_map_server_agree() -> None:
    e = etr()
    site = SiteConfig("s", "k", "hmac-sha256-128", (ip_network("10.1.0.0/16"),), accept_more_specifics=True)
    ms = MapServer([site])
    (reg,) = e.tick(0.0)
    out = ms.handle_register(reg.payload, RLOC, 4399, 0.0)  # type: ignore[union-attr]
    notify = out[-1]
    assert isinstance(notify, SendUdp) and notify.dport == 4399
    e.handle(notify.payload, MS, 4342, 0.1)
    assert e.counters["map-notify"] == 1
    assert len(ms.registrations()) == 2
