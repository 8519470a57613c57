"""Map-Register (type 3), Map-Notify (4) and Map-Notify-Ack (5), RFC 9301 §5.6-5.7.

::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |Type=3 |P|S|I|        Reserved       |E|T|a|R|M| Record Count  |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |Type=4/5|             Reserved                 | Record Count  |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                         Nonce . . .                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                         . . . Nonce                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |    Key ID     |  Algorithm ID |  Authentication Data Length   |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ~                     Authentication Data                       ~
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                    Mapping records ...                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |         xTR-ID (128 bits, Map-Register with I set)            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |         site-ID (64 bits, Map-Register with I set)            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

RFC 6833 had a single 16-bit Key ID (1 = HMAC-SHA-1-96, 2 = HMAC-SHA-256-128);
RFC 9301 splits it into an 8-bit Key ID and an 8-bit Algorithm ID, so an RFC 6833
"Key ID 1" reads here as key_id 0, algorithm_id 1: the same bytes.  Map-Register
bit 22 (R) is reserved in RFC 9301 §5.6: sent as 0, ignored on receipt.

Map-Notify and Map-Notify-Ack are one layout (:class:`MapNotify`, ``ack`` tells
the type).  RFC 9301 §5.7 shows their flags as reserved, with no I bit and no
xTR-ID; deployed Map-Servers nevertheless set bit 4 and append the xTR-ID and
site-ID of the Map-Register they acknowledge.  We accept that on receipt when it
is unambiguous (bit 4 set and exactly 24 bytes after the records) and keep the
values in ``xtr_id``/``site_id``; a Map-Notify we build without them is pure
RFC 9301.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from alt_router.lisp._fast import maker
from alt_router.lisp.errors import LispDecodeError, LispEncodeError
from alt_router.lisp.message_type import MessageType
from alt_router.lisp.records import MappingRecord, decode_mapping_record

_HDR = struct.Struct("!IQBBH")
_XTR = struct.Struct("!QQQ")
_U64 = 0xFFFFFFFFFFFFFFFF
_U128 = (1 << 128) - 1

# Map-Register flags
_P = 1 << 27
_S = 1 << 26
_I = 1 << 25
_E = 1 << 12
_T = 1 << 11
_MERGE = 1 << 10
# bit 22 (1 << 9) is R, reserved (RFC 9301 §5.6); RFC 8111-era drafts called it "m", mobile node
_WANT = 1 << 8
# Map-Notify / Map-Notify-Ack: bit 4 is reserved in RFC 9301 §5.7; deployed peers use it as "I"
_NOTIFY_I = 1 << 27
XTR_TRAILER_LEN = 24


def _check_auth_fields(msg: MapRegister | MapNotify, what: str) -> None:
    if not 0 <= msg.nonce <= _U64:
        raise LispEncodeError(f"{what}: nonce {msg.nonce} out of range 0..2^64-1")
    if not 0 <= msg.key_id <= 255:
        raise LispEncodeError(f"{what}: key ID {msg.key_id} out of range 0..255")
    if not 0 <= msg.algorithm_id <= 255:
        raise LispEncodeError(f"{what}: algorithm ID {msg.algorithm_id} out of range 0..255")
    if not isinstance(msg.auth_data, bytes) or len(msg.auth_data) > 0xFFFF:
        raise LispEncodeError(f"{what}: authentication data must be bytes of at most 65535")
    if not isinstance(msg.records, tuple):
        raise LispEncodeError(f"{what}: records must be a tuple")
    if len(msg.records) > 255:
        raise LispEncodeError(f"{what}: {len(msg.records)} records exceed the 8-bit Record Count")
    for rec in msg.records:
        if not isinstance(rec, MappingRecord):
            raise LispEncodeError(f"{what}: record {rec!r} is not a MappingRecord")
    if (msg.xtr_id is None) != (msg.site_id is None):
        raise LispEncodeError(f"{what}: xtr_id and site_id go together (the I bit carries both)")
    if msg.xtr_id is not None and not 0 <= msg.xtr_id <= _U128:
        raise LispEncodeError(f"{what}: xTR-ID {msg.xtr_id} out of range 0..2^128-1")
    if msg.site_id is not None and not 0 <= msg.site_id <= _U64:
        raise LispEncodeError(f"{what}: site-ID {msg.site_id} out of range 0..2^64-1")


def _encode(word: int, msg: MapRegister | MapNotify) -> bytes:
    parts = [
        _HDR.pack(word | len(msg.records), msg.nonce, msg.key_id, msg.algorithm_id, len(msg.auth_data)),
        msg.auth_data,
    ]
    parts += [r.encode() for r in msg.records]
    if msg.xtr_id is not None and msg.site_id is not None:
        parts.append(_XTR.pack(msg.xtr_id >> 64, msg.xtr_id & _U64, msg.site_id))
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class MapRegister:
    nonce: int
    records: tuple[MappingRecord, ...]
    key_id: int = 0
    algorithm_id: int = 0
    auth_data: bytes = b""
    proxy_reply: bool = False  # P: the Map-Server answers Map-Requests for us
    security: bool = False  # S: LISP-SEC capable
    eid_notify: bool = False  # E
    use_ttl: bool = False  # T: time the registration out by the record TTL
    merge: bool = False  # a: merge request
    want_map_notify: bool = False  # M
    xtr_id: int | None = None  # I bit set when present, with site_id
    site_id: int | None = None

    def __post_init__(self) -> None:
        _check_auth_fields(self, "Map-Register")

    def encode(self) -> bytes:
        word = (
            (MessageType.MAP_REGISTER << 28)
            | (_P if self.proxy_reply else 0)
            | (_S if self.security else 0)
            | (_I if self.xtr_id is not None else 0)
            | (_E if self.eid_notify else 0)
            | (_T if self.use_ttl else 0)
            | (_MERGE if self.merge else 0)
            | (_WANT if self.want_map_notify else 0)
        )
        return _encode(word, self)


@dataclass(frozen=True, slots=True)
class MapNotify:
    """A Map-Notify, or with ``ack`` a Map-Notify-Ack: RFC 9301 §5.7 gives both one layout."""

    nonce: int
    records: tuple[MappingRecord, ...]
    key_id: int = 0
    algorithm_id: int = 0
    auth_data: bytes = b""
    xtr_id: int | None = None  # only as deployed peers send it (see the module doc); we never set it
    site_id: int | None = None
    ack: bool = False  # type 5, Map-Notify-Ack

    def __post_init__(self) -> None:
        _check_auth_fields(self, self.name)

    @property
    def message_type(self) -> MessageType:
        return MessageType.MAP_NOTIFY_ACK if self.ack else MessageType.MAP_NOTIFY

    @property
    def name(self) -> str:
        return "Map-Notify-Ack" if self.ack else "Map-Notify"

    def encode(self) -> bytes:
        return _encode((self.message_type << 28) | (_NOTIFY_I if self.xtr_id is not None else 0), self)


_make_register = maker(MapRegister)
_make_notify = maker(MapNotify)

AUTH_DATA_OFFSET = 16


def _decode_common(
    data: bytes, what: str, i_bit: int
) -> tuple[int, int, int, int, bytes, tuple[MappingRecord, ...], int | None, int | None, int]:
    if len(data) < AUTH_DATA_OFFSET:
        raise LispDecodeError(f"{what}: header truncated at offset {len(data)}, need 16 bytes")
    word, nonce, key_id, alg_id, auth_len = _HDR.unpack_from(data)
    pos = AUTH_DATA_OFFSET + auth_len
    if pos > len(data):
        raise LispDecodeError(
            f"{what}: Authentication Data Length {auth_len} at offset 14 overruns the "
            f"{len(data) - AUTH_DATA_OFFSET} bytes left"
        )
    auth = bytes(data[AUTH_DATA_OFFSET:pos])
    records = []
    for i in range(word & 0xFF):
        rec, pos = decode_mapping_record(data, pos, i)
        records.append(rec)
    xtr_id = site_id = None
    if word & i_bit and (i_bit == _I or len(data) - pos == XTR_TRAILER_LEN):
        if pos + XTR_TRAILER_LEN > len(data):
            raise LispDecodeError(f"{what}: I bit set but xTR-ID/site-ID truncated at offset {pos}")
        hi, lo, site_id = _XTR.unpack_from(data, pos)
        xtr_id = (hi << 64) | lo
        pos += 24
    return word, nonce, key_id, alg_id, auth, tuple(records), xtr_id, site_id, pos


def decode_map_register(data: bytes) -> tuple[MapRegister, int]:
    word, nonce, key_id, alg, auth, records, xtr_id, site_id, pos = _decode_common(data, "Map-Register", _I)
    msg = _make_register(
        nonce, records, key_id, alg, auth,
        bool(word & _P), bool(word & _S), bool(word & _E), bool(word & _T),
        bool(word & _MERGE), bool(word & _WANT), xtr_id, site_id,
    )
    return msg, pos


def decode_map_notify(data: bytes) -> tuple[MapNotify, int]:
    """Decode a Map-Notify or Map-Notify-Ack (the type nibble says which).

    Bit 4 with exactly 24 bytes after the records reads as a deployed peer's
    I bit and xTR-ID/site-ID; bit 4 with nothing after the records is the
    reserved bit RFC 9301 §5.7 says to ignore.
    """
    ack = bool(data) and data[0] >> 4 == MessageType.MAP_NOTIFY_ACK
    what = "Map-Notify-Ack" if ack else "Map-Notify"
    _word, nonce, key_id, alg, auth, records, xtr_id, site_id, pos = _decode_common(data, what, _NOTIFY_I)
    return _make_notify(nonce, records, key_id, alg, auth, xtr_id, site_id, ack), pos
