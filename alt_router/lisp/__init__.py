"""LISP control-plane codec (RFC 9301; RFC 6830/6833 where they differ, see docs/codec.md).

Sans-IO: bytes in, frozen dataclasses out, and back.  ``decode`` is the one
entry point; every message class has ``encode() -> bytes``.  ``decode`` raises
only :class:`LispDecodeError`; impossible objects are refused at construction
with :class:`LispEncodeError`.
"""

from __future__ import annotations

from alt_router.lisp.address import (
    AFI_IPV4,
    AFI_IPV6,
    AFI_LCAF,
    AFI_NONE,
    LCAF_AFI_LIST,
    LCAF_INSTANCE_ID,
    Address,
    AfiList,
    InstanceId,
    UnknownLcaf,
    decode_address,
    encode_address,
    max_mask_len,
)
from alt_router.lisp.auth import (
    ALG_NONE,
    HMAC_SHA_1_96,
    HMAC_SHA_256_128,
    AuthKind,
    Verified,
    auth_length,
    authenticate,
    sign,
    sign_like,
    verify,
)
from alt_router.lisp.codec import LispMessage, decode, message_type
from alt_router.lisp.ecm import LISP_CONTROL_PORT, EncapsulatedControlMessage, InnerMessage
from alt_router.lisp.errors import LispDecodeError, LispEncodeError
from alt_router.lisp.map_register import MapNotify, MapRegister
from alt_router.lisp.map_reply import MapReply
from alt_router.lisp.map_request import MAX_ITR_RLOCS, MapRequest
from alt_router.lisp.message_type import MessageType
from alt_router.lisp.records import (
    Action,
    EidRecord,
    Locator,
    MappingRecord,
    sorted_locators,
    with_sorted_locators,
)

ECM = EncapsulatedControlMessage

__all__ = [
    "AFI_IPV4",
    "AFI_IPV6",
    "AFI_LCAF",
    "AFI_NONE",
    "ALG_NONE",
    "ECM",
    "HMAC_SHA_1_96",
    "HMAC_SHA_256_128",
    "LCAF_AFI_LIST",
    "LCAF_INSTANCE_ID",
    "LISP_CONTROL_PORT",
    "MAX_ITR_RLOCS",
    "Action",
    "Address",
    "AfiList",
    "AuthKind",
    "EidRecord",
    "EncapsulatedControlMessage",
    "InnerMessage",
    "InstanceId",
    "LispDecodeError",
    "LispEncodeError",
    "LispMessage",
    "Locator",
    "MapNotify",
    "MapRegister",
    "MapReply",
    "MapRequest",
    "MappingRecord",
    "MessageType",
    "UnknownLcaf",
    "Verified",
    "auth_length",
    "authenticate",
    "decode",
    "decode_address",
    "encode_address",
    "max_mask_len",
    "message_type",
    "sign",
    "sign_like",
    "sorted_locators",
    "verify",
    "with_sorted_locators",
]
