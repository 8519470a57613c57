"""The records shared by the LISP control messages (RFC 9301 §5.2 and §5.4).

A Map-Request carries *EID records* (a prefix to look up); Map-Reply,
Map-Register and Map-Notify carry *mapping records* (a prefix, its TTL, action
and locators).  Mapping record and locator layout (RFC 9301 §5.4)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                          Record TTL                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    | Locator Count | EID mask-len  | ACT |A|       Reserved        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    | Rsvd  |  Map-Version Number   |       EID-Prefix-AFI          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                          EID-Prefix                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |   Priority    |    Weight     |  M Priority   |   M Weight    |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |        Unused Flags     |L|p|R|           Loc-AFI             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                             Locator                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Reserved and unused bits are sent as zero and ignored on receipt (RFC 9301 §5.4).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address

from alt_router.lisp._fast import maker
from alt_router.lisp.address import Address, check_address, decode_address, encode_address, max_mask_len
from alt_router.lisp.errors import LispDecodeError, LispEncodeError


class Action(IntEnum):
    """The 3-bit ACT field of a mapping record (RFC 9301 §5.4).

    6 and 7 are unassigned; they are kept (not refused) so a record from a newer
    peer still decodes and re-encodes unchanged.
    """

    NO_ACTION = 0
    NATIVELY_FORWARD = 1
    SEND_MAP_REQUEST = 2
    DROP_NO_REASON = 3
    DROP_POLICY_DENIED = 4
    DROP_AUTH_FAILURE = 5
    UNASSIGNED_6 = 6
    UNASSIGNED_7 = 7


_ACTIONS = tuple(Action)

_EID_REC = struct.Struct("!BB")
_LOC = struct.Struct("!BBBBH")
_MAP_REC = struct.Struct("!IBBHH")

_U32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class EidRecord:
    """One EID-prefix asked for in a Map-Request (RFC 9301 §5.2, the 'Rec' part)."""

    eid: Address
    mask_len: int

    def __post_init__(self) -> None:
        check_address(self.eid, "EID record prefix")
        limit = max_mask_len(self.eid)
        if not 0 <= self.mask_len <= limit:
            raise LispEncodeError(
                f"EID record mask-len {self.mask_len} out of range 0..{limit} for {self.eid}"
            )

    def encode(self) -> bytes:
        return _EID_REC.pack(0, self.mask_len) + encode_address(self.eid)


@dataclass(frozen=True, slots=True)
class Locator:
    """One RLOC of a mapping record, with its TE preferences and state bits."""

    address: Address
    priority: int = 1
    weight: int = 100
    m_priority: int = 255
    m_weight: int = 0
    local: bool = False  # L: the RLOC belongs to the ETR sending the message
    probed: bool = False  # p: the RLOC-probe reply came from this RLOC
    reachable: bool = True  # R: the RLOC is up

    def __post_init__(self) -> None:
        check_address(self.address, "locator")
        for name in ("priority", "weight", "m_priority", "m_weight"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= 255:
                raise LispEncodeError(f"locator {name} {value!r} out of range 0..255")

    def encode(self) -> bytes:
        flags = (4 if self.local else 0) | (2 if self.probed else 0) | (1 if self.reachable else 0)
        return _LOC.pack(self.priority, self.weight, self.m_priority, self.m_weight, flags) + encode_address(
            self.address
        )


@dataclass(frozen=True, slots=True)
class MappingRecord:
    """An EID-prefix and its locators: the record of Map-Reply/Register/Notify (RFC 9301 §5.4).

    A record with no locators is a *negative* mapping; ``action`` tells the ITR
    what to do with traffic for the prefix.
    """

    eid: Address
    mask_len: int
    ttl: int = 1440  # minutes; 0xFFFFFFFF means "until removed"
    locators: tuple[Locator, ...] = ()
    action: Action = Action.NO_ACTION
    authoritative: bool = False
    map_version: int = 0

    def __post_init__(self) -> None:
        check_address(self.eid, "mapping record EID-prefix")
        limit = max_mask_len(self.eid)
        if not 0 <= self.mask_len <= limit:
            raise LispEncodeError(f"record mask-len {self.mask_len} out of range 0..{limit} for {self.eid}")
        if not 0 <= self.ttl <= _U32:
            raise LispEncodeError(f"record TTL {self.ttl} out of range 0..2^32-1")
        if not isinstance(self.locators, tuple):
            raise LispEncodeError("record locators must be a tuple")
        if len(self.locators) > 255:
            raise LispEncodeError(f"{len(self.locators)} locators exceed the 8-bit Locator Count")
        for loc in self.locators:
            if not isinstance(loc, Locator):
                raise LispEncodeError(f"record locator {loc!r} is not a Locator")
        if not 0 <= self.action <= 7:
            raise LispEncodeError(f"record action {self.action} out of range 0..7")
        if not 0 <= self.map_version <= 0xFFF:
            raise LispEncodeError(f"map-version {self.map_version} out of range 0..4095")

    @property
    def negative(self) -> bool:
        return not self.locators

    def encode(self) -> bytes:
        head = _MAP_REC.pack(
            self.ttl,
            len(self.locators),
            self.mask_len,
            (self.action << 13) | (0x1000 if self.authoritative else 0),
            self.map_version,
        )
        return b"".join((head, encode_address(self.eid), *(loc.encode() for loc in self.locators)))


_make_eid_record = maker(EidRecord)
_make_locator = maker(Locator)
_make_mapping_record = maker(MappingRecord)


def decode_eid_record(data: bytes, off: int, index: int) -> tuple[EidRecord, int]:
    if off + 2 > len(data):
        raise LispDecodeError(f"EID record {index}: header truncated at offset {off}")
    _rsvd, mask_len = _EID_REC.unpack_from(data, off)
    eid, end = decode_address(data, off + 2, "EID record prefix")
    if mask_len > (32 if type(eid) is IPv4Address else max_mask_len(eid)):
        raise LispDecodeError(
            f"EID record {index}: mask-len {mask_len} at offset {off + 1} too long for {eid}"
        )
    return _make_eid_record(eid, mask_len), end


def decode_mapping_record(data: bytes, off: int, index: int) -> tuple[MappingRecord, int]:
    if off + 10 > len(data):
        raise LispDecodeError(f"mapping record {index}: header truncated at offset {off}")
    ttl, loc_count, mask_len, act, version = _MAP_REC.unpack_from(data, off)
    eid, pos = decode_address(data, off + 10, "mapping record EID-prefix")
    if mask_len > (32 if type(eid) is IPv4Address else max_mask_len(eid)):
        raise LispDecodeError(
            f"mapping record {index}: mask-len {mask_len} at offset {off + 5} too long for {eid}"
        )
    locators = []
    for i in range(loc_count):
        if pos + 6 > len(data):
            raise LispDecodeError(f"mapping record {index} locator {i}: truncated at offset {pos}")
        pri, wt, mpri, mwt, flags = _LOC.unpack_from(data, pos)
        addr, pos = decode_address(data, pos + 6, "locator address")
        locators.append(
            _make_locator(addr, pri, wt, mpri, mwt, bool(flags & 4), bool(flags & 2), bool(flags & 1))
        )
    record = _make_mapping_record(
        eid, mask_len, ttl, tuple(locators), _ACTIONS[act >> 13], bool(act & 0x1000), version & 0xFFF
    )
    return record, pos


def _locator_order(loc: Locator) -> tuple[int, int]:
    addr = loc.address
    if isinstance(addr, IPv4Address):
        return (0, int(addr))
    if isinstance(addr, IPv6Address):
        return (1, int(addr))
    return (2, 0)


def sorted_locators(locators: Iterable[Locator]) -> tuple[Locator, ...]:
    """The locators in the order a Map-Reply sends them (RFC 9301 §5.5).

    "For each Map-Reply record, the list of Locators in a Locator-Set MUST be
    sorted in order of ascending IP address where an IPv4 Routing Locator
    Address is considered numerically 'less than' an IPv6 Routing Locator
    Address."  That binds the sender of a Map-Reply, so role code calls this;
    the codec encodes and decodes the order it is given.  Locators that are not
    plain IP addresses (LCAFs) keep their relative order after the IP ones.
    """
    return tuple(sorted(locators, key=_locator_order))


def with_sorted_locators(record: MappingRecord) -> MappingRecord:
    """``record`` with its locators in RFC 9301 §5.5 order (the same object when already sorted)."""
    ordered = sorted_locators(record.locators)
    return record if ordered == record.locators else replace(record, locators=ordered)
