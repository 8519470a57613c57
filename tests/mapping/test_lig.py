"""lig's core: fresh nonces, reply matching, ICMP trace matching, output."""

from __future__ import annotations

import itertools
import json
from ipaddress import IPv4Address

from alt_router.inet import icmp_error, udp_packet
from alt_router.lisp import ECM, Action, Locator, MappingRecord, MapReply, MapRequest, decode
from alt_router.mapping.lig import Lig, format_hop, format_reply, reply_to_dict

SRC = IPv4Address("192.0.2.50")
MR = IPv4Address("192.0.2.1")
ETR = IPv4Address("198.51.100.7")
EID = IPv4Address("153.16.1.9")


def lig(nonces: list[int] | None = None) -> Lig:
    it = iter(nonces) if nonces is not None else itertools.count(1)
    return Lig(EID, SRC, MR, port=40123, nonce=lambda: next(it))


def positive(nonce: int) -> bytes:
    rec = MappingRecord(IPv4Address("153.16.1.0"), 24, ttl=1440, authoritative=True,
                        locators=(Locator(ETR, 1, 100),))
    return MapReply(nonce, (rec,)).encode()


def test_request_is_an_ecm_from_our_port_with_a_fresh_nonce_each_attempt() -> None:
    lg = lig([7, 7, 8])  # a repeated draw must not be reused
    ecm = decode(lg.request(0.0, ttl=3))
    assert isinstance(ecm, ECM) and isinstance(ecm.inner, MapRequest)
    assert (ecm.source, ecm.destination, ecm.source_port, ecm.destination_port, ecm.ttl) == (
        SRC, EID, 40123, 4342, 3)
    assert ecm.inner.itr_rlocs == (SRC,) and ecm.inner.nonce == 7
    again = decode(lg.request(1.0))
    assert again.inner.nonce == 8  # type: ignore[union-attr]


def test_only_the_attempt_in_flight_is_accepted() -> None:
    lg = lig()
    lg.request(10.0)  # nonce 1
    lg.request(11.0)  # nonce 2: the first is abandoned
    assert lg.receive(positive(1), ETR, 11.5) is None
    assert lg.receive(b"\x20", ETR, 11.5) is None
    assert lg.receive(decode(lg.request(12.0)).encode(), ETR, 12.1) is None  # not a Map-Reply
    got = lg.receive(positive(3), ETR, 12.25)
    assert got is not None and got.positive and got.rtt == 0.25 and got.source == ETR
    assert lg.receive(positive(3), ETR, 12.5) is None  # a duplicate
    assert lg.counters["unmatched-nonce"] == 2
    assert lg.counters["malformed"] == 1 and lg.counters["not-map-reply"] == 1


def test_negative_reply_is_not_positive() -> None:
    lg = lig()
    lg.request(0.0)
    neg = MapReply(1, (MappingRecord(IPv4Address("153.0.0.0"), 8, ttl=15, action=Action.NATIVELY_FORWARD),))
    got = lg.receive(neg.encode(), MR, 0.1)
    assert got is not None and not got.positive
    assert "natively-forward" in format_reply(got) and "negative" in format_reply(got)


def test_time_exceeded_quoting_our_nonce_is_a_hop() -> None:
    lg = lig()
    request = decode(lg.request(5.0, ttl=2))
    assert isinstance(request, ECM)
    # What an ALT hop drops: the datagram the Map-Resolver built from our ECM.
    datagram = udp_packet(SRC, EID, 40123, 4342, request.inner.encode(), ttl=1)
    router = IPv4Address("10.255.1.2")
    icmp = icmp_error(router, datagram, kind="time-exceeded")[20:]
    other = icmp_error(router, udp_packet(SRC, EID, 40123, 4342, positive(99)[:4] + bytes(20)),
                       kind="time-exceeded")[20:]
    assert lg.receive_icmp(other, router, 5.1) is None
    assert lg.receive_icmp(b"\x0b\x00", router, 5.1) is None
    assert lg.receive_icmp(bytes([8, 0, 0, 0]) + bytes(4) + datagram, router, 5.1) is None  # echo request
    hop = lg.receive_icmp(icmp, router, 5.5)
    assert hop is not None and (hop.ttl, hop.router, hop.kind, hop.rtt) == (2, router, "time-exceeded", 0.5)
    assert "10.255.1.2" in format_hop(hop, 2) and format_hop(None, 3).strip() == "3  *"


def test_json_shape() -> None:
    lg = lig()
    lg.request(0.0)
    got = lg.receive(positive(1), ETR, 0.002)
    assert got is not None
    doc = json.loads(json.dumps(reply_to_dict(got)))
    assert doc["records"][0]["eid_prefix"] == "153.16.1.0/24"
    assert doc["records"][0]["locators"] == [
        {"address": "198.51.100.7", "priority": 1, "weight": 100, "state": "up", "local": False}]
    assert doc["nonce"] == "0x0000000000000001" and doc["rtt_ms"] == 2.0


def test_source_eid_is_afi_0_unless_one_is_given() -> None:
    """RFC 9301 §5.2: with no source EID "an AFI value of 0 is used, and this field is of zero length"."""
    data = lig().request(0.0)
    inner = data[4 + 20 + 8:]  # ECM header, IPv4 header, UDP header
    assert inner[12:14] == b"\x00\x00"  # Source-EID-AFI 0 ...
    assert inner[14:16] == b"\x00\x01" and inner[16:20] == SRC.packed  # ... and the ITR-RLOC follows at once
    ecm = decode(data)
    assert isinstance(ecm, ECM) and isinstance(ecm.inner, MapRequest) and ecm.inner.source_eid is None
    with_eid = Lig(EID, SRC, MR, port=40123, source_eid=IPv4Address("153.16.9.9"), nonce=lambda: 5)
    ecm = decode(with_eid.request(0.0))
    assert isinstance(ecm, ECM) and isinstance(ecm.inner, MapRequest)
    assert ecm.inner.source_eid == IPv4Address("153.16.9.9") and ecm.inner.itr_rlocs == (SRC,)
    assert ecm.source == SRC  # the inner header still carries the RLOC (where ICMP for --trace goes)
