"""The dataplane's fast entry points decide exactly as the general ones, counters included."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alt_router.gre import dataplane as dp
from alt_router.gre import header as gre
from alt_router.gre.config import TunnelConfig
from alt_router.gre.dataplane import (
    DELIVER,
    TO_TUN,
    TO_UNDERLAY,
    Dataplane,
    Forward,
    SendUnderlay,
    Verdict,
    WriteTun,
)
from alt_router.inet import PROTO_GRE, ipv4_header, udp_packet

A4, B4, C4 = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2"), IPv4Address("192.0.2.3")
A6, B6 = IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2")
INNER4 = udp_packet(ip_address("10.0.0.1"), ip_address("10.0.0.2"), 1000, 4342, b"hello")
INNER6 = udp_packet(ip_address("fd00::1"), ip_address("fd00::2"), 1000, 4342, b"hello")
OPTS = [{}, {"key": 7}, {"key": 0}, {"checksum": True}, {"sequence": True, "key": 1}]


def tun(name: str, local: object, remote: object, **kw: object) -> TunnelConfig:
    return TunnelConfig(name, local, remote, **kw)  # type: ignore[arg-type]


def normalise(d: Dataplane, result: dp.Fast | list[dp.Action]) -> list[dp.Action]:
    return [d.action_for(result)] if isinstance(result, tuple) else result


def stats(d: Dataplane) -> dict[str, object]:
    return d.stats()


def outer4(src: IPv4Address, dst: IPv4Address, datagram: bytes) -> bytes:
    return ipv4_header(src, dst, PROTO_GRE, len(datagram)) + datagram


@pytest.mark.parametrize("opts", OPTS)
@pytest.mark.parametrize(
    "inner", [INNER4, INNER6, b"\x00junk", b"", b"\x45" + bytes(1500)],
    ids=["v4", "v6", "junk", "empty", "big"],
)
def test_encapsulate_fast_matches_encapsulate(opts: dict[str, object], inner: bytes) -> None:
    fast, slow = Dataplane([tun("t", A4, B4, **opts)]), Dataplane([tun("t", A4, B4, **opts)])
    assert normalise(fast, fast.encapsulate_fast("t", inner)) == slow.encapsulate("t", inner)
    assert stats(fast) == stats(slow)
    assert normalise(fast, fast.encapsulate_fast("no", inner)) == slow.encapsulate("no", inner) == []


def test_encapsulate_fast_is_a_tuple_for_plain_tunnels() -> None:
    d = Dataplane([tun("t", A4, B4, key=7)])
    expected = gre.encode(gre.GreHeader(gre.PROTO_IPV6, 7), INNER6)
    assert d.encapsulate_fast("t", INNER6) == (TO_UNDERLAY, "t", expected)


def wires() -> list[bytes]:
    """GRE datagrams from A4 to B4: good ones for each tunnel option, and each kind of bad one."""
    good = [
        gre.encode(gre.GreHeader(gre.protocol_for(i), k), i) for i in (INNER4, INNER6) for k in (None, 7, 0)
    ]
    bad = [
        b"\x00\x01\x08\x00" + INNER4, b"\x40\x00\x08\x00\x00\x00\x00\x00" + INNER4,
        b"\x08\x00\x08\x00" + INNER4,
        b"\x20\x00\x08", b"\x80\x00\x08\x00\xde\xad\x00\x00" + INNER4, b"\x00\x00\x65\x58" + INNER4,
        b"\x20\x00\x08\x00\x00\x00\x00\x09" + INNER4, b"\x00\x00\x86\xdd" + INNER4, b"\x00\x00\x08\x00",
        b"\x20\x40\x08\x00\x00\x00\x00\x07" + INNER4,  # reserved bits: not the constant header
        gre.encode(gre.GreHeader(gre.PROTO_IPV4, 7, 5, True), INNER4),
    ]
    return good + bad


@pytest.mark.parametrize("opts", OPTS)
@pytest.mark.parametrize("wire", wires(), ids=range(len(wires())))
def test_receive_ipv4_fast_matches_receive_ipv4(opts: dict[str, object], wire: bytes) -> None:
    fast, slow = Dataplane([tun("t", B4, A4, **opts)]), Dataplane([tun("t", B4, A4, **opts)])
    for packet in (outer4(A4, B4, wire), outer4(C4, B4, wire), wire[:3]):
        assert normalise(fast, fast.receive_ipv4_fast(packet)) == slow.receive_ipv4(packet)
    assert stats(fast) == stats(slow)


@pytest.mark.parametrize("opts", OPTS)
@pytest.mark.parametrize("wire", wires(), ids=range(len(wires())))
def test_receive_fast_matches_receive_on_an_ipv6_underlay(opts: dict[str, object], wire: bytes) -> None:
    fast, slow = Dataplane([tun("t", B6, A6, **opts)]), Dataplane([tun("t", B6, A6, **opts)])
    assert normalise(fast, fast.receive_fast(B6.packed, A6.packed, wire)) == slow.receive(B6, A6, wire)
    assert normalise(fast, fast.receive_fast(B6.packed, B6.packed, wire)) == slow.receive(B6, B6, wire)
    assert stats(fast) == stats(slow)


def test_plain_delivery_is_a_tun_tuple() -> None:
    d = Dataplane([tun("t", B4, A4, key=7)])
    wire = gre.encode(gre.GreHeader(gre.PROTO_IPV4, 7), INNER4)
    assert d.receive_ipv4_fast(outer4(A4, B4, wire)) == (TO_TUN, "t", INNER4)
    assert d.counters["t"].rx_packets == 1 and d.counters["t"].rx_bytes == len(INNER4)


@settings(max_examples=300)
@given(st.binary(max_size=60), st.sampled_from([A4, C4]), st.booleans())
def test_random_input_is_decided_as_by_the_general_path(data: bytes, remote: IPv4Address, raw: bool) -> None:
    fast = Dataplane([tun("t", B4, A4, key=1), tun("u", B4, A4)])
    slow = Dataplane([tun("t", B4, A4, key=1), tun("u", B4, A4)])
    packet = data if raw else outer4(remote, B4, data)
    assert normalise(fast, fast.receive_ipv4_fast(packet)) == slow.receive_ipv4(packet)
    fast_result = fast.receive_fast(B4.packed, remote.packed, data)
    assert normalise(fast, fast_result) == slow.receive(B4, remote, data)
    assert stats(fast) == stats(slow)


# --- the fast hook ---------------------------------------------------------------------------

def rewrite(packet: bytes) -> bytes:
    return packet[:8] + bytes([packet[8] - 1]) + packet[9:]


class Hooks:
    """A full hook and a fast hook that agree; the fast one declines what ``decline`` says."""

    def __init__(self, target: str = "right", decline: bool = False) -> None:
        self.target = target
        self.decline = decline
        self.full_calls = 0

    def full(self, tunnel: TunnelConfig, packet: bytes) -> Verdict:
        self.full_calls += 1
        return Forward(self.target, rewrite(packet)) if packet[0] >> 4 == 4 else DELIVER

    def fast(self, packet: bytes, offset: int, name: str) -> tuple[str, bytes] | None:
        if self.decline or packet[offset] >> 4 != 4:
            return None
        return self.target, rewrite(packet[offset:])


def middle(hooks: Hooks, *, fast: bool, right: dict[str, object] | None = None) -> Dataplane:
    tunnels = [tun("left", B4, A4), tun("right", B4, C4, **(right if right is not None else {"key": 9}))]
    return Dataplane(tunnels, hooks.full, hooks.fast if fast else None)


LEFT_WIRE4 = outer4(A4, B4, b"\x00\x00\x08\x00" + INNER4)
LEFT_WIRE6 = outer4(A4, B4, b"\x00\x00\x86\xdd" + INNER6)


@pytest.mark.parametrize("right", [{"key": 9}, {"checksum": True}])
@pytest.mark.parametrize("packet", [LEFT_WIRE4, LEFT_WIRE6], ids=["ipv4", "ipv6"])
def test_fast_hook_gives_what_the_full_hook_gives(right: dict[str, object], packet: bytes) -> None:
    fh, sh = Hooks(), Hooks()
    fast, slow = middle(fh, fast=True, right=right), middle(sh, fast=False, right=right)
    assert normalise(fast, fast.receive_ipv4_fast(packet)) == slow.receive_ipv4(packet)
    assert stats(fast) == stats(slow)
    # The fast hook took the IPv4 packet itself; IPv6 was left to the full hook.
    assert fh.full_calls == (0 if packet is LEFT_WIRE4 else 1)


def test_fast_forward_is_a_tuple_into_the_target_tunnel() -> None:
    hooks = Hooks()
    d = middle(hooks, fast=True)
    kind, name, datagram = d.receive_ipv4_fast(LEFT_WIRE4)  # type: ignore[misc]
    assert (kind, name) == (TO_UNDERLAY, "right")
    assert gre.decode(datagram) == (gre.GreHeader(gre.PROTO_IPV4, 9), rewrite(INNER4))
    assert d.counters["left"].rx_packets == 1 and d.counters["right"].tx_packets == 1
    assert hooks.full_calls == 0


def test_declining_fast_hook_falls_back_to_the_full_hook() -> None:
    hooks = Hooks(decline=True)
    d = middle(hooks, fast=True)
    (send,) = d.receive_ipv4_fast(LEFT_WIRE4)  # type: ignore[misc]
    assert isinstance(send, SendUnderlay) and send.tunnel == "right"
    assert hooks.full_calls == 1 and d.counters["left"].rx_packets == 1


def test_fast_hook_into_an_unknown_tunnel_is_counted_on_the_receiving_one() -> None:
    d = middle(Hooks(target="elsewhere"), fast=True)
    assert d.receive_ipv4_fast(LEFT_WIRE4) == []
    assert d.counters["left"].drops == {dp.UNKNOWN_TUNNEL: 1}


def test_fast_hook_output_too_big_for_the_target_is_counted_there() -> None:
    big = udp_packet(ip_address("10.0.0.1"), ip_address("10.0.0.2"), 1000, 4342, bytes(1460))
    d = Dataplane([tun("left", B4, A4, underlay_mtu=1600), tun("right", B4, C4)], Hooks().full, Hooks().fast)
    assert d.receive_ipv4_fast(outer4(A4, B4, b"\x00\x00\x08\x00" + big)) == []
    assert d.counters["right"].drops == {dp.TOO_BIG: 1} and d.counters["left"].rx_packets == 1


def test_fast_hook_is_not_used_without_a_full_hook() -> None:
    d = Dataplane([tun("left", B4, A4), tun("right", B4, C4)], None, Hooks().fast)
    assert d.receive_ipv4_fast(LEFT_WIRE4) == (TO_TUN, "left", INNER4)


def test_a_failed_fast_send_is_uncounted_like_an_action() -> None:
    d = Dataplane([tun("t", A4, B4, key=1)])
    result = d.encapsulate_fast("t", INNER4)
    assert isinstance(result, tuple)
    d.failed(d.action_for(result), dp.UNDERLAY_SEND_ERROR)
    assert (d.counters["t"].tx_packets, d.counters["t"].tx_bytes) == (0, 0)
    assert d.counters["t"].drops == {dp.UNDERLAY_SEND_ERROR: 1}
    assert d.action_for((TO_TUN, "t", INNER4)) == WriteTun("t", INNER4)
