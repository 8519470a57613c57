"""Userspace GRE: TUN devices plus one raw protocol-47 socket per address family.

This is the edge around :class:`alt_router.gre.dataplane.Dataplane`; it owns
the file descriptors and netlink calls and nothing else.  The same
``_on_readable`` core runs under a selectors loop (``run_forever``, ``start``)
or inside an asyncio loop (``attach``).  It calls the dataplane's fast entry
points and, on the raw IPv4 socket, moves packets in batches (``MmsgIO``):
see docs/gre.md, "The fast path".

The node daemon runs it in its own *data-plane thread* (``start(loop)``), so the
BGP sessions that cross the tunnels never wait for a busy control-plane event
loop (docs/architecture.md, "Data-plane thread").  Then everything that changes
the engine's state runs on that thread: other threads ``send`` through a bounded
command queue and ``add_tunnel``/``remove_tunnel``/``call`` wait for the thread
to do the work.  The hook's events (``Local`` verdicts: the Map-Server's ALT
datagrams; ``Drop`` verdicts that carry an ICMP error) go the other way, to the
one ``events`` function the engine was built with, through a bounded ``Handoff``
that drops and counts rather than ever block the data-plane thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address
from typing import Any, Final, TypeVar

from pyroute2 import IPRoute

from alt_router.gre.config import TunnelConfig
from alt_router.gre.dataplane import (
    TO_UNDERLAY,
    TUN_READ_ERROR,
    TUN_WRITE_ERROR,
    UNDERLAY_SEND_ERROR,
    Action,
    Dataplane,
    Event,
    Fast,
    FastHook,
    InnerHook,
    Local,
    SendUnderlay,
    WriteTun,
)
from alt_router.gre.offload import BpfOffload
from alt_router.inet import PROTO_GRE, ipv4_header
from alt_router.logsummary import LogSummary
from alt_router.sockdrops import RX_BUFFER_OVERFLOW, TUN_QUEUE_OVERFLOW, link_tx_dropped, socket_drops

log = logging.getLogger(__name__)

TUNSETIFF: Final = 0x400454CA
IFF_TUN: Final = 0x0001
IFF_NO_PI: Final = 0x1000
# A wakeup drains a descriptor until EAGAIN, but at most this many packets, so one busy
# descriptor cannot starve the others (BGP, the API) for more than a few milliseconds.
BATCH: Final = 256
RECV_SIZE: Final = 65535
# Deep enough to absorb a scheduling hiccup of a few tens of milliseconds at 100,000 packets/s.
SOCKET_BUFFER: Final = 8 * 1024 * 1024
# Linux values, missing from Python's socket module: like SO_RCVBUF/SO_SNDBUF, but root may
# exceed net.core.rmem_max/wmem_max.
SO_SNDBUFFORCE: Final = 32
SO_RCVBUFFORCE: Final = 33
# Linux value, missing from Python's socket module.
IPV6_RECVPKTINFO: Final = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO: Final = getattr(socket, "IPV6_PKTINFO", 50)
IFA_F_NODAD: Final = 0x02
# Engine errors (failed sends, TUN writes): one line per kind, then a summary per interval.
ERROR_LOG_INTERVAL: Final = 10.0
ERROR_LOG_KINDS: Final = 64
# Data-plane thread -> event loop: ALT datagrams for the local Map-Server/ETR.  4,096 of at most
# a tunnel MTU each is ~6 MB at worst, and at the Map-Server's few thousand registrations a
# second it is over a second of backlog: enough to ride out a hiccup, bounded under a flood.
HANDOFF_CAPACITY: Final = 4096
# Calls the event loop runs per wakeup, so a backlog cannot hog the loop either.
HANDOFF_BATCH: Final = 256
# Other threads -> data-plane thread: packets to inject (the Map-Resolver's ALT datagrams).
COMMAND_CAPACITY: Final = 4096
# How long a thread waits for the data-plane thread to run a ``call`` (a tunnel add or remove).
CALL_TIMEOUT: Final = 10.0
# Drop reasons (tunnel counters) of the two queues, and of a Local verdict nobody takes.
LOCAL_QUEUE_FULL: Final = "local-queue-full"
NO_LOCAL_HANDLER: Final = "no-local-handler"
ICMP_QUEUE_FULL: Final = "icmp-queue-full"
SEND_QUEUE_FULL: Final = "send-queue-full"


class TunnelSetupError(RuntimeError):
    """A TUN device or raw socket could not be created or configured."""


def open_tun(name: str) -> int:
    """Create TUN ``name`` and return its non-blocking fd.

    Created by TUNSETIFF on a fresh /dev/net/tun fd and not made persistent, so
    the kernel deletes the device when the fd closes -- even if we are SIGKILLed.
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise TunnelSetupError(f"cannot create TUN {name}: {exc.strerror}") from exc
    return fd


def configure_link(ipr: Any, config: TunnelConfig) -> int:
    """Set MTU, addresses and up on the (TUN or GRE) link named after ``config``; returns its index."""
    found = ipr.link_lookup(ifname=config.name)
    if not found:
        raise TunnelSetupError(f"link {config.name} vanished while being configured")
    index: int = found[0]
    ipr.link("set", index=index, mtu=config.mtu)
    for iface in config.addresses:
        # No DAD: the far end is a single peer, and a tentative address would make
        # the first seconds of IPv6 over a fresh tunnel fail.
        ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen,
                 flags=IFA_F_NODAD if iface.version == 6 else 0)
    ipr.link("set", index=index, state="up")
    return index


