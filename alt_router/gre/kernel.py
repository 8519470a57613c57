"""Kernel GRE: a ``gre`` or ``ip6gre`` link made over netlink, for hosts whose kernel has GRE.

``link_request`` is pure so the exact netlink request is unit-tested on hosts
(like the CI machines) whose kernel has no GRE module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import shutil
import subprocess
import sys
from collections.abc import Iterable
from typing import Any, Final

from pyroute2 import NetlinkError

from alt_router.gre.config import TunnelConfig, check_set
from alt_router.gre.userspace import configure_link, run_netlink

log = logging.getLogger(__name__)

# Linux's GRE_* flags (include/uapi/linux/if_tunnel.h) are big-endian 16-bit values.
GRE_CSUM: Final = 0x8000
GRE_KEY: Final = 0x2000
GRE_SEQ: Final = 0x1000


def gre_flags(config: TunnelConfig) -> int:
    flags = 0
    if config.checksum:
        flags |= GRE_CSUM
    if config.key is not None:
        flags |= GRE_KEY
    if config.sequence:
        flags |= GRE_SEQ
    return flags


def link_request(config: TunnelConfig, *, byteorder: str = sys.byteorder) -> dict[str, Any]:
    """The keyword arguments for ``IPRoute.link("add", ...)`` that create ``config``'s link.

    pyroute2 packs gre's IFLA_GRE_[IO]FLAGS big-endian itself but packs ip6gre's
    as a native uint16, so for ip6gre we hand it the bytes the kernel expects
    (network order) reinterpreted in host order.
    """
    flags = gre_flags(config)
    if config.family == 4:
        prefix, kind = "gre", "gre"
    else:
        prefix, kind = "ip6gre", "ip6gre"
        if byteorder == "little":
            flags = int.from_bytes(flags.to_bytes(2, "big"), "little")
    request: dict[str, Any] = {
        "ifname": config.name,
        "kind": kind,
        "mtu": config.mtu,
        f"{prefix}_local": str(config.local),
        f"{prefix}_remote": str(config.remote),
        f"{prefix}_ttl": config.ttl,
        f"{prefix}_iflags": flags,
        f"{prefix}_oflags": flags,
    }
    if config.key is not None:
        request[f"{prefix}_ikey"] = config.key
        request[f"{prefix}_okey"] = config.key
    return request


class KernelTunnels:
    """A set of kernel GRE links; counters come from the links' own statistics."""

    mode: Final = "kernel"

    def __init__(self, tunnels: Iterable[TunnelConfig]) -> None:
        self.tunnels = {t.name: t for t in check_set(tunnels)}
        self._made: list[str] = []
        self._selector: selectors.BaseSelector | None = None
        self._wake_r, self._wake_w = -1, -1

    def open(self) -> None:
        def create(ipr: Any) -> None:
            for config in self.tunnels.values():
                ipr.link("add", **link_request(config))
                self._made.append(config.name)
                configure_link(ipr, config)

        try:
            run_netlink(create)
        except BaseException:
            self.close()
            raise
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)

    def close(self) -> None:
        def delete(ipr: Any) -> None:
            for name in self._made:
                try:
                    for index in ipr.link_lookup(ifname=name):
                        ipr.link("del", index=index)
                except NetlinkError as exc:
                    log.error("could not delete GRE link %s: %s", name, exc)

        if self._made:
            run_netlink(delete)
            self._made.clear()
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r, self._wake_w = -1, -1

    def poll(self, timeout: float | None) -> None:
        """Nothing to forward ourselves: just wait for ``stop`` or the timeout."""
        if self._selector is not None:
            for _ in self._selector.select(timeout):
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass

    def stop(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"x")

    def stats(self) -> dict[str, object]:
        return {"tunnels": run_netlink(self._link_stats), "unmatched": {}}

    def _link_stats(self, ipr: Any) -> dict[str, object]:
        tunnels: dict[str, object] = {}
        for name in self.tunnels:
            found = ipr.link_lookup(ifname=name)
            if not found:
                tunnels[name] = {"error": "link missing"}
                continue
            s = ipr.get_links(found[0])[0].get_attr("IFLA_STATS64") or {}
            tunnels[name] = {
                "rx_packets": s.get("rx_packets", 0), "rx_bytes": s.get("rx_bytes", 0),
                "tx_packets": s.get("tx_packets", 0), "tx_bytes": s.get("tx_bytes", 0),
                "drops": {
                    f"kernel-{key.replace('_', '-')}": s.get(key, 0)
                    for key in ("rx_errors", "rx_dropped", "tx_errors", "tx_dropped")
                },
            }
        return tunnels


def probe_kernel_gre(family: int = 4) -> tuple[bool, str]:
    """Can this kernel make GRE links?  Tried in a throwaway namespace, so nothing here changes.

    ``unshare --net`` gives the namespace a life of one command: no name to clean up, and no
    pyroute2 ``NetNS`` helper process (a forked child whose clean-up was seen to SIGTERM the
    calling process when the probe ran from a thread beside an asyncio loop).
    """
    kind = "gre" if family == 4 else "ip6gre"
    local, remote = ("192.0.2.1", "192.0.2.2") if family == 4 else ("2001:db8::1", "2001:db8::2")
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return False, f"cannot probe for {kind}: unshare(1) or ip(8) is missing"
    try:
        done = subprocess.run([unshare, "--net", ip, "link", "add", "probe0", "type", kind, "local", local,
                               "remote", remote], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot probe for {kind}: {exc}"
    if done.returncode == 0:
        return True, f"the kernel created a {kind} link"
    said = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
    return False, f"the kernel refused a {kind} link: {said}"
