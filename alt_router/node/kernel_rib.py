"""FRR mode: the node's ALT RIB read from the kernel table zebra installs it in (issue 10).

``KernelRib`` owns one rtnetlink socket, subscribed to link and IPv4/IPv6 route events, on the
running asyncio loop (non-blocking, ``loop.add_reader``).  It dumps the interfaces and the table
at start, then applies events; each read drains up to ``chunk`` bytes of datagrams into one
buffer, which ``rib/kernel_routes.py`` decodes in one pass and ``Rib.apply_kernel`` applies, so a
million-route table costs a few microseconds per route and the loop regains control every few
milliseconds.  The socket carries the dumps and the events in the order the kernel produced
them, which is what makes a dump taken while zebra is still installing consistent: an event that
arrives during a dump is newer than the dump's earlier parts and older than its later ones.

Overflow: a multicast netlink socket whose receive buffer fills loses events and says so once
with ENOBUFS.  The reader counts it (``overflow``) and resynchronises: a fresh dump, after which
every Loc-RIB route that neither the dump nor an event during it mentioned is withdrawn.  The same
happens when an interface that carried ALT routes goes down or away, since the kernel flushes its
IPv4 routes without a RTM_DELROUTE each.  The buffer is large (``SO_RCVBUFFORCE`` as root) so that
zebra installing a full table while the loop is busy does not overflow in the first place.

In FRR mode the kernel is the Loc-RIB's only source: a resynchronisation removes any route of the
``Rib`` the kernel does not hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable

from pyroute2 import netns as pyroute2_netns

from alt_router.rib.kernel_loc import SortedKeys, text_key
from alt_router.rib.kernel_routes import (
    RT_TABLE_MAIN,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
    Decoded,
    KernelRouteDecoder,
    dump_links_request,
    dump_routes_request,
)
from alt_router.rib.rib import Rib
from alt_router.types import IPAddress

log = logging.getLogger(__name__)

SOL_NETLINK = 270
NETLINK_GET_STRICT_CHK = 12
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
# ~1 KiB of kernel memory per queued route event: 256 MiB holds about 250,000 of them, a backlog
# of more than ten seconds of zebra installing routes flat out.  Only a backlog uses the memory.
DEFAULT_RCVBUF = 256 << 20
# Bytes of datagrams drained per loop callback: about 10,000 route events, a few ms of decoding.
DEFAULT_CHUNK = 1 << 20
# Room kept free for one more datagram: a dump's are at most 32 KiB (linux netlink_dump).
_DATAGRAM_ROOM = 64 << 10
# A dump flagged NLM_F_DUMP_INTR is repeated before its sweep, at most this many times in a row.
MAX_INTERRUPTED_REDUMPS = 3
RETRY_DELAY = 0.2
# After a read that found a backlog (zebra installing a table), the reader waits this long before
# reading again, so the next read takes a big batch instead of waking up for every few routes:
# fewer wake-ups of this process while zebra and the kernel work, at a few ms of extra latency.
BUSY_BYTES = 4 << 10
BUSY_PAUSE = 0.005

EDGE_COUNTERS = (
    "overflow",        # ENOBUFS: the receive buffer overflowed and events were lost
    "dumps",           # table dumps started (the first one and every resynchronisation)
    "resyncs",         # dumps started to resynchronise (overflow, lost interface, ``resync()``)
    "dump-errors",     # a dump request the kernel refused
    "dump-interrupted",  # a dump flagged NLM_F_DUMP_INTR (repeated before sweeping)
    "swept",           # routes withdrawn because a resynchronising dump no longer had them
    "recv-errors",     # other errors reading the socket
    "internal-errors",  # a batch that raised while applied (logged; a resync follows)
    "reads",           # loop callbacks that read the socket
    "changes",         # Loc-RIB changes applied (adds, changes, withdraws)
)


class KernelRib:
    """Mirrors the ALT routes of kernel table ``table`` into ``rib`` (see the module docstring).

    ``peer_of_ifname(name)`` names the BGP peer behind a tunnel device (None: the route is
    attributed to a peer named like the device).  ``clock`` stamps ``learned_at``.  ``netns``
    opens the socket in that named namespace (tests and benchmarks; the daemon runs inside its
    own).  ``rcvbuf`` is the socket's receive buffer (forced past ``rmem_max`` as root).
    """

    def __init__(
        self, rib: Rib, peer_of_ifname: Callable[[str], str | None], *, table: int = RT_TABLE_MAIN,
        clock: Callable[[], float] = time.time, netns: str | None = None, rcvbuf: int = DEFAULT_RCVBUF,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        self.rib = rib
        self.clock = clock
        self.netns = netns
        self.rcvbuf = rcvbuf
        self.decoder = KernelRouteDecoder(peer_of_ifname, table=table, peer_address=self._peer_address)
        self._counters: Counter[str] = Counter({name: 0 for name in EDGE_COUNTERS})
        self._chunk = max(chunk, _DATAGRAM_ROOM)
        self._buf = bytearray(self._chunk + _DATAGRAM_ROOM)
        self._view = memoryview(self._buf)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seq = 0
        # The running dump: its sequence number (0: none) and stage ("links", then "routes").
        self._dump_seq = 0
        self._stage = ""
        # The prefixes (int keys, IPv4 and IPv6) a resynchronising dump has shown so far: sorted
        # arrays, 8 bytes a route, filled in the dump's address order (appends).
        self._seen: tuple[SortedKeys, SortedKeys] | None = None
        self._interrupted = False
        self._redumps = 0
        self._want_resync = False
        self._retry: asyncio.TimerHandle | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._strict = False
        self._synced: asyncio.Future[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the socket, dump the table into the RIB and keep following it.  Returns once the
        first dump is applied; events follow on the loop from then on."""
        if self._sock is not None:
            raise RuntimeError("KernelRib is started already")
        loop = asyncio.get_running_loop()
        self.rib.mirror_kernel()
        sock = self._open()
        self._sock, self._loop = sock, loop
        self._synced = loop.create_future()
        loop.add_reader(sock.fileno(), self._on_readable)
        self._start_dump()
        await asyncio.shield(self._synced)

    def stop(self) -> None:
        """Stop following the kernel (the RIB keeps what it has).  Idempotent; call it on the loop."""
        for handle in (self._retry, self._resume):
            if handle is not None:
                handle.cancel()
        self._retry = self._resume = None
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        sock.close()
        if self._synced is not None and not self._synced.done():
            self._synced.cancel()
        self._dump_seq = 0
        self._seen = None

    def resync(self) -> None:
        """Re-read the whole table (e.g. after the node's peers changed: routes are attributed anew)."""
        self.decoder.forget_peers()
        self._counters["resyncs"] += 1
        self._request_dump()

    @property
    def synced(self) -> bool:
        """The first dump is applied."""
        return self._synced is not None and self._synced.done() and not self._synced.cancelled()

    def counters(self) -> dict[str, int]:
        """The decoder's counters (kernel_routes.COUNTERS) and the reader's (EDGE_COUNTERS)."""
        out = dict(self.decoder.counters)
        out.update(self._counters)
        return out

    # --- the socket --------------------------------------------------------------------------

    def _open(self) -> socket.socket:
        kind = socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        if self.netns is None:
            sock = socket.socket(socket.AF_NETLINK, kind, socket.NETLINK_ROUTE)
        else:
            sock = pyroute2_netns.create_socket(self.netns, socket.AF_NETLINK, kind, socket.NETLINK_ROUTE,
                                                flags=0)
            sock.setblocking(False)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            try:
                # The kernel then filters a dump on the table and protocol asked for (linux 4.20+).
                sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
                self._strict = True
            except OSError:
                self._strict = False
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))
        except OSError:
            sock.close()
            raise
        return sock

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self._counters["reads"] += 1
        view = self._view
        limit = self._chunk
        recv_into = sock.recv_into
        off = 0
        overflow = False
        while off < limit:
            try:
                n = recv_into(view[off:])
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    overflow = True
                    self._counters["overflow"] += 1
                    continue
                self._counters["recv-errors"] += 1
                log.warning("kernel routes: reading netlink failed: %s", exc)
                break
            if n == 0:
                break
            # Each datagram starts aligned, as the decoder steps over messages (NLMSG_ALIGN).
            off = (off + n + 3) & ~3
        if off:
            try:
                self._apply(self.decoder.feed(view[:off], self.clock()))
            except Exception:
                # A bug, not bad input (the decoder counts that): keep following the kernel and
                # let a fresh dump repair whatever this batch left half applied.
                log.exception("kernel routes: applying a batch failed; resynchronising")
                self._counters["internal-errors"] += 1
                self._counters["resyncs"] += 1
                self._request_dump()
        if overflow:
            log.warning("kernel routes: netlink receive buffer overflowed; resynchronising")
            self._counters["resyncs"] += 1
            self._request_dump()
        if off >= BUSY_BYTES and self._loop is not None and self._sock is sock:
            self._loop.remove_reader(sock.fileno())
            self._resume = self._loop.call_later(BUSY_PAUSE, self._resume_reading)

    def _resume_reading(self) -> None:
        self._resume = None
        if self._sock is not None and self._loop is not None:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def _apply(self, decoded: Decoded) -> None:
        changes = decoded.changes
        if changes:
            if self._seen is not None:
                seen4, seen6 = self._seen
                for key, ikey, _ in changes:
                    (seen6 if ":" in key else seen4).add(ikey)
            self._counters["changes"] += self.rib.apply_kernel_routes(changes)
        if decoded.interrupted and self._stage == "routes":
            self._interrupted = True
        if decoded.links_lost:
            self._counters["resyncs"] += 1
            self._request_dump()
        for seq, err in decoded.errors:
            if seq == self._dump_seq and seq:
                self._dump_failed(err)
        for seq in decoded.done:
            if seq == self._dump_seq and seq:
                self._dump_stage_done()

    # --- dumps -------------------------------------------------------------------------------

    def _request_dump(self) -> None:
        if self._dump_seq:
            self._want_resync = True  # after the running one: it may predate what was lost
        else:
            self._start_dump()

    def _start_dump(self) -> None:
        self._want_resync = False
        self._counters["dumps"] += 1
        self._stage = "links"
        self._send(dump_links_request(self._next_seq()))

    def _send(self, request: bytes) -> None:
        sock = self._sock
        if sock is None:
            return
        self._dump_seq = self._seq
        try:
            sock.send(request)
        except OSError as exc:
            self._dump_failed(exc.errno or errno.EIO)

    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFFFFFF + 1
        return self._seq

    def _dump_stage_done(self) -> None:
        if self._stage == "links":
            self._stage = "routes"
            self._seen = (SortedKeys(), SortedKeys(wide=True))
            self._interrupted = False
            self._send(dump_routes_request(self._next_seq(), self.decoder.table))
            return
        seen, self._seen = self._seen, None
        self._dump_seq = 0
        self._stage = ""
        if self._interrupted and self._redumps < MAX_INTERRUPTED_REDUMPS:
            # The table changed under the dump; a route the dump skipped would be swept wrongly.
            self._counters["dump-interrupted"] += 1
            self._redumps += 1
            self._start_dump()
            return
        self._redumps = 0
        if seen is not None:
            seen4, seen6 = seen
            gone = [(text_key(v6, ikey), ikey, None) for v6, ikey in self.rib.kernel_keys()
                    if ikey not in (seen6 if v6 else seen4)]
            if gone:
                self._counters["swept"] += len(gone)
                self._counters["changes"] += self.rib.apply_kernel_routes(gone)
        if self._synced is not None and not self._synced.done():
            self._synced.set_result(None)
        if self._want_resync:
            self._start_dump()

    def _dump_failed(self, err: int) -> None:
        self._counters["dump-errors"] += 1
        log.warning("kernel routes: the %s dump failed: %s", self._stage or "table",
                    errno.errorcode.get(err, err))
        if self._strict and self._sock is not None:
            # A kernel that refuses the filtered dump gets the plain one; the decoder filters.
            self._strict = False
            with contextlib.suppress(OSError):
                self._sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 0)
        self._dump_seq = 0
        self._stage = ""
        self._seen = None
        self._want_resync = False
        if self._loop is not None and self._sock is not None and self._retry is None:
            self._retry = self._loop.call_later(RETRY_DELAY, self._retry_dump)

    def _retry_dump(self) -> None:
        self._retry = None
        if self._sock is not None and not self._dump_seq:
            self._start_dump()

    # --- peers -------------------------------------------------------------------------------

    def _peer_address(self, peer: str, family: int) -> IPAddress | None:
        state = self.rib.peer(peer)
        if state is None:
            return None
        version = 4 if family == socket.AF_INET else 6
        for address in state.info.addresses:
            if address.version == version:
                return address
        return state.info.addresses[0] if state.info.addresses else None
