"""LISP addresses: an AFI (RFC 1700 numbering) followed by the address.

AFI 0 (no address) is ``None``; AFI 1 and 2 are ``ipaddress`` objects; AFI 16387
is the LISP Canonical Address Format (RFC 8060 §3), of which the Instance-ID
(type 2, §4.1) and AFI-List (type 1, §4.16.1) are understood and every other
type is kept as opaque bytes that re-encode byte for byte.

Layout of an LCAF (RFC 8060 §3)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           AFI = 16387         |     Rsvd1     |     Flags     |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |    Type       |     Rsvd2     |            Length             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

``Length`` counts the bytes after the Length field.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from alt_router.lisp._fast import maker
from alt_router.lisp.errors import LispDecodeError, LispEncodeError

AFI_NONE = 0
AFI_IPV4 = 1
AFI_IPV6 = 2
AFI_LCAF = 16387

LCAF_AFI_LIST = 1
LCAF_INSTANCE_ID = 2

# An LCAF may nest LCAFs (an AFI-List of Instance-IDs ...); a bound keeps a
# crafted packet from recursing until Python's stack gives out.
MAX_LCAF_DEPTH = 4

_LCAF_HDR = struct.Struct("!BBBBH")
_IID = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class InstanceId:
    """An address qualified by a 32-bit Instance ID (RFC 8060 §4.1; the VPN of RFC 9300 §8)."""

    instance_id: int
    address: Address
    iid_mask_len: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.instance_id <= 0xFFFFFFFF:
            raise LispEncodeError(f"Instance ID {self.instance_id} out of range 0..2^32-1")
        if not 0 <= self.iid_mask_len <= 32:
            raise LispEncodeError(f"IID mask-len {self.iid_mask_len} out of range 0..32")
        _check_address(self.address, "Instance-ID inner address")


@dataclass(frozen=True, slots=True)
class AfiList:
    """Several addresses of different families naming one thing (RFC 8060 §4.16.1)."""

    addresses: tuple[Address, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.addresses, tuple):
            raise LispEncodeError("AFI-List addresses must be a tuple")
        for a in self.addresses:
            _check_address(a, "AFI-List entry")


@dataclass(frozen=True, slots=True)
class UnknownLcaf:
    """An LCAF type this codec does not interpret, kept whole so it re-encodes exactly."""

    lcaf_type: int
    body: bytes
    flags: int = 0
    rsvd1: int = 0
    rsvd2: int = 0

    def __post_init__(self) -> None:
        for name in ("lcaf_type", "flags", "rsvd1", "rsvd2"):
            value = getattr(self, name)
            if not 0 <= value <= 255:
                raise LispEncodeError(f"LCAF {name} {value} out of range 0..255")
        if self.lcaf_type in (LCAF_AFI_LIST, LCAF_INSTANCE_ID):
            raise LispEncodeError(f"LCAF type {self.lcaf_type} is understood; use AfiList or InstanceId")
        if len(self.body) > 0xFFFF:
            raise LispEncodeError(f"LCAF body of {len(self.body)} bytes exceeds 65535")


Address = IPv4Address | IPv6Address | InstanceId | AfiList | UnknownLcaf | None

_ADDRESS_TYPES = (IPv4Address, IPv6Address, InstanceId, AfiList, UnknownLcaf)


def _check_address(addr: object, what: str) -> None:
    if addr is not None and not isinstance(addr, _ADDRESS_TYPES):
        raise LispEncodeError(f"{what}: {addr!r} is not a LISP address")


def check_address(addr: object, what: str) -> None:
    """Refuse anything that is not an :data:`Address` (``LispEncodeError``)."""
    _check_address(addr, what)


def max_mask_len(addr: Address) -> int:
    """The longest mask an EID-prefix of this address may carry."""
    if isinstance(addr, IPv4Address):
        return 32
    if isinstance(addr, IPv6Address):
        return 128
    if addr is None:
        return 0
    if isinstance(addr, InstanceId):
        return max_mask_len(addr.address)
    # RFC 8060 gives no prefix semantics to other LCAFs; only the 8-bit field limits it.
    return 255


def encode_address(addr: Address) -> bytes:
    """AFI and address bytes."""
    if isinstance(addr, IPv4Address):
        return b"\x00\x01" + addr.packed
    if isinstance(addr, IPv6Address):
        return b"\x00\x02" + addr.packed
    if addr is None:
        return b"\x00\x00"
    if isinstance(addr, InstanceId):
        inner = encode_address(addr.address)
        body = _IID.pack(addr.instance_id) + inner
        return _lcaf(LCAF_INSTANCE_ID, 0, 0, addr.iid_mask_len, body)
    if isinstance(addr, AfiList):
        return _lcaf(LCAF_AFI_LIST, 0, 0, 0, b"".join(encode_address(a) for a in addr.addresses))
    if isinstance(addr, UnknownLcaf):
        return _lcaf(addr.lcaf_type, addr.rsvd1, addr.flags, addr.rsvd2, addr.body)
    raise LispEncodeError(f"{addr!r} is not a LISP address")


def _lcaf(lcaf_type: int, rsvd1: int, flags: int, rsvd2: int, body: bytes) -> bytes:
    if len(body) > 0xFFFF:
        raise LispEncodeError(f"LCAF type {lcaf_type}: body of {len(body)} bytes exceeds 65535")
    return b"\x40\x03" + _LCAF_HDR.pack(rsvd1, flags, lcaf_type, rsvd2, len(body)) + body


# Decoded IPv4/IPv6 addresses are shared: ipaddress objects are immutable, RLOCs
# and EIDs repeat from packet to packet, and building one costs far more than a
# dict look-up.  The cache is bounded by clearing it whole, which is cheap and
# keeps the worst case (a flood of distinct addresses) at plain construction cost.
_CACHE_MAX = 8192
_v4_cache: dict[bytes, IPv4Address] = {}
_v6_cache: dict[bytes, IPv6Address] = {}


def _v4(raw: bytes) -> IPv4Address:
    a = _v4_cache.get(raw)
    if a is None:
        if len(_v4_cache) >= _CACHE_MAX:
            _v4_cache.clear()
        a = _v4_cache[raw] = IPv4Address(raw)
    return a


def _v6(raw: bytes) -> IPv6Address:
    a = _v6_cache.get(raw)
    if a is None:
        if len(_v6_cache) >= _CACHE_MAX:
            _v6_cache.clear()
        a = _v6_cache[raw] = IPv6Address(raw)
    return a


def clear_cache() -> None:
    """Empty the decoded-address cache (for benchmarks that want the cold path)."""
    _v4_cache.clear()
    _v6_cache.clear()


_Get4 = Callable[[bytes], "IPv4Address | None"]
_make_iid = maker(InstanceId)
_make_afi_list = maker(AfiList)
_make_unknown = maker(UnknownLcaf)


def decode_address(
    data: bytes, off: int, what: str, end: int = -1, depth: int = 0, _get4: _Get4 = _v4_cache.get
) -> tuple[Address, int]:
    """Read an AFI-encoded address at ``off``; return it and the offset after it.

    ``end`` bounds the read (default: the end of ``data``); ``what`` names the
    field in error messages.
    """
    if end < 0:
        end = len(data)
    stop = off + 6
    # IPv4 is most of what a Map-Request carries: test for it before anything else.
    if stop <= end and data[off] == 0 and data[off + 1] == 1:
        raw = data[off + 2 : stop]
        a4 = _get4(raw)
        return (_v4(raw) if a4 is None else a4), stop
    if off + 2 > end:
        raise LispDecodeError(f"{what}: AFI truncated at offset {off}")
    afi = (data[off] << 8) | data[off + 1]
    start = off + 2
    if afi == AFI_IPV4:
        stop = start + 4
        if stop > end:
            raise LispDecodeError(f"{what}: IPv4 address truncated at offset {start}")
        return _v4(data[start:stop]), stop
    if afi == AFI_IPV6:
        stop = start + 16
        if stop > end:
            raise LispDecodeError(f"{what}: IPv6 address truncated at offset {start}")
        return _v6(data[start:stop]), stop
    if afi == AFI_NONE:
        return None, start
    if afi == AFI_LCAF:
        return _decode_lcaf(data, start, what, end, depth)
    raise LispDecodeError(f"{what}: unsupported AFI {afi} at offset {off}")


def _decode_lcaf(data: bytes, off: int, what: str, end: int, depth: int) -> tuple[Address, int]:
    if depth >= MAX_LCAF_DEPTH:
        raise LispDecodeError(f"{what}: LCAF nested deeper than {MAX_LCAF_DEPTH} at offset {off - 2}")
    if off + 6 > end:
        raise LispDecodeError(f"{what}: LCAF header truncated at offset {off}")
    rsvd1, flags, lcaf_type, rsvd2, length = _LCAF_HDR.unpack_from(data, off)
    body = off + 6
    stop = body + length
    if stop > end:
        raise LispDecodeError(
            f"{what}: LCAF type {lcaf_type} length {length} at offset {off + 4} overruns the "
            f"{end - body} bytes left"
        )
    if lcaf_type == LCAF_INSTANCE_ID:
        if length < 6:
            raise LispDecodeError(f"{what}: Instance-ID LCAF length {length} at offset {off + 4} is below 6")
        if rsvd2 > 32:
            raise LispDecodeError(f"{what}: IID mask-len {rsvd2} at offset {off + 3} exceeds 32")
        (iid,) = _IID.unpack_from(data, body)
        inner, after = decode_address(data, body + 4, what + " (Instance-ID)", stop, depth + 1)
        if after != stop:
            raise LispDecodeError(
                f"{what}: Instance-ID LCAF length {length} at offset {off + 4} does not match its "
                f"address (ends at {after}, length says {stop})"
            )
        return _make_iid(iid, inner, rsvd2), stop
    if lcaf_type == LCAF_AFI_LIST:
        items: list[Address] = []
        pos = body
        while pos < stop:
            item, pos = decode_address(data, pos, what + " (AFI-List)", stop, depth + 1)
            items.append(item)
        return _make_afi_list(tuple(items)), stop
    return _make_unknown(lcaf_type, bytes(data[body:stop]), flags, rsvd1, rsvd2), stop
