"""The Map-Server (RFC 6833 §4.4, RFC 9301 §5.6-§5.7 and §8.2-§8.3), sans-IO.

Sites are :class:`Site` values (the node translates ``[[map_server.sites]]`` into
them).  A Map-Register is accepted only when a site's prefixes contain its first
record, its Key ID and Algorithm ID are the site's, its MAC verifies with the site
key (constant time, truncated or full-length digest), every record lies inside the
site, its nonce is greater than the last one accepted from the same xTR and key
(RFC 9301 §5.6, per the site's ``replay`` policy) and it stays under the
registration caps; anything else is refused whole, changes no state and counts one
``refused:<reason>``.

Registrations are keyed by (site, EID prefix, xTR-ID or else source address), so
several ETRs of one site coexist and their locators are merged in proxy replies.
One lives for 3 minutes after its last Map-Register (RFC 9301 §8.2) or, with the T
bit, for its record TTL; a record TTL of 0 withdraws it.  A site's configured
prefixes are announced into the ALT while it has a registration (always, with
``always_announce``).

State stays bounded and every operation is proportional to what it touches, never
to the number of registrations: expiry runs off a heap (one entry per registration,
moved when it comes up early, compacted when stale ones pile up), look-ups probe a
dict per registered prefix length, paging uses a chunked sorted key list, and the
nonce table is LRU-capped and expires with the registrations.

Built for 300,000 sites re-registering every minute (issue 9, bench/map_server.py): a
Map-Register is parsed once, without ``ipaddress`` objects, and a record byte-identical
to the one already registered for its prefix is not decoded again; the Map-Notify is
made from the Map-Register's own bytes (``notify_from_register``).  A registration is
one slotted object holding its prefix as a packed int (``negative.pack_prefix``) and
its record as the bytes received; the :class:`Registration` views are made on demand.

Repeated refusals and expiries are logged through a :class:`~alt_router.logsummary.LogSummary`.
"""

from __future__ import annotations

import heapq
import json
import logging
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any, Final

from alt_router.inet import InetError, parse_ip, parse_udp, udp_packet
from alt_router.lisp import (
    HMAC_SHA_1_96,
    HMAC_SHA_256_128,
    LISP_CONTROL_PORT,
    Action,
    InstanceId,
    LispDecodeError,
    Locator,
    MapNotify,
    MappingRecord,
    MapReply,
    MapRequest,
    MessageType,
    Verified,
    decode,
    sign_like,
    sorted_locators,
)
from alt_router.lisp.auth import authenticate_decoded, notify_from_register
from alt_router.lisp.records import decode_mapping_record
from alt_router.logsummary import LogSummary
from alt_router.mapping.actions import Action as Out
from alt_router.mapping.actions import Announce, SendUdp, Withdraw
from alt_router.mapping.map_resolver import first_ip
from alt_router.mapping.negative import V6_FLAG, PrefixSet, SortedList, pack, pack_prefix, unpack
from alt_router.rib.table import DualTable
from alt_router.types import IPAddress, Prefix

log = logging.getLogger(__name__)

REGISTRATION_TIMEOUT: Final = 180.0  # seconds: RFC 9301 §8.2
NOT_REGISTERED_TTL: Final = 1  # minutes: a configured site with no ETR registered (RFC 9301 §8.3)
NOT_LISP_TTL: Final = 15  # minutes: a hole in an announced aggregate (RFC 9301 §8.3)
DEFAULT_MAX_PER_SITE: Final = 1024
DEFAULT_MAX_PER_SOURCE: Final = 256
DEFAULT_MAX_NONCES: Final = 65536
ALGORITHMS: Final = {"hmac-sha1-96": HMAC_SHA_1_96, "hmac-sha256-128": HMAC_SHA_256_128}

# Where Map-Notify and forwarded Map-Requests go (Site.notify_to).
NOTIFY_RFC: Final = "rfc"  # UDP 4342 (RFC 9301 §5.7, §5.8, §8.2), to a registered RLOC
NOTIFY_SOURCE_PORT: Final = "source-port"  # the Map-Register's source address and port (NAT)
NOTIFY_TO: Final = (NOTIFY_RFC, NOTIFY_SOURCE_PORT)

# What a Map-Register whose nonce is not greater than the last accepted one gets (Site.replay).
REPLAY_ENFORCE: Final = "enforce"
REPLAY_LOG_ONLY: Final = "log-only"
REPLAY_OFF: Final = "off"
REPLAY_POLICIES: Final = (REPLAY_ENFORCE, REPLAY_LOG_ONLY, REPLAY_OFF)

# Refusal reasons (counted as "refused:<reason>").
UNKNOWN_SITE: Final = "unknown-site"
BAD_KEY_ID: Final = "bad-key-id"
AUTH_MISMATCH: Final = "auth-mismatch"
OUTSIDE_SITE: Final = "prefix-outside-site"
IID_MISMATCH: Final = "instance-id-mismatch"
REPLAY: Final = "replay"
OVER_SITE_CAP: Final = "over-site-cap"
OVER_SOURCE_CAP: Final = "over-source-cap"

# The ECM word with the E (to-ETR) bit: RFC 9301 §5.8.
_ECM_TO_ETR = bytes((0x82, 0, 0, 0))
# Stale heap entries tolerated before a compaction, beyond one per live entry.
_HEAP_SLACK = 1024
# Tables smaller than this at their peak are not worth rebuilding.
_COMPACT_MIN = 256

# The Map-Register header (RFC 9301 §5.6) and its flags, as lisp/map_register.py reads them.
_HDR = struct.Struct("!IQBBH")
_XTR = struct.Struct("!QQQ")
_U32 = struct.Struct("!I")
_AUTH_DATA_OFFSET = 16
_XTR_TRAILER_LEN = 24
_FLAG_P = 1 << 27
_FLAG_I = 1 << 25
_FLAG_T = 1 << 11
_FLAG_WANT = 1 << 8
_AUTH_COUNTERS: dict[str, str] = {}  # Verified.kind -> its counter name, made once


