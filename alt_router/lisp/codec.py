"""The single entry point from bytes to a LISP control message."""

from __future__ import annotations

from collections.abc import Callable

from alt_router.lisp.ecm import INNER_DECODERS, EncapsulatedControlMessage, decode_ecm
from alt_router.lisp.errors import LispDecodeError
from alt_router.lisp.map_register import MapNotify, MapRegister
from alt_router.lisp.map_reply import MapReply
from alt_router.lisp.map_request import MapRequest
from alt_router.lisp.message_type import MessageType

__all__ = ["LispMessage", "MessageType", "decode", "message_type"]

LispMessage = MapRequest | MapReply | MapRegister | MapNotify | EncapsulatedControlMessage

# Keyed on MessageType (an IntEnum, so the raw type nibble looks up directly).
_DECODERS: dict[int, Callable[[bytes], tuple[LispMessage, int]]] = {
    **INNER_DECODERS,
    MessageType.ENCAPSULATED_CONTROL_MESSAGE: decode_ecm,
}


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
        known = MessageType.of(data)
        name = known.rfc_name if known is not None else "reserved"
        raise LispDecodeError(f"LISP message: unsupported type {msg_type} ({name}) at offset 0")
    msg, end = decoder(data)
    if end != len(data):
        name = message_type(msg).rfc_name
        raise LispDecodeError(f"{name}: {len(data) - end} trailing bytes after the message at offset {end}")
    return msg


def message_type(msg: LispMessage) -> MessageType:
    """The wire type of a message object."""
    if isinstance(msg, MapNotify):
        return msg.message_type
    return _TYPES[type(msg)]


_TYPES: dict[type, MessageType] = {
    MapRequest: MessageType.MAP_REQUEST,
    MapReply: MessageType.MAP_REPLY,
    MapRegister: MessageType.MAP_REGISTER,
    MapNotify: MessageType.MAP_NOTIFY,
    EncapsulatedControlMessage: MessageType.ENCAPSULATED_CONTROL_MESSAGE,
}
