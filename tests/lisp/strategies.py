"""Hypothesis strategies for every LISP control message with every option.

Shared: the tshark interop tests import these.  Each strategy builds valid
objects through the public constructors, so everything drawn encodes.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from hypothesis import strategies as st

from alt_router.lisp import (
    Action,
    Address,
    AfiList,
    EidRecord,
    EncapsulatedControlMessage,
    InstanceId,
    Locator,
    MapNotify,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    UnknownLcaf,
    max_mask_len,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)
u128 = st.integers(0, (1 << 128) - 1)

ipv4s = st.builds(IPv4Address, u32)
ipv6s = st.builds(IPv6Address, u128)
ips = st.one_of(ipv4s, ipv6s)


def plain_addresses() -> st.SearchStrategy[Address]:
    """AFI 0, 1 or 2."""
    return st.one_of(st.none(), ipv4s, ipv6s)


def unknown_lcafs() -> st.SearchStrategy[UnknownLcaf]:
    return st.builds(
        UnknownLcaf,
        lcaf_type=st.integers(0, 255).filter(lambda t: t not in (1, 2)),
        body=st.binary(max_size=24),
        flags=u8,
        rsvd1=u8,
        rsvd2=u8,
    )


def addresses() -> st.SearchStrategy[Address]:
    """Every address form the codec knows, LCAFs nested a little."""
    plain = plain_addresses()
    iid = st.builds(InstanceId, instance_id=u32, address=plain, iid_mask_len=st.integers(0, 32))
    afi_list = st.builds(AfiList, st.lists(st.one_of(plain, iid), max_size=3).map(tuple))
    return st.one_of(plain, plain, iid, afi_list, unknown_lcafs())


@st.composite
def eid_prefixes(draw: st.DrawFn) -> tuple[Address, int]:
    eid = draw(addresses())
    return eid, draw(st.integers(0, max_mask_len(eid)))


def eid_records() -> st.SearchStrategy[EidRecord]:
    return eid_prefixes().map(lambda p: EidRecord(p[0], p[1]))


def locators() -> st.SearchStrategy[Locator]:
    return st.builds(
        Locator,
        address=addresses(),
        priority=u8,
        weight=u8,
        m_priority=u8,
        m_weight=u8,
        local=st.booleans(),
        probed=st.booleans(),
        reachable=st.booleans(),
    )


@st.composite
def mapping_records(draw: st.DrawFn, max_locators: int = 3) -> MappingRecord:
    eid, mask_len = draw(eid_prefixes())
    return MappingRecord(
        eid=eid,
        mask_len=mask_len,
        ttl=draw(u32),
        locators=tuple(draw(st.lists(locators(), max_size=max_locators))),
        action=draw(st.sampled_from(Action)),
        authoritative=draw(st.booleans()),
        map_version=draw(st.integers(0, 0xFFF)),
    )


def negative_mapping_records() -> st.SearchStrategy[MappingRecord]:
    return mapping_records(max_locators=0)


def map_requests() -> st.SearchStrategy[MapRequest]:
    return st.builds(
        MapRequest,
        nonce=u64,
        source_eid=addresses(),
        itr_rlocs=st.one_of(
            st.lists(st.one_of(ips, addresses()), min_size=1, max_size=4),
            st.lists(ipv4s, min_size=30, max_size=32),
        ).map(tuple),
        records=st.lists(eid_records(), min_size=1, max_size=3).map(tuple),
        authoritative=st.booleans(),
        probe=st.booleans(),
        smr=st.booleans(),
        pitr=st.booleans(),
        smr_invoked=st.booleans(),
        local_xtr=st.booleans(),
        dont_map_reply=st.booleans(),
        map_reply=st.none() | mapping_records(),
    )


@st.composite
def map_replies(draw: st.DrawFn) -> MapReply:
    security = draw(st.booleans())
    return MapReply(
        nonce=draw(u64),
        records=tuple(draw(st.lists(mapping_records(), max_size=3))),
        probe=draw(st.booleans()),
        echo_nonce=draw(st.booleans()),
        security=security,
        security_data=draw(st.binary(max_size=20)) if security else b"",
    )


def _auth_fields() -> dict[str, st.SearchStrategy[object]]:
    return {
        "nonce": u64,
        "records": st.lists(mapping_records(), max_size=3).map(tuple),
        "key_id": u8,
        "algorithm_id": u8,
        "auth_data": st.binary(max_size=32),
    }


@st.composite
def _xtr(draw: st.DrawFn) -> tuple[int | None, int | None]:
    if draw(st.booleans()):
        return draw(u128), draw(u64)
    return None, None


@st.composite
def map_registers(draw: st.DrawFn) -> MapRegister:
    xtr_id, site_id = draw(_xtr())
    fields = {k: draw(v) for k, v in _auth_fields().items()}
    flags = {
        k: draw(st.booleans())
        for k in (
            "proxy_reply", "security", "eid_notify", "use_ttl", "merge", "want_map_notify",
        )
    }
    return MapRegister(**fields, **flags, xtr_id=xtr_id, site_id=site_id)  # type: ignore[arg-type]


@st.composite
def map_notifies(draw: st.DrawFn, ack: bool | None = None) -> MapNotify:
    """Map-Notify and Map-Notify-Ack (``ack`` None draws both), with the xTR-ID deployed peers add."""
    xtr_id, site_id = draw(_xtr())
    fields = {k: draw(v) for k, v in _auth_fields().items()}
    is_ack = draw(st.booleans()) if ack is None else ack
    return MapNotify(**fields, xtr_id=xtr_id, site_id=site_id, ack=is_ack)  # type: ignore[arg-type]


def map_notify_acks() -> st.SearchStrategy[MapNotify]:
    return map_notifies(ack=True)


def inner_messages() -> st.SearchStrategy[MapRequest | MapReply | MapRegister | MapNotify]:
    return st.one_of(map_requests(), map_replies(), map_registers(), map_notifies())


@st.composite
def ecm_auth_data(draw: st.DrawFn) -> bytes:
    """LISP-SEC ECM Authentication Data as RFC 9303 §6.1 lays it out (AD Type 1), or opaque bytes
    whose boundary the decoder must find by the inner header (any first nibble but 4 and 6)."""
    if draw(st.booleans()):
        return draw(st.binary(min_size=1, max_size=24).filter(lambda b: b[0] >> 4 not in (4, 6)))
    otk_ad = bytes(8) + draw(st.binary(min_size=16, max_size=32))  # preamble + (wrapped) key
    eid_rest = draw(st.binary(max_size=16))
    own_word = draw(st.booleans())  # OTK Length counting its own 4-byte word, or not
    return (
        struct.pack("!BBH", 1, 0, draw(u16))
        + struct.pack("!HBB", len(otk_ad) + (4 if own_word else 0), draw(u8), draw(u8))
        + otk_ad
        + struct.pack("!HH", 4 + len(eid_rest), draw(u16))
        + eid_rest
    )


@st.composite
def ecms(draw: st.DrawFn) -> EncapsulatedControlMessage:
    inner = draw(inner_messages())
    v6 = draw(st.booleans())
    family: st.SearchStrategy[IPv4Address | IPv6Address] = ipv6s if v6 else ipv4s
    security = draw(st.booleans())
    return EncapsulatedControlMessage(
        inner=inner,
        source=draw(family),
        destination=draw(family),
        source_port=draw(u16),
        destination_port=draw(u16),
        security=security,
        ddt=draw(st.booleans()),
        to_etr=draw(st.booleans()),
        to_ms=draw(st.booleans()),
        ttl=draw(u8),
        security_data=draw(st.one_of(st.just(b""), ecm_auth_data())) if security else b"",
        tos=draw(u8),
        ident=0 if v6 else draw(u16),
        dont_fragment=True if v6 else draw(st.booleans()),
        flow_label=draw(st.integers(0, 0xFFFFF)) if v6 else 0,
    )


def messages() -> st.SearchStrategy[
    MapRequest | MapReply | MapRegister | MapNotify | EncapsulatedControlMessage
]:
    return st.one_of(map_requests(), map_replies(), map_registers(), map_notifies(), ecms())