@dataclass(frozen=True, slots=True)
class Site:
    """One Map-Server site: who may register what, and how we talk to its ETRs.

    ``notify_to`` is ``"rfc"`` (Map-Notify and ECM Map-Requests to UDP 4342, ECMs only to
    an RLOC of the signed registration) or ``"source-port"`` (both to the Map-Register's
    source address and port: ETRs behind NAT).  ``replay`` is ``"enforce"``,
    ``"log-only"`` or ``"off"`` (docs/mapping.md, Interoperability).
    """

    name: str
    key: str
    algorithm_id: int
    prefixes: tuple[Prefix, ...]
    accept_more_specifics: bool = False
    always_announce: bool = False
    notify_to: str = NOTIFY_RFC
    replay: str = REPLAY_ENFORCE

    def __post_init__(self) -> None:
        if self.notify_to not in NOTIFY_TO:
            raise ValueError(f"site {self.name}: notify_to {self.notify_to!r} is not one of {NOTIFY_TO}")
        if self.replay not in REPLAY_POLICIES:
            raise ValueError(f"site {self.name}: replay {self.replay!r} is not one of {REPLAY_POLICIES}")

    def covering(self, prefix: Prefix) -> Prefix | None:
        """The configured prefix that contains ``prefix``, if any."""
        for p in self.prefixes:
            if p.version == prefix.version and prefix.subnet_of(p):  # type: ignore[arg-type]
                return p
        return None

    def allows(self, prefix: Prefix) -> bool:
        outer = self.covering(prefix)
        return outer is not None and (outer == prefix or self.accept_more_specifics)


@dataclass(frozen=True, slots=True)
class Registration:
    """A registration as the views show it (made on demand from the Map-Server's compact state)."""

    site: str
    prefix: Prefix
    record: MappingRecord
    source: IPAddress  # the Map-Register's source address
    source_port: int
    xtr_id: int | None
    proxy_reply: bool
    registered_at: float
    expires: float
    # Where forwarded Map-Requests go: an RLOC of the signed record (None: no usable RLOC).
    etr_address: IPAddress | None = None
    etr_port: int = LISP_CONTROL_PORT


class _Reg:
    """One registration as the Map-Server holds it: a few hundred bytes, 300,000 of them.

    ``pkey`` is the EID prefix packed (``negative.pack_prefix``), ``ident`` the xTR-ID or else
    the source address, ``raw`` the record as received (decoded again only for a view or a
    proxy reply), ``canonical`` whether it re-encodes to those bytes (then a Map-Notify can
    copy them), ``rloc`` the RLOC of the record Map-Requests go to from ``source``.
    """

    __slots__ = (
        "canonical",
        "dead",
        "etr_address",
        "etr_port",
        "expires",
        "ident",
        "pkey",
        "proxy_reply",
        "raw",
        "registered_at",
        "rloc",
        "site",
        "source",
        "sport",
        "xtr_id",
    )

    site: str
    pkey: int
    ident: object
    raw: bytes
    canonical: bool
    source: IPAddress
    sport: int
    xtr_id: int | None
    proxy_reply: bool
    registered_at: float
    expires: float
    rloc: IPAddress | None
    etr_address: IPAddress | None
    etr_port: int
    dead: bool

    def __lt__(self, other: _Reg) -> bool:
        return id(self) < id(other)  # heap ties between equal expiry times: any fixed order

    def sort_key(self) -> SortKey:
        ident = self.ident
        return (self.site, self.pkey, 0 if isinstance(ident, int) else ident.version, ident)  # type: ignore[attr-defined]


class _Rec:
    """One record of the Map-Register being handled."""

    __slots__ = ("canonical", "hit", "iid", "pkey", "raw", "record", "ttl")

    def __init__(  # noqa: PLR0917 - made once per record, on the hot path
        self, raw: bytes, pkey: int | None, iid: int | None, ttl: int, record: MappingRecord | None,
                 hit: _Reg | None, canonical: bool) -> None:
        self.raw = raw
        self.pkey = pkey
        self.iid = iid
        self.ttl = ttl
        self.record = record
        self.hit = hit  # a registration with this very record (decoded and accepted before)
        self.canonical = canonical

    def decoded(self) -> MappingRecord:
        if self.record is None:
            self.record = decode_mapping_record(self.raw, 0, 0)[0]
        return self.record


class _Msg:
    """A Map-Register parsed once (RFC 9301 §5.6), without ``ipaddress`` objects where it can."""

    __slots__ = ("algorithm_id", "key_id", "nonce", "records", "records_end", "word", "xtr_id")

    def __init__(  # noqa: PLR0917 - made once per Map-Register, on the hot path
        self, word: int, nonce: int, key_id: int, algorithm_id: int, records: list[_Rec],
                 xtr_id: int | None, records_end: int) -> None:
        self.word = word
        self.nonce = nonce
        self.key_id = key_id
        self.algorithm_id = algorithm_id
        self.records = records
        self.xtr_id = xtr_id
        self.records_end = records_end


# (site, key ID, xTR-ID or the source address as (family, int)): plain data, hashed in C, not by
# ipaddress's __hash__ in Python on every Map-Register.
NonceKey = tuple[str, int, object]


def _nonce_ident(ident: object) -> object:
    return (ident.version, int(ident)) if isinstance(ident, IPv4Address | IPv6Address) else ident
# (site, packed prefix, 0 for an xTR-ID else the address family, xTR-ID or source): the paging
# order, (site, family, network, length, xTR-IDs before addresses).
SortKey = tuple[str, int, int, Any]


class Refused(Exception):  # noqa: N818 - an outcome, not a failure of the server
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def record_prefix(record: MappingRecord) -> tuple[Prefix | None, int | None]:
    """The record's EID prefix and its instance ID (None for a plain address)."""
    eid = record.eid
    iid = None
    if isinstance(eid, InstanceId):
        iid, eid = eid.instance_id, eid.address
    if not isinstance(eid, IPv4Address | IPv6Address):
        return None, iid
    net = ip_network((eid, record.mask_len), strict=False)
    assert isinstance(net, IPv4Network | IPv6Network)
    return net, iid


def _ident_sort(ident: object) -> tuple[int, int, int]:
    if isinstance(ident, IPv4Address | IPv6Address):
        return 1, ident.version, int(ident)
    assert isinstance(ident, int)
    return 0, 0, ident


def _split(pkey: int) -> tuple[int, int, int]:
    """(family, network, length) of a packed prefix (``negative.pack_prefix``)."""
    if pkey < V6_FLAG:
        return 4, pkey >> 6, pkey & 0x3F
    return 6, (pkey ^ V6_FLAG) >> 8, pkey & 0xFF


def _parse_cursor(cursor: str) -> SortKey:
    try:
        raw = json.loads(cursor)
    except ValueError:
        raise ValueError(f"bad registrations cursor {cursor!r}") from None
    if (
        not isinstance(raw, list) or len(raw) != 4 or not isinstance(raw[0], str)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw[1:])
        or raw[2] not in (0, 4, 6)
    ):
        raise ValueError(f"bad registrations cursor {cursor!r}")
    ident: Any = raw[3]
    try:
        if raw[2] == 4:
            ident = IPv4Address(ident)
        elif raw[2] == 6:
            ident = IPv6Address(ident)
    except ValueError:
        raise ValueError(f"bad registrations cursor {cursor!r}") from None
    return (raw[0], raw[1], raw[2], ident)


def _cursor(key: SortKey) -> str:
    return json.dumps([key[0], key[1], key[2], int(key[3])])


