"""The ETR's control plane (RFC 9301 §8.2 registration, §5.4/§5.5 Map-Reply), sans-IO.

It registers its EID prefixes with each Map-Server every ``register_interval``
seconds (authenticated, M bit set so the Map-Server confirms with a Map-Notify,
P bit when the Map-Server should answer for it) and answers each Map-Request,
plain or in an ECM forwarded by the Map-Server, with an authoritative Map-Reply
sent to the request's ITR-RLOC at the port the request came from.

Inputs are this module's own small types (:class:`MapServerTarget`,
:class:`EtrMappingConfig`, :class:`EtrRloc`); the node translates its
configuration into them (``alt_router.node.mapping.etr_inputs``).

Interoperability choices (docs/mapping.md, "Interoperability"):

* Map-Registers carry the full HMAC digest (20 bytes for SHA-1, 32 for
  SHA-256) unless a Map-Server is configured for the truncated 12/16 bytes;
  a Map-Notify is accepted with either length and either MAC coverage.
* Nonces increase by one per Map-Register (RFC 9301 §5.6).  The core exposes
  ``last_nonce``; the edge persists it and seeds the next run with
  :func:`initial_nonce`.
* A Map-Request with the D bit gets no Map-Reply (RFC 9301 §5.2).
* Locators are sorted by ascending address, IPv4 before IPv6 (RFC 9301 §5.5);
  the L bit is set only on the RLOCs configured as this ETR's own (§5.4).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from alt_router.lisp import (
    LISP_CONTROL_PORT,
    EidRecord,
    EncapsulatedControlMessage,
    LispDecodeError,
    Locator,
    MapNotify,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    decode,
    sign,
)
from alt_router.lisp import auth as lisp_auth
from alt_router.mapping.actions import Action as Out
from alt_router.mapping.actions import SendUdp
from alt_router.mapping.map_resolver import first_ip
from alt_router.types import IPAddress, Prefix

log = logging.getLogger(__name__)

DEFAULT_RECORD_TTL = 1440  # minutes (RFC 9301 §5.4 leaves it to the site; one day is customary)
MAX_RECORDS = 255
# While a Map-Server has not confirmed a registration with a Map-Notify, the
# ETR asks again after 1, 2, 4 ... seconds (capped at the register interval):
# a Map-Register lost at start-up (Map-Server not up yet) must not leave the
# site unregistered for a whole interval (RFC 9301 §5.7: 1 s, doubling).
RETRY_MIN = 1.0
# Outstanding Map-Register nonces kept per Map-Server, to match Map-Notifies.
MAX_OUTSTANDING = 8
_U64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class MapServerTarget:
    """One Map-Server the ETR registers with.

    ``truncated_auth`` sends the 12/16-byte MAC the algorithm names promise
    (RFC 2404/4868) instead of the full 20/32-byte digest that deployed
    Map-Servers expect.
    """

    address: IPAddress
    key: str
    algorithm_id: int
    port: int = LISP_CONTROL_PORT
    truncated_auth: bool = False


@dataclass(frozen=True, slots=True)
class EtrRloc:
    """One RLOC of a mapping; ``local`` when it is an address of this ETR (the L bit, RFC 9301 §5.4)."""

    address: IPAddress
    priority: int = 1
    weight: int = 100
    local: bool = True


@dataclass(frozen=True, slots=True)
class EtrMappingConfig:
    """An EID prefix this ETR is authoritative for, and its RLOCs."""

    prefix: Prefix
    rlocs: tuple[EtrRloc, ...]
    ttl: int = DEFAULT_RECORD_TTL

    def record(self) -> MappingRecord:
        # RFC 9301 §5.5: "the list of Locators in a Locator-Set MUST be sorted in order of
        # ascending IP address where an IPv4 Routing Locator Address is considered
        # numerically 'less than' an IPv6 Routing Locator Address."
        ordered = sorted(self.rlocs, key=lambda r: (r.address.version, int(r.address)))
        locators = tuple(
            Locator(r.address, r.priority, r.weight, local=r.local, reachable=True) for r in ordered
        )
        return MappingRecord(
            self.prefix.network_address, self.prefix.prefixlen, ttl=self.ttl, locators=locators,
            authoritative=True,
        )


def initial_nonce(saved: int | None, wall_clock: float) -> int:
    """The last nonce to count up from after a (re)start: RFC 9301 §5.6 wants them increasing.

    The saved value is what the last run persisted; the wall clock in the upper
    32 bits keeps the sequence increasing even when the state file was lost or
    is stale (a restart more than 2^32 Map-Registers per second after the last
    one is impossible), until the year 2106.
    """
    floor = (max(0, int(wall_clock)) << 32) & _U64
    return max(saved or 0, floor)


class Etr:
    def __init__(
        self,
        mappings: Iterable[EtrMappingConfig],
        map_servers: Iterable[MapServerTarget],
        *,
        register_interval: float = 60.0,
        proxy_reply: bool = False,
        want_map_notify: bool = True,
        xtr_id: int | None = None,
        site_id: int | None = None,
        port: int = LISP_CONTROL_PORT,
        register_port: int | None = None,
        last_nonce: int = 0,
    ) -> None:
        self.mappings = list(mappings)
        # Most specific first: a request is answered from the longest matching prefix.
        self.mappings.sort(key=lambda m: -m.prefix.prefixlen)
        self.map_servers = list(map_servers)
        self.register_interval = register_interval
        self.proxy_reply = proxy_reply
        self.want_map_notify = want_map_notify
        self.xtr_id = xtr_id
        self.site_id = site_id if xtr_id is not None else None
        if xtr_id is not None and site_id is None:
            self.site_id = 0
        self.port = port
        # RFC 9301 §5.6 lets Map-Registers leave from any port; None: from ``port`` (one socket).
        self.register_port = register_port
        if not 0 <= last_nonce <= _U64:
            raise ValueError(f"last nonce {last_nonce} out of range 0..2^64-1")
        self.last_nonce = last_nonce
        self.counters: Counter[str] = Counter()
        self._next_register = 0.0
        self._retry = RETRY_MIN
        self._sent_at = 0.0
        self._outstanding: dict[int, MapServerTarget] = {}
        self.last_notify: dict[IPAddress, float] = {}

    # --- registration --------------------------------------------------------------------

    def next_deadline(self) -> float:
        return self._next_register

    def tick(self, now: float) -> list[Out]:
        """Map-Registers to every Map-Server when the interval is up (at once on the first call)."""
        if now < self._next_register:
            return []
        self._sent_at = now
        if self.want_map_notify and not self._all_notified():
            self._next_register = now + min(self._retry, self.register_interval)
            self._retry = min(self._retry * 2, self.register_interval)
        else:
            self._next_register = now + self.register_interval
        return self.register_now()

    def _all_notified(self) -> bool:
        """Every Map-Server has confirmed the latest round of Map-Registers."""
        return all(self.last_notify.get(ms.address, -1.0) >= self._sent_at for ms in self.map_servers)

    def _next_nonce(self) -> int:
        # RFC 9301 §5.6: "This 8-octet 'Nonce' field is incremented each time a
        # Map-Register message is sent."  A Map-Server that tracks it drops anything
        # not greater than the last one it accepted, so a replayed capture is refused.
        self.last_nonce = (self.last_nonce + 1) & _U64
        return self.last_nonce

    def register_now(self) -> list[Out]:
        records = [m.record() for m in self.mappings]
        out: list[Out] = []
        for ms in self.map_servers:
            for i in range(0, len(records), MAX_RECORDS):
                nonce = self._next_nonce()
                register = MapRegister(
                    nonce, tuple(records[i:i + MAX_RECORDS]), key_id=0, algorithm_id=ms.algorithm_id,
                    proxy_reply=self.proxy_reply, want_map_notify=self.want_map_notify,
                    xtr_id=self.xtr_id, site_id=self.site_id,
                )
                signed = sign(register, ms.key, algorithm_id=ms.algorithm_id, truncated=ms.truncated_auth)
                if len(self._outstanding) >= MAX_OUTSTANDING * max(1, len(self.map_servers)):
                    self._outstanding.pop(next(iter(self._outstanding)))
                self._outstanding[nonce] = ms
                self.counters["map-register"] += 1
                sport = self.port if self.register_port is None else self.register_port
                out.append(SendUdp(ms.address, ms.port, signed.encode(), sport=sport))
        return out

    # --- receive -------------------------------------------------------------------------

    def handle(self, data: bytes, src: IPAddress, sport: int, now: float) -> list[Out]:
        """A datagram received on the ETR's control socket."""
        self.counters["received"] += 1
        try:
            msg = decode(data)
        except LispDecodeError as exc:
            self.counters["malformed"] += 1
            log.debug("malformed message from %s:%d: %s", src, sport, exc)
            return []
        if isinstance(msg, MapNotify) and not getattr(msg, "ack", False):
            return self._notify(msg, data, src, now)
        if isinstance(msg, EncapsulatedControlMessage):
            if not isinstance(msg.inner, MapRequest):
                self.counters["unexpected"] += 1
                return []
            return self.reply(msg.inner, msg.source_port, msg.source.version)
        if isinstance(msg, MapRequest):
            return self.reply(msg, sport, src.version)
        self.counters["unexpected"] += 1
        return []

    def _notify(self, msg: MapNotify, data: bytes, src: IPAddress, now: float) -> list[Out]:
        # RFC 9301 §5.7: the Map-Notify copies the Map-Register's fields, its nonce included;
        # only a nonce we sent (and have not seen confirmed) identifies the Map-Server and key.
        ms = self._outstanding.get(msg.nonce)
        if ms is None:
            self.counters["map-notify-unknown-nonce"] += 1
            return []
        try:
            verified = lisp_auth.authenticate(data, ms.key)
        except LispDecodeError:
            verified = None
        if verified is None:
            self.counters["map-notify-bad-auth"] += 1
            log.warning("Map-Notify from %s does not verify with the key of Map-Server %s", src, ms.address)
            return []
        # Which length and coverage the Map-Server used, so an operator sees what peers send.
        self.counters[f"map-notify-auth:{verified.kind}"] += 1
        if verified.mac_over_xtr_id:
            self.counters["map-notify-auth:mac-over-xtr-id"] += 1
        del self._outstanding[msg.nonce]
        self.counters["map-notify"] += 1
        self.last_notify[ms.address] = now
        if self._all_notified():
            self._retry = RETRY_MIN
            self._next_register = self._sent_at + self.register_interval
        return []

    def owns_ecm(self, data: bytes, src: IPAddress) -> bool:
        """Whether ``data`` is a Map-Server's ECM for this ETR.

        That is: it comes from one of our Map-Servers and its inner destination (the
        EID, RFC 9301 §5.8) is in one of our prefixes.

        Reads the inner IP header in place, without decoding: the node asks this of
        every ECM that carries no E bit when it runs a Map-Resolver beside the ETR.
        An ITR's request for our EID (from anywhere else) stays with the resolver.
        """
        if len(data) < 4 + 20 or data[0] >> 4 != 8 or data[0] & 0x08:  # not an ECM, or LISP-SEC data first
            return False
        if not any(ms.address == src for ms in self.map_servers):
            return False
        version = data[4] >> 4
        eid: IPAddress
        if version == 4:
            eid = IPv4Address(data[4 + 16:4 + 20])
        elif version == 6 and len(data) >= 4 + 40:
            eid = IPv6Address(data[4 + 24:4 + 40])
        else:
            return False
        return any(m.prefix.version == version and eid in m.prefix for m in self.mappings)

    def lookup(self, record: EidRecord) -> EtrMappingConfig | None:
        eid = record.eid
        if not isinstance(eid, IPv4Address | IPv6Address):
            return None
        for m in self.mappings:
            if m.prefix.version == eid.version and eid in m.prefix:
                return m
        return None

    def reply(self, request: MapRequest, dport: int, family: int) -> list[Out]:
        """The Map-Reply for ``request``, to its first ITR-RLOC (preferring ``family``) at ``dport``."""
        if request.dont_map_reply:
            # RFC 9301 §5.2: "When this bit is set, the receiver of the Map-Request does
            # not return a Map-Reply."
            self.counters["dont-map-reply"] += 1
            return []
        found = [m for m in (self.lookup(r) for r in request.records) if m is not None]
        if not found:
            self.counters["not-authoritative"] += 1
            return []
        itr = first_ip(request.itr_rlocs, family)
        if itr is None:
            self.counters["no-itr-rloc"] += 1
            return []
        records = tuple(dict.fromkeys(m.record() for m in found))
        self.counters["map-reply"] += 1
        if request.probe:
            self.counters["rloc-probe-reply"] += 1
        # A probe reply keeps the A bit on every record (RFC 9301 §5.4: else it is discarded).
        reply = MapReply(request.nonce, records, probe=request.probe)
        return [SendUdp(itr, dport, reply.encode(), sport=self.port)]
