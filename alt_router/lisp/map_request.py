"""Map-Request (type 1), RFC 9301 §5.2.

::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |Type=1 |A|M|P|S|p|s|R|R|  Rsvd   |L|D|   IRC   | Record Count  |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                         Nonce . . .                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                         . . . Nonce                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |         Source-EID-AFI        |   Source EID Address  ...     |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |         ITR-RLOC-AFI 1        |    ITR-RLOC Address 1  ...    |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                              ...                              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |         ITR-RLOC-AFI n        |    ITR-RLOC Address n  ...    |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
  / |    Reserved   | EID mask-len  |        EID-Prefix-AFI         |
Rec +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
  \\ |                       EID-Prefix  ...                         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                   Map-Reply Record  ...                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

IRC is the ITR-RLOC count minus one, so 1..32 ITR-RLOCs; M is set exactly when
the Map-Reply record is present.  RFC 9301 §5.2: a receiver accepts one or more
records; zero records is refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from alt_router.lisp._fast import maker
from alt_router.lisp.address import Address, check_address, decode_address, encode_address
from alt_router.lisp.errors import LispDecodeError, LispEncodeError
from alt_router.lisp.message_type import MessageType
from alt_router.lisp.records import EidRecord, MappingRecord, decode_eid_record, decode_mapping_record

_HDR = struct.Struct("!IQ")
_U64 = 0xFFFFFFFFFFFFFFFF

_A = 1 << 27
_M = 1 << 26
_P = 1 << 25
_S = 1 << 24
_PITR = 1 << 23
_SMRI = 1 << 22
_L = 1 << 14
_D = 1 << 13

MAX_ITR_RLOCS = 32

# Static so the hot path builds no string; the offset in the error locates the RLOC.
_ITR_RLOC = "Map-Request ITR-RLOC (count from IRC)"


@dataclass(frozen=True, slots=True)
class MapRequest:
    nonce: int
    source_eid: Address
    itr_rlocs: tuple[Address, ...]
    records: tuple[EidRecord, ...]
    authoritative: bool = False  # A
    probe: bool = False  # P: RLOC-probe
    smr: bool = False  # S: Solicit-Map-Request
    pitr: bool = False  # p: sent by a PITR
    smr_invoked: bool = False  # s: sent because of an SMR
    local_xtr: bool = False  # L: to a local xTR (RFC 9301 §5.2)
    dont_map_reply: bool = False  # D: do not send a Map-Reply (RFC 9301 §5.2)
    map_reply: MappingRecord | None = None  # M bit set when present

    def __post_init__(self) -> None:
        if not 0 <= self.nonce <= _U64:
            raise LispEncodeError(f"nonce {self.nonce} out of range 0..2^64-1")
        check_address(self.source_eid, "source EID")
        if not isinstance(self.itr_rlocs, tuple) or not isinstance(self.records, tuple):
            raise LispEncodeError("Map-Request itr_rlocs and records must be tuples")
        if not 1 <= len(self.itr_rlocs) <= MAX_ITR_RLOCS:
            raise LispEncodeError(f"{len(self.itr_rlocs)} ITR-RLOCs: a Map-Request carries 1..32")
        for rloc in self.itr_rlocs:
            check_address(rloc, "ITR-RLOC")
        if not 1 <= len(self.records) <= 255:
            raise LispEncodeError(f"{len(self.records)} EID records: a Map-Request carries 1..255")
        for rec in self.records:
            if not isinstance(rec, EidRecord):
                raise LispEncodeError(f"Map-Request record {rec!r} is not an EidRecord")
        if self.map_reply is not None and not isinstance(self.map_reply, MappingRecord):
            raise LispEncodeError("Map-Request map_reply must be a MappingRecord or None")

    def encode(self) -> bytes:
        word = (
            (MessageType.MAP_REQUEST << 28)
            | (_A if self.authoritative else 0)
            | (_M if self.map_reply is not None else 0)
            | (_P if self.probe else 0)
            | (_S if self.smr else 0)
            | (_PITR if self.pitr else 0)
            | (_SMRI if self.smr_invoked else 0)
            | (_L if self.local_xtr else 0)
            | (_D if self.dont_map_reply else 0)
            | ((len(self.itr_rlocs) - 1) << 8)
            | len(self.records)
        )
        parts = [_HDR.pack(word, self.nonce), encode_address(self.source_eid)]
        parts += [encode_address(r) for r in self.itr_rlocs]
        parts += [r.encode() for r in self.records]
        if self.map_reply is not None:
            parts.append(self.map_reply.encode())
        return b"".join(parts)


_make = maker(MapRequest)


def decode_map_request(data: bytes) -> tuple[MapRequest, int]:
    """Decode a Map-Request at the start of ``data``; return it and where it ends."""
    if len(data) < 12:
        raise LispDecodeError(f"Map-Request: header truncated at offset {len(data)}, need 12 bytes")
    word, nonce = _HDR.unpack_from(data)
    count = word & 0xFF
    if count == 0:
        raise LispDecodeError("Map-Request: Record Count 0 at offset 3 (at least one record is required)")
    source_eid, pos = decode_address(data, 12, "Map-Request source EID")
    irc = ((word >> 8) & 0x1F) + 1
    rlocs = []
    for _ in range(irc):
        rloc, pos = decode_address(data, pos, _ITR_RLOC)
        rlocs.append(rloc)
    records = []
    for i in range(count):
        rec, pos = decode_eid_record(data, pos, i)
        records.append(rec)
    map_reply = None
    if word & _M:
        map_reply, pos = decode_mapping_record(data, pos, 0)
    msg = _make(
        nonce,
        source_eid,
        tuple(rlocs),
        tuple(records),
        word & _A != 0,
        word & _P != 0,
        word & _S != 0,
        word & _PITR != 0,
        word & _SMRI != 0,
        word & _L != 0,
        word & _D != 0,
        map_reply,
    )
    return msg, pos