class MapServer:
    """The Map-Server of a set of sites.

    ``port`` is the Map-Server's own UDP port (the source of what it sends), ``etr_port`` the
    port Map-Notify and ECM Map-Requests go to (4342; a loopback test uses another).
    ``aggregates`` are the prefixes the node announces ([eid].announce): holes in them get
    15-minute negative replies.  ``routed_inside(p)`` lists the ALT routes inside ``p`` (the
    node's RIB), so a negative reply never hides another node's more-specific in our space.
    """

    def __init__(
        self,
        sites: Iterable[Site],
        *,
        registration_timeout: float = REGISTRATION_TIMEOUT,
        port: int = LISP_CONTROL_PORT,
        etr_port: int = LISP_CONTROL_PORT,
        aggregates: Iterable[Prefix] = (),
        max_per_site: int = DEFAULT_MAX_PER_SITE,
        max_per_source: int = DEFAULT_MAX_PER_SOURCE,
        max_nonces: int = DEFAULT_MAX_NONCES,
        log_interval: float = 10.0,
        routed_inside: Callable[[Prefix], Iterable[Prefix]] | None = None,
    ) -> None:
        self.registration_timeout = registration_timeout
        self.port = port
        self.etr_port = etr_port
        self.max_per_site = max_per_site
        self.max_per_source = max_per_source
        self.max_nonces = max_nonces
        self.routed_inside = routed_inside
        self.counters: Counter[str] = Counter()
        self.sites: dict[str, Site] = {}
        self._site_index: DualTable[tuple[Site, ...]] = DualTable()
        # The same, packed, for a Map-Register's look-up: owners by packed prefix, and the
        # configured lengths of each family, longest first.
        self._site_keys: dict[int, tuple[Site, ...]] = {}
        self._site_lens: dict[int, list[int]] = {4: [], 6: []}
        self._site_nets: dict[str, tuple[Site, tuple[tuple[int, int, int, int], ...]]] = {}
        self._key_bytes: dict[str, bytes] = {}
        # Registered and configured prefixes: what a negative reply must not overlap.
        self._known = PrefixSet()
        self._aggregates: DualTable[bool] = DualTable()
        # Registrations by packed prefix: the one registration of the prefix, or the list of them.
        self._by_prefix: dict[int, _Reg | list[_Reg]] = {}
        self._count = 0
        # How many registered prefixes of each (family, length): the lengths a look-up probes.
        self._len_count: Counter[tuple[int, int]] = Counter()
        self._lens: dict[int, list[int]] = {4: [], 6: []}
        self._site_count: Counter[str] = Counter()
        self._source_count: Counter[IPAddress] = Counter()
        self._sorted = SortedList()  # SortKey of every registration
        self._heap: list[tuple[float, _Reg]] = []  # (expires, registration)
        self._nonce_heap: list[tuple[float, int, NonceKey]] = []  # (expires, seq, key)
        self._seq = 0
        self._high_water = 0  # the most registrations + nonce records held since the last compaction
        self._nonces: OrderedDict[NonceKey, tuple[int, float]] = OrderedDict()
        self.nonce_changes = 0  # moves whenever the nonce table does: the edge persists it then
        self._announced: set[str] = set()
        self._next_etr = 0
        # Refusals and replays (WARNING) and expiries (INFO), each summarised at its own level.
        self._logs = {logging.WARNING: LogSummary(interval=log_interval),
                      logging.INFO: LogSummary(interval=log_interval)}
        self._log_interval = log_interval
        self._log_due: float | None = None
        self._set_site_table(list(sites))
        self.set_aggregates(aggregates)

    # --- configuration -------------------------------------------------------------------

    def _set_site_table(self, sites: list[Site]) -> None:
        for site in self.sites.values():
            for p in site.prefixes:
                self._known.discard(p)
        self.sites = {}
        self._key_bytes = {}
        by_prefix: dict[Prefix, list[Site]] = {}
        for site in sites:
            self.sites[site.name] = site
            self._key_bytes[site.name] = site.key.encode()
            for p in site.prefixes:
                by_prefix.setdefault(p, []).append(site)
                self._known.add(p)
        self._site_index = DualTable()
        self._site_keys = {}
        lens: dict[int, set[int]] = {4: set(), 6: set()}
        for p, owners in by_prefix.items():
            self._site_index.insert(p, tuple(owners))
            self._site_keys[pack(p)] = tuple(owners)
            lens[p.version].add(p.prefixlen)
        self._site_lens = {v: sorted(ls, reverse=True) for v, ls in lens.items()}
        self._site_nets = {}

    def set_aggregates(self, prefixes: Iterable[Prefix]) -> None:
        """The aggregates this node announces ([eid].announce): holes in them get 15-minute negatives."""
        self._aggregates = DualTable()
        for p in prefixes:
            self._aggregates.insert(p, True)

    def aggregates(self) -> list[Prefix]:
        return [p for p, _ in self._aggregates]

    def _nets(self, site: Site) -> tuple[tuple[int, int, int, int], ...]:
        """The site's prefixes as (family, network, length, packed), in configuration order."""
        cached = self._site_nets.get(site.name)
        if cached is None or cached[0] is not site:
            nets = tuple((p.version, int(p.network_address), p.prefixlen, pack(p)) for p in site.prefixes)
            cached = self._site_nets[site.name] = (site, nets)
        return cached[1]

    def _allows(self, site: Site, pkey: int) -> bool:
        """``site.allows`` for a packed prefix."""
        version, net, length = _split(pkey)
        bits = 32 if version == 4 else 128
        for v, pnet, plen, pk in self._nets(site):
            if v == version and plen <= length and net >> (bits - plen) == pnet >> (bits - plen):
                return pk == pkey or site.accept_more_specifics
        return False

    def _candidates(self, pkey: int) -> list[Site]:
        """The sites whose configured prefixes cover ``pkey``, the most specific first."""
        version, net, length = _split(pkey)
        bits = 32 if version == 4 else 128
        out: list[Site] = []
        for plen in self._site_lens[version]:
            if plen <= length:
                host = bits - plen
                owners = self._site_keys.get(pack_prefix(version, net >> host << host, plen))
                if owners is not None:
                    out.extend(owners)
        return out

    # --- announcements -------------------------------------------------------------------

    def start(self) -> list[Out]:
        """The announcements to make at start-up (``always_announce`` sites)."""
        out: list[Out] = []
        for site in self.sites.values():
            if site.always_announce and site.name not in self._announced:
                self._announced.add(site.name)
                out.extend(Announce(p) for p in site.prefixes)
        return out

    def _active(self, site: Site) -> bool:
        return site.always_announce or self._site_count[site.name] > 0

    def _reannounce(self, site: Site) -> list[Out]:
        active = self._active(site)
        if active and site.name not in self._announced:
            self._announced.add(site.name)
            return [Announce(p) for p in site.prefixes]
        if not active and site.name in self._announced:
            self._announced.discard(site.name)
            return [Withdraw(p) for p in site.prefixes]
        return []

    def set_sites(self, sites: Iterable[Site], now: float) -> list[Out]:
        """Replace the configured sites (a config reload); the announcements that must change.

        A removed site loses its registrations and its announcement.  A site whose key or
        algorithm changed loses its registrations and its nonce history too (a new key is
        normally a revoked old one; the ETR re-registers within its register interval).  A
        site whose prefixes changed keeps the registrations its new prefixes still allow, and
        its announcement follows the new prefixes.  Sites left unchanged are not touched.
        A reload is rare: walking the registrations here is fine, unlike per datagram.
        """
        out = self.tick(now)
        new = {site.name: site for site in sites}
        for name, old in list(self.sites.items()):
            site = new.get(name)
            if site == old:
                continue
            rekeyed = site is None or (site.key, site.algorithm_id) != (old.key, old.algorithm_id)
            for reg in list(self._all()):
                if reg.site == name and (rekeyed or site is None or not self._allows(site, reg.pkey)):
                    self._remove(reg)
                    self.counters["dropped-on-reload"] += 1
            if rekeyed:
                for nkey in [k for k in self._nonces if k[0] == name]:
                    del self._nonces[nkey]
                    self.nonce_changes += 1
            if name not in self._announced:
                continue
            active = site is not None and (site.always_announce or self._site_count[name] > 0)
            keep = set(site.prefixes) if site is not None and active else set()
            out.extend(Withdraw(p) for p in old.prefixes if p not in keep)
            if site is not None and active:
                out.extend(Announce(p) for p in site.prefixes if p not in set(old.prefixes))
            else:
                self._announced.discard(name)
        self._set_site_table(list(new.values()))
        for site in new.values():
            out.extend(self._reannounce(site))
        return out

    # --- logging -------------------------------------------------------------------------

    def _note(self, level: int, reason: str, source: object, now: float, message: str, *args: object) -> None:
        """Log the first (reason, source) in full; the rest go into the next summary line."""
        if self._log_due is None:
            self._log_due = now + self._log_interval
        if self._logs[level].note(reason, source, now):
            log.log(level, message, *args)

    def _flush_log(self, now: float) -> None:
        if self._log_due is not None and now >= self._log_due:
            self._log_due = None
            for level, summary in self._logs.items():
                for line in summary.flush(now, force=True):
                    log.log(level, "Map-Server: %s", line)

    # --- Map-Register ----------------------------------------------------------------------

    def handle_register(self, data: bytes, src: IPAddress, sport: int, now: float) -> list[Out]:
        """A datagram on the Map-Server's UDP socket (a Map-Register, normally)."""
        counters = self.counters
        counters["received"] += 1
        if not isinstance(data, bytes):
            data = bytes(data)
        try:
            if not data or data[0] >> 4 != MessageType.MAP_REGISTER:
                decode(data)  # the error it raises, or another message type
                counters["unexpected"] += 1
                return []
            msg = self._parse(data)
        except LispDecodeError as exc:
            counters["malformed"] += 1
            log.debug("malformed message from %s:%d: %s", src, sport, exc)
            return []
        try:
            site, verified = self._check(msg, data)
            ident: object = msg.xtr_id if msg.xtr_id is not None else src
            nkey = (site.name, msg.key_id, _nonce_ident(ident))
            self._check_nonce(site, msg, nkey, src, now)
            self._check_caps(site, msg, ident, src)
        except Refused as exc:
            counters[f"refused:{exc.reason}"] += 1
            self._note(logging.WARNING, exc.reason, src, now, "Map-Register from %s:%d refused, %s",
                       src, sport, exc)
            return []
        counters["registered"] += 1
        name = _AUTH_COUNTERS.get(verified.kind)
        if name is None:
            name = _AUTH_COUNTERS[verified.kind] = f"auth:{verified.kind}"
        counters[name] += 1
        if verified.mac_over_xtr_id:
            counters["auth:mac-over-xtr-id"] += 1
        longest = self.registration_timeout
        use_ttl = msg.word & _FLAG_T
        for rec in msg.records:
            assert rec.pkey is not None  # _check refused the others
            if rec.ttl == 0:
                reg = self._find(site.name, rec.pkey, ident)
                if reg is not None:
                    self._remove(reg)
                continue
            life = rec.ttl * 60.0 if use_ttl else self.registration_timeout
            longest = max(longest, life)
            self._put(site, rec, msg, ident, src, sport, now, now + life)
        if site.replay != REPLAY_OFF:
            self._remember_nonce(nkey, msg.nonce, now + longest)
        out = self._reannounce(site)
        if msg.word & _FLAG_WANT:
            out.append(self._notify(site, msg, data, src, sport))
        return out

    def _parse(self, data: bytes) -> _Msg:
        """Decode a Map-Register as ``decode`` does (the same errors), a record at a time.

        A record byte-identical to one registered for its prefix was decoded and accepted
        before: it is not decoded again (the common case, a refresh).
        """
        n = len(data)
        if n < _AUTH_DATA_OFFSET:
            raise LispDecodeError(f"Map-Register: header truncated at offset {n}, need 16 bytes")
        word, nonce, key_id, alg, auth_len = _HDR.unpack_from(data)
        pos = _AUTH_DATA_OFFSET + auth_len
        if pos > n:
            raise LispDecodeError(
                f"Map-Register: Authentication Data Length {auth_len} at offset 14 overruns the "
                f"{n - _AUTH_DATA_OFFSET} bytes left"
            )
        records = []
        for i in range(word & 0xFF):
            scanned = self._scan(data, pos, n)
            if isinstance(scanned, _Rec):
                rec = scanned
            else:
                record, end = decode_mapping_record(data, pos, i)
                raw = data[pos:end]
                if scanned is None:  # not a plain IPv4/IPv6 EID: an LCAF, say
                    prefix, iid = record_prefix(record)
                    scanned = None if prefix is None else pack(prefix)
                else:
                    iid = None
                rec = _Rec(raw, scanned, iid, record.ttl, record, None, record.encode() == raw)
            pos += len(rec.raw)
            records.append(rec)
        records_end = pos
        xtr_id = None
        if word & _FLAG_I:
            if pos + _XTR_TRAILER_LEN > n:
                raise LispDecodeError(f"Map-Register: I bit set but xTR-ID/site-ID truncated at offset {pos}")
            hi, lo, _site_id = _XTR.unpack_from(data, pos)
            xtr_id = (hi << 64) | lo
            pos += _XTR_TRAILER_LEN
        if pos != n:
            raise LispDecodeError(f"Map-Register: {n - pos} trailing bytes after the message at offset {pos}")
        return _Msg(word, nonce, key_id, alg, records, xtr_id, records_end)

    def _scan(self, data: bytes, pos: int, n: int) -> _Rec | int | None:
        """The record at ``pos`` if it repeats the one registered for its prefix, else its packed
        prefix when it is a plain one (the decoder checks the rest), else None.

        RFC 9301 §5.4 layout: a 12-byte header ending with the EID's AFI, the EID, then per
        locator 6 bytes, an AFI and the address.  Only plain IPv4/IPv6 addresses are walked
        here; anything else is for the decoder.
        """
        eid_at = pos + 12
        if eid_at > n or data[pos + 10] != 0:
            return None
        afi = data[pos + 11]
        if afi == 1:
            bits = 32
        elif afi == 2:
            bits = 128
        else:
            return None
        end = eid_at + bits // 8
        mask = data[pos + 5]
        if end > n or mask > bits:
            return None
        for _ in range(data[pos + 4]):
            if end + 8 > n or data[end + 6] != 0:
                return None
            lafi = data[end + 7]
            if lafi == 1:
                end += 12
            elif lafi == 2:
                end += 24
            else:
                return None
        if end > n:
            return None
        net = int.from_bytes(data[eid_at:eid_at + bits // 8], "big")
        host = bits - mask
        pkey = pack_prefix(4 if bits == 32 else 6, net >> host << host, mask)
        entry = self._by_prefix.get(pkey)
        if entry is None:
            return pkey
        raw = data[pos:end]
        for reg in (entry,) if entry.__class__ is _Reg else entry:  # type: ignore[union-attr]
            if reg.raw == raw:
                return _Rec(reg.raw, pkey, None, _U32.unpack_from(data, pos)[0], None, reg, reg.canonical)
        return pkey

    def _notify(self, site: Site, msg: _Msg, data: bytes, src: IPAddress, sport: int) -> SendUdp:
        # RFC 9301 §5.7: the Map-Notify copies the Map-Register's fields; its MAC is as long as
        # the one the ETR sent (deployed ETRs reject or misparse any other length).  No I bit
        # and no xTR-ID trailer: the §5.7 layout has neither.
        if all(rec.canonical for rec in msg.records):
            payload = notify_from_register(data, msg.records_end, self._key_bytes[site.name])
        else:
            # Records with bits our encoder does not keep: the Map-Notify carries them re-encoded.
            notify = MapNotify(msg.nonce, tuple(rec.decoded() for rec in msg.records), key_id=msg.key_id,
                               algorithm_id=site.algorithm_id)
            payload = sign_like(notify, site.key, data).encode()
        self.counters["map-notify"] += 1
        # RFC 9301 §5.7, §8.2: to UDP 4342, not to the Map-Register's source port.
        port = sport if site.notify_to == NOTIFY_SOURCE_PORT else self.etr_port
        return SendUdp(src, port, payload, sport=self.port)

    def _check(self, msg: _Msg, data: bytes) -> tuple[Site, Verified]:
        if not msg.records:
            raise Refused(UNKNOWN_SITE, "no records")
        first = msg.records[0]
        candidates = [] if first.pkey is None else self._candidates(first.pkey)
        if not candidates:
            what = first.decoded().eid if first.pkey is None else unpack(first.pkey)
            raise Refused(UNKNOWN_SITE, f"no site covers EID-prefix {what}")
        # Overlapping sites are told apart by whose key verifies.
        site = None
        verified = None
        trailer = msg.xtr_id is not None
        for cand in candidates:
            if msg.key_id != 0 or msg.algorithm_id != cand.algorithm_id:
                continue
            verified = authenticate_decoded(data, self._key_bytes[cand.name], xtr_trailer=trailer)
            if verified is not None:
                site = cand
                break
        if site is None or verified is None:
            cand = candidates[0]
            if msg.key_id != 0 or msg.algorithm_id != cand.algorithm_id:
                raise Refused(
                    BAD_KEY_ID,
                    f"key ID {msg.key_id} algorithm {msg.algorithm_id}, site {cand.name} uses key ID 0 "
                    f"algorithm {cand.algorithm_id}",
                )
            raise Refused(AUTH_MISMATCH, f"authentication data does not verify with site {cand.name}'s key")
        for rec in msg.records:
            if rec.iid not in (None, 0):
                raise Refused(IID_MISMATCH, f"instance ID {rec.iid}, site {site.name} is in instance 0")
            if rec.pkey is None or not self._allows(site, rec.pkey):
                more = "" if site.accept_more_specifics else " (more-specifics not accepted)"
                what = rec.decoded().eid if rec.pkey is None else unpack(rec.pkey)
                raise Refused(OUTSIDE_SITE, f"{what} is outside site {site.name}'s prefixes{more}")
        return site, verified

    def _check_nonce(self, site: Site, msg: _Msg, nkey: NonceKey, src: IPAddress, now: float) -> None:
        """RFC 9301 §5.6: a nonce not greater than the last accepted one from this xTR and key."""
        if site.replay == REPLAY_OFF:
            return
        last = self._nonces.get(nkey)
        if last is None or msg.nonce > last[0]:
            return
        who = f"xTR-ID {msg.xtr_id:#x}" if msg.xtr_id is not None else f"ETR {src}"
        detail = (f"nonce {msg.nonce:#x} is not greater than {last[0]:#x}, the last accepted from {who} "
                  f"for site {site.name} (a replay, or an ETR sending random nonces: see the site's "
                  "replay setting)")
        if site.replay == REPLAY_ENFORCE:
            raise Refused(REPLAY, detail)
        self.counters["replay-accepted"] += 1
        self._note(logging.WARNING, "replay-accepted", src, now,
                   "Map-Register accepted (replay = log-only), %s", detail)

    def _check_caps(self, site: Site, msg: _Msg, ident: object, src: IPAddress) -> None:
        new_site = 0
        new_source = 0
        for pkey in {r.pkey for r in msg.records if r.ttl != 0}:
            assert pkey is not None
            reg = self._find(site.name, pkey, ident)
            new_site += reg is None
            new_source += reg is None or (reg.source is not src and reg.source != src)
        if new_site and self._site_count[site.name] + new_site > self.max_per_site:
            raise Refused(OVER_SITE_CAP, f"site {site.name} has {self._site_count[site.name]} registrations, "
                                         f"the cap is {self.max_per_site} (max_registrations_per_site)")
        if new_source and self._source_count[src] + new_source > self.max_per_source:
            raise Refused(OVER_SOURCE_CAP, f"{src} has {self._source_count[src]} registrations, the cap is "
                                           f"{self.max_per_source} (max_registrations_per_source)")

    # --- the registration table ----------------------------------------------------------

    def _find(self, site: str, pkey: int, ident: object) -> _Reg | None:
        entry = self._by_prefix.get(pkey)
        if entry is None:
            return None
        for reg in (entry,) if entry.__class__ is _Reg else entry:  # type: ignore[union-attr]
            if reg.site == site and (reg.ident is ident or reg.ident == ident):
                return reg
        return None

    def _all(self) -> Iterator[_Reg]:
        for entry in self._by_prefix.values():
            if isinstance(entry, _Reg):
                yield entry
            else:
                yield from entry

    def _put(  # noqa: PLR0917 - internal, once per record
        self, site: Site, rec: _Rec, msg: _Msg, ident: object, src: IPAddress, sport: int, now: float,
             expires: float) -> None:
        pkey = rec.pkey
        assert pkey is not None
        hit = rec.hit
        # The same record from the same source: the same RLOC as last time.
        rloc = hit.rloc if hit is not None and (hit.source is src or hit.source == src) else _etr_rloc(
            rec.decoded(), src)
        reg = self._find(site.name, pkey, ident)
        if reg is None:
            reg = _Reg()
            reg.site, reg.pkey, reg.ident, reg.dead = site.name, pkey, ident, False
            reg.source = src
            reg.expires = expires
            entry = self._by_prefix.get(pkey)
            if entry is None:
                self._by_prefix[pkey] = reg
                self._known.add_packed(pkey)
                self._count_length(pkey, 1)
            elif isinstance(entry, _Reg):
                self._by_prefix[pkey] = [entry, reg]
            else:
                entry.append(reg)
            self._count += 1
            self._site_count[site.name] += 1
            self._source_count[src] += 1
            self._sorted.add(reg.sort_key())
            self._high_water = max(self._high_water, self._count + len(self._nonces))
            self._push(expires, reg)
        else:
            if reg.source is not src and reg.source != src:
                self._uncount_source(reg.source)
                self._source_count[src] += 1
                reg.source = src
            if expires < reg.expires:
                self._push(expires, reg)  # its heap entry is later: one more, due in time
            reg.expires = expires
        reg.raw = rec.raw
        reg.canonical = rec.canonical
        reg.sport = sport
        reg.xtr_id = msg.xtr_id
        reg.proxy_reply = bool(msg.word & _FLAG_P)
        reg.registered_at = now
        reg.rloc = rloc
        if site.notify_to == NOTIFY_SOURCE_PORT:
            # Behind NAT the registering address and port are the only way back in.
            reg.etr_address, reg.etr_port = src, sport
        else:
            # RFC 9301 §8.3: a replayed or spoofed Map-Register must not redirect the site's
            # Map-Requests, so they only go to an RLOC the signed record names.
            reg.etr_address, reg.etr_port = rloc, self.etr_port

    def _count_length(self, pkey: int, delta: int) -> None:
        version, _, length = _split(pkey)
        key = (version, length)
        left = self._len_count[key] + delta
        if left > 0:
            self._len_count[key] = left
        else:
            del self._len_count[key]
        if left in (0, 1):  # a length appeared or went: the probe list follows
            self._lens[version] = sorted((ln for v, ln in self._len_count if v == version), reverse=True)

    def _push(self, expires: float, reg: _Reg) -> None:
        heapq.heappush(self._heap, (expires, reg))
        if len(self._heap) > 2 * self._count + _HEAP_SLACK:
            # Stale entries (removed or moved earlier) pile up: drop them all at once (amortised O(1)).
            live = [(r.expires, r) for r in self._all()]
            heapq.heapify(live)
            self._heap = live

    def _uncount_source(self, source: IPAddress) -> None:
        left = self._source_count[source] - 1
        if left > 0:
            self._source_count[source] = left
        else:
            del self._source_count[source]

    def _remove(self, reg: _Reg) -> None:
        reg.dead = True
        pkey = reg.pkey
        entry = self._by_prefix.get(pkey)
        if entry is reg:
            del self._by_prefix[pkey]
            self._known.discard_packed(pkey)
            self._count_length(pkey, -1)
        elif isinstance(entry, list):
            entry.remove(reg)
            if len(entry) == 1:
                self._by_prefix[pkey] = entry[0]
        self._count -= 1
        left = self._site_count[reg.site] - 1
        if left > 0:
            self._site_count[reg.site] = left
        else:
            del self._site_count[reg.site]
        self._uncount_source(reg.source)
        self._sorted.remove(reg.sort_key())

    def _remember_nonce(self, key: NonceKey, nonce: int, expires: float) -> None:
        last = self._nonces.get(key)
        if last is not None:
            # log-only may accept a lower nonce; the table keeps the highest.
            nonce = max(nonce, last[0])
            expires = max(expires, last[1])
            self._nonces.move_to_end(key)
        self._nonces[key] = (nonce, expires)
        self.nonce_changes += 1
        self._high_water = max(self._high_water, self._count + len(self._nonces))
        while len(self._nonces) > self.max_nonces:
            self._nonces.popitem(last=False)
            self.counters["nonce-evicted"] += 1
        if last is None:
            # A record's expiry only moves later: its heap entry is moved when it comes up.
            self._seq += 1
            heapq.heappush(self._nonce_heap, (expires, self._seq, key))
            if len(self._nonce_heap) > 2 * len(self._nonces) + _HEAP_SLACK:
                live = [(e, i, k) for i, (k, (_, e)) in enumerate(self._nonces.items())]
                heapq.heapify(live)
                self._nonce_heap = live
                self._seq = len(live)

    # --- expiry ----------------------------------------------------------------------------

    def tick(self, now: float) -> list[Out]:
        """Expire registrations (and nonce records) whose time is up; withdraw sites left with none."""
        touched: set[str] = set()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, reg = heap[0]
            if reg.dead:
                heapq.heappop(heap)
                continue
            if reg.expires > now:  # refreshed since: its entry moves
                heapq.heapreplace(heap, (reg.expires, reg))
                continue
            heapq.heappop(heap)
            self._remove(reg)
            touched.add(reg.site)
            self.counters["expired"] += 1
            self._note(logging.INFO, "registration expired", reg.site, now,
                       "registration of %s for %s from %s expired", reg.site, unpack(reg.pkey), reg.source)
        nheap = self._nonce_heap
        while nheap and nheap[0][0] <= now:
            _, seq, key = nheap[0]
            entry = self._nonces.get(key)
            if entry is not None and entry[1] > now:
                heapq.heapreplace(nheap, (entry[1], seq, key))
                continue
            heapq.heappop(nheap)
            if entry is not None:
                del self._nonces[key]
                self.nonce_changes += 1
        self._flush_log(now)
        self._compact()
        out: list[Out] = []
        for name in sorted(touched):
            site = self.sites.get(name)
            if site is not None:
                out.extend(self._reannounce(site))
        return out

    def _compact(self) -> None:
        """Rebuild the tables once they hold a quarter of their peak: CPython dicts never shrink
        by deletion, so without this a flood's memory would stay after its registrations expired."""
        size = self._count + len(self._nonces)
        self._high_water = max(self._high_water, size)
        if self._high_water < _COMPACT_MIN or size * 4 > self._high_water:
            return
        self._by_prefix = dict(self._by_prefix)
        self._nonces = OrderedDict(self._nonces)
        self._site_count = Counter(self._site_count)
        self._source_count = Counter(self._source_count)
        self._heap = [(r.expires, r) for r in self._all()]
        heapq.heapify(self._heap)
        self._nonce_heap = [(e, i, k) for i, (k, (_, e)) in enumerate(self._nonces.items())]
        heapq.heapify(self._nonce_heap)
        self._seq = len(self._nonce_heap)
        self._high_water = size

    def next_expiry(self) -> float | None:
        """When the earliest registration or nonce record expires (stale heap entries dropped)."""
        heap = self._heap
        first: float | None = None
        while heap:
            expires, reg = heap[0]
            if reg.dead:
                heapq.heappop(heap)
            elif reg.expires != expires:
                heapq.heapreplace(heap, (reg.expires, reg))
            else:
                first = expires
                break
        nheap = self._nonce_heap
        while nheap:
            expires, seq, key = nheap[0]
            entry = self._nonces.get(key)
            if entry is None:
                heapq.heappop(nheap)
            elif entry[1] != expires:
                heapq.heapreplace(nheap, (entry[1], seq, key))
            else:
                return expires if first is None else min(first, expires)
        return first

    def next_deadline(self) -> float | None:
        """When ``tick`` next has work: an expiry or a pending log summary."""
        times = [t for t in (self.next_expiry(), self._log_due) if t is not None]
        return min(times, default=None)

    # --- views -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def _view(self, reg: _Reg) -> Registration:
        return Registration(
            reg.site, unpack(reg.pkey), decode_mapping_record(reg.raw, 0, 0)[0], reg.source, reg.sport,
            reg.xtr_id, reg.proxy_reply, reg.registered_at, reg.expires, reg.etr_address, reg.etr_port,
        )

    def registrations(self) -> list[Registration]:
        """Every registration, in paging order (site, prefix, xTR-ID / source).  Prefer the pages."""
        items, _ = self.registrations_page(None, self._count or 1)
        return items

    def registrations_page(
        self, after: str | None = None, limit: int = 100
    ) -> tuple[list[Registration], str | None]:
        """Up to ``limit`` registrations following the opaque cursor ``after`` (None: from the start).

        Returns them with the cursor of the next page, None on the last one.  A cursor stays
        valid when registrations come and go in between: it names a position, not an item.
        Raises ValueError for a cursor this method did not make.
        """
        if limit < 1:
            raise ValueError(f"limit {limit} must be at least 1")
        keys: Iterable[SortKey] = iter(self._sorted) if after is None else self._sorted.after(
            _parse_cursor(after))
        items: list[Registration] = []
        last: SortKey | None = None
        more = False
        for sk in keys:
            if len(items) == limit:
                more = True
                break
            reg = self._find(sk[0], sk[1], sk[3])
            assert reg is not None
            items.append(self._view(reg))
            last = sk
        return items, (_cursor(last) if more and last is not None else None)

    def site_counts(self) -> dict[str, int]:
        """Live registrations per site (sites with none are absent)."""
        return dict(self._site_count)

    def stats(self) -> dict[str, int]:
        return {"registrations": self._count, "sites_registered": len(self._site_count),
                "sources": len(self._source_count), "nonces": len(self._nonces),
                "heap": len(self._heap) + len(self._nonce_heap)}

    def _live(self, eid: IPAddress, now: float) -> list[_Reg]:
        """Live registrations of the most specific registered prefix covering ``eid``: the
        registered lengths, longest first, one dict probe each."""
        version = eid.version
        bits = 32 if version == 4 else 128
        x = int(eid)
        by_prefix = self._by_prefix
        for length in self._lens[version]:
            host = bits - length
            entry = by_prefix.get(pack_prefix(version, x >> host << host, length))
            if entry is None:
                continue
            # Expired but not yet ticked away: a less specific registration may still hold.
            live = [r for r in ((entry,) if isinstance(entry, _Reg) else entry) if r.expires > now]
            if live:
                return live
        return []

    def lookup(self, eid: IPAddress, now: float) -> list[Registration]:
        """Live registrations of the most specific registered prefix covering ``eid``."""
        return [self._view(r) for r in self._live(eid, now)]

    # --- nonce persistence (the edge stores this as JSON) ------------------------------------

    def dump_nonces(self, now: float) -> list[dict[str, Any]]:
        """The nonce table as plain data, each record with the seconds it has left."""
        out: list[dict[str, Any]] = []
        for (site, key_id, ident), (nonce, expires) in self._nonces.items():
            if expires <= now:
                continue
            item: dict[str, Any] = {"site": site, "key_id": key_id, "nonce": nonce,
                                    "expires_in": round(expires - now, 3)}
            if isinstance(ident, tuple):
                item["etr"] = str(IPv4Address(ident[1]) if ident[0] == 4 else IPv6Address(ident[1]))
            else:
                item["xtr_id"] = ident
            out.append(item)
        return out

    def load_nonces(self, data: object, now: float, *, elapsed: float = 0.0) -> int:
        """Restore a :meth:`dump_nonces` table, ``elapsed`` seconds later; the number of records kept.

        Raises ValueError when ``data`` is not such a table (nothing is loaded then).
        Records of sites no longer configured, or already expired, are skipped.
        """
        if not isinstance(data, list):
            raise ValueError("nonce table: not a list")
        parsed: list[tuple[NonceKey, int, float]] = []
        for i, item in enumerate(data):
            try:
                if not isinstance(item, dict):
                    raise TypeError("not an object")
                site, key_id, nonce = item["site"], item["key_id"], item["nonce"]
                left = float(item["expires_in"]) - elapsed
                ident: object = ip_address(item["etr"]) if "etr" in item else item["xtr_id"]
                if not (isinstance(site, str) and isinstance(key_id, int) and isinstance(nonce, int)
                        and isinstance(ident, int | IPv4Address | IPv6Address)):
                    raise TypeError("wrong field types")
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"nonce table: record {i}: {exc}") from None
            if left > 0 and site in self.sites:
                parsed.append(((site, key_id, _nonce_ident(ident)), nonce, now + left))
        for key, nonce, expires in parsed:
            self._remember_nonce(key, nonce, expires)
        return len(parsed)

    # --- Map-Request (off the ALT) ---------------------------------------------------------

    def handle_alt(self, packet: bytes, now: float) -> list[Out]:
        """An ALT datagram the forwarder delivered locally (its destination is one of our EIDs)."""
        self.counters["alt-received"] += 1
        try:
            ip = parse_ip(packet)
            udp = parse_udp(ip)
        except InetError as exc:
            self.counters["malformed"] += 1
            log.debug("malformed ALT datagram: %s", exc)
            return []
        if not udp.checksum_ok:
            self.counters["malformed"] += 1
            return []
        try:
            msg = decode(udp.payload)
        except LispDecodeError:
            self.counters["malformed"] += 1
            return []
        if not isinstance(msg, MapRequest):
            self.counters["unexpected"] += 1
            return []
        return self.handle_map_request(
            msg, udp.payload, src=ip.src, dst=ip.dst, sport=udp.sport, ttl=ip.ttl, now=now, packet=packet,
        )

    def handle_map_request(
        self, request: MapRequest, raw: bytes, *, src: IPAddress, dst: IPAddress, sport: int, ttl: int,
        now: float, packet: bytes | None = None,
    ) -> list[Out]:
        """A Map-Request (``raw``: its bytes) that ``src``:``sport`` sent to EID ``dst`` over the ALT.

        ``packet`` is the whole ALT datagram when there is one: it becomes the ECM's inner
        packet unchanged (RFC 9301 §8.3: the Map-Server "does not otherwise alter the
        Map-Request"), TOS, identification and flags included.
        """
        if request.probe:
            # RFC 9301 §5.2: RLOC-probes go to an ETR's RLOC directly, never through the mapping system.
            self.counters["dropped:probe"] += 1
            return []
        if not request.records:
            self.counters["unsupported-eid"] += 1
            return []
        eid = request.records[0].eid
        if not isinstance(eid, IPv4Address | IPv6Address):
            self.counters["unsupported-eid"] += 1
            return []
        regs = self._live(eid, now)
        if regs:
            if any(r.proxy_reply for r in regs):
                return self._proxy_reply(request, regs, src, sport)
            return self._to_etr(regs, raw, src=src, dst=dst, sport=sport, ttl=ttl, packet=packet)
        return self._negative(request, eid, src, sport)

    def _reply_to(self, request: MapRequest, src: IPAddress) -> IPAddress | None:
        itr = first_ip(request.itr_rlocs, src.version)
        if itr is None:
            self.counters["no-itr-rloc"] += 1
        return itr

    def _proxy_reply(self, request: MapRequest, regs: list[_Reg], src: IPAddress, sport: int) -> list[Out]:
        itr = self._reply_to(request, src)
        if itr is None:
            return []
        records = {id(r): decode_mapping_record(r.raw, 0, 0)[0] for r in regs}
        seen: dict[object, Locator] = {}
        for reg in sorted(regs, key=lambda r: _ident_sort(r.ident)):
            for loc in records[id(reg)].locators:
                # RFC 9301 §5.4: a proxy Map-Reply clears the L bit on every locator.
                seen.setdefault(loc.address, replace(loc, local=False) if loc.local else loc)
        first = records[id(regs[0])]
        record = MappingRecord(
            first.eid, first.mask_len, ttl=min(r.ttl for r in records.values()),
            # RFC 9301 §5.5: the Locator-Set in ascending address order.
            locators=sorted_locators(seen.values()),
            action=first.action, authoritative=False, map_version=first.map_version,
        )
        self.counters["proxy-reply"] += 1
        return [SendUdp(itr, sport, MapReply(request.nonce, (record,)).encode(), sport=self.port)]

    def _to_etr(
        self, regs: list[_Reg], raw: bytes, *, src: IPAddress, dst: IPAddress, sport: int, ttl: int,
        packet: bytes | None,
    ) -> list[Out]:
        etrs = sorted(
            {(r.etr_address, r.etr_port) for r in regs if r.etr_address is not None},
            key=lambda e: (e[0].version, int(e[0]), e[1]),
        )
        if not etrs:
            self.counters["no-etr-rloc"] += 1
            return []
        address, port = etrs[self._next_etr % len(etrs)]
        self._next_etr += 1
        if packet is not None:
            inner = packet
        else:
            try:
                inner = udp_packet(src, dst, sport, LISP_CONTROL_PORT, raw, ttl=max(ttl, 1))
            except InetError:
                self.counters["too-big"] += 1
                return []
        self.counters["forwarded-to-etr"] += 1
        # RFC 9301 §5.8: the ECM's outer UDP destination port is 4342.
        return [SendUdp(address, port, _ECM_TO_ETR + inner, sport=self.port)]

    def _negative(self, request: MapRequest, eid: IPAddress, src: IPAddress, sport: int) -> list[Out]:
        """RFC 9301 §8.3: a configured but unregistered site gets 1 minute, a hole in an aggregate 15."""
        site_hit = self._site_index.lookup(eid)
        if site_hit is not None:
            floor, ttl, counter = site_hit[0].prefixlen, NOT_REGISTERED_TTL, "not-registered"
        else:
            agg = self._aggregates.lookup(eid)
            if agg is None:
                self.counters["no-site"] += 1
                return []
            floor, ttl, counter = agg[0].prefixlen, NOT_LISP_TTL, "not-in-site"
        itr = self._reply_to(request, src)
        if itr is None:
            return []
        # The largest prefix inside the site (or aggregate) that hides no registered or
        # configured prefix: a longer one makes the ITR ask again for its neighbours.
        prefix = self._known.uncovered(eid, floor)
        if self.routed_inside is not None:
            # Routes learned from peers inside the candidate (few: it lies in our own space).
            routed = [r for r in self.routed_inside(prefix) if eid not in r]
            if routed:
                prefix = PrefixSet(routed).uncovered(eid, prefix.prefixlen)
        record = MappingRecord(
            prefix.network_address, prefix.prefixlen, ttl=ttl,
            action=Action.NATIVELY_FORWARD, authoritative=True,
        )
        self.counters[counter] += 1
        return [SendUdp(itr, sport, MapReply(request.nonce, (record,)).encode(), sport=self.port)]


def _etr_rloc(record: MappingRecord, src: IPAddress) -> IPAddress | None:
    """Where Map-Requests for ``record`` go: ``src`` if the record names it, else its best RLOC."""
    rlocs = [loc for loc in record.locators if isinstance(loc.address, IPv4Address | IPv6Address)]
    if any(loc.address == src for loc in rlocs):
        return src
    usable = [loc.address for loc in rlocs if loc.priority != 255 and loc.reachable] or [
        loc.address for loc in rlocs]
    addresses = [a for a in usable if isinstance(a, IPv4Address | IPv6Address)]
    if not addresses:
        return None
    # The RLOC the site prefers (lowest priority value), then the lowest address.
    prio = {loc.address: loc.priority for loc in rlocs}
    return min(addresses, key=lambda a: (prio[a], a.version, int(a)))