def _raw_socket(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_RAW, PROTO_GRE)
    sock.setblocking(False)
    for force, opt in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            # Without CAP_NET_ADMIN: as much as the sysctl allows.
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
    if family == socket.AF_INET:
        # We write the outer header ourselves so each tunnel can have its own
        # source address and TTL on a single shared socket.
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    else:
        # IPv6 raw sockets strip the outer header; pktinfo tells us which local
        # address the packet came to, which the demultiplexer needs.
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
    return sock


T = TypeVar("T")


def run_netlink(work: Callable[[Any], T]) -> T:
    """Run ``work(ipr)`` with a fresh IPRoute in a helper thread.

    pyroute2 0.9's synchronous IPRoute drives its own asyncio loop and fails
    inside a running one, so this keeps ``open()`` callable from asyncio code.
    """
    def with_ipr() -> T:
        with IPRoute() as ipr:
            return work(ipr)

    return off_loop(with_ipr)


def off_loop(work: Callable[[], T]) -> T:
    """Run ``work()`` in a helper thread and wait: for pyroute2 calls (NetNS, IPRoute) made from
    code that may run inside an asyncio loop."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="gre-netlink")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(_Iovec)),
        ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("hdr", _Msghdr), ("len", ctypes.c_uint))


_MSG_DONTWAIT: Final = 0x40
_HDR_SIZE: Final = ctypes.sizeof(_Mmsghdr)
_LEN_AT: Final = _Mmsghdr.len.offset
_NAME_AT: Final = _Msghdr.name.offset
_IOV_LEN_AT: Final = _Iovec.len.offset
_PTR: Final = struct.Struct("=Q" if ctypes.sizeof(ctypes.c_void_p) == 8 else "=I")
_SIZE: Final = _PTR


class MmsgIO:
    """recvmmsg(2)/sendmmsg(2) on one raw IPv4 socket, through ctypes: one syscall per batch.

    On a virtual machine a syscall's entry and exit cost about as much as CPython's whole
    forwarding decision, so the forwarding loop receives up to ``batch`` packets in one call
    and sends what it decided in one call.  ``recv()`` returns the packets as bytes;
    ``queue()`` copies an outgoing packet into the send batch; ``flush()`` sends the batch
    and returns the indices of the packets the kernel refused, for per-packet accounting.
    """

    def __init__(self, fd: int, batch: int = 64, slot: int = RECV_SIZE, tx_slot: int = RECV_SIZE) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._recvmmsg = libc.recvmmsg
        self._recvmmsg.argtypes = (
            ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p,
        )
        self._sendmmsg = libc.sendmmsg
        self._sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
        self.fd = fd
        self.batch = batch
        self.slot = slot
        self.tx_slot = tx_slot
        self._rx_buf = (ctypes.c_char * (batch * slot))()
        self._tx_buf = (ctypes.c_char * (batch * tx_slot))()
        self._rx_iov = (_Iovec * batch)()
        self._tx_iov = (_Iovec * batch)()
        self._rx_msg = (_Mmsghdr * batch)()
        self._tx_msg = (_Mmsghdr * batch)()
        for i in range(batch):
            for buf, iov, msg, size in ((self._rx_buf, self._rx_iov, self._rx_msg, slot),
                                        (self._tx_buf, self._tx_iov, self._tx_msg, tx_slot)):
                iov[i].base = ctypes.addressof(buf) + i * size
                iov[i].len = size
                msg[i].hdr.iov = ctypes.pointer(iov[i])
                msg[i].hdr.iovlen = 1
            self._tx_msg[i].hdr.namelen = 16  # always a sockaddr_in
        self._rx_view = memoryview(self._rx_buf).cast("B")
        self._tx_view = memoryview(self._tx_buf).cast("B")
        self._rx_msg_view = memoryview(self._rx_msg).cast("B")
        self._tx_msg_view = memoryview(self._tx_msg).cast("B")
        self._tx_iov_view = memoryview(self._tx_iov).cast("B")
        self._lens: dict[int, Callable[[Any, int], tuple[int, ...]]] = {}
        self._names: dict[tuple[str, int], Any] = {}
        # (tag, head length, size) of each queued packet, for the caller's accounting of failures.
        self.pending: list[tuple[str, int, int]] = []
        # room(): per header length, each send slot past its header, as readv's buffer list.
        self._rooms: dict[int, list[list[memoryview]]] = {}

    def recv(self) -> list[bytes]:
        """Up to ``batch`` packets; [] when none is waiting.  OSError for other errors."""
        n = self._recvmmsg(self.fd, ctypes.addressof(self._rx_msg), self.batch, _MSG_DONTWAIT, None)
        if n <= 0:
            err = ctypes.get_errno()
            if n == 0 or err in (errno.EAGAIN, errno.EINTR):
                return []
            raise OSError(err, os.strerror(err))
        lens = self._lens.get(n)
        if lens is None:
            # One struct call reads every msg_len of the batch.
            lens = self._lens[n] = struct.Struct(
                "=" + "".join(f"{_LEN_AT}x I {_HDR_SIZE - _LEN_AT - 4}x " for _ in range(n))
            ).unpack_from
        view, slot = self._rx_view, self.slot
        return [bytes(view[i * slot:i * slot + size]) for i, size in enumerate(lens(self._rx_msg_view, 0))]

    def queue(self, tag: str, head: bytes, data: bytes, dest: tuple[str, int]) -> None:
        """Add ``head + data`` for ``dest`` to the send batch; ``tag`` comes back if it fails.

        The caller flushes before the batch is ``full``.
        """
        i = len(self.pending)
        size = len(head) + len(data)
        if i >= self.batch:
            raise OSError(errno.ENOBUFS, "send batch full")
        if size > self.tx_slot:
            raise OSError(errno.EMSGSIZE, "packet larger than a batch slot")
        start = i * self.tx_slot
        self._tx_view[start:start + len(head)] = head
        self._tx_view[start + len(head):start + size] = data
        self._commit(i, tag, len(head), size, dest)

    def room(self, head_len: int) -> list[memoryview]:
        """The next send slot past ``head_len`` bytes, as a buffer list for ``os.readv``.

        With ``commit``, a packet read from a descriptor goes out without a bytes object
        or a copy in Python.  The caller flushes before the batch is ``full``.
        """
        rooms = self._rooms.get(head_len)
        if rooms is None:
            view, slot = self._tx_view, self.tx_slot
            rooms = self._rooms[head_len] = [[view[i * slot + head_len:(i + 1) * slot]]
                                             for i in range(self.batch)]
        return rooms[len(self.pending)]

    def commit(self, tag: str, head: bytes, size: int, dest: tuple[str, int]) -> None:
        """Queue the ``size`` bytes read into ``room(len(head))``, behind ``head``."""
        i = len(self.pending)
        start = i * self.tx_slot
        self._tx_view[start:start + len(head)] = head
        self._commit(i, tag, len(head), len(head) + size, dest)

    def _commit(self, i: int, tag: str, head_len: int, size: int, dest: tuple[str, int]) -> None:
        _SIZE.pack_into(self._tx_iov_view, i * ctypes.sizeof(_Iovec) + _IOV_LEN_AT, size)
        name = self._names.get(dest)
        if name is None:
            # struct sockaddr_in: family in host order, port and address in network order.
            family = struct.pack("=H", socket.AF_INET)
            sockaddr = family + struct.pack("!H4s8x", dest[1], socket.inet_aton(dest[0]))
            name = self._names[dest] = ctypes.create_string_buffer(sockaddr, 16)
        _PTR.pack_into(self._tx_msg_view, i * _HDR_SIZE + _NAME_AT, ctypes.addressof(name))
        self.pending.append((tag, head_len, size))

    @property
    def full(self) -> bool:
        return len(self.pending) >= self.batch

    def flush(self) -> list[tuple[str, bytes, OSError]]:
        """Send the batch; returns ``(tag, data, error)`` for each packet the kernel refused."""
        pending = self.pending
        count = len(pending)
        failed: list[tuple[str, bytes, OSError]] = []
        done = 0
        while done < count:
            n = self._sendmmsg(self.fd, ctypes.addressof(self._tx_msg) + done * _HDR_SIZE, count - done, 0)
            if n > 0:
                done += n
                continue
            # The first unsent packet is the one the error is about; the rest are retried.
            err = ctypes.get_errno()
            tag, head_len, size = pending[done]
            start = done * self.tx_slot
            data = bytes(self._tx_view[start + head_len:start + size])
            failed.append((tag, data, OSError(err, os.strerror(err))))
            done += 1
        self.pending = []
        return failed


class _RateLimitedLog:
    """Log the first error of each kind, then one summary line per kind every ERROR_LOG_INTERVAL s.

    A dead TUN or an unreachable underlay fails every packet: logged one by one, that would
    fill the disk (the tunnel's drop counters stay exact).  Only the data-plane thread calls
    it, so the summary needs no lock; summaries go out with the next error of any kind.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.summary = LogSummary(ERROR_LOG_INTERVAL, ERROR_LOG_KINDS)
        self.clock = clock

    def __call__(self, key: str, msg: str, *args: object) -> None:
        now = self.clock()
        for line in self.summary.flush(now):
            log.error("GRE: %s", line)
        # Keys are "<kind>:<tunnel>:<errno>": one summary line per kind and errno, per tunnel.
        kind, _, rest = key.partition(":")
        tunnel, _, err = rest.partition(":")
        if self.summary.note(f"{kind} errors (errno {err})", f"tunnel {tunnel}", now):
            log.error(msg + " (more are summed up every %.0fs)", *args, ERROR_LOG_INTERVAL)


class Handoff:
    """A bounded queue of calls from the data-plane thread to an event loop; the producer never blocks.

    ``schedule(fn)`` must be callable from any thread and run ``fn`` soon on the consumer
    (``loop.call_soon_threadsafe``).  It is asked once per batch, not per item, so a flood
    costs the loop one wakeup per ``batch`` items.  When ``capacity`` items wait, ``offer``
    refuses (and counts) instead of waiting: a stalled loop loses local deliveries, never the
    tunnels' traffic.

    No lock: ``deque.append``/``popleft`` are atomic, and the consumer clears ``_scheduled``
    before it drains, so an item appended while it runs is either drained by it or schedules
    a new run.
    """

    def __init__(self, schedule: Callable[[Callable[[], None]], object], *,
                 capacity: int = HANDOFF_CAPACITY, batch: int = HANDOFF_BATCH) -> None:
        if capacity < 1 or batch < 1:
            raise ValueError("hand-off capacity and batch must be at least 1")
        self._schedule = schedule
        self.capacity = capacity
        self.batch = batch
        self._items: deque[tuple[Callable[..., object], tuple[object, ...]]] = deque()
        self._scheduled = False
        self.queued = 0
        self.dropped = 0
        self.errors = 0
        self.high_water = 0

    def offer(self, fn: Callable[..., object], *args: object) -> bool:
        """Queue ``fn(*args)`` for the consumer; False (counted in ``dropped``) if the queue is full."""
        items = self._items
        depth = len(items)
        if depth >= self.capacity:
            self.dropped += 1
            return False
        items.append((fn, args))
        self.queued += 1
        if depth >= self.high_water:
            self.high_water = depth + 1
        if not self._scheduled:
            self._wake()
        return True

    def _wake(self) -> None:
        self._scheduled = True
        try:
            self._schedule(self.run)
        except RuntimeError:
            # The loop is closed (shutdown): nobody will run what waits, so drop it.
            self._scheduled = False
            self.dropped += len(self._items)
            self._items.clear()

    def run(self) -> None:
        """Run up to ``batch`` queued calls (on the consumer); schedule another run if more wait."""
        self._scheduled = False
        items = self._items
        for _ in range(self.batch):
            try:
                fn, args = items.popleft()
            except IndexError:
                return
            try:
                fn(*args)
            except Exception:
                self.errors += 1
                log.exception("hand-off call %r failed", fn)
        if items and not self._scheduled:
            self._wake()

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict[str, int]:
        return {"queued": self.queued, "dropped": self.dropped, "errors": self.errors,
                "depth": len(self._items), "high_water": self.high_water, "capacity": self.capacity}


EventSink = Callable[[Event], object]
"""Where the engine hands the hook's events (``Local``, ``Drop`` with an ICMP error): the node's
dispatcher, run on the event loop given to ``Engine.start`` (directly when not threaded)."""


class Engine:
    """Serve several GRE tunnels from one process in userspace.

    ``hook``/``fast_hook`` decide on decapsulated inner packets (without a hook every inner
    packet goes to its TUN and the kernel routes it); ``events`` receives the hook's events.
    All three are given here and never replaced.
    """

    def __init__(
        self,
        tunnels: Iterable[TunnelConfig],
        hook: InnerHook | None = None,
        fast_hook: FastHook | None = None,
        *,
        events: EventSink | None = None,
        batched: bool = True,
        offload: BpfOffload | None = None,
    ) -> None:
        self.dataplane = Dataplane(tunnels, hook, fast_hook)
        # Tunnel mode "bpf": tc-BPF programs do the GRE work the engine would do for the tunnels
        # they cover (gre/offload.py); what they pass on still comes here.
        self.offload = offload
        self.mode = "bpf" if offload is not None else "userspace"
        self._events = events
        # recvmmsg/sendmmsg on the raw IPv4 socket when libc has them (see MmsgIO).
        self.batched = batched
        self._mmsg: MmsgIO | None = None
        self._tun_fd: dict[str, int] = {}
        self._fd_tunnel: dict[int, str] = {}
        self._sock: dict[int, socket.socket] = {}
        self._selector: selectors.BaseSelector | None = None
        self._wake_r, self._wake_w = -1, -1
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._errlog = _RateLimitedLog()
        # Threaded mode (``start``): the data-plane thread's id, work other threads queue for
        # it, and the hand-off of local deliveries to the event loop.
        self._thread_id: int | None = None
        self._commands: deque[Callable[[], object]] = deque()
        self._wake_pending = False
        self.handoff: Handoff | None = None
        self.command_drops = 0
        # With IP_HDRINCL Linux always fills in total length and checksum (and the ID
        # when zero), so the outer IPv4 header is a per-tunnel constant.
        # One lookup per packet on the fast path: tunnel -> (outer header, socket address).
        self._egress4: dict[str, tuple[bytes, tuple[str, int]]] = {}
        for t in self.dataplane.tunnels.values():
            self._add_egress(t)

    def _add_egress(self, t: TunnelConfig) -> None:
        if isinstance(t.local, IPv4Address) and isinstance(t.remote, IPv4Address):
            head = ipv4_header(t.local, t.remote, PROTO_GRE, 0, ttl=t.ttl)
            self._egress4[t.name] = (head, (str(t.remote), 0))

    # -- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        """Create every TUN device and the raw sockets; on any failure undo what was made."""
        try:
            for config in self.dataplane.tunnels.values():
                fd = open_tun(config.name)
                self._tun_fd[config.name] = fd
                self._fd_tunnel[fd] = config.name
            configs = list(self.dataplane.tunnels.values())
            indexes = run_netlink(lambda ipr: [configure_link(ipr, c) for c in configs])
            self._attach_offload(list(zip(configs, indexes, strict=True)))
            for version in {t.family for t in self.dataplane.tunnels.values()}:
                family = socket.AF_INET if version == 4 else socket.AF_INET6
                self._sock[version] = _raw_socket(family)
            if self.batched and 4 in self._sock:
                self._mmsg = _batch_io(self._sock[4].fileno(), self._egress4, self.dataplane.tunnels)
        except BaseException:
            self.close()
            raise
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        log.info("userspace GRE up: %s", ", ".join(
            f"{t.name} {t.local}->{t.remote} key={t.key} mtu={t.mtu}"
            for t in self.dataplane.tunnels.values()
        ))

    def add_tunnel(self, config: TunnelConfig) -> None:
        """Bring one more tunnel up while running (a config reload); the others are not touched.

        TunnelConfigError if it clashes with a served tunnel, TunnelSetupError (and nothing
        left behind) if its TUN device or raw socket cannot be made.  In threaded mode it runs
        on the data-plane thread, which the caller waits for.
        """
        self.call(self._add_tunnel, config)

    def _add_tunnel(self, config: TunnelConfig) -> None:
        self.dataplane.add_tunnel(config)
        new_fds: list[int] = []
        try:
            fd = open_tun(config.name)
            new_fds.append(fd)
            index = run_netlink(lambda ipr: configure_link(ipr, config))
            self._attach_offload([(config, index)])
            if config.family not in self._sock:
                sock = _raw_socket(socket.AF_INET if config.family == 4 else socket.AF_INET6)
                self._sock[config.family] = sock
                new_fds.append(sock.fileno())
        except BaseException:
            for made in new_fds[:1]:
                os.close(made)
            self.dataplane.remove_tunnel(config.name)
            raise
        self._tun_fd[config.name] = fd
        self._fd_tunnel[fd] = config.name
        self._add_egress(config)
        mm = self._mmsg
        if self.batched and 4 in self._sock and (mm is None or config.underlay_mtu >= mm.tx_slot):
            # A batch slot must hold the new tunnel's biggest outer packet, and one byte more.
            self._mmsg = _batch_io(self._sock[4].fileno(), self._egress4, self.dataplane.tunnels)
        for new_fd in new_fds:
            self._watch(new_fd)
        log.info("userspace GRE tunnel added: %s %s->%s key=%s mtu=%d", config.name, config.local,
                 config.remote, config.key, config.mtu)

    def remove_tunnel(self, name: str) -> bool:
        """Take tunnel ``name`` down while running (its TUN device goes); False if it was not served."""
        return self.call(self._remove_tunnel, name)

    def _remove_tunnel(self, name: str) -> bool:
        if self.dataplane.remove_tunnel(name) is None:
            return False
        self._egress4.pop(name, None)
        self._detach_offload(name)
        fd = self._tun_fd.pop(name, None)
        if fd is not None:
            self._fd_tunnel.pop(fd, None)
            self._forget_fd(fd)
            os.close(fd)
        log.info("userspace GRE tunnel removed: %s", name)
        return True

    def _attach_offload(self, links: list[tuple[TunnelConfig, int]]) -> None:
        offload = self.offload
        if offload is not None:
            run_netlink(lambda ipr: [offload.add(ipr, config, index) for config, index in links])

    def _detach_offload(self, name: str) -> None:
        offload = self.offload
        if offload is not None:
            try:
                run_netlink(lambda ipr: offload.remove(ipr, name))
            except OSError as exc:
                log.warning("GRE %s: tc-BPF programs not detached: %s", name, exc)

    def _watch(self, fd: int) -> None:
        if self._selector is not None:
            self._selector.register(fd, selectors.EVENT_READ)
        if self._loop is not None:
            self._loop.add_reader(fd, self._on_readable, fd)

    def close(self) -> None:
        """Release everything; closing a TUN fd deletes its device."""
        self.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        self._thread_id = None
        self._commands.clear()
        if self._loop is not None:
            self.detach()
        offload = self.offload
        if offload is not None and (offload.attached() or offload.refused):
            try:
                run_netlink(offload.close)
            except OSError as exc:
                log.warning("tc-BPF GRE: programs not all detached: %s", exc)
        for fd in list(self._tun_fd.values()):
            os.close(fd)
        self._tun_fd.clear()
        self._fd_tunnel.clear()
        for sock in self._sock.values():
            sock.close()
        self._sock.clear()
        self._mmsg = None
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r, self._wake_w = -1, -1

    def __enter__(self) -> Engine:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fds(self) -> list[int]:
        return [*self._tun_fd.values(), *(s.fileno() for s in self._sock.values())]

    # -- the selectors loop -----------------------------------------------------------------

    def poll(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds and handle whatever became readable."""
        if self._selector is None:
            self._selector = selectors.DefaultSelector()
            for fd in self.fds():
                self._selector.register(fd, selectors.EVENT_READ)
            if self._wake_r >= 0:
                self._selector.register(self._wake_r, selectors.EVENT_READ)
        for key, _ in self._selector.select(timeout):
            if key.fd == self._wake_r:
                self._drain_wake()
            else:
                self._on_readable(key.fd)

    def run_forever(self) -> None:
        self._stopping.clear()
        self._thread_id = threading.get_ident()
        try:
            while not self._stopping.is_set():
                try:
                    self.poll(None)
                except Exception:
                    # The data path must outlive a bug in one packet's handling: BGP rides on it.
                    # The pause keeps an error that repeats on every poll from spinning a core.
                    log.exception("GRE engine: unexpected error; carrying on")
                    self._stopping.wait(0.01)
        finally:
            self._thread_id = None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> threading.Thread:
        """Run the engine in its own data-plane thread.

        With ``loop``, the hook's events (deliveries to the Map-Server, ETR..., ICMP errors)
        are handed to that event loop through a bounded ``Handoff`` instead of being passed to
        ``events`` on the data-plane thread; the node's dispatcher then runs where the rest of
        the control plane runs and needs no locking.
        """
        if loop is not None:
            self.handoff = Handoff(loop.call_soon_threadsafe)
        if self._wake_r < 0:
            raise RuntimeError("open() the engine before start()")
        self._thread = threading.Thread(target=self.run_forever, name="gre-dataplane", daemon=True)
        self._thread.start()
        # ``call``/``send`` must know the thread exists before it has run its first line.
        self._thread_id = self._thread.ident
        return self._thread

    @property
    def threaded(self) -> bool:
        """Is a data-plane thread (``start``) serving the tunnels?"""
        return not self._on_dataplane_thread() or self._thread_id == threading.get_ident()

    def _on_dataplane_thread(self) -> bool:
        """True where engine state may be touched directly: on its thread, or when none runs."""
        tid = self._thread_id
        if tid is None or tid == threading.get_ident():
            return True
        # A thread that has ended (stopped, or never got going) runs nothing queued for it.
        thread = self._thread
        return thread is None or not thread.is_alive()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the data-plane thread, waited for; directly when not threaded.

        For changes to state the data-plane thread reads without locks (tunnels, the
        forwarder's local prefixes).  Exceptions come back to the caller.  The data-plane
        thread never waits for another thread, so this cannot deadlock; it gives up after
        CALL_TIMEOUT (RuntimeError) rather than hang a caller behind a wedged thread.
        """
        if self._on_dataplane_thread():
            return fn(*args)
        done = threading.Event()
        result: list[T] = []
        error: list[BaseException] = []

        def work() -> None:
            try:
                result.append(fn(*args))
            except BaseException as exc:
                error.append(exc)
            finally:
                done.set()

        self._commands.append(work)
        self._wake()
        if not done.wait(CALL_TIMEOUT):
            raise RuntimeError(f"the GRE data-plane thread did not run {fn!r} within {CALL_TIMEOUT:.0f}s")
        if error:
            raise error[0]
        return result[0]

    def post(self, fn: Callable[..., object], *args: Any) -> bool:
        """``fn(*args)`` soon on the data-plane thread, not waited for; False (counted) if the queue is full.

        Directly when not threaded or already on that thread.
        """
        if self._on_dataplane_thread():
            fn(*args)
            return True
        if len(self._commands) >= COMMAND_CAPACITY:
            self.command_drops += 1
            return False
        self._commands.append(lambda: fn(*args))
        if not self._wake_pending:
            self._wake()
        return True

    def _wake(self) -> None:
        self._wake_pending = True
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"x")

    def _run_commands(self) -> None:
        self._wake_pending = False
        commands = self._commands
        while commands:
            try:
                work = commands.popleft()
            except IndexError:
                return
            try:
                work()
            except Exception:
                log.exception("GRE engine: a queued command failed")

    def stop(self) -> None:
        """Make ``run_forever`` return; safe from a signal handler or another thread."""
        self._stopping.set()
        self._wake()

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass
        self._run_commands()

    # -- asyncio ----------------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for fd in self.fds():
            loop.add_reader(fd, self._on_readable, fd)

    def detach(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            for fd in self.fds():
                self._loop.remove_reader(fd)
        self._loop = None

    # -- data path --------------------------------------------------------------------------

    def send(self, tunnel_name: str, inner_packet: bytes) -> None:
        """Inject an inner packet into a tunnel (as if routed into its TUN).

        From another thread than the data-plane thread it is queued for that thread (a full
        queue drops it, counted as ``send-queue-full``), so the dataplane's counters and
        sequence numbers keep a single writer.
        """
        if self._on_dataplane_thread():
            self._handle(self.dataplane.encapsulate_fast(tunnel_name, inner_packet))
        elif not self.post(self.send, tunnel_name, inner_packet):
            counters = self.dataplane.counters.get(tunnel_name, self.dataplane.unmatched)
            counters.drop(SEND_QUEUE_FULL)

    def stats(self) -> dict[str, object]:
        out = self.dataplane.stats()
        # Packets the kernel dropped on the raw sockets because the engine did not read fast
        # enough: read from /proc (alt_router.sockdrops), which any thread may do.
        out["sockets"] = {RX_BUFFER_OVERFLOW: socket_drops(self._sock.copy().values())}
        # Packets routed into a TUN (BGP from ExaBGP, among others) that the engine did not read
        # before the device's queue filled: the kernel counts them as the link's tx_dropped.
        tunnels = out.get("tunnels")
        if isinstance(tunnels, dict):
            for name in self._tun_fd.copy():
                dropped = link_tx_dropped(name)
                entry = tunnels.get(name)
                if dropped and isinstance(entry, dict) and isinstance(entry.get("drops"), dict):
                    entry["drops"][TUN_QUEUE_OVERFLOW] = dropped
        if self.offload is not None and isinstance(tunnels, dict):
            for name, entry in tunnels.items():
                if isinstance(entry, dict) and name in self._tun_fd:
                    try:
                        entry["bpf"] = self.offload.stats(name)
                    except OSError as exc:
                        entry["bpf"] = {"offload": "unknown", "why": str(exc)}
        out["dataplane_thread"] = self.threaded
        out["command_queue"] = {"depth": len(self._commands), "dropped": self.command_drops,
                                "capacity": COMMAND_CAPACITY}
        if self.handoff is not None:
            out["handoff"] = self.handoff.stats()
        return out

    def _on_readable(self, fd: int) -> None:
        name = self._fd_tunnel.get(fd)
        if name is not None:
            self._read_tun(fd, name)
            return
        sock = self._sock.get(4)
        if sock is not None and sock.fileno() == fd:
            self._read_ipv4(sock)
        elif (sock6 := self._sock.get(6)) is not None and sock6.fileno() == fd:
            self._read_ipv6(sock6)

    def _read_tun(self, fd: int, name: str) -> None:
        mm, egress = self._mmsg, self._egress4.get(name)
        if mm is not None and egress is not None:
            self._read_tun_batched(fd, name, mm, egress)
        else:
            self._read_tun_general(fd, name)

    def _read_tun_general(self, fd: int, name: str) -> None:
        read, encapsulate, handle = os.read, self.dataplane.encapsulate_fast, self._handle
        for _ in range(BATCH):
            try:
                packet = read(fd, RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                self._tun_unreadable(fd, name, exc)
                return
            if not packet:
                return
            handle(encapsulate(name, packet))

    def _read_tun_batched(
        self, fd: int, name: str, mm: MmsgIO, egress: tuple[bytes, tuple[str, int]]
    ) -> None:
        # The other half of the FRR-integrated mode's hop (the kernel routed the packet into this
        # TUN): each packet is read straight into a sendmmsg slot behind room for its outer IPv4
        # and GRE headers, and the batch leaves in one syscall.  The dataplane's common case
        # (encapsulate_fast) is applied here, on the slot; anything else takes the general path.
        dataplane = self.dataplane
        tx = dataplane.tx_fast(name)
        if tx is None:
            self._read_tun_general(fd, name)
            return
        outer, dest = egress
        head4, head6, mtu, counters = outer + tx[0], outer + tx[1], tx[2], tx[3]
        hlen = len(head4)
        if mm.tx_slot - hlen <= mtu:
            # No room for one byte past the MTU, which tells a too-big packet from one that fits.
            self._read_tun_general(fd, name)
            return
        readv, room, commit = os.readv, mm.room, mm.commit
        try:
            for _ in range(BATCH):
                buf = room(hlen)
                try:
                    size = readv(fd, buf)
                except BlockingIOError:
                    return
                except OSError as exc:
                    self._tun_unreadable(fd, name, exc)
                    return
                if not size:
                    return
                version = buf[0][0] >> 4
                if (version == 4 or version == 6) and size <= mtu:  # noqa: PLR1714 (cheaper than a set)
                    counters.tx_packets += 1
                    counters.tx_bytes += size
                    commit(name, head4 if version == 4 else head6, size, dest)
                    if mm.full:
                        self._flush(mm)
                    continue
                # Not the common case (a drop, counted there): what was batched leaves first.
                packet = bytes(buf[0][:size])
                if mm.pending:
                    self._flush(mm)
                self._handle(dataplane.encapsulate_fast(name, packet))
        finally:
            if mm.pending:
                self._flush(mm)

    def _tun_unreadable(self, fd: int, name: str, exc: OSError) -> None:
        # The device was deleted under us (EBADFD) or similar: stop
        # listening to it rather than spin on a permanently ready fd.
        self.dataplane.counters[name].drop(TUN_READ_ERROR)
        log.error("TUN %s unreadable (%s); no longer encapsulating from it", name, exc.strerror)
        self._forget_fd(fd)

    def _read_ipv4_batched(self, mm: MmsgIO) -> None:
        # The hot loop of a forwarding node: locals only, IPv4 underlay sends batched.
        receive, egress4, handle = self.dataplane.receive_ipv4_fast, self._egress4, self._handle
        queue, tun_fd, write = mm.queue, self._tun_fd, os.write
        for _ in range(max(1, BATCH // mm.batch)):
            try:
                packets = mm.recv()
            except OSError as exc:
                log.warning("raw IPv4 GRE socket: %s", exc)
                return
            for packet in packets:
                result = receive(packet)
                if isinstance(result, tuple):
                    kind, name, data = result
                    if kind == TO_UNDERLAY:
                        if (egress := egress4.get(name)) is not None:
                            try:
                                queue(name, egress[0], data, egress[1])
                            except OSError as exc:
                                self._underlay_failed(result, exc)
                            continue
                    elif (fd := tun_fd.get(name)) is not None:
                        # Into the TUN, for the kernel to route (no forwarder hook): written
                        # at once, since the TUN and the underlay batch are independent outputs.
                        try:
                            write(fd, data)
                        except OSError as exc:
                            self._tun_failed(name, data, exc)
                        continue
                # Whatever is not batched leaves after what was, as it arrived.
                if mm.pending:
                    self._flush(mm)
                handle(result)
            if mm.pending:
                self._flush(mm)
            if len(packets) < mm.batch:
                return

    def _flush(self, mm: MmsgIO) -> None:
        for name, data, exc in mm.flush():
            self._underlay_failed((TO_UNDERLAY, name, data), exc)

    def _read_ipv4(self, sock: socket.socket) -> None:
        if self._mmsg is not None:
            self._read_ipv4_batched(self._mmsg)
            return
        # The hot loop of a forwarding node: locals only, and the IPv4 underlay send inline.
        recv, sendto = sock.recv, sock.sendto
        receive, egress4, handle = self.dataplane.receive_ipv4_fast, self._egress4, self._handle
        for _ in range(BATCH):
            try:
                packet = recv(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("raw IPv4 GRE socket: %s", exc)
                return
            result = receive(packet)
            if isinstance(result, tuple):
                kind, name, data = result
                if kind == TO_UNDERLAY and (egress := egress4.get(name)) is not None:
                    try:
                        sendto(egress[0] + data, egress[1])
                    except OSError as exc:
                        self._underlay_failed(result, exc)
                    continue
            handle(result)

    def _read_ipv6(self, sock: socket.socket) -> None:
        for _ in range(BATCH):
            try:
                data, ancdata, _flags, addr = sock.recvmsg(RECV_SIZE, socket.CMSG_SPACE(20))
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("raw IPv6 GRE socket: %s", exc)
                return
            local = None
            for level, kind, value in ancdata:
                if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(value) >= 16:
                    local = value[:16]
            if local is None:
                self.dataplane.unmatched.drop("no-pktinfo")
                continue
            remote = socket.inet_pton(socket.AF_INET6, addr[0].split("%", 1)[0])
            self._handle(self.dataplane.receive_fast(local, remote, data))

    def _forget_fd(self, fd: int) -> None:
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
        if self._loop is not None:
            self._loop.remove_reader(fd)

    def _handle(self, result: Fast | list[Action]) -> None:
        """Carry out what a fast entry point of the dataplane returned."""
        if not isinstance(result, tuple):
            self._execute(result)
            return
        kind, name, data = result
        if kind == TO_UNDERLAY:
            egress = self._egress4.get(name)
            if egress is not None:
                try:
                    self._sock[4].sendto(egress[0] + data, egress[1])
                except OSError as exc:
                    self._underlay_failed(result, exc)
                return
        elif (fd := self._tun_fd.get(name)) is not None:
            try:
                os.write(fd, data)
            except OSError as exc:
                self._tun_failed(name, data, exc)
            return
        self._execute([self.dataplane.action_for(result)])

    def _underlay_failed(self, result: Fast, exc: OSError) -> None:
        action = self.dataplane.action_for(result)
        assert isinstance(action, SendUnderlay)
        self._send_failed(action, exc)

    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendUnderlay):
                self._send_underlay(action)
            elif isinstance(action, WriteTun):
                self._write_tun(action)
            else:
                self._emit(action)

    def _send_underlay(self, action: SendUnderlay) -> None:
        try:
            egress = self._egress4.get(action.tunnel)
            if egress is not None:
                self._sock[4].sendto(egress[0] + action.datagram, egress[1])
            else:
                cmsg = [
                    (socket.IPPROTO_IPV6, IPV6_PKTINFO, action.local.packed + b"\x00\x00\x00\x00"),
                    (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, struct.pack("@i", action.ttl)),
                ]
                self._sock[6].sendmsg([action.datagram], cmsg, 0, (str(action.remote), 0))
        except OSError as exc:
            self._send_failed(action, exc)

    def _send_failed(self, action: SendUnderlay, exc: OSError) -> None:
        # ENOBUFS, EHOSTUNREACH, EMSGSIZE...: a lost packet, not a reason to stop.
        self.dataplane.failed(action, UNDERLAY_SEND_ERROR)
        self._errlog(f"send:{action.tunnel}:{exc.errno}", "tunnel %s: underlay send to %s failed: %s",
                     action.tunnel, action.remote, exc.strerror or exc)

    def _write_tun(self, action: WriteTun) -> None:
        fd = self._tun_fd.get(action.tunnel)
        try:
            if fd is None:
                raise OSError(errno.EBADF, "TUN is closed")
            os.write(fd, action.packet)
        except OSError as exc:
            self._tun_failed(action.tunnel, action.packet, exc)

    def _tun_failed(self, name: str, packet: bytes, exc: OSError) -> None:
        # EIO: the TUN is down; EBADFD: it was deleted.  Count, log, go on.
        self.dataplane.failed(WriteTun(name, packet), TUN_WRITE_ERROR)
        self._errlog(f"tun:{name}:{exc.errno}", "tunnel %s: writing into the TUN failed: %s",
                     name, exc.strerror or exc)

    def _emit(self, event: Event) -> None:
        """A hook's event to the node: through the hand-off when threaded, else directly."""
        sink = self._events
        counters = self.dataplane.unmatched
        if isinstance(event, Local):
            counters = self.dataplane.counters.get(event.tunnel, counters)
        if sink is None:
            if isinstance(event, Local):
                counters.drop(NO_LOCAL_HANDLER)
            return
        handoff = self.handoff
        if handoff is not None:
            # Threaded: the node lives on the event loop; never wait for it.
            if not handoff.offer(sink, event):
                counters.drop(LOCAL_QUEUE_FULL if isinstance(event, Local) else ICMP_QUEUE_FULL)
            return
        try:
            sink(event)
        except Exception:
            log.exception("the node's event handler failed on %s", type(event).__name__)
            counters.drop("local-handler-error")


def _batch_io(fd: int, egress4: dict[str, Any], tunnels: dict[str, TunnelConfig]) -> MmsgIO | None:
    """An MmsgIO for the raw IPv4 socket, or None where libc lacks recvmmsg/sendmmsg."""
    # An outer packet never exceeds its tunnel's underlay MTU: the dataplane refuses bigger inners.
    # One byte more, so that a packet read from a TUN into a slot is seen to be too big.
    tx_slot = max((tunnels[name].underlay_mtu for name in egress4), default=1500) + 1
    try:
        return MmsgIO(fd, tx_slot=tx_slot)
    except (AttributeError, OSError) as exc:
        log.info("no recvmmsg/sendmmsg (%s): one syscall per packet", exc)
        return None
