"""Map-Registers as independent peers put them on the wire, built byte by byte (not with our codec).

Layout: RFC 9301 §5.6 (header, Authentication Data, records) and §5.4 (records and
locators).  The knobs reproduce what deployed ETRs do differently: the full 20/32-byte
digest instead of the 12/16-byte truncation, an xTR-ID/site-ID trailer (I bit) that the
MAC covers or not, random nonces, any source port.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from ipaddress import IPv4Address, IPv4Network, ip_network

SHA1, SHA256 = 1, 2
_DIGEST = {SHA1: hashlib.sha1, SHA256: hashlib.sha256}
FULL = {SHA1: 20, SHA256: 32}
TRUNCATED = {SHA1: 12, SHA256: 16}

# Map-Register flags (RFC 9301 §5.6): P S I in the first byte, then T and M near the record count.
P_BIT = 1 << 27
I_BIT = 1 << 25
T_BIT = 1 << 11
M_BIT = 1 << 8


def locator(addr: str, *, priority: int = 1, weight: int = 100, local: bool = True) -> bytes:
    """One IPv4 RLOC-Record: priorities, weights, L/p/R flags (R set), AFI 1, the address."""
    flags = (0x4 if local else 0) | 0x1
    return struct.pack("!BBBBHH", priority, weight, 255, 0, flags, 1) + IPv4Address(addr).packed


def record(prefix: str, *locators: bytes, ttl: int = 1440) -> bytes:
    """One EID-Record with the A bit set, IPv4 EID-Prefix."""
    net = ip_network(prefix)
    assert isinstance(net, IPv4Network)
    word = (len(locators) << 24) | (net.prefixlen << 16) | (1 << 12)  # A bit
    return struct.pack("!IIHH", ttl, word, 0, 1) + net.network_address.packed + b"".join(locators)


def map_register(
    key: str, *records: bytes, alg: int = SHA256, auth_len: int | None = None, nonce: int = 1,
    flags: int = M_BIT, xtr_id: int | None = None, site_id: int = 0, mac_over_trailer: bool = False,
    key_id: int = 0,
) -> bytes:
    """The Map-Register bytes, signed over what RFC 9301 §5.6 step 5 names (``mac_over_trailer``:
    over the xTR-ID/site-ID too, as one deployed implementation does)."""
    length = FULL[alg] if auth_len is None else auth_len
    word = (3 << 28) | flags | (I_BIT if xtr_id is not None else 0) | len(records)
    head = struct.pack("!IQBBH", word, nonce, key_id, alg, length)
    body = b"".join(records)
    trailer = b""
    if xtr_id is not None:
        trailer = struct.pack("!QQQ", xtr_id >> 64, xtr_id & (2**64 - 1), site_id)
    covered = head + bytes(length) + body + (trailer if mac_over_trailer else b"")
    mac = hmac.new(key.encode(), covered, _DIGEST[alg]).digest()[:length]
    return head + mac + body + trailer


def auth_data_length(message: bytes) -> int:
    """The Authentication Data Length field of a Map-Register/Notify (offset 14)."""
    value: int = struct.unpack_from("!H", message, 14)[0]
    return value
