"""The ETR's control plane (RFC 9301 §8.2 registration, §5.4 Map-Reply), sans-IO.

It registers its EID prefixes with each Map-Server every ``register_interval``
seconds (authenticated, M bit set so the Map-Server confirms with a Map-Notify,
P bit when the Map-Server should answer for it) and answers each Map-Request,
plain or in an ECM forwarded by the Map-Server, with an authoritative Map-Reply
sent to the request's ITR-RLOC at the port the request came from.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Callable, Iterable
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
    verify,
)
from alt_router.mapping.actions import Action as Out
from alt_router.mapping.actions import IPAddress, Prefix, SendUdp
from alt_router.mapping.map_resolver import first_ip
from alt_router.mapping.map_server import ALGORITHMS
from alt_router.node.config import DEFAULT_RECORD_TTL, Mapping, MapServerRef, Rloc

log = logging.getLogger(__name__)

MAX_RECORDS = 255
# While a Map-Server has not confirmed a registration with a Map-Notify, the
# ETR asks again after 1, 2, 4 ... seconds (capped at the register interval):
# a Map-Register lost at start-up (Map-Server not up yet) must not leave the
# site unregistered for a whole interval.
RETRY_MIN = 1.0
# Outstanding Map-Register nonces kept per Map-Server, to match Map-Notifies.
MAX_OUTSTANDING = 8


@dataclass(frozen=True, slots=True)
class MapServerTarget:
    address: IPAddress
    key: str
    algorithm_id: int
    port: int = LISP_CONTROL_PORT

    @classmethod
    def from_config(cls, ref: MapServerRef, port: int = LISP_CONTROL_PORT) -> MapServerTarget:
        return cls(ref.address, ref.key, ALGORITHMS[ref.algorithm], port)


@dataclass(frozen=True, slots=True)
class EidMapping:
    prefix: Prefix
    rlocs: tuple[Rloc, ...]
    ttl: int = DEFAULT_RECORD_TTL

    @classmethod
    def from_config(cls, m: Mapping) -> EidMapping:
        return cls(m.eid_prefix, m.rlocs, m.ttl)

    def record(self) -> MappingRecord:
        locators = tuple(
            Locator(r.address, r.priority, r.weight, local=True, reachable=True) for r in self.rlocs
        )
        return MappingRecord(
            self.prefix.network_address, self.prefix.prefixlen, ttl=self.ttl, locators=locators,
            authoritative=True,
        )


def _random_nonce() -> int:
    return secrets.randbits(64)


class Etr:
    def __init__(
        self,
        mappings: Iterable[Mapping | EidMapping],
        map_servers: Iterable[MapServerRef | MapServerTarget],
        *,
        register_interval: float = 60.0,
        proxy_reply: bool = False,
        want_map_notify: bool = True,
        xtr_id: int | None = None,
        site_id: int | None = None,
        port: int = LISP_CONTROL_PORT,
        nonce: Callable[[], int] = _random_nonce,
    ) -> None:
        self.mappings = [m if isinstance(m, EidMapping) else EidMapping.from_config(m) for m in mappings]
        # Most specific first: a request is answered from the longest matching prefix.
        self.mappings.sort(key=lambda m: -m.prefix.prefixlen)
        self.map_servers = [
            s if isinstance(s, MapServerTarget) else MapServerTarget.from_config(s) for s in map_servers
        ]
        self.register_interval = register_interval
        self.proxy_reply = proxy_reply
        self.want_map_notify = want_map_notify
        self.xtr_id = xtr_id
        self.site_id = site_id if xtr_id is not None else None
        if xtr_id is not None and site_id is None:
            self.site_id = 0
        self.port = port
        self._nonce = nonce
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

    def register_now(self) -> list[Out]:
        records = [m.record() for m in self.mappings]
        out: list[Out] = []
        for ms in self.map_servers:
            for i in range(0, len(records), MAX_RECORDS):
                nonce = self._nonce()
                register = MapRegister(
                    nonce, tuple(records[i:i + MAX_RECORDS]), key_id=0, algorithm_id=ms.algorithm_id,
                    proxy_reply=self.proxy_reply, want_map_notify=self.want_map_notify,
                    xtr_id=self.xtr_id, site_id=self.site_id,
                )
                signed = sign(register, ms.key, algorithm_id=ms.algorithm_id)
                if len(self._outstanding) >= MAX_OUTSTANDING * max(1, len(self.map_servers)):
                    self._outstanding.pop(next(iter(self._outstanding)))
                self._outstanding[nonce] = ms
                self.counters["map-register"] += 1
                out.append(SendUdp(ms.address, ms.port, signed.encode(), sport=self.port))
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
        if isinstance(msg, MapNotify):
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
        ms = self._outstanding.get(msg.nonce)
        if ms is None:
            self.counters["map-notify-unknown-nonce"] += 1
            return []
        if not verify(data, ms.key):
            self.counters["map-notify-bad-auth"] += 1
            log.warning("Map-Notify from %s does not verify with the key of Map-Server %s", src, ms.address)
            return []
        del self._outstanding[msg.nonce]
        self.counters["map-notify"] += 1
        self.last_notify[ms.address] = now
        if self._all_notified():
            self._retry = RETRY_MIN
            self._next_register = self._sent_at + self.register_interval
        return []

    def lookup(self, record: EidRecord) -> EidMapping | None:
        eid = record.eid
        if not isinstance(eid, IPv4Address | IPv6Address):
            return None
        for m in self.mappings:
            if m.prefix.version == eid.version and eid in m.prefix:
                return m
        return None

    def reply(self, request: MapRequest, dport: int, family: int) -> list[Out]:
        """The Map-Reply for ``request``, to its first ITR-RLOC (preferring ``family``) at ``dport``."""
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
        reply = MapReply(request.nonce, records, probe=request.probe)
        return [SendUdp(itr, dport, reply.encode(), sport=self.port)]
