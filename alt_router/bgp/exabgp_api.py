"""ExaBGP's process API, sans-IO: JSON lines in -> typed events; commands out -> text lines.

ExaBGP 5.0 (``encoder json``) writes one JSON object per line on the API
process's stdin, plus bare ``done`` / ``error`` lines acknowledging each command
we wrote.  Shapes handled (samples in tests/bgp/data/, captured from ExaBGP
5.0.15 against FRR 8.4):

* ``"type": "state"``: ``neighbor.state`` is connected / up / down (+ reason);
* ``"type": "open"``: the peer's OPEN (router-id, hold time, capabilities);
* ``"type": "update"``: ``message.update.announce[FAMILY][NEXTHOP] = [{"nlri": P}, ...]``,
  ``message.update.withdraw[FAMILY] = [{"nlri": P}, ...]``, ``message.update.attribute``;
  or ``message.eor = {"afi": .., "safi": ..}`` for End-of-RIB;
* ``"type": "refresh"``: ``neighbor["route-refresh"]`` with subtype query / begin / end
  (begin/end are RFC 7313 enhanced route refresh markers);
* ``"type": "notification"``: a NOTIFICATION (code, subcode) or ExaBGP's own
  ``"notification": "shutdown"``.

Anything else (keepalive, fsm, negotiated, operational, messages we sent) is
``Ignored``.  Only ``ipv4 unicast`` and ``ipv6 unicast`` are understood; NLRI of
other families are skipped and counted, never guessed at.

``ApiReader.feed`` is the daemon's entry point: it never raises; malformed lines
become counters and ``last_error``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_address, ip_network
from typing import Any, Literal

from alt_router.rib.paths import AnnouncedRoute, Attributes, Batch, Update, prefix_key
from alt_router.types import IPAddress, Prefix

Direction = Literal["receive", "send"]

SUPPORTED_FAMILIES = ("ipv4 unicast", "ipv6 unicast")
MAX_LINE = 16 * 1024 * 1024  # an update with thousands of NLRI is long, but not this long


class ExabgpApiError(ValueError):
    """A line from ExaBGP that is not JSON or not in a shape we understand."""


# --- events ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SessionEnds:
    """The session an ExaBGP message is about (its ``neighbor`` object): both addresses and ASNs."""

    local: IPAddress
    peer: IPAddress
    local_asn: int
    peer_asn: int


@dataclass(frozen=True, slots=True)
class PeerState:
    neighbor: SessionEnds
    state: str  # "connected" | "up" | "down"
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PeerOpen:
    neighbor: SessionEnds
    direction: Direction
    asn: int
    hold_time: int
    router_id: IPv4Address
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteUpdate:
    """One received UPDATE: NLRI as canonical prefix text, grouped by next hop (see ``Batch``)."""

    neighbor: SessionEnds
    direction: Direction
    batches: tuple[Batch, ...]
    withdraw_keys: tuple[str, ...]
    # NLRI left out: unsupported families, unparseable prefixes or next hops.
    skipped: int = 0

    @property
    def announce(self) -> tuple[AnnouncedRoute, ...]:
        """The announcements as objects (builds one per NLRI: for tests and small updates)."""
        return tuple(a for b in self.batches for a in b.announcements())

    @property
    def withdraw(self) -> tuple[Prefix, ...]:
        return tuple(ip_network(k) for k in self.withdraw_keys)

    def to_rib(self, peer: str) -> Update:
        return Update(peer, batches=self.batches, withdraw_keys=self.withdraw_keys)


@dataclass(frozen=True, slots=True)
class EndOfRib:
    neighbor: SessionEnds
    afi: str
    safi: str


@dataclass(frozen=True, slots=True)
class RouteRefresh:
    neighbor: SessionEnds
    direction: Direction
    afi: str
    safi: str
    subtype: str  # "query" | "begin" | "end"


@dataclass(frozen=True, slots=True)
class Notification:
    neighbor: SessionEnds
    direction: Direction
    code: int
    subcode: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """ExaBGP itself is stopping."""


@dataclass(frozen=True, slots=True)
class CommandAck:
    """ExaBGP's answer to the last command we wrote: ``done`` or ``error``."""

    ok: bool


