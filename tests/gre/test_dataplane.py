from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alt_router.gre import dataplane as dp
from alt_router.gre import header as gre
from alt_router.gre.config import TunnelConfig
from alt_router.gre.dataplane import (
    Dataplane,
    Deliver,
    Drop,
    Forward,
    Local,
    SendUnderlay,
    Verdict,
    WriteTun,
)
from alt_router.gre.userspace import ICMP_QUEUE_FULL, LOCAL_QUEUE_FULL, NO_LOCAL_HANDLER, Engine, Handoff
from alt_router.inet import PROTO_GRE, PROTO_UDP, ipv4_header, parse_ip, udp_packet

A4, B4, C4 = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2"), IPv4Address("192.0.2.3")
A6, B6 = IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2")
INNER4 = udp_packet(ip_address("10.0.0.1"), ip_address("10.0.0.2"), 1000, 4342, b"hello")
INNER6 = udp_packet(ip_address("fd00::1"), ip_address("fd00::2"), 1000, 4342, b"hello")


def tun(name: str, local: object, remote: object, **kw: object) -> TunnelConfig:
    return TunnelConfig(name, local, remote, **kw)  # type: ignore[arg-type]


def pair(**kw: object) -> tuple[Dataplane, Dataplane]:
    return Dataplane([tun("t", A4, B4, **kw)]), Dataplane([tun("t", B4, A4, **kw)])


def only(actions: list[dp.Action]) -> dp.Action:
    assert len(actions) == 1, actions
    return actions[0]


@pytest.mark.parametrize("opts", [{}, {"key": 7}, {"key": 0}, {"checksum": True, "sequence": True, "key": 1}])
@pytest.mark.parametrize("inner", [INNER4, INNER6])
def test_encapsulate_then_receive_delivers_the_inner_packet(opts: dict[str, object], inner: bytes) -> None:
    a, b = pair(**opts)
    send = only(a.encapsulate("t", inner))
    assert isinstance(send, SendUnderlay)
    assert (send.local, send.remote, send.ttl) == (A4, B4, 64)
    assert only(b.receive(B4, A4, send.datagram)) == WriteTun("t", inner)
    assert a.counters["t"].tx_packets == 1 and a.counters["t"].tx_bytes == len(inner)
    assert b.counters["t"].rx_packets == 1 and b.counters["t"].rx_bytes == len(inner)
    assert b.counters["t"].drops == {}


def test_ipv4_raw_socket_input_strips_the_outer_header() -> None:
    a, b = pair(key=3)
    send = only(a.encapsulate("t", INNER4))
    assert isinstance(send, SendUnderlay)
    outer = ipv4_header(A4, B4, PROTO_GRE, len(send.datagram)) + send.datagram
    assert only(b.receive_ipv4(outer)) == WriteTun("t", INNER4)


def test_ipv4_raw_input_that_is_not_gre_or_not_ip_is_counted() -> None:
    _, b = pair()
    assert b.receive_ipv4(b"\x45\x00") == []
    assert b.receive_ipv4(ipv4_header(A4, B4, PROTO_UDP, 0)) == []
    assert b.unmatched.drops == {dp.BAD_OUTER: 2}


def test_ipv6_underlay() -> None:
    a = Dataplane([tun("t6", A6, B6, key=5)])
    b = Dataplane([tun("t6", B6, A6, key=5)])
    send = only(a.encapsulate("t6", INNER4))
    assert isinstance(send, SendUnderlay) and send.remote == B6
    assert only(b.receive(B6, A6, send.datagram)) == WriteTun("t6", INNER4)


