"""The Map-Server against what deployed ETRs send: hand-built Map-Register bytes (peer_vectors.py)."""

from __future__ import annotations

import dataclasses
import logging
from ipaddress import IPv4Address, ip_address, ip_network

import pytest

from alt_router.inet import udp_packet
from alt_router.lisp import ECM, MapNotify, decode, verify
from alt_router.mapping.actions import SendUdp
from alt_router.mapping.map_server import MapServer, Site

from . import peer_vectors as pv
from .util import ITR, map_request

KEY = "interop-key"
RLOC = IPv4Address("198.51.100.21")
OTHER = IPv4Address("203.0.113.66")  # a host that is not the site's ETR
SITE = Site("peer", KEY, pv.SHA256, (ip_network("153.16.1.0/24"),))
SITE_SHA1 = Site("peer1", KEY, pv.SHA1, (ip_network("153.16.5.0/24"),))


def server(*sites: Site) -> MapServer:
    return MapServer(sites or (SITE, SITE_SHA1))


def reg(prefix: str = "153.16.1.0/24", *, rloc: str = str(RLOC), **kwargs: object) -> bytes:
    return pv.map_register(KEY, pv.record(prefix, pv.locator(rloc)), **kwargs)  # type: ignore[arg-type]


def request_to(ms: MapServer, eid: str = "153.16.1.5") -> SendUdp:
    datagram = udp_packet(ITR, ip_address(eid), 50000, 4342, map_request(eid).encode())
    (out,) = ms.handle_alt(datagram, 1.0)
    assert isinstance(out, SendUdp)
    return out


@pytest.mark.parametrize(
    ("alg", "length", "kind"),
    [(pv.SHA256, 32, "sha256-full"), (pv.SHA256, 16, "sha256-128"),
     (pv.SHA1, 20, "sha1-full"), (pv.SHA1, 12, "sha1-96")],
)
def test_every_mac_length_a_peer_sends_is_accepted_and_answered_in_kind(
    alg: int, length: int, kind: str
) -> None:
    """RFC 9301 §5.7: the Map-Notify's fields are copied from the Map-Register; deployed ETRs send
    (and expect back) the full 20/32-byte digest, older ones the 12/16-byte truncation."""
    ms = server()
    prefix = "153.16.1.0/24" if alg == pv.SHA256 else "153.16.5.0/24"
    data = reg(prefix, alg=alg, auth_len=length, nonce=7)
    notify = ms.handle_register(data, RLOC, 4342, 0.0)[-1]
    assert isinstance(notify, SendUdp)
    assert pv.auth_data_length(notify.payload) == length
    assert verify(notify.payload, KEY)
    assert ms.counters[f"auth:{kind}"] == 1 and ms.counters["registered"] == 1


def test_an_etr_on_an_ephemeral_port_gets_its_notify_and_requests_at_4342() -> None:
    """RFC 9301 §5.6 lets the ETR pick any source port; §8.2 sends the Map-Notify to 4342, "not to
    the source port", and §5.8 sends ECMs to 4342: an ETR listening on 4342 gets both."""
    ms = server()
    (_, notify) = ms.handle_register(reg(), RLOC, 53211, 0.0)
    assert isinstance(notify, SendUdp) and (notify.dst, notify.dport) == (RLOC, 4342)
    ecm = request_to(ms)
    assert (ecm.dst, ecm.dport) == (RLOC, 4342)


def test_a_natted_site_can_ask_for_the_source_address_and_port() -> None:
    """The explicit deviation for ETRs behind NAT: notify_to = "source-port" (docs/mapping.md)."""
    ms = server(dataclasses.replace(SITE, notify_to="source-port"))
    public = IPv4Address("192.0.2.250")  # the NAT's address: not the RLOC the ETR registered
    (_, notify) = ms.handle_register(reg(), public, 61001, 0.0)
    assert (notify.dst, notify.dport) == (public, 61001)  # type: ignore[union-attr]
    ecm = request_to(ms)
    assert (ecm.dst, ecm.dport) == (public, 61001)


