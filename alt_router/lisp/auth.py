"""Map-Register / Map-Notify / Map-Notify-Ack authentication (RFC 9301 §5.6).

What the MAC covers: RFC 9301 §5.6 step 5, "the entire Map-Register payload
(from and including the LISP message type field through the end of the last
RLOC-Record) with the authenticated data field preset to 0".  The xTR-ID and
site-ID that follow the records when I is set are therefore *not* covered.
:func:`sign` computes that form; :func:`authenticate` tries it first and then the
form some deployed implementations compute (MAC over the whole message, trailer
included), and says which one matched.

How long the MAC is: the algorithm names (1 = HMAC-SHA-1-96, 2 =
HMAC-SHA-256-128) promise the 96/128-bit truncations of RFC 2404/4868, but the
deployed implementations send and expect the whole 20/32-byte digest, and one
of them refuses anything shorter.  :func:`sign` writes the full digest unless
asked for ``truncated=True``; :func:`authenticate` accepts both lengths of each
algorithm, compares in constant time, and reports which it saw.
:func:`sign_like` answers a message with the same algorithm and length it came
with (RFC 9301 §5.7: the Map-Notify's fields are copied from the Map-Register).

The Algorithm IDs implemented use the "none" KDF (RFC 9301 §12.5): the
per-message key is the pre-shared key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TypeVar

from alt_router.lisp.errors import LispDecodeError, LispEncodeError
from alt_router.lisp.map_register import (
    AUTH_DATA_OFFSET,
    XTR_TRAILER_LEN,
    MapNotify,
    MapRegister,
    decode_map_notify,
    decode_map_register,
)
from alt_router.lisp.message_type import MessageType

ALG_NONE = 0
HMAC_SHA_1_96 = 1
HMAC_SHA_256_128 = 2

_DIGESTS = {HMAC_SHA_1_96: hashlib.sha1, HMAC_SHA_256_128: hashlib.sha256}
# (truncated length the algorithm's name promises, full digest length deployed peers send)
_LENGTHS = {HMAC_SHA_1_96: (12, 20), HMAC_SHA_256_128: (16, 32)}


class AuthKind(StrEnum):
    """Which algorithm and Authentication Data length a message verified with (a counter name)."""

    SHA1_96 = "sha1-96"
    SHA1_FULL = "sha1-full"
    SHA256_128 = "sha256-128"
    SHA256_FULL = "sha256-full"


_KINDS = {
    (HMAC_SHA_1_96, 12): AuthKind.SHA1_96,
    (HMAC_SHA_1_96, 20): AuthKind.SHA1_FULL,
    (HMAC_SHA_256_128, 16): AuthKind.SHA256_128,
    (HMAC_SHA_256_128, 32): AuthKind.SHA256_FULL,
}


@dataclass(frozen=True, slots=True)
class Verified:
    """How a message authenticated (:func:`authenticate`)."""

    kind: AuthKind
    algorithm_id: int
    length: int  # bytes of Authentication Data
    mac_over_xtr_id: bool  # the MAC also covered the xTR-ID/site-ID (not RFC 9301 §5.6 step 5)

    @property
    def truncated(self) -> bool:
        return self.length == _LENGTHS[self.algorithm_id][0]


AuthenticatedMessage = MapRegister | MapNotify
M = TypeVar("M", MapRegister, MapNotify)

_AUTH_HDR = struct.Struct("!BH")
_AUTHENTICATED_TYPES = (MessageType.MAP_REGISTER, MessageType.MAP_NOTIFY, MessageType.MAP_NOTIFY_ACK)


def auth_length(algorithm_id: int, *, truncated: bool = False) -> int:
    """Bytes of Authentication Data ``algorithm_id`` produces (0 for none): the full digest by default."""
    if algorithm_id == ALG_NONE:
        return 0
    try:
        short, full = _LENGTHS[algorithm_id]
    except KeyError:
        raise LispEncodeError(f"unknown authentication algorithm ID {algorithm_id}") from None
    return short if truncated else full


def _key(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key


def compute(zeroed: bytes, key: bytes | str, algorithm_id: int, length: int) -> bytes:
    """The MAC of ``zeroed`` (the covered bytes, Authentication Data all zero), cut to ``length``."""
    digest = _DIGESTS.get(algorithm_id)
    if digest is None:
        raise LispEncodeError(f"unknown authentication algorithm ID {algorithm_id}")
    return hmac.new(_key(key), zeroed, digest).digest()[:length]


def sign(
    message: M, key: bytes | str, *, algorithm_id: int | None = None, truncated: bool = False,
    length: int | None = None, mac_over_xtr_id: bool = False,
) -> M:
    """``message`` with its Authentication Data filled in.

    The algorithm is ``algorithm_id`` if given, else the message's own
    (HMAC-SHA-256-128 when that is 0, "none").  The full digest is written
    unless ``truncated`` (12/16 bytes) or an explicit ``length`` (12 or 20 for
    SHA-1, 16 or 32 for SHA-256) says otherwise.  ``mac_over_xtr_id`` includes
    the xTR-ID/site-ID in the MAC, for a peer that verifies it that way;
    RFC 9301 §5.6 does not.
    """
    alg = algorithm_id if algorithm_id is not None else (message.algorithm_id or HMAC_SHA_256_128)
    if length is None:
        length = auth_length(alg, truncated=truncated)
    elif length not in _LENGTHS.get(alg, ()):
        raise LispEncodeError(f"authentication data length {length} is not one algorithm {alg} produces")
    blank = replace(message, algorithm_id=alg, auth_data=bytes(length))
    wire = blank.encode()
    if blank.xtr_id is not None and not mac_over_xtr_id:
        wire = wire[:-XTR_TRAILER_LEN]
    return replace(blank, auth_data=compute(wire, key, alg, length))


def sign_like(message: M, key: bytes | str, received: bytes | AuthenticatedMessage) -> M:
    """``message`` signed with the algorithm and Authentication Data length of ``received``.

    A Map-Server answers a Map-Register with a Map-Notify whose Authentication
    Data is as long as the Map-Register's (RFC 9301 §5.7 copies the fields), so
    a peer that only knows one length reads it.  A length the algorithm does not
    produce falls back to the full digest.
    """
    if isinstance(received, bytes):
        if len(received) < AUTH_DATA_OFFSET:
            raise LispDecodeError(
                f"authentication: message truncated at offset {len(received)}, need 16 bytes"
            )
        alg, length = _AUTH_HDR.unpack_from(received, 13)
    else:
        alg, length = received.algorithm_id, len(received.auth_data)
    if alg not in _LENGTHS:
        alg = message.algorithm_id or HMAC_SHA_256_128
    return sign(message, key, algorithm_id=alg, length=length if length in _LENGTHS.get(alg, ()) else None)


def authenticate(message: bytes | AuthenticatedMessage, key: bytes | str) -> Verified | None:
    """How the message's Authentication Data verifies for ``key``, or None when it does not.

    Constant-time comparison.  Tries the RFC 9301 §5.6 coverage (up to the last
    record) first and, when an xTR-ID/site-ID follows, the whole message.  Give
    the received bytes where you have them: re-encoding a decoded message drops
    reserved bits the sender may have set, which would change the MAC.  Algorithm
    0 (none), an unknown algorithm or a length the algorithm does not produce
    does not verify.  Bytes that are not a well-formed Map-Register/Notify/Notify-Ack
    raise LispDecodeError.
    """
    data = message if isinstance(message, bytes) else message.encode()
    if len(data) < AUTH_DATA_OFFSET:
        raise LispDecodeError(f"authentication: message truncated at offset {len(data)}, need 16 bytes")
    kind = data[0] >> 4
    if kind not in _AUTHENTICATED_TYPES:
        raise LispDecodeError(f"authentication: message type {kind} at offset 0 carries no MAC")
    decoded, end = (decode_map_register if kind == MessageType.MAP_REGISTER else decode_map_notify)(data)
    if end != len(data):
        raise LispDecodeError(f"authentication: {len(data) - end} trailing bytes at offset {end}")
    return authenticate_decoded(data, key, xtr_trailer=decoded.xtr_id is not None)


_VERIFIED = {(kind, over): Verified(kind, alg, length, over) for (alg, length), kind in _KINDS.items()
             for over in (False, True)}
_DIGEST_NAMES = {HMAC_SHA_1_96: "sha1", HMAC_SHA_256_128: "sha256"}
# OpenSSL's one-shot HMAC, without hmac.digest's dispatch (where CPython has it, as it normally does).
try:
    from _hashlib import hmac_digest as _hmac_digest
except ImportError:  # pragma: no cover - a CPython without OpenSSL
    _hmac_digest = hmac.digest  # type: ignore[assignment]


def authenticate_decoded(data: bytes, key: bytes | str, *, xtr_trailer: bool) -> Verified | None:
    """:func:`authenticate` for bytes the caller has already decoded as a well-formed message
    (``xtr_trailer``: an xTR-ID/site-ID follows the records): the MAC check without decoding again."""
    alg, length = _AUTH_HDR.unpack_from(data, 13)
    found = _KINDS.get((alg, length))
    if found is None:
        return None
    stop = AUTH_DATA_OFFSET + length
    received = data[AUTH_DATA_OFFSET:stop]
    zeroed = data[:AUTH_DATA_OFFSET] + bytes(length) + data[stop:]
    raw_key = _key(key)
    name = _DIGEST_NAMES[alg]
    forms = ((zeroed[:-XTR_TRAILER_LEN], False), (zeroed, True)) if xtr_trailer else ((zeroed, False),)
    for covered, over_xtr in forms:
        if hmac.compare_digest(_hmac_digest(raw_key, covered, name)[:length], received):
            return _VERIFIED[found, over_xtr]
    return None


def verify(message: bytes | AuthenticatedMessage, key: bytes | str) -> bool:
    """Whether the message authenticates for ``key`` (:func:`authenticate` without the detail)."""
    return authenticate(message, key) is not None


_NOTIFY_WORD = struct.Struct("!I")


def notify_from_register(data: bytes, records_end: int, key: bytes | str) -> bytes:
    """The Map-Notify answering the verified Map-Register ``data``, made from its own bytes.

    RFC 9301 §5.7: the Map-Notify copies the Map-Register's nonce, Key ID, Algorithm ID and
    records; its MAC, as long as the Map-Register's, covers it with the Authentication Data
    zeroed; no I bit and no xTR-ID/site-ID.  ``records_end`` is where the last record ends.
    The same bytes :func:`sign_like` gives a ``MapNotify`` of the decoded records, when the
    records re-encode to what was received (the caller checks that).
    """
    alg, length = _AUTH_HDR.unpack_from(data, 13)
    head = _NOTIFY_WORD.pack(MessageType.MAP_NOTIFY << 28 | data[3]) + data[4:AUTH_DATA_OFFSET]
    body = data[AUTH_DATA_OFFSET + length:records_end]
    mac = _hmac_digest(_key(key), head + bytes(length) + body, _DIGEST_NAMES[alg])[:length]
    return head + mac + body