@dataclass(frozen=True, slots=True)
class Ignored:
    kind: str


ApiEvent = (
    PeerState | PeerOpen | RouteUpdate | EndOfRib | RouteRefresh | Notification | Shutdown | CommandAck
    | Ignored
)


# --- parsing -----------------------------------------------------------------

def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ExabgpApiError(f"{what}: expected an object, got {type(value).__name__}")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ExabgpApiError(f"{what}: expected a string, got {type(value).__name__}")
    return value


def _int(value: Any, what: str, lo: int = 0, hi: int = 0xFFFFFFFF) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        # ExaBGP writes some numbers as strings (asn in older releases).
        if isinstance(value, str) and value.isdigit() and len(value) <= 10:
            value = int(value)
        else:
            raise ExabgpApiError(f"{what}: expected an integer, got {value!r:.40}")
    number = int(value)
    if not lo <= number <= hi:
        raise ExabgpApiError(f"{what}: {number} out of range {lo}..{hi}")
    return number


def _addr(value: Any, what: str) -> IPAddress:
    try:
        return ip_address(_str(value, what))
    except ValueError:
        raise ExabgpApiError(f"{what}: {value!r:.60} is not an IP address") from None


def _neighbor(msg: dict[str, Any]) -> tuple[SessionEnds, dict[str, Any]]:
    n = _obj(msg.get("neighbor"), "neighbor")
    addr = _obj(n.get("address"), "neighbor.address")
    asn = _obj(n.get("asn"), "neighbor.asn")
    return SessionEnds(
        local=_addr(addr.get("local"), "neighbor.address.local"),
        peer=_addr(addr.get("peer"), "neighbor.address.peer"),
        local_asn=_int(asn.get("local"), "neighbor.asn.local"),
        peer_asn=_int(asn.get("peer"), "neighbor.asn.peer"),
    ), n


def _direction(n: dict[str, Any]) -> Direction:
    d = n.get("direction", "receive")
    if d == "receive":
        return "receive"
    if d == "send":
        return "send"
    raise ExabgpApiError(f"neighbor.direction: {d!r:.40} is neither receive nor send")


