"""The single entry point from bytes to a LISP control message."""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

from alt_router.lisp.ecm import INNER_DECODERS, EncapsulatedControlMessage, decode_ecm
from alt_router.lisp.errors import LispDecodeError
from alt_router.lisp.map_register import MapNotify, MapNotifyAck, MapRegister
from alt_router.lisp.map_reply import MapReply
from alt_router.lisp.map_request import MapRequest


class MessageType(IntEnum):
    """The 4-bit Type of a LISP control message (RFC 9301 §5.1)."""

    MAP_REQUEST = 1
    MAP_REPLY = 2
    MAP_REGISTER = 3
    MAP_NOTIFY = 4
    MAP_NOTIFY_ACK = 5
    MAP_REFERRAL = 6
    INFO = 7
    ENCAPSULATED_CONTROL_MESSAGE = 8
    EXTENDED = 15


LispMessage = MapRequest | MapReply | MapRegister | MapNotify | MapNotifyAck | EncapsulatedControlMessage

_DECODERS: dict[int, Callable[[bytes], tuple[LispMessage, int]]] = {**INNER_DECODERS, 8: decode_ecm}


def decode(data: bytes) -> LispMessage:
    """Decode one whole LISP control message (the UDP payload).

    Raises :class:`LispDecodeError`, and nothing else, for anything malformed,
    truncated, unsupported or followed by bytes the message does not account for.
    """
    if not data:
        raise LispDecodeError("LISP message: empty, type missing at offset 0")
    if not isinstance(data, bytes):
        data = bytes(data)
    msg_type = data[0] >> 4
    decoder = _DECODERS.get(msg_type)
    if decoder is None:
        try:
            name = MessageType(msg_type).name
        except ValueError:
            name = "reserved"
        raise LispDecodeError(f"LISP message: unsupported type {msg_type} ({name}) at offset 0")
    msg, end = decoder(data)
    if end != len(data):
        raise LispDecodeError(
            f"{type(msg).__name__}: {len(data) - end} trailing bytes after the message at offset {end}"
        )
    return msg


def message_type(msg: LispMessage) -> MessageType:
    """The wire type of a message object."""
    return _TYPES[type(msg)]


_TYPES: dict[type, MessageType] = {
    MapRequest: MessageType.MAP_REQUEST,
    MapReply: MessageType.MAP_REPLY,
    MapRegister: MessageType.MAP_REGISTER,
    MapNotify: MessageType.MAP_NOTIFY,
    MapNotifyAck: MessageType.MAP_NOTIFY_ACK,
    EncapsulatedControlMessage: MessageType.ENCAPSULATED_CONTROL_MESSAGE,
}
