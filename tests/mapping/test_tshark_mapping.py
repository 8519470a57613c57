"""Wireshark's LISP dissector (tshark) reads our side of the ETR, lig and Map-Resolver exchanges (issue 12).

One capture per test: each tshark start costs about a second.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_network

import pytest

from alt_router.lisp import HMAC_SHA_1_96, HMAC_SHA_256_128, EidRecord, MapRequest
from alt_router.mapping.actions import SendUdp
from alt_router.mapping.etr import Etr, EtrMappingConfig, EtrRloc, MapServerTarget
from alt_router.mapping.lig import Lig
from tests.conftest import require_tool
from tests.lisp.tshark import dissect, many, one
from tests.mapping.test_map_resolver import resolver
from tests.mapping.util import ITR, ecm_request

MS = IPv4Address("198.51.100.1")


@pytest.fixture(scope="module")
def tshark() -> str:
    return require_tool("tshark")


def payloads(actions: list[object]) -> list[bytes]:
    out = []
    for a in actions:
        assert isinstance(a, SendUdp)
        out.append(a.payload)
    return out


def test_etr_lig_and_resolver_messages_as_tshark_reads_them(tshark: str) -> None:
    rlocs = (EtrRloc(IPv6Address("2001:db8::1")), EtrRloc(IPv4Address("192.0.2.9"), local=False),
             EtrRloc(IPv4Address("192.0.2.3")))
    etr = Etr(
        [EtrMappingConfig(ip_network("10.1.0.0/16"), rlocs)],
        [MapServerTarget(MS, "k", HMAC_SHA_256_128), MapServerTarget(MS, "k", HMAC_SHA_1_96),
         MapServerTarget(MS, "k", HMAC_SHA_256_128, truncated_auth=True)],
        last_nonce=0x100,
    )
    registers = payloads(etr.tick(0.0))
    request = MapRequest(0x77, None, (ITR,), (EidRecord(IPv4Address("10.1.2.3"), 32),))
    replies = payloads(etr.handle(request.encode(), ITR, 40000, 0.0))
    lig = Lig(IPv4Address("10.1.2.3"), IPv4Address("192.0.2.50"), IPv4Address("192.0.2.1"), port=40000)
    lig_eid = Lig(IPv4Address("10.1.2.3"), IPv4Address("192.0.2.50"), IPv4Address("192.0.2.1"), port=40000,
                  source_eid=IPv4Address("10.9.9.9"))
    inner = 4 + 20 + 8  # a lig ECM's inner Map-Request: tshark shows the inner one as its own layer
    lig_requests = [lig.request(0.0)[inner:], lig_eid.request(0.0)[inner:]]
    mr = resolver(routes=[], eid_space=("10.0.0.0/8",))
    negatives = payloads(mr.handle(ecm_request("10.1.2.3"), ITR, 50000, 0.0))
    negatives += payloads(mr.handle(ecm_request("11.1.2.3"), ITR, 50000, 0.0))

    got = dissect(tshark, registers + replies + lig_requests + negatives)
    assert not any(d.malformed for d in got), [d.expert_messages for d in got]
    regs, reply, ligs, negs = got[:3], got[3], got[4:6], got[6:]

    # RFC 9301 §5.6: full digests by default (20/32 bytes), truncated only where configured;
    # nonces one apart.
    assert [(one(d.lisp, "lisp.keyid"), one(d.lisp, "lisp.authlen")) for d in regs] == [
        ("0x0002", "32"), ("0x0001", "20"), ("0x0002", "16")]
    assert [int(one(d.lisp, "lisp.nonce"), 16) for d in regs] == [0x101, 0x102, 0x103]

    # RFC 9301 §5.5 (ascending, IPv4 first) and §5.4 (A bit; L only on our own RLOCs).
    mapping = one(reply.lisp, "lisp.mapping")
    assert mapping["lisp.mapping.auth"] == "1"
    locs = many(mapping, "lisp.loc")
    assert [loc["lisp.loc.locator"] for loc in locs] == ["192.0.2.3", "192.0.2.9", "2001:db8::1"]
    assert [loc["lisp.loc.flags_tree"]["lisp.loc.flags.local"] for loc in locs] == ["1", "0", "1"]

    # RFC 9301 §5.2: Source-EID AFI 0 without --source-eid.
    assert one(ligs[0].lisp, "lisp.mreq.srceid.afi") == "0"
    assert (one(ligs[1].lisp, "lisp.mreq.srceid.afi"), one(ligs[1].lisp, "lisp.mreq.srceid.ipv4")) == (
        "1", "10.9.9.9")
    assert one(ligs[0].lisp, "lisp.mreq.itr_rloc")["lisp.mreq.itr_rloc_ipv4"] == "192.0.2.50"

    # Negative Map-Replies: 1 minute inside the EID space during an outage, 15 outside (RFC 9301 §8.1/§8.4).
    ttls = [one(d.lisp, "lisp.mapping")["lisp.mapping.ttl"] for d in negs]
    assert ttls == ["1", "15"]
    assert [one(d.lisp, "lisp.mapping")["lisp.mapping.act"] for d in negs] == ["1", "1"]  # Natively-Forward