def test_unknown_remote_is_counted_as_unmatched() -> None:
    a, b = pair()
    send = only(a.encapsulate("t", INNER4))
    assert isinstance(send, SendUnderlay)
    assert b.receive(B4, C4, send.datagram) == []
    assert b.receive(C4, A4, send.datagram) == []  # right remote, but not to our local address
    assert b.unmatched.drops == {dp.UNKNOWN_REMOTE: 2}
    assert b.counters["t"].rx_packets == 0


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x00\x01\x08\x00" + INNER4, gre.BAD_VERSION),
        (b"\x40\x00\x08\x00\x00\x00\x00\x00" + INNER4, gre.ROUTING_BIT),
        (b"\x08\x00\x08\x00" + INNER4, gre.UNKNOWN_FLAGS),
        (b"\x20\x00\x08", gre.TRUNCATED),
        (b"\x80\x00\x08\x00\xde\xad\x00\x00" + INNER4, gre.BAD_CHECKSUM),
        (b"\x00\x00\x65\x58" + INNER4, gre.UNKNOWN_PROTOCOL),
        (b"\x20\x00\x08\x00\x00\x00\x00\x09" + INNER4, dp.WRONG_KEY),
        (b"\x00\x00\x86\xdd" + INNER4, dp.INNER_MISMATCH),
        (b"\x00\x00\x08\x00", dp.INNER_MISMATCH),
    ],
)
def test_bad_packets_from_a_known_peer_are_counted_on_its_tunnel(wire: bytes, reason: str) -> None:
    _, b = pair()
    assert b.receive(B4, A4, wire) == []
    assert b.counters["t"].drops == {reason: 1}
    assert b.counters["t"].rx_packets == 0
    # and the next good packet still goes through
    assert only(b.receive(B4, A4, b"\x00\x00\x08\x00" + INNER4)) == WriteTun("t", INNER4)


def test_missing_key_is_a_wrong_key() -> None:
    _, b = pair(key=5)
    assert b.receive(B4, A4, b"\x00\x00\x08\x00" + INNER4) == []
    assert b.counters["t"].drops == {dp.WRONG_KEY: 1}


def test_tunnel_configured_for_checksums_refuses_packets_without() -> None:
    _, b = pair(checksum=True)
    assert b.receive(B4, A4, b"\x00\x00\x08\x00" + INNER4) == []
    assert b.counters["t"].drops == {gre.BAD_CHECKSUM: 1}


def test_same_endpoints_demultiplexed_by_key() -> None:
    b = Dataplane([tun("k1", B4, A4, key=1), tun("k2", B4, A4, key=2), tun("nokey", B4, A4)])
    for name, key in (("k1", 1), ("k2", 2), ("nokey", None)):
        wire = gre.encode(gre.GreHeader(gre.PROTO_IPV4, key=key), INNER4)
        assert only(b.receive(B4, A4, wire)) == WriteTun(name, INNER4)


def test_sequence_numbers_count_up_and_wrap() -> None:
    a, _ = pair(sequence=True)
    a._next_seq["t"] = 0xFFFFFFFF
    seqs = []
    for _ in range(3):
        send = only(a.encapsulate("t", INNER4))
        assert isinstance(send, SendUnderlay)
        seqs.append(gre.decode(send.datagram)[0].sequence)
    assert seqs == [0xFFFFFFFF, 0, 1]


def test_encapsulate_refuses_non_ip_oversize_and_unknown_tunnels() -> None:
    a, _ = pair()
    assert a.encapsulate("t", b"\x00junk") == []
    assert a.encapsulate("t", b"") == []
    big = b"\x45" + bytes(a.tunnels["t"].mtu)
    assert a.encapsulate("t", big) == []
    assert a.encapsulate("nope", INNER4) == []
    assert a.counters["t"].drops == {gre.UNKNOWN_PROTOCOL: 1, gre.TRUNCATED: 1, dp.TOO_BIG: 1}
    assert a.unmatched.drops == {dp.UNKNOWN_TUNNEL: 1}
    assert a.counters["t"].tx_packets == 0
    # exactly at the MTU is fine
    assert len(a.encapsulate("t", big[:-1])) == 1