def _as_path(value: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(AS_SEQUENCE ASNs in order, AS_SET ASNs) from either JSON form ExaBGP has used."""
    if value is None:
        return (), ()
    seq: list[int] = []
    aset: list[int] = []
    if isinstance(value, list):
        # ExaBGP 4: a flat list of ASNs, with an AS_SET as a nested list (or "( a b )" text).
        for item in value:
            if isinstance(item, list):
                aset.extend(_int(a, "attribute.as-path set") for a in item)
            else:
                seq.append(_int(item, "attribute.as-path"))
        return tuple(seq), tuple(aset)
    segments = _obj(value, "attribute.as-path")
    # Keys are segment positions "0", "1", ...: keep the wire order.
    for key in sorted(segments, key=lambda k: int(k) if isinstance(k, str) and k.isdigit() else 1 << 30):
        seg = _obj(segments[key], f"attribute.as-path[{key!r:.20}]")
        element = _str(seg.get("element"), "attribute.as-path element")
        raw = seg.get("value")
        if not isinstance(raw, list):
            raise ExabgpApiError("attribute.as-path value: expected a list")
        asns = [_int(a, "attribute.as-path value") for a in raw]
        if element == "as-sequence":
            seq.extend(asns)
        elif element == "as-set":
            aset.extend(asns)
        elif element.startswith("confed"):
            # Confederation segments do not count in the path length (RFC 5065 §5.3).
            continue
        else:
            raise ExabgpApiError(f"attribute.as-path: unknown segment type {element!r:.40}")
    return tuple(seq), tuple(aset)


# An UPDATE's attributes and next hop are shared by all its NLRI; these caches also share
# them across UPDATEs (a peer sends few distinct ones), so a million routes hold a handful
# of objects.  Bounded: cleared when full rather than grown.
_CACHE_LIMIT = 4096
_AGGREGATOR = re.compile(r"\d{1,10}:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_attributes_cache: dict[Attributes, Attributes] = {}
_next_hop_cache: dict[str, IPAddress] = {}


def _shared_attributes(attrs: Attributes) -> Attributes:
    cached = _attributes_cache.get(attrs)
    if cached is not None:
        return cached
    if len(_attributes_cache) >= _CACHE_LIMIT:
        _attributes_cache.clear()
    _attributes_cache[attrs] = attrs
    return attrs


def _next_hop(text: str) -> IPAddress | None:
    addr = _next_hop_cache.get(text)
    if addr is None:
        try:
            addr = ip_address(text)
        except ValueError:
            return None  # ExaBGP writes "null" when it could not render the next hop
        if len(_next_hop_cache) >= _CACHE_LIMIT:
            _next_hop_cache.clear()
        _next_hop_cache[text] = addr
    return addr


def _attributes(value: Any) -> Attributes:
    if value is None:
        return _shared_attributes(Attributes())
    a = _obj(value, "attribute")
    seq, aset = _as_path(a.get("as-path"))
    origin = a.get("origin", "igp")
    if origin not in ("igp", "egp", "incomplete"):
        raise ExabgpApiError(f"attribute.origin: {origin!r:.40} unknown")
    med = a.get("med")
    communities: list[tuple[int, int]] = []
    raw_comm = a.get("community", [])
    if not isinstance(raw_comm, list):
        raise ExabgpApiError("attribute.community: expected a list")
    for c in raw_comm:
        if not isinstance(c, list) or len(c) != 2:
            raise ExabgpApiError("attribute.community: expected [asn, value] pairs")
        communities.append((_int(c[0], "community", 0, 0xFFFF), _int(c[1], "community", 0, 0xFFFF)))
    aggregator = a.get("aggregator")
    if aggregator is not None and not (isinstance(aggregator, str) and _AGGREGATOR.fullmatch(aggregator)):
        raise ExabgpApiError(f"attribute.aggregator: {aggregator!r:.40} is not ASN:router-id")
    return _shared_attributes(Attributes(
        seq, aset, origin, None if med is None else _int(med, "attribute.med"), tuple(communities),
        atomic_aggregate=a.get("atomic-aggregate") is True, aggregator=aggregator,
    ))


def _nlri_keys(items: list[Any], version: int) -> tuple[list[str], int]:
    """Canonical prefix text of each NLRI of ``version``, and how many were not usable."""
    v6 = version == 6
    keys: list[str] = []
    for item in items:
        raw = item.get("nlri") if isinstance(item, dict) else item
        key = prefix_key(raw) if isinstance(raw, str) else None
        if key is not None and (":" in key) == v6:
            keys.append(key)
    return keys, len(items) - len(keys)


def _family_version(family: Any) -> int | None:
    if family == "ipv4 unicast":
        return 4
    if family == "ipv6 unicast":
        return 6
    return None


def _update(neighbor: SessionEnds, direction: Direction, upd: dict[str, Any]) -> RouteUpdate:
    attrs = _attributes(upd.get("attribute"))
    batches: list[Batch] = []
    withdraw: list[str] = []
    skipped = 0
    for family, by_nh in _obj(upd.get("announce", {}), "update.announce").items():
        version = _family_version(family)
        if not isinstance(by_nh, dict):
            raise ExabgpApiError(f"update.announce[{family!r:.40}]: expected an object of next hops")
        for nh_text, items in by_nh.items():
            if not isinstance(items, list):
                raise ExabgpApiError("update.announce: expected a list of NLRI per next hop")
            next_hop = _next_hop(nh_text) if version is not None else None
            if version is None or next_hop is None:
                skipped += len(items)
                continue
            keys, bad = _nlri_keys(items, version)
            skipped += bad
            if keys:
                batches.append(Batch(next_hop, attrs, tuple(keys)))
    for family, items in _obj(upd.get("withdraw", {}), "update.withdraw").items():
        version = _family_version(family)
        if not isinstance(items, list):
            raise ExabgpApiError(f"update.withdraw[{family!r:.40}]: expected a list")
        if version is None:
            skipped += len(items)
            continue
        keys, bad = _nlri_keys(items, version)
        skipped += bad
        withdraw += keys
    return RouteUpdate(neighbor, direction, tuple(batches), tuple(withdraw), skipped)


def _parse_object(msg: dict[str, Any]) -> ApiEvent:
    kind = msg.get("type")
    if kind == "notification" and msg.get("notification") == "shutdown":
        return Shutdown()
    if kind not in ("state", "open", "update", "refresh", "notification"):
        return Ignored(kind if isinstance(kind, str) else "untyped")
    neighbor, n = _neighbor(msg)
    if kind == "state":
        state = _str(n.get("state"), "neighbor.state")
        reason = n.get("reason", "")
        return PeerState(neighbor, state, reason if isinstance(reason, str) else str(reason))
    direction = _direction(n)
    if kind == "open":
        o = _obj(n.get("open"), "neighbor.open")
        rid = _addr(o.get("router_id"), "open.router_id")
        if not isinstance(rid, IPv4Address):
            raise ExabgpApiError("open.router_id: not an IPv4 address")
        caps = o.get("capabilities", {})
        names = tuple(sorted(
            str(c.get("name")) for c in caps.values() if isinstance(c, dict) and "name" in c
        )) if isinstance(caps, dict) else ()
        return PeerOpen(neighbor, direction, _int(o.get("asn"), "open.asn"),
                        _int(o.get("hold_time"), "open.hold_time", 0, 65535), rid, names)
    if kind == "refresh":
        r = _obj(n.get("route-refresh"), "neighbor.route-refresh")
        subtype = _str(r.get("subtype", "query"), "route-refresh.subtype")
        return RouteRefresh(neighbor, direction, _str(r.get("afi"), "route-refresh.afi"),
                            _str(r.get("safi"), "route-refresh.safi"), subtype)
    if kind == "notification":
        note = _obj(n.get("notification"), "neighbor.notification")
        text = note.get("message", "")
        return Notification(neighbor, direction, _int(note.get("code"), "notification.code", 0, 255),
                            _int(note.get("subcode"), "notification.subcode", 0, 255),
                            text if isinstance(text, str) else "")
    # kind == "update"
    m = _obj(n.get("message"), "neighbor.message")
    if "eor" in m:
        eor = _obj(m["eor"], "message.eor")
        return EndOfRib(neighbor, _str(eor.get("afi"), "eor.afi"), _str(eor.get("safi"), "eor.safi"))
    if direction == "send":
        return Ignored("update-sent")
    return _update(neighbor, direction, _obj(m.get("update"), "message.update"))


def parse_line(line: str | bytes) -> ApiEvent:
    """One line from ExaBGP -> one event; ExabgpApiError if it is malformed."""
    if isinstance(line, bytes):
        if len(line) > MAX_LINE:
            raise ExabgpApiError(f"line of {len(line)} bytes is longer than {MAX_LINE}")
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ExabgpApiError(f"not UTF-8: {exc}") from None
    if len(line) > MAX_LINE:
        raise ExabgpApiError(f"line of {len(line)} characters is longer than {MAX_LINE}")
    text = line.strip()
    if text == "done":
        return CommandAck(True)
    if text == "error":
        return CommandAck(False)
    if not text:
        return Ignored("empty")
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ExabgpApiError(f"not JSON: {exc}"[:200]) from None
    if not isinstance(msg, dict):
        raise ExabgpApiError(f"expected a JSON object, got {type(msg).__name__}")
    try:
        return _parse_object(msg)
    except ExabgpApiError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        # Safety net for shapes the explicit checks above did not foresee: a
        # daemon must see a declared error, never a stray exception.
        raise ExabgpApiError(f"unexpected structure: {type(exc).__name__}: {exc}"[:200]) from None


class ApiReader:
    """Feeds lines to ``parse_line`` and counts what it could not use; never raises."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.last_error: str = ""

    def feed(self, line: str | bytes) -> ApiEvent | None:
        try:
            event = parse_line(line)
        except ExabgpApiError as exc:
            self.counters["malformed"] += 1
            self.last_error = str(exc)
            return None
        if isinstance(event, Ignored):
            self.counters[f"ignored:{event.kind}"[:64]] += 1
            return None
        if isinstance(event, RouteUpdate) and event.skipped:
            self.counters["nlri-skipped"] += event.skipped
        self.counters[type(event).__name__] += 1
        return event


# --- commands ----------------------------------------------------------------
# ExaBGP 5 syntax, checked against exabgp/reactor/api/command/*.py and in the lab
# (ExaBGP 5.0.15 <-> FRR 8.4): each command is one line, answered by "done"/"error".

CEASE_MAX_PREFIX = 1  # RFC 4486 Cease subcodes
CEASE_ADMIN_SHUTDOWN = 2
CEASE_ADMIN_RESET = 4


def _selector(neighbor: IPAddress | None) -> str:
    return "" if neighbor is None else f"neighbor {ip_address(neighbor)} "


def _prefix(prefix: Prefix | str) -> Prefix:
    try:
        return prefix if isinstance(prefix, IPv4Network | IPv6Network) else ip_network(prefix, strict=True)
    except ValueError:
        raise ExabgpApiError(f"not a prefix: {prefix!r:.60}") from None


def announce_route(prefix: Prefix | str, next_hop: IPAddress | None = None,
                   neighbor: IPAddress | None = None) -> str:
    """Announce ``prefix`` to one neighbor or all; next hop ``self`` unless given.

    ExaBGP refuses ``next-hop self`` for an IPv6 prefix on an IPv4 session (seen:
    "the route (ipv6) does not have the same family as the BGP tcp session"), so
    pass an explicit next hop (e.g. ``::ffff:`` + the local IPv4 address) there.
    """
    p = _prefix(prefix)
    nh = "self" if next_hop is None else str(ip_address(next_hop))
    return f"{_selector(neighbor)}announce route {p} next-hop {nh}"


def withdraw_route(prefix: Prefix | str, next_hop: IPAddress | None = None,
                   neighbor: IPAddress | None = None) -> str:
    p = _prefix(prefix)
    nh = "self" if next_hop is None else str(ip_address(next_hop))
    return f"{_selector(neighbor)}withdraw route {p} next-hop {nh}"


def teardown(neighbor: IPAddress, subcode: int = CEASE_ADMIN_SHUTDOWN) -> str:
    """Close a session with a Cease NOTIFICATION of ``subcode`` (RFC 4486)."""
    if not 0 <= subcode <= 255:
        raise ExabgpApiError(f"Cease subcode {subcode} out of range 0..255")
    return f"neighbor {ip_address(neighbor)} teardown {subcode}"


def route_refresh(neighbor: IPAddress, afi: str = "ipv4", safi: str = "unicast") -> str:
    """Ask the neighbor to re-send its routes of one family (RFC 2918)."""
    if f"{afi} {safi}" not in SUPPORTED_FAMILIES:
        raise ExabgpApiError(f"unsupported family {afi} {safi}")
    return f"neighbor {ip_address(neighbor)} announce route-refresh {afi} {safi}"