@pytest.mark.parametrize("mac_over_trailer", [False, True], ids=["rfc9301", "over-xtr-id"])
def test_i_bit_registrations_from_either_kind_of_peer(mac_over_trailer: bool) -> None:
    """RFC 9301 §5.6: the I bit adds the xTR-ID and site-ID; the MAC covers the message "through the
    end of the last RLOC-Record".  One deployed peer MACs the trailer too: accept both."""
    ms = server()
    data = reg(xtr_id=0xABCDEF << 64 | 1, site_id=9, mac_over_trailer=mac_over_trailer)
    out = ms.handle_register(data, RLOC, 4342, 0.0)
    (registration,) = ms.registrations()
    assert registration.xtr_id == 0xABCDEF << 64 | 1
    assert ms.counters["auth:mac-over-xtr-id"] == int(mac_over_trailer)
    notify = decode(out[-1].payload)  # type: ignore[union-attr]
    assert isinstance(notify, MapNotify) and notify.xtr_id is None  # RFC 9301 §5.7 has no trailer


def test_a_spoofed_source_never_receives_the_sites_map_requests() -> None:
    """RFC 9301 §8.3 forwards to "one of the registered ETRs": the RLOC the signed record names,
    never the address a (replayed) Map-Register happened to come from."""
    ms = server(dataclasses.replace(SITE, replay="off"))  # even with no replay protection at all
    data = reg()
    ms.handle_register(data, OTHER, 4342, 0.0)  # a replay from another host
    (registration,) = ms.registrations()
    assert registration.source == OTHER and registration.etr_address == RLOC
    ecm = request_to(ms)
    assert ecm.dst == RLOC
    assert isinstance(decode(ecm.payload), ECM)


def test_the_registering_address_is_used_when_it_is_one_of_the_rlocs() -> None:
    ms = server()
    data = pv.map_register(KEY, pv.record("153.16.1.0/24", pv.locator("192.0.2.9"), pv.locator(str(RLOC))))
    ms.handle_register(data, RLOC, 4342, 0.0)
    assert request_to(ms).dst == RLOC


def test_without_a_usable_rloc_nothing_is_forwarded() -> None:
    ms = server()
    data = pv.map_register(KEY, pv.record("153.16.1.0/24"))  # no locators at all
    ms.handle_register(data, OTHER, 4342, 0.0)
    datagram = udp_packet(ITR, ip_address("153.16.1.5"), 50000, 4342, map_request("153.16.1.5").encode())
    assert ms.handle_alt(datagram, 1.0) == []
    assert ms.counters["no-etr-rloc"] == 1


# --- replay protection (RFC 9301 §5.6) -------------------------------------------------------------


def test_enforce_drops_a_nonce_that_is_not_greater(caplog: pytest.LogCaptureFixture) -> None:
    """RFC 9301 §5.6: "If a Map-Register is received with a nonce value that is not greater than the
    saved nonce, it MUST drop the Map-Register message and SHOULD log the fact"."""
    ms = server()
    assert ms.handle_register(reg(nonce=100), RLOC, 4342, 0.0)
    with caplog.at_level(logging.WARNING):
        assert ms.handle_register(reg(nonce=100), RLOC, 4342, 1.0) == []  # the same again
        assert ms.handle_register(reg(nonce=99), RLOC, 4342, 2.0) == []
    assert ms.counters["refused:replay"] == 2
    assert sum("not greater" in r.getMessage() for r in caplog.records) == 1  # then summarised
    assert ms.handle_register(reg(nonce=101), RLOC, 4342, 3.0)
    assert ms.counters["registered"] == 2


def test_a_replayed_withdrawal_cannot_remove_a_site() -> None:
    """The attack of issue 12: a captured TTL-0 Map-Register replayed after a fresh registration."""
    ms = server()
    withdraw = pv.map_register(KEY, pv.record("153.16.1.0/24", pv.locator(str(RLOC)), ttl=0), nonce=5)
    ms.handle_register(reg(nonce=4), RLOC, 4342, 0.0)
    ms.handle_register(withdraw, RLOC, 4342, 1.0)
    assert len(ms) == 0
    ms.handle_register(reg(nonce=6), RLOC, 4342, 2.0)
    # Without an xTR-ID, registrations and nonces are keyed by source: from elsewhere it is a no-op.
    ms.handle_register(withdraw, OTHER, 4342, 3.0)
    assert len(ms) == 1
    assert ms.handle_register(withdraw, RLOC, 4342, 3.0) == []
    assert len(ms) == 1 and ms.counters["refused:replay"] == 1


