"""The codec's two error types: one for bytes we refuse, one for objects we refuse."""

from __future__ import annotations


class LispDecodeError(ValueError):
    """Malformed LISP control bytes; the message names the field and its byte offset."""


class LispEncodeError(ValueError):
    """A LISP message object with a value the wire format cannot carry."""
