"""Tunnels added to and removed from a running Dataplane (a config reload), fast and general paths alike."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

import pytest

from alt_router.gre.config import TunnelConfig, TunnelConfigError
from alt_router.gre.dataplane import TO_UNDERLAY, Dataplane, SendUnderlay, WriteTun
from alt_router.inet import PROTO_GRE, ipv4_header, udp_packet

A, B, C = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2"), IPv4Address("192.0.2.3")
INNER = udp_packet(ip_address("10.0.0.1"), ip_address("10.0.0.2"), 1000, 4342, b"hello")


def outer(src: IPv4Address, dst: IPv4Address, datagram: bytes) -> bytes:
    return ipv4_header(src, dst, PROTO_GRE, len(datagram)) + datagram


def datagram_from(dp: Dataplane, name: str) -> bytes:
    [send] = dp.encapsulate(name, INNER)
    assert isinstance(send, SendUnderlay)
    return send.datagram


@pytest.mark.parametrize("opts", [{}, {"key": 5}, {"checksum": True, "sequence": True}])
def test_an_added_tunnel_sends_and_receives_like_one_configured_at_start(opts: dict[str, object]) -> None:
    grown = Dataplane([TunnelConfig("ab", A, B)])
    grown.add_tunnel(TunnelConfig("ac", A, C, **opts))  # type: ignore[arg-type]
    built = Dataplane([TunnelConfig("ab", A, B), TunnelConfig("ac", A, C, **opts)])  # type: ignore[arg-type]
    assert datagram_from(grown, "ac") == datagram_from(built, "ac")
    peer = Dataplane([TunnelConfig("ca", C, A, **opts)])  # type: ignore[arg-type]
    wire = outer(C, A, datagram_from(peer, "ca"))
    assert grown.receive_ipv4(wire) == [WriteTun("ac", INNER)]
    fast = grown.receive_ipv4_fast(wire)
    assert fast in ((1, "ac", INNER), [WriteTun("ac", INNER)])
    assert grown.counters["ac"].rx_packets == 2
    # The tunnel that was there before is untouched.
    assert grown.encapsulate_fast("ab", INNER)[0] == TO_UNDERLAY


def test_a_removed_tunnel_is_unknown_on_every_path() -> None:
    dp = Dataplane([TunnelConfig("ab", A, B), TunnelConfig("ac", A, C, key=1)])
    wire = outer(C, A, datagram_from(Dataplane([TunnelConfig("ca", C, A, key=1)]), "ca"))
    removed = dp.remove_tunnel("ac")
    assert removed is not None and removed.name == "ac"
    assert "ac" not in dp.counters and "ac" not in dp.tunnels
    assert dp.receive_ipv4_fast(wire) == []
    assert dp.receive_ipv4(wire) == []
    assert dp.unmatched.drops == {"unknown-remote": 2}
    assert dp.encapsulate_fast("ac", INNER) == []
    assert dp.unmatched.drops["unknown-tunnel"] == 1
    assert dp.remove_tunnel("ac") is None
    # The other tunnel still works, fast path included.
    assert dp.encapsulate_fast("ab", INNER)[0] == TO_UNDERLAY


def test_removing_one_of_two_keyed_tunnels_on_the_same_endpoints_keeps_the_other() -> None:
    dp = Dataplane([TunnelConfig("k1", A, B, key=1), TunnelConfig("k2", A, B, key=2)])
    dp.remove_tunnel("k1")
    wire = outer(B, A, datagram_from(Dataplane([TunnelConfig("x", B, A, key=2)]), "x"))
    assert dp.receive_ipv4(wire) == [WriteTun("k2", INNER)]
    wrong = outer(B, A, datagram_from(Dataplane([TunnelConfig("x", B, A, key=1)]), "x"))
    assert dp.receive_ipv4(wrong) == []
    assert dp.counters["k2"].drops == {"wrong-key": 1}


def test_an_add_that_clashes_is_refused_and_changes_nothing() -> None:
    dp = Dataplane([TunnelConfig("ab", A, B)])
    with pytest.raises(TunnelConfigError, match="used twice"):
        dp.add_tunnel(TunnelConfig("ab", A, C))
    with pytest.raises(TunnelConfigError, match="same local"):
        dp.add_tunnel(TunnelConfig("other", A, B))
    assert list(dp.tunnels) == ["ab"] and list(dp.counters) == ["ab"]