def test_failed_send_is_uncounted_from_tx_and_counted_as_drop() -> None:
    a, _ = pair(key=1)
    send = only(a.encapsulate("t", INNER4))
    a.failed(send, dp.UNDERLAY_SEND_ERROR)
    assert (a.counters["t"].tx_packets, a.counters["t"].tx_bytes) == (0, 0)
    assert a.counters["t"].drops == {dp.UNDERLAY_SEND_ERROR: 1}
    a.failed(WriteTun("t", INNER4), dp.TUN_WRITE_ERROR)
    assert a.counters["t"].drops[dp.TUN_WRITE_ERROR] == 1


# --- the inner-packet hook (the ALT forwarder's entry point) ---

def middle(hook: dp.InnerHook) -> Dataplane:
    return Dataplane([tun("left", B4, A4), tun("right", B4, C4, key=9)], hook)


def wire_from_a() -> bytes:
    return gre.encode(gre.GreHeader(gre.PROTO_IPV4), INNER4)


def test_hook_sees_tunnel_and_inner_packet_and_can_deliver() -> None:
    seen: list[tuple[str, bytes]] = []

    def hook(t: TunnelConfig, inner: bytes) -> Verdict:
        seen.append((t.name, inner))
        return Deliver()

    assert only(middle(hook).receive(B4, A4, wire_from_a())) == WriteTun("left", INNER4)
    assert seen == [("left", INNER4)]


def test_hook_forward_reencapsulates_into_another_tunnel_in_one_pass() -> None:
    def decrement_ttl(t: TunnelConfig, inner: bytes) -> Verdict:
        return Forward("right", inner[:8] + bytes([inner[8] - 1]) + inner[9:])

    m = middle(decrement_ttl)
    send = only(m.receive(B4, A4, wire_from_a()))
    assert isinstance(send, SendUnderlay)
    assert (send.tunnel, send.local, send.remote) == ("right", B4, C4)
    hdr, inner = gre.decode(send.datagram)
    assert hdr.key == 9
    assert parse_ip(inner, verify_checksum=False).ttl == parse_ip(INNER4).ttl - 1
    assert m.counters["left"].rx_packets == 1 and m.counters["right"].tx_packets == 1


def test_hook_drop_and_unknown_forward_target_are_counted() -> None:
    m = middle(lambda t, p: Drop("ttl-expired"))
    assert m.receive(B4, A4, wire_from_a()) == []
    assert m.counters["left"].drops == {"ttl-expired": 1}
    m = middle(lambda t, p: Forward("elsewhere", p))
    assert m.receive(B4, A4, wire_from_a()) == []
    assert m.counters["left"].drops == {dp.UNKNOWN_TUNNEL: 1}


def test_hook_local_verdict_comes_back_as_the_event_it_is() -> None:
    # Issue 13, "events, not callbacks": the verdict names the tunnel and the packet, nothing to call.
    m = middle(lambda t, p: Local(t.name, p))
    assert only(m.receive(B4, A4, wire_from_a())) == Local("left", INNER4)
    assert m.counters["left"].rx_packets == 1 and m.counters["left"].drops == {}


def test_hook_drop_with_an_icmp_error_is_counted_and_passed_on() -> None:
    # RFC 1812 §4.3.2 / RFC 4443 §3: the error travels with the verdict, for the node to send.
    m = middle(lambda t, p: Drop("no-route", icmp=b"icmp-error"))
    assert only(m.receive(B4, A4, wire_from_a())) == Drop("no-route", b"icmp-error")
    assert m.counters["left"].drops == {"no-route": 1}


def test_a_failing_hook_drops_the_packet_not_the_loop() -> None:
    def broken(t: TunnelConfig, p: bytes) -> Verdict:
        raise RuntimeError("bug")

    m = middle(broken)
    assert m.receive(B4, A4, wire_from_a()) == []
    assert m.counters["left"].drops == {dp.HOOK_ERROR: 1}