def test_nonces_are_tracked_per_xtr_id_and_key() -> None:
    """RFC 9301 §5.6: "the last nonce received for each ETR xTR-ID and key pair"."""
    ms = server()
    assert ms.handle_register(reg(nonce=50, xtr_id=1), RLOC, 4342, 0.0)
    assert ms.handle_register(reg(nonce=10, xtr_id=2), RLOC, 4342, 0.0)  # another xTR: its own sequence
    assert ms.handle_register(reg(nonce=40, xtr_id=1), OTHER, 4342, 1.0) == []  # same xTR, other address
    assert ms.counters["refused:replay"] == 1 and len(ms) == 2


@pytest.mark.parametrize(("policy", "accepted", "refused"), [
    ("enforce", 1, 2), ("log-only", 3, 0), ("off", 3, 0),
])
def test_random_nonces_under_each_policy(policy: str, accepted: int, refused: int) -> None:
    """Deployed ETRs that send random nonces register under log-only and off (docs/mapping.md)."""
    ms = server(dataclasses.replace(SITE, replay=policy))
    for nonce in (0x9F3A_5C00_0000_0001, 0x1234, 0x0BAD_F00D):
        ms.handle_register(reg(nonce=nonce), RLOC, 4342, 0.0)
    assert ms.counters["registered"] == accepted
    assert ms.counters["refused:replay"] == refused
    assert ms.counters["replay-accepted"] == (2 if policy == "log-only" else 0)
    assert ms.stats()["nonces"] == (0 if policy == "off" else 1)


def test_the_nonce_table_survives_a_restart_as_plain_data() -> None:
    ms = server()
    ms.handle_register(reg(nonce=77, xtr_id=3), RLOC, 4342, 100.0)
    ms.handle_register(reg(nonce=78), RLOC, 4342, 100.0)
    dump = ms.dump_nonces(110.0)
    assert {(d.get("xtr_id"), d.get("etr"), d["nonce"]) for d in dump} == {
        (3, None, 77), (None, str(RLOC), 78)}
    again = server()
    assert again.load_nonces(dump, 5.0, elapsed=30.0) == 2
    assert again.handle_register(reg(nonce=77, xtr_id=3), RLOC, 4342, 6.0) == []
    assert again.counters["refused:replay"] == 1
    # The records lived 180 s after their last Map-Register: 170 s were left, 30 s passed while down.
    assert again.next_expiry() == pytest.approx(5.0 + 140.0)
    assert server().load_nonces(dump, 5.0, elapsed=1000.0) == 0  # expired while the node was down


@pytest.mark.parametrize("bad", [
    {"nonces": []}, [{"site": "peer"}], [{"site": 1, "key_id": 0, "nonce": 1, "expires_in": 5, "etr": "x"}],
    [{"site": "peer", "key_id": 0, "nonce": "1", "expires_in": 5, "xtr_id": 1}],
])
def test_a_corrupt_nonce_table_is_refused_whole(bad: object) -> None:
    ms = server()
    with pytest.raises(ValueError, match="nonce table"):
        ms.load_nonces(bad, 0.0)
    assert ms.stats()["nonces"] == 0


def test_a_new_key_forgets_the_sites_nonces() -> None:
    ms = server()
    ms.handle_register(reg(nonce=1000), RLOC, 4342, 0.0)
    ms.set_sites([dataclasses.replace(SITE, key="rotated"), SITE_SHA1], 1.0)
    assert ms.stats()["nonces"] == 0
    data = pv.map_register("rotated", pv.record("153.16.1.0/24", pv.locator(str(RLOC))), nonce=1)
    assert ms.handle_register(data, RLOC, 4342, 2.0)
