"""Map-Register / Map-Notify / Map-Notify-Ack authentication (RFC 9301 §5.6).

The MAC is computed over the whole message with the Authentication Data field
zeroed, then written into that field.  Algorithm IDs follow RFC 9301 (1 =
HMAC-SHA-1-96, 2 = HMAC-SHA-256-128).  The names promise 96- and 128-bit
truncations (RFC 2404, RFC 4868) and that is what :func:`sign` emits by default;
deployed implementations put the whole 20- or 32-byte digest in the field, so
:func:`verify` accepts either length and :func:`sign` can be asked for the full one.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import replace
from typing import TypeVar

from alt_router.lisp.errors import LispDecodeError, LispEncodeError
from alt_router.lisp.map_register import AUTH_DATA_OFFSET, MapNotify, MapNotifyAck, MapRegister

ALG_NONE = 0
HMAC_SHA_1_96 = 1
HMAC_SHA_256_128 = 2

_DIGESTS = {HMAC_SHA_1_96: hashlib.sha1, HMAC_SHA_256_128: hashlib.sha256}
# (truncated length the RFC names, full digest length deployed peers send)
_LENGTHS = {HMAC_SHA_1_96: (12, 20), HMAC_SHA_256_128: (16, 32)}

AuthenticatedMessage = MapRegister | MapNotify | MapNotifyAck
M = TypeVar("M", MapRegister, MapNotify, MapNotifyAck)

_AUTH_HDR = struct.Struct("!BH")


def auth_length(algorithm_id: int, *, full: bool = False) -> int:
    """Bytes of authentication data ``algorithm_id`` produces (0 for none)."""
    if algorithm_id == ALG_NONE:
        return 0
    try:
        short, long = _LENGTHS[algorithm_id]
    except KeyError:
        raise LispEncodeError(f"unknown authentication algorithm ID {algorithm_id}") from None
    return long if full else short


def _key(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key


def compute(zeroed: bytes, key: bytes | str, algorithm_id: int, length: int) -> bytes:
    """The MAC of ``zeroed`` (a message whose Authentication Data is all zero), cut to ``length``."""
    digest = _DIGESTS.get(algorithm_id)
    if digest is None:
        raise LispEncodeError(f"unknown authentication algorithm ID {algorithm_id}")
    return hmac.new(_key(key), zeroed, digest).digest()[:length]


def sign(message: M, key: bytes | str, *, algorithm_id: int | None = None, full: bool = False) -> M:
    """``message`` with its Authentication Data filled in.

    The algorithm is ``algorithm_id`` if given, else the message's own
    (HMAC-SHA-256-128 when that is 0, "none").  ``full`` writes the untruncated
    digest as deployed implementations do.
    """
    alg = algorithm_id if algorithm_id is not None else (message.algorithm_id or HMAC_SHA_256_128)
    length = auth_length(alg, full=full)
    blank = replace(message, algorithm_id=alg, auth_data=bytes(length))
    return replace(blank, auth_data=compute(blank.encode(), key, alg, length))


def verify(message: bytes | AuthenticatedMessage, key: bytes | str) -> bool:
    """Whether the message's Authentication Data is right for ``key``, compared in constant time.

    Give the received bytes where you have them: re-encoding a decoded message
    drops reserved bits the sender may have set, which would change the MAC.
    A message with algorithm 0 (none), an unknown algorithm or a wrong-length
    field does not verify.  Bytes that are not a Map-Register/Notify/Notify-Ack
    or too short to hold their own Authentication Data raise LispDecodeError.
    """
    data = message if isinstance(message, bytes) else message.encode()
    if len(data) < AUTH_DATA_OFFSET:
        raise LispDecodeError(f"authentication: message truncated at offset {len(data)}, need 16 bytes")
    if data[0] >> 4 not in (3, 4, 5):
        raise LispDecodeError(f"authentication: message type {data[0] >> 4} at offset 0 carries no MAC")
    alg, length = _AUTH_HDR.unpack_from(data, 13)
    end = AUTH_DATA_OFFSET + length
    if end > len(data):
        raise LispDecodeError(f"authentication: Authentication Data Length {length} at offset 14 overruns")
    lengths = _LENGTHS.get(alg)
    if lengths is None or length not in lengths:
        return False
    zeroed = data[:AUTH_DATA_OFFSET] + bytes(length) + data[end:]
    return hmac.compare_digest(compute(zeroed, key, alg, length), data[AUTH_DATA_OFFSET:end])