def test_stats_shape() -> None:
    a, _ = pair()
    a.encapsulate("t", INNER4)
    stats = a.stats()
    assert stats["tunnels"] == {
        "t": {"rx_packets": 0, "rx_bytes": 0, "tx_packets": 1, "tx_bytes": len(INNER4), "drops": {}}
    }
    assert stats["unmatched"] == {"rx_packets": 0, "rx_bytes": 0, "tx_packets": 0, "tx_bytes": 0, "drops": {}}


@given(st.binary(max_size=80), st.sampled_from([A4, C4]))
@settings(max_examples=300)
def test_no_input_crashes_the_receive_path(data: bytes, remote: IPv4Address) -> None:
    b = Dataplane([tun("t", B4, A4, key=1, checksum=True)])
    b.receive(B4, remote, data)
    b.receive_ipv4(data)


def test_fast_and_slow_header_paths_agree() -> None:
    # Reserved bits 6-12 set: not the constant header, so the full decoder handles it.
    _, b = pair(key=5)
    wire = b"\x20\x40\x08\x00\x00\x00\x00\x05" + INNER4
    assert only(b.receive(B4, A4, wire)) == WriteTun("t", INNER4)
    assert only(b.receive(B4, A4, wire[:1] + b"\x00" + wire[2:])) == WriteTun("t", INNER4)
    assert b.counters["t"].rx_packets == 2


# --- the data-plane thread: hand-off to the event loop, command queue ---------------------------
# (docs/architecture.md, "Data-plane thread": BGP rides the tunnels, so the thread serving them
# must never wait for the control plane's event loop.)


def test_handoff_refuses_and_counts_when_full_and_wakes_the_consumer_once() -> None:
    woken: list[Callable[[], None]] = []
    got: list[int] = []
    h = Handoff(woken.append, capacity=3, batch=10)
    assert [h.offer(got.append, i) for i in range(5)] == [True, True, True, False, False]
    assert (h.dropped, h.queued, len(h), h.high_water) == (2, 3, 3, 3)
    assert len(woken) == 1  # one wakeup for the whole burst, not one per item
    woken.pop()()
    assert got == [0, 1, 2] and len(h) == 0
    assert h.offer(got.append, 9) and len(woken) == 1  # drained: the next item wakes it again


def test_handoff_runs_a_batch_per_wakeup_and_reschedules_the_rest() -> None:
    woken: list[Callable[[], None]] = []
    got: list[int] = []
    h = Handoff(woken.append, capacity=100, batch=4)
    for i in range(10):
        h.offer(got.append, i)
    rounds = 0
    while woken:
        woken.pop(0)()
        rounds += 1
    assert got == list(range(10)) and rounds == 3


def test_handoff_counts_a_failing_call_and_runs_the_others() -> None:
    woken: list[Callable[[], None]] = []
    got: list[int] = []

    def boom(_: int) -> None:
        raise ValueError("bad packet")

    h = Handoff(woken.append)
    h.offer(got.append, 1)
    h.offer(boom, 2)
    h.offer(got.append, 3)
    woken.pop()()
    assert got == [1, 3] and h.errors == 1


def test_handoff_to_a_closed_loop_drops_instead_of_raising() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    h = Handoff(loop.call_soon_threadsafe)
    assert h.offer(print, "never") is True  # queued, then dropped when the wakeup fails
    assert h.dropped == 1 and len(h) == 0
    with pytest.raises(ValueError):
        Handoff(loop.call_soon_threadsafe, capacity=0)


