"""Map-Reply (type 2), RFC 9301 §5.4.

::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |Type=2 |P|E|S|          Reserved               | Record Count  |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                         Nonce . . .                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                         . . . Nonce                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                    Mapping records ...                        |

With S set, LISP-SEC (RFC 9303 §6.5) appends authentication data after the
records; it is kept opaque in ``security_data``.  Without S, bytes after the
last record are an error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from alt_router.lisp._fast import maker
from alt_router.lisp.errors import LispDecodeError, LispEncodeError
from alt_router.lisp.message_type import MessageType
from alt_router.lisp.records import MappingRecord, decode_mapping_record

_HDR = struct.Struct("!IQ")
_U64 = 0xFFFFFFFFFFFFFFFF
_P = 1 << 27
_E = 1 << 26
_S = 1 << 25


@dataclass(frozen=True, slots=True)
class MapReply:
    nonce: int
    records: tuple[MappingRecord, ...]
    probe: bool = False  # P: reply to an RLOC-probe
    echo_nonce: bool = False  # E: the ETR can echo nonces
    security: bool = False  # S: LISP-SEC data follows the records
    security_data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.nonce <= _U64:
            raise LispEncodeError(f"nonce {self.nonce} out of range 0..2^64-1")
        if not isinstance(self.records, tuple):
            raise LispEncodeError("Map-Reply records must be a tuple")
        if len(self.records) > 255:
            raise LispEncodeError(f"{len(self.records)} records exceed the 8-bit Record Count")
        for rec in self.records:
            if not isinstance(rec, MappingRecord):
                raise LispEncodeError(f"Map-Reply record {rec!r} is not a MappingRecord")
        if self.security_data and not self.security:
            raise LispEncodeError("Map-Reply security_data needs the S bit (security=True)")

    def encode(self) -> bytes:
        word = (
            (MessageType.MAP_REPLY << 28)
            | (_P if self.probe else 0)
            | (_E if self.echo_nonce else 0)
            | (_S if self.security else 0)
            | len(self.records)
        )
        records = [r.encode() for r in self.records]
        return b"".join((_HDR.pack(word, self.nonce), *records, self.security_data))


_make = maker(MapReply)


def decode_map_reply(data: bytes) -> tuple[MapReply, int]:
    if len(data) < 12:
        raise LispDecodeError(f"Map-Reply: header truncated at offset {len(data)}, need 12 bytes")
    word, nonce = _HDR.unpack_from(data)
    pos = 12
    records = []
    for i in range(word & 0xFF):
        rec, pos = decode_mapping_record(data, pos, i)
        records.append(rec)
    security = bool(word & _S)
    extra = b""
    if security:
        extra = bytes(data[pos:])
        pos = len(data)
    msg = _make(nonce, tuple(records), bool(word & _P), bool(word & _E), security, extra)
    return msg, pos
