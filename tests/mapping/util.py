"""Builders shared by the mapping tests."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

from alt_router.lisp import ECM, EidRecord, MapRequest

ITR = IPv4Address("192.0.2.7")


def map_request(
    eid: str, nonce: int = 0x1122334455667788, itr: IPv4Address | IPv6Address = ITR
) -> MapRequest:
    addr = ip_address(eid)
    return MapRequest(nonce, itr, (itr,), (EidRecord(addr, 32 if addr.version == 4 else 128),))


def ecm_request(eid: str, *, nonce: int = 0x1122334455667788, sport: int = 50000, ttl: int = 64,
                itr: IPv4Address | IPv6Address = ITR) -> bytes:
    request = map_request(eid, nonce, itr)
    return ECM(request, itr, ip_address(eid), source_port=sport, ttl=ttl).encode()