def test_handoff_never_blocks_a_producer_thread_while_the_loop_is_stalled() -> None:
    """The failure issue 11 saw, in miniature: the consumer's loop is frozen, the producer goes on."""
    got: list[int] = []
    stats: dict[str, object] = {}

    def produce(h: Handoff) -> None:
        for i in range(5000):
            h.offer(got.append, i)

    async def main() -> None:
        h = Handoff(asyncio.get_running_loop().call_soon_threadsafe, capacity=100, batch=16)
        producer = threading.Thread(target=produce, args=(h,))
        producer.start()
        # The loop is blocked in this join: nothing is delivered until the producer is done.
        producer.join(20)
        stats["done_while_stalled"] = not producer.is_alive()
        stats["delivered_while_stalled"] = len(got)
        while len(h):
            await asyncio.sleep(0)
        stats.update(h.stats())

    asyncio.run(main())
    assert stats["done_while_stalled"] is True and stats["delivered_while_stalled"] == 0
    assert got == list(range(100))  # the oldest kept, in order; the rest refused and counted
    assert stats["dropped"] == 4900 and stats["queued"] == 100


# What the threaded engine hands to the loop, with the thread each event arrived on.
events_seen: list[tuple[dp.Event, int]] = []


@pytest.fixture
def threaded_engine() -> Iterator[tuple[Engine, asyncio.AbstractEventLoop]]:
    """An engine without tunnels (no TUN, no raw socket) serving from its data-plane thread."""
    loop = asyncio.new_event_loop()
    events_seen.clear()
    engine = Engine([], events=lambda event: events_seen.append((event, threading.get_ident())))
    engine.open()
    engine.start(loop)
    try:
        yield engine, loop
    finally:
        engine.close()
        loop.close()


def test_engine_call_runs_on_the_dataplane_thread_and_returns_or_raises(
    threaded_engine: tuple[Engine, asyncio.AbstractEventLoop],
) -> None:
    engine, _ = threaded_engine
    assert engine.threaded
    assert engine.call(threading.get_ident) != threading.get_ident()
    assert engine.call(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(KeyError):
        engine.call({}.__getitem__, "missing")
    # A send from this (foreign) thread is queued for the data-plane thread, which counts it.
    engine.send("nope", INNER4)
    engine.call(lambda: None)  # a barrier: the queue is FIFO
    assert engine.stats()["unmatched"]["drops"] == {dp.UNKNOWN_TUNNEL: 1}  # type: ignore[index]
    assert engine.remove_tunnel("nope") is False


def test_engine_hands_local_deliveries_to_the_loop_thread(
    threaded_engine: tuple[Engine, asyncio.AbstractEventLoop],
) -> None:
    engine, loop = threaded_engine
    engine.call(engine._execute, [Local("t", b"pkt"), Drop("no-route", b"icmp")])
    assert events_seen == []  # not run on the data-plane thread: queued for the loop
    loop.run_until_complete(asyncio.sleep(0.05))
    me = threading.get_ident()
    assert events_seen == [(Local("t", b"pkt"), me), (Drop("no-route", b"icmp"), me)]
    stats = engine.stats()
    assert stats["dataplane_thread"] is True and stats["handoff"]["queued"] == 2  # type: ignore[index]


def test_engine_counts_local_deliveries_refused_by_a_full_handoff(
    threaded_engine: tuple[Engine, asyncio.AbstractEventLoop],
) -> None:
    engine, loop = threaded_engine
    engine.handoff = Handoff(loop.call_soon_threadsafe, capacity=2)
    engine.call(engine._execute, [Local("t", b"x") for _ in range(5)] + [Drop("no-route", b"icmp")])
    assert engine.handoff.dropped == 4
    drops = engine.stats()["unmatched"]["drops"]
    assert drops == {LOCAL_QUEUE_FULL: 3, ICMP_QUEUE_FULL: 1}  # type: ignore[comparison-overlap]


def test_engine_without_an_event_sink_counts_local_verdicts() -> None:
    engine = Engine([])
    engine._execute([Local("t", b"x"), Drop("no-route", b"icmp")])
    assert engine.stats()["unmatched"]["drops"] == {NO_LOCAL_HANDLER: 1}  # type: ignore[index]
