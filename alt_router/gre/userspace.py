"""Userspace GRE: TUN devices plus one raw protocol-47 socket per address family.

This is the edge around :class:`alt_router.gre.dataplane.Dataplane`; it owns
the file descriptors and netlink calls and nothing else.  The same
``_on_readable`` core runs under a selectors loop (``run_forever``, ``start``)
or inside an asyncio loop (``attach``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import selectors
import socket
import struct
import threading
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
    CallLocal,
    Dataplane,
    Fast,
    FastHook,
    InnerHook,
    SendUnderlay,
    WriteTun,
)
from alt_router.inet import PROTO_GRE, ipv4_header

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
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            with IPRoute() as ipr:
                result.append(work(ipr))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="gre-netlink")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class _RateLimitedLog:
    """Log the first few errors of a kind and then every 1000th, so a dead TUN cannot flood the log."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def __call__(self, key: str, msg: str, *args: object) -> None:
        n = self.seen.get(key, 0) + 1
        self.seen[key] = n
        if n <= 3 or n % 1000 == 0:
            log.error(msg + " (occurrence %d)", *args, n)


class Engine:
    """Serve several GRE tunnels from one process in userspace."""

    mode: Final = "userspace"

    def __init__(
        self,
        tunnels: Iterable[TunnelConfig],
        hook: InnerHook | None = None,
        fast_hook: FastHook | None = None,
    ) -> None:
        self.dataplane = Dataplane(tunnels, hook, fast_hook)
        self._tun_fd: dict[str, int] = {}
        self._fd_tunnel: dict[int, str] = {}
        self._sock: dict[int, socket.socket] = {}
        self._selector: selectors.BaseSelector | None = None
        self._wake_r, self._wake_w = -1, -1
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._errlog = _RateLimitedLog()
        # With IP_HDRINCL Linux always fills in total length and checksum (and the ID
        # when zero), so the outer IPv4 header is a per-tunnel constant.
        # One lookup per packet on the fast path: tunnel -> (outer header, socket address).
        self._egress4: dict[str, tuple[bytes, tuple[str, int]]] = {
            t.name: (ipv4_header(t.local, t.remote, PROTO_GRE, 0, ttl=t.ttl), (str(t.remote), 0))
            for t in self.dataplane.tunnels.values()
            if isinstance(t.local, IPv4Address) and isinstance(t.remote, IPv4Address)
        }

    # -- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        """Create every TUN device and the raw sockets; on any failure undo what was made."""
        try:
            for config in self.dataplane.tunnels.values():
                fd = open_tun(config.name)
                self._tun_fd[config.name] = fd
                self._fd_tunnel[fd] = config.name
            run_netlink(lambda ipr: [configure_link(ipr, c) for c in self.dataplane.tunnels.values()])
            for version in {t.family for t in self.dataplane.tunnels.values()}:
                family = socket.AF_INET if version == 4 else socket.AF_INET6
                self._sock[version] = _raw_socket(family)
        except BaseException:
            self.close()
            raise
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        log.info("userspace GRE up: %s", ", ".join(
            f"{t.name} {t.local}->{t.remote} key={t.key} mtu={t.mtu}"
            for t in self.dataplane.tunnels.values()
        ))

    def close(self) -> None:
        """Release everything; closing a TUN fd deletes its device."""
        self.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self._loop is not None:
            self.detach()
        for fd in list(self._tun_fd.values()):
            os.close(fd)
        self._tun_fd.clear()
        self._fd_tunnel.clear()
        for sock in self._sock.values():
            sock.close()
        self._sock.clear()
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
        while not self._stopping.is_set():
            self.poll(None)

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run_forever, name="gre-engine", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Make ``run_forever`` return; safe from a signal handler or another thread."""
        self._stopping.set()
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"x")

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

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
        """Inject an inner packet into a tunnel (as if routed into its TUN)."""
        self._handle(self.dataplane.encapsulate_fast(tunnel_name, inner_packet))

    def stats(self) -> dict[str, object]:
        return self.dataplane.stats()

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
        read, encapsulate, handle = os.read, self.dataplane.encapsulate_fast, self._handle
        for _ in range(BATCH):
            try:
                packet = read(fd, RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                # The device was deleted under us (EBADFD) or similar: stop
                # listening to it rather than spin on a permanently ready fd.
                self.dataplane.counters[name].drop(TUN_READ_ERROR)
                log.error("TUN %s unreadable (%s); no longer encapsulating from it", name, exc.strerror)
                self._forget_fd(fd)
                return
            if not packet:
                return
            handle(encapsulate(name, packet))

    def _read_ipv4(self, sock: socket.socket) -> None:
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
                self._call_local(action)

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
            # EIO: the TUN is down; EBADFD: it was deleted.  Count, log, go on.
            self.dataplane.failed(action, TUN_WRITE_ERROR)
            self._errlog(f"tun:{action.tunnel}:{exc.errno}", "tunnel %s: writing into the TUN failed: %s",
                         action.tunnel, exc.strerror or exc)

    def _call_local(self, action: CallLocal) -> None:
        try:
            action.callback(action.tunnel, action.packet)
        except Exception:
            log.exception("local handler for tunnel %s failed", action.tunnel)
            self.dataplane.counters[action.tunnel].drop("local-handler-error")


LocalHandler = Callable[[str, bytes], None]
