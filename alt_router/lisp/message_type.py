"""The 4-bit Type of a LISP control message (RFC 9301 §5.1, IANA registry §12.2).

The one place the type numbers are written down: the decoder registry, the
encoders, the node's role dispatch and the text/JSON names all read them here.
"""

from __future__ import annotations

from enum import IntEnum


class MessageType(IntEnum):
    """The first four bits of every LISP control message."""

    MAP_REQUEST = 1
    MAP_REPLY = 2
    MAP_REGISTER = 3
    MAP_NOTIFY = 4
    MAP_NOTIFY_ACK = 5
    MAP_REFERRAL = 6
    INFO = 7
    ENCAPSULATED_CONTROL_MESSAGE = 8
    EXTENDED = 15

    @property
    def rfc_name(self) -> str:
        """The name RFC 9301 gives the message (``"Map-Notify-Ack"``)."""
        return _RFC_NAMES[self]

    @classmethod
    def of(cls, data: bytes) -> MessageType | None:
        """The type of the message at the start of ``data``, or None (empty, or an unassigned number)."""
        if not data:
            return None
        try:
            return cls(data[0] >> 4)
        except ValueError:
            return None


_RFC_NAMES = {
    MessageType.MAP_REQUEST: "Map-Request",
    MessageType.MAP_REPLY: "Map-Reply",
    MessageType.MAP_REGISTER: "Map-Register",
    MessageType.MAP_NOTIFY: "Map-Notify",
    MessageType.MAP_NOTIFY_ACK: "Map-Notify-Ack",
    MessageType.MAP_REFERRAL: "Map-Referral",
    MessageType.INFO: "Info-Request",
    MessageType.ENCAPSULATED_CONTROL_MESSAGE: "Encapsulated-Control-Message",
    MessageType.EXTENDED: "LISP-Shared-Extension",
}
