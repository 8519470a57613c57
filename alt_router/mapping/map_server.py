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
to the number of registrations: expiry runs off a heap (stale entries are skipped
and the heap is compacted when they pile up), look-ups use a prefix table, paging
uses a sorted key list, and the nonce table is LRU-capped and expires with the
registrations.  Repeated refusals and expiries are logged through a
:class:`~alt_router.logsummary.LogSummary`.
"""

from __future__ import annotations

import heapq
import json
import logging
from bisect import bisect_left, bisect_right, insort
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
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
    MapRegister,
    MapReply,
    MapRequest,
    Verified,
    authenticate,
    decode,
    sign_like,
    sorted_locators,
)
from alt_router.logsummary import LogSummary
from alt_router.mapping.actions import Action as Out
from alt_router.mapping.actions import Announce, IPAddress, Prefix, SendUdp, Withdraw
from alt_router.mapping.map_resolver import first_ip
from alt_router.mapping.negative import PrefixSet
from alt_router.rib.table import DualTable

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


RegKey = tuple[str, Prefix, object]  # (site, prefix, xTR-ID or source address)
NonceKey = tuple[str, int, object]  # (site, key ID, xTR-ID or source address)
# (site, family, network, length, kind, ident family, ident): the paging order, plain data.
SortKey = tuple[str, int, int, int, int, int, int]


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


def _sort_key(key: RegKey) -> SortKey:
    site, prefix, ident = key
    return (site, prefix.version, int(prefix.network_address), prefix.prefixlen, *_ident_sort(ident))


def _parse_cursor(cursor: str) -> SortKey:
    try:
        raw = json.loads(cursor)
    except ValueError:
        raise ValueError(f"bad registrations cursor {cursor!r}") from None
    if (
        not isinstance(raw, list) or len(raw) != 7 or not isinstance(raw[0], str)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw[1:])
    ):
        raise ValueError(f"bad registrations cursor {cursor!r}")
    return (raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6])


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
        # Registered and configured prefixes: what a negative reply must not overlap.
        self._known = PrefixSet()
        self._aggregates: DualTable[bool] = DualTable()
        self._regs: dict[RegKey, Registration] = {}
        self._by_prefix: DualTable[dict[RegKey, Registration]] = DualTable()
        self._site_count: Counter[str] = Counter()
        self._source_count: Counter[IPAddress] = Counter()
        self._sorted: list[SortKey] = []
        self._heap: list[tuple[float, int, bool, Any]] = []  # (expires, seq, is-nonce, key)
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
        by_prefix: dict[Prefix, list[Site]] = {}
        for site in sites:
            self.sites[site.name] = site
            for p in site.prefixes:
                by_prefix.setdefault(p, []).append(site)
                self._known.add(p)
        self._site_index = DualTable()
        for p, owners in by_prefix.items():
            self._site_index.insert(p, tuple(owners))

    def set_aggregates(self, prefixes: Iterable[Prefix]) -> None:
        """The aggregates this node announces ([eid].announce): holes in them get 15-minute negatives."""
        self._aggregates = DualTable()
        for p in prefixes:
            self._aggregates.insert(p, True)

    def aggregates(self) -> list[Prefix]:
        return [p for p, _ in self._aggregates]

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
            for key, reg in list(self._regs.items()):
                if reg.site == name and (rekeyed or site is None or not site.allows(reg.prefix)):
                    self._remove(key)
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
        self.counters["received"] += 1
        try:
            msg = decode(data)
        except LispDecodeError as exc:
            self.counters["malformed"] += 1
            log.debug("malformed message from %s:%d: %s", src, sport, exc)
            return []
        if not isinstance(msg, MapRegister):
            self.counters["unexpected"] += 1
            return []
        try:
            site, prefixes, verified = self._check(msg, data)
            ident: object = msg.xtr_id if msg.xtr_id is not None else src
            self._check_nonce(site, msg, ident, src, now)
            self._check_caps(site, msg, prefixes, ident, src)
        except Refused as exc:
            self.counters[f"refused:{exc.reason}"] += 1
            self._note(logging.WARNING, exc.reason, src, now, "Map-Register from %s:%d refused, %s",
                       src, sport, exc)
            return []
        self.counters["registered"] += 1
        self.counters[f"auth:{verified.kind}"] += 1
        if verified.mac_over_xtr_id:
            self.counters["auth:mac-over-xtr-id"] += 1
        longest = self.registration_timeout
        for record, prefix in zip(msg.records, prefixes, strict=True):
            key: RegKey = (site.name, prefix, ident)
            if record.ttl == 0:
                if key in self._regs:
                    self._remove(key)
                continue
            life = record.ttl * 60.0 if msg.use_ttl else self.registration_timeout
            longest = max(longest, life)
            self._put(key, self._registration(
                site, prefix, record, msg, src=src, sport=sport, now=now, expires=now + life))
        if site.replay != REPLAY_OFF:
            self._remember_nonce((site.name, msg.key_id, ident), msg.nonce, now + longest)
        out = self._reannounce(site)
        if msg.want_map_notify:
            out.append(self._notify(site, msg, src, sport))
        return out

    def _registration(
        self, site: Site, prefix: Prefix, record: MappingRecord, msg: MapRegister, *, src: IPAddress,
        sport: int, now: float, expires: float,
    ) -> Registration:
        if site.notify_to == NOTIFY_SOURCE_PORT:
            # Behind NAT the registering address and port are the only way back in.
            target: IPAddress | None = src
            etr_port = sport
        else:
            # RFC 9301 §8.3: a replayed or spoofed Map-Register must not redirect the site's
            # Map-Requests, so they only go to an RLOC the signed record names.
            target = _etr_rloc(record, src)
            etr_port = self.etr_port
        return Registration(
            site.name, prefix, record, src, sport, msg.xtr_id, msg.proxy_reply, now, expires,
            target, etr_port,
        )

    def _notify(self, site: Site, msg: MapRegister, src: IPAddress, sport: int) -> SendUdp:
        # RFC 9301 §5.7: the Map-Notify copies the Map-Register's fields; its MAC is as long as
        # the one the ETR sent (deployed ETRs reject or misparse any other length).  No I bit
        # and no xTR-ID trailer: the §5.7 layout has neither.
        notify = MapNotify(msg.nonce, msg.records, key_id=msg.key_id, algorithm_id=site.algorithm_id)
        signed = sign_like(notify, site.key, msg)
        self.counters["map-notify"] += 1
        # RFC 9301 §5.7, §8.2: to UDP 4342, not to the Map-Register's source port.
        port = sport if site.notify_to == NOTIFY_SOURCE_PORT else self.etr_port
        return SendUdp(src, port, signed.encode(), sport=self.port)

    def _check(self, msg: MapRegister, data: bytes) -> tuple[Site, list[Prefix], Verified]:
        if not msg.records:
            raise Refused(UNKNOWN_SITE, "no records")
        first, _ = record_prefix(msg.records[0])
        candidates: list[Site] = []
        if first is not None:
            for _, owners in self._site_index.covering(first):
                candidates.extend(owners)
        if not candidates:
            raise Refused(UNKNOWN_SITE, f"no site covers EID-prefix {first or msg.records[0].eid}")
        # Overlapping sites are told apart by whose key verifies.
        site = None
        verified = None
        for cand in candidates:
            if msg.key_id != 0 or msg.algorithm_id != cand.algorithm_id:
                continue
            try:
                verified = authenticate(data, cand.key)
            except LispDecodeError:
                verified = None  # decode() took it: trailing bytes, which the MAC then cannot cover
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
        prefixes: list[Prefix] = []
        for record in msg.records:
            prefix, iid = record_prefix(record)
            if iid not in (None, 0):
                raise Refused(IID_MISMATCH, f"instance ID {iid}, site {site.name} is in instance 0")
            if prefix is None or not site.allows(prefix):
                more = "" if site.accept_more_specifics else " (more-specifics not accepted)"
                raise Refused(
                    OUTSIDE_SITE, f"{prefix or record.eid} is outside site {site.name}'s prefixes{more}"
                )
            prefixes.append(prefix)
        return site, prefixes, verified

    def _check_nonce(self, site: Site, msg: MapRegister, ident: object, src: IPAddress, now: float) -> None:
        """RFC 9301 §5.6: a nonce not greater than the last accepted one from this xTR and key."""
        if site.replay == REPLAY_OFF:
            return
        last = self._nonces.get((site.name, msg.key_id, ident))
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

    def _check_caps(
        self, site: Site, msg: MapRegister, prefixes: list[Prefix], ident: object, src: IPAddress
    ) -> None:
        new_site = 0
        new_source = 0
        for prefix in {p for r, p in zip(msg.records, prefixes, strict=True) if r.ttl != 0}:
            reg = self._regs.get((site.name, prefix, ident))
            new_site += reg is None
            new_source += reg is None or reg.source != src
        if new_site and self._site_count[site.name] + new_site > self.max_per_site:
            raise Refused(OVER_SITE_CAP, f"site {site.name} has {self._site_count[site.name]} registrations, "
                                         f"the cap is {self.max_per_site} (max_registrations_per_site)")
        if new_source and self._source_count[src] + new_source > self.max_per_source:
            raise Refused(OVER_SOURCE_CAP, f"{src} has {self._source_count[src]} registrations, the cap is "
                                           f"{self.max_per_source} (max_registrations_per_source)")

    # --- the registration table ----------------------------------------------------------

    def _push(self, expires: float, is_nonce: bool, key: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (expires, self._seq, is_nonce, key))
        if len(self._heap) > 2 * (len(self._regs) + len(self._nonces)) + _HEAP_SLACK:
            # Refreshes leave stale entries behind; drop them all at once (amortised O(1)).
            live: list[tuple[float, int, bool, Any]] = [
                (r.expires, i, False, k) for i, (k, r) in enumerate(self._regs.items())]
            live += [(e, len(live) + i, True, k) for i, (k, (_, e)) in enumerate(self._nonces.items())]
            heapq.heapify(live)
            self._heap = live
            self._seq = len(live)

    def _put(self, key: RegKey, reg: Registration) -> None:
        old = self._regs.get(key)
        self._regs[key] = reg
        if old is None:
            hit = self._by_prefix.get(reg.prefix)
            if hit is None:
                hit = {}
                self._by_prefix.insert(reg.prefix, hit)
                self._known.add(reg.prefix)
            hit[key] = reg
            self._site_count[reg.site] += 1
            self._source_count[reg.source] += 1
            insort(self._sorted, _sort_key(key))
            self._high_water = max(self._high_water, len(self._regs) + len(self._nonces))
        else:
            by_prefix = self._by_prefix.get(reg.prefix)
            assert by_prefix is not None
            by_prefix[key] = reg
            if old.source != reg.source:
                self._uncount_source(old.source)
                self._source_count[reg.source] += 1
        self._push(reg.expires, False, key)

    def _uncount_source(self, source: IPAddress) -> None:
        left = self._source_count[source] - 1
        if left > 0:
            self._source_count[source] = left
        else:
            del self._source_count[source]

    def _remove(self, key: RegKey) -> Registration:
        reg = self._regs.pop(key)
        by_prefix = self._by_prefix.get(reg.prefix)
        if by_prefix is not None:
            by_prefix.pop(key, None)
            if not by_prefix:
                self._by_prefix.delete(reg.prefix)
                self._known.discard(reg.prefix)
        left = self._site_count[reg.site] - 1
        if left > 0:
            self._site_count[reg.site] = left
        else:
            del self._site_count[reg.site]
        self._uncount_source(reg.source)
        sk = _sort_key(key)
        i = bisect_left(self._sorted, sk)
        if i < len(self._sorted) and self._sorted[i] == sk:
            del self._sorted[i]
        return reg

    def _remember_nonce(self, key: NonceKey, nonce: int, expires: float) -> None:
        last = self._nonces.get(key)
        if last is not None:
            # log-only may accept a lower nonce; the table keeps the highest.
            nonce = max(nonce, last[0])
            expires = max(expires, last[1])
            self._nonces.move_to_end(key)
        self._nonces[key] = (nonce, expires)
        self.nonce_changes += 1
        self._high_water = max(self._high_water, len(self._regs) + len(self._nonces))
        while len(self._nonces) > self.max_nonces:
            self._nonces.popitem(last=False)
            self.counters["nonce-evicted"] += 1
        self._push(expires, True, key)

    # --- expiry ----------------------------------------------------------------------------

    def tick(self, now: float) -> list[Out]:
        """Expire registrations (and nonce records) whose time is up; withdraw sites left with none."""
        touched: set[str] = set()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, is_nonce, key = heapq.heappop(heap)
            if is_nonce:
                entry = self._nonces.get(key)
                if entry is not None and entry[1] <= now:
                    del self._nonces[key]
                    self.nonce_changes += 1
                continue
            reg = self._regs.get(key)
            if reg is None or reg.expires > now:
                continue  # stale: refreshed or removed since
            self._remove(key)
            touched.add(reg.site)
            self.counters["expired"] += 1
            self._note(logging.INFO, "registration expired", reg.site, now,
                       "registration of %s for %s from %s expired", reg.site, reg.prefix, reg.source)
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
        size = len(self._regs) + len(self._nonces)
        self._high_water = max(self._high_water, size)
        if self._high_water < _COMPACT_MIN or size * 4 > self._high_water:
            return
        self._regs = dict(self._regs)
        self._nonces = OrderedDict(self._nonces)
        self._site_count = Counter(self._site_count)
        self._source_count = Counter(self._source_count)
        for prefix, regs in list(self._by_prefix):
            self._by_prefix.insert(prefix, dict(regs))
        self._sorted = list(self._sorted)
        self._heap = list(self._heap)
        self._high_water = size

    def next_expiry(self) -> float | None:
        """When the earliest registration or nonce record expires (stale heap entries dropped)."""
        heap = self._heap
        while heap:
            expires, _, is_nonce, key = heap[0]
            if is_nonce:
                entry = self._nonces.get(key)
                if entry is not None and entry[1] == expires:
                    return expires
            else:
                reg = self._regs.get(key)
                if reg is not None and reg.expires == expires:
                    return expires
            heapq.heappop(heap)
        return None

    def next_deadline(self) -> float | None:
        """When ``tick`` next has work: an expiry or a pending log summary."""
        times = [t for t in (self.next_expiry(), self._log_due) if t is not None]
        return min(times, default=None)

    # --- views -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._regs)

    def registrations(self) -> list[Registration]:
        """Every registration, in paging order (site, prefix, xTR-ID / source).  Prefer the pages."""
        items, _ = self.registrations_page(None, len(self._regs) or 1)
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
        start = 0 if after is None else bisect_right(self._sorted, _parse_cursor(after))
        keys = self._sorted[start:start + limit]
        items = []
        for sk in keys:
            site, version, net, length, kind, iver, ident_int = sk
            prefix = (IPv4Network if version == 4 else IPv6Network)((net, length))
            ident: object = ident_int
            if kind == 1:
                ident = IPv4Address(ident_int) if iver == 4 else IPv6Address(ident_int)
            items.append(self._regs[(site, prefix, ident)])
        more = start + limit < len(self._sorted)
        return items, (json.dumps(list(keys[-1])) if more and keys else None)

    def site_counts(self) -> dict[str, int]:
        """Live registrations per site (sites with none are absent)."""
        return dict(self._site_count)

    def stats(self) -> dict[str, int]:
        return {"registrations": len(self._regs), "sites_registered": len(self._site_count),
                "sources": len(self._source_count), "nonces": len(self._nonces), "heap": len(self._heap)}

    def lookup(self, eid: IPAddress, now: float) -> list[Registration]:
        """Live registrations of the most specific registered prefix covering ``eid``."""
        hit = self._by_prefix.lookup(eid)
        if hit is None:
            return []
        live = [r for r in hit[1].values() if r.expires > now]
        if not live:
            # Expired but not yet ticked away: a less specific registration may still hold.
            for _, regs in self._by_prefix.covering(hit[0])[1:]:
                live = [r for r in regs.values() if r.expires > now]
                if live:
                    break
        return live

    # --- nonce persistence (the edge stores this as JSON) ------------------------------------

    def dump_nonces(self, now: float) -> list[dict[str, Any]]:
        """The nonce table as plain data, each record with the seconds it has left."""
        out: list[dict[str, Any]] = []
        for (site, key_id, ident), (nonce, expires) in self._nonces.items():
            if expires <= now:
                continue
            item: dict[str, Any] = {"site": site, "key_id": key_id, "nonce": nonce,
                                    "expires_in": round(expires - now, 3)}
            if isinstance(ident, IPv4Address | IPv6Address):
                item["etr"] = str(ident)
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
                parsed.append(((site, key_id, ident), nonce, now + left))
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
        regs = self.lookup(eid, now)
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

    def _proxy_reply(
        self, request: MapRequest, regs: list[Registration], src: IPAddress, sport: int
    ) -> list[Out]:
        itr = self._reply_to(request, src)
        if itr is None:
            return []
        seen: dict[object, Locator] = {}
        for reg in sorted(regs, key=lambda r: _ident_sort(r.xtr_id if r.xtr_id is not None else r.source)):
            for loc in reg.record.locators:
                # RFC 9301 §5.4: a proxy Map-Reply clears the L bit on every locator.
                seen.setdefault(loc.address, replace(loc, local=False) if loc.local else loc)
        first = regs[0]
        record = MappingRecord(
            first.record.eid, first.record.mask_len, ttl=min(r.record.ttl for r in regs),
            # RFC 9301 §5.5: the Locator-Set in ascending address order.
            locators=sorted_locators(seen.values()),
            action=first.record.action, authoritative=False, map_version=first.record.map_version,
        )
        self.counters["proxy-reply"] += 1
        return [SendUdp(itr, sport, MapReply(request.nonce, (record,)).encode(), sport=self.port)]

    def _to_etr(
        self, regs: list[Registration], raw: bytes, *, src: IPAddress, dst: IPAddress, sport: int, ttl: int,
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
