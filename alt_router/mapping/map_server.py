"""The Map-Server (RFC 6833 §4.4, RFC 9301 §5.6-§5.7 and §8.2), sans-IO.

Sites come from the node configuration (``[[map_server.sites]]``).  A
Map-Register is accepted only when a site's prefixes contain its first record,
its Key ID and Algorithm ID are the site's, its MAC verifies with the site key
(constant time) and every record lies inside the site; anything else is refused
whole, changes no state and counts one ``refused:<reason>``.

Registrations are keyed by (site, EID prefix, xTR-ID or else source RLOC), so
several ETRs of one site coexist and their locators are merged in proxy
replies.  One lives for 3 minutes after its last Map-Register (RFC 9301 §8.2,
three missed 60-second registrations) or, with the T bit, for its record TTL; a
record TTL of 0 withdraws it.  A site's configured prefixes are announced into
the ALT while it has a registration (always, with ``always_announce``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

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
    decode,
    sign,
    verify,
)
from alt_router.mapping.actions import Action as Out
from alt_router.mapping.actions import Announce, IPAddress, Prefix, SendUdp, Withdraw
from alt_router.mapping.map_resolver import first_ip
from alt_router.mapping.negative import PrefixIndex
from alt_router.node.config import SiteConfig

log = logging.getLogger(__name__)

REGISTRATION_TIMEOUT = 180.0  # seconds: RFC 9301 §8.2
NOT_REGISTERED_TTL = 1  # minute: a configured site with no ETR registered yet
ALGORITHMS = {"hmac-sha1-96": HMAC_SHA_1_96, "hmac-sha256-128": HMAC_SHA_256_128}

# Refusal reasons (counted as "refused:<reason>").
UNKNOWN_SITE = "unknown-site"
BAD_KEY_ID = "bad-key-id"
AUTH_MISMATCH = "auth-mismatch"
OUTSIDE_SITE = "prefix-outside-site"
IID_MISMATCH = "instance-id-mismatch"

# The ECM word with the E (to-ETR) bit: RFC 9301 §5.8.
_ECM_TO_ETR = bytes((0x82, 0, 0, 0))


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    key: str
    algorithm_id: int
    prefixes: tuple[Prefix, ...]
    accept_more_specifics: bool = False
    always_announce: bool = False

    @classmethod
    def from_config(cls, site: SiteConfig) -> Site:
        return cls(
            site.name, site.key, ALGORITHMS[site.algorithm], site.eid_prefixes,
            site.accept_more_specifics, site.always_announce,
        )

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
    source: IPAddress  # the Map-Register's source: where the ETR listens
    source_port: int
    xtr_id: int | None
    proxy_reply: bool
    registered_at: float
    expires: float


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


class MapServer:
    def __init__(
        self,
        sites: Iterable[SiteConfig | Site],
        *,
        registration_timeout: float = REGISTRATION_TIMEOUT,
        port: int = LISP_CONTROL_PORT,
    ) -> None:
        self.sites: dict[str, Site] = {}
        for s in sites:
            site = s if isinstance(s, Site) else Site.from_config(s)
            self.sites[site.name] = site
        self.registration_timeout = registration_timeout
        self.port = port
        self.counters: Counter[str] = Counter()
        self._regs: dict[tuple[str, Prefix, object], Registration] = {}
        self._announced: set[str] = set()
        self._next_etr = 0

    # --- announcements -------------------------------------------------------------------

    def start(self) -> list[Out]:
        """The announcements to make at start-up (``always_announce`` sites)."""
        out: list[Out] = []
        for site in self.sites.values():
            if site.always_announce and site.name not in self._announced:
                self._announced.add(site.name)
                out.extend(Announce(p) for p in site.prefixes)
        return out

    def _reannounce(self, site: Site) -> list[Out]:
        active = site.always_announce or any(k[0] == site.name for k in self._regs)
        if active and site.name not in self._announced:
            self._announced.add(site.name)
            return [Announce(p) for p in site.prefixes]
        if not active and site.name in self._announced:
            self._announced.discard(site.name)
            return [Withdraw(p) for p in site.prefixes]
        return []

    def set_sites(self, sites: Iterable[SiteConfig | Site], now: float) -> list[Out]:
        """Replace the configured sites (a config reload); the announcements that must change.

        A removed site loses its registrations and its announcement.  A site whose key or
        algorithm changed loses its registrations too (a new key is normally a revoked old
        one; the ETR re-registers within its register interval).  A site whose prefixes
        changed keeps the registrations its new prefixes still allow, and its announcement
        follows the new prefixes.  Sites left unchanged are not touched.
        """
        out = self.tick(now)
        new = {site.name: site for site in (s if isinstance(s, Site) else Site.from_config(s) for s in sites)}
        for name, old in list(self.sites.items()):
            site = new.get(name)
            if site == old:
                continue
            rekeyed = site is None or (site.key, site.algorithm_id) != (old.key, old.algorithm_id)
            for key, reg in list(self._regs.items()):
                if reg.site == name and (rekeyed or site is None or not site.allows(reg.prefix)):
                    del self._regs[key]
                    self.counters["dropped-on-reload"] += 1
            if name not in self._announced:
                continue
            active = site is not None and (site.always_announce or any(k[0] == name for k in self._regs))
            keep = set(site.prefixes) if site is not None and active else set()
            out.extend(Withdraw(p) for p in old.prefixes if p not in keep)
            if site is not None and active:
                out.extend(Announce(p) for p in site.prefixes if p not in set(old.prefixes))
            else:
                self._announced.discard(name)
        self.sites = new
        for site in new.values():
            out.extend(self._reannounce(site))
        return out

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
            site, prefixes = self._check(msg, data)
        except Refused as exc:
            self.counters[f"refused:{exc.reason}"] += 1
            log.warning("Map-Register from %s:%d refused, %s", src, sport, exc)
            return []
        self.counters["registered"] += 1
        ident: object = msg.xtr_id if msg.xtr_id is not None else src
        for record, prefix in zip(msg.records, prefixes, strict=True):
            key = (site.name, prefix, ident)
            if record.ttl == 0:
                self._regs.pop(key, None)
                continue
            life = record.ttl * 60.0 if msg.use_ttl else self.registration_timeout
            self._regs[key] = Registration(
                site.name, prefix, record, src, sport, msg.xtr_id, msg.proxy_reply, now, now + life
            )
        out = self._reannounce(site)
        if msg.want_map_notify:
            notify = MapNotify(
                msg.nonce, msg.records, key_id=msg.key_id, algorithm_id=site.algorithm_id,
                xtr_id=msg.xtr_id, site_id=msg.site_id,
            )
            signed = sign(notify, site.key, algorithm_id=site.algorithm_id)
            self.counters["map-notify"] += 1
            out.append(SendUdp(src, sport, signed.encode(), sport=self.port))
        return out

    def _check(self, msg: MapRegister, data: bytes) -> tuple[Site, list[Prefix]]:
        if not msg.records:
            raise Refused(UNKNOWN_SITE, "no records")
        first, _ = record_prefix(msg.records[0])
        candidates = [s for s in self.sites.values() if first is not None and s.covering(first) is not None]
        if not candidates:
            raise Refused(UNKNOWN_SITE, f"no site covers EID-prefix {first or msg.records[0].eid}")
        # Overlapping sites are told apart by whose key verifies.
        site = None
        for cand in candidates:
            if msg.key_id != 0 or msg.algorithm_id != cand.algorithm_id:
                continue
            if verify(data, cand.key):
                site = cand
                break
        if site is None:
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
        return site, prefixes

    # --- expiry ----------------------------------------------------------------------------

    def tick(self, now: float) -> list[Out]:
        """Expire registrations whose time is up; withdraw sites left with none."""
        gone = [k for k, r in self._regs.items() if r.expires <= now]
        touched = set()
        for key in gone:
            reg = self._regs.pop(key)
            touched.add(reg.site)
            self.counters["expired"] += 1
            log.info("registration of %s for %s from %s expired", reg.site, reg.prefix, reg.source)
        out: list[Out] = []
        for name in sorted(touched):
            out.extend(self._reannounce(self.sites[name]))
        return out

    def next_expiry(self) -> float | None:
        return min((r.expires for r in self._regs.values()), default=None)

    def registrations(self) -> list[Registration]:
        return sorted(self._regs.values(), key=lambda r: (r.site, str(r.prefix), str(r.source)))

    def lookup(self, eid: IPAddress, now: float) -> list[Registration]:
        """Live registrations of the most specific registered prefix covering ``eid``."""
        best: list[Registration] = []
        for reg in self._regs.values():
            if reg.expires <= now or reg.prefix.version != eid.version or eid not in reg.prefix:
                continue
            if not best or reg.prefix.prefixlen > best[0].prefix.prefixlen:
                best = [reg]
            elif reg.prefix == best[0].prefix:
                best.append(reg)
        return best

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
            msg, udp.payload, src=ip.src, dst=ip.dst, sport=udp.sport, ttl=ip.ttl, now=now
        )

    def handle_map_request(
        self, request: MapRequest, raw: bytes, *, src: IPAddress, dst: IPAddress, sport: int, ttl: int,
        now: float,
    ) -> list[Out]:
        """A Map-Request (``raw``: its bytes) that ``src``:``sport`` sent to EID ``dst`` over the ALT."""
        eid = request.records[0].eid
        if not isinstance(eid, IPv4Address | IPv6Address):
            self.counters["unsupported-eid"] += 1
            return []
        regs = self.lookup(eid, now)
        if regs:
            if any(r.proxy_reply for r in regs):
                return self._proxy_reply(request, regs, src, sport)
            return self._to_etr(regs, raw, src=src, dst=dst, sport=sport, ttl=ttl)
        return self._not_registered(request, eid, src, sport, now)

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
        for reg in regs:
            for loc in reg.record.locators:
                seen.setdefault(loc.address, loc)
        first = regs[0]
        record = MappingRecord(
            first.record.eid, first.record.mask_len, ttl=min(r.record.ttl for r in regs),
            locators=tuple(seen.values()), action=first.record.action, authoritative=False,
            map_version=first.record.map_version,
        )
        self.counters["proxy-reply"] += 1
        return [SendUdp(itr, sport, MapReply(request.nonce, (record,)).encode(), sport=self.port)]

    def _to_etr(
        self, regs: list[Registration], raw: bytes, *, src: IPAddress, dst: IPAddress, sport: int, ttl: int
    ) -> list[Out]:
        etrs = sorted(
            {(r.source, r.source_port) for r in regs}, key=lambda e: (e[0].version, int(e[0]), e[1])
        )
        address, port = etrs[self._next_etr % len(etrs)]
        self._next_etr += 1
        try:
            inner = udp_packet(src, dst, sport, LISP_CONTROL_PORT, raw, ttl=max(ttl, 1))
        except InetError:
            self.counters["too-big"] += 1
            return []
        self.counters["forwarded-to-etr"] += 1
        return [SendUdp(address, port, _ECM_TO_ETR + inner, sport=self.port)]

    def _not_registered(
        self, request: MapRequest, eid: IPAddress, src: IPAddress, sport: int, now: float
    ) -> list[Out]:
        for site in self.sites.values():
            outer = site.covering(ip_network(eid))
            if outer is None:
                continue
            itr = self._reply_to(request, src)
            if itr is None:
                return []
            # Not the whole site prefix: that would hide more-specifics other ETRs did register.
            index = PrefixIndex(
                r.prefix for r in self._regs.values() if r.site == site.name and r.expires > now
            )
            prefix = index.uncovered(eid)
            if prefix.prefixlen < outer.prefixlen:
                prefix = outer
            record = MappingRecord(
                prefix.network_address, prefix.prefixlen, ttl=NOT_REGISTERED_TTL,
                action=Action.NATIVELY_FORWARD, authoritative=True,
            )
            self.counters["not-registered"] += 1
            return [SendUdp(itr, sport, MapReply(request.nonce, (record,)).encode(), sport=self.port)]
        self.counters["no-site"] += 1
        return []
