"""The tc-BPF GRE fast path of a userspace engine's tunnels (tunnel mode "bpf"), edge side.

For each tunnel the programs of ``bpf_gre`` cover, the decapsulation program goes on the underlay
device that reaches the tunnel's remote (clsact ingress) and the encapsulation program on the TUN
device (clsact egress). Everything they pass on reaches the engine as before, so the engine stays
the one place for GRE options, malformed packets and their counters; a tunnel the programs do not
cover, or cannot be attached, stays on the engine alone, and the reason is logged and kept.

The underlay device is the one the routing table gives for the remote when the tunnel comes up.
If that route later moves to another device, the decapsulated path still works through the
engine (the new device has no filter) and the encapsulation program keeps sending out of the old
device: re-add the tunnel (a reload that changes it) to follow the route.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final

from alt_router.gre import bpf, bpf_gre
from alt_router.gre.config import TunnelConfig

log = logging.getLogger(__name__)

MAP_ENTRIES: Final = 4096
# Filter priorities are per device; several engines (lab routers, a node) may share one underlay
# device, so each tunnel starts from its name's hash and steps on when that one is taken.
PRIO_BASE: Final = 0x1000
PRIO_SPAN: Final = 0x7000


@dataclass(slots=True)
class _Attached:
    index: int
    tun_ifindex: int
    underlay_ifindex: int
    underlay: str
    prio: int
    fds: tuple[int, int]


class BpfOffload:
    """Attach, count and detach the GRE programs of one engine's tunnels."""

    def __init__(self) -> None:
        self._map_fd = -1
        self._next_index = 0
        self._attached: dict[str, _Attached] = {}
        self.refused: dict[str, str] = {}  # tunnel -> why it stays on the engine alone

    def _map(self) -> int:
        if self._map_fd < 0:
            self._map_fd = bpf.create_array(bpf_gre.VALUE_SIZE, MAP_ENTRIES)
        return self._map_fd

    def add(self, ipr: Any, config: TunnelConfig, tun_ifindex: int) -> bool:
        """Attach ``config``'s programs; False (and the reason in ``refused``) if it stays userspace."""
        self.refused.pop(config.name, None)
        why = bpf_gre.offloadable(config)
        if why is None and self._next_index >= MAP_ENTRIES:
            why = f"all {MAP_ENTRIES} counter slots used since start"
        if why is None:
            try:
                self._attached[config.name] = self._attach(ipr, config, tun_ifindex)
                log.info("GRE %s: encapsulation and decapsulation in tc-BPF (underlay %s)", config.name,
                         self._attached[config.name].underlay)
                return True
            except (OSError, ValueError) as exc:
                why = str(exc)
        self.refused[config.name] = why
        log.warning("GRE %s: stays on the userspace engine alone: %s", config.name, why)
        return False

    def _attach(self, ipr: Any, config: TunnelConfig, tun_ifindex: int) -> _Attached:
        underlay_ifindex = _underlay(ipr, config)
        index = self._next_index
        progs = bpf_gre.programs(config, tun_ifindex=tun_ifindex, underlay_ifindex=underlay_ifindex,
                                 map_fd=self._map(), index=index)
        fds: list[int] = []
        done: list[tuple[int, bool]] = []
        prio = 0
        try:
            fds.append(bpf.load_sched_cls(progs.decap, f"{config.name[:9]}_dec"))
            fds.append(bpf.load_sched_cls(progs.encap, f"{config.name[:9]}_enc"))
            bpf.ensure_clsact(ipr, tun_ifindex)
            bpf.attach(ipr, tun_ifindex, fds[1], ingress=False, prio=1, name=f"{config.name}-encap",
                       ip_only=False)
            done.append((tun_ifindex, False))
            bpf.ensure_clsact(ipr, underlay_ifindex)
            _remove_stale(ipr, underlay_ifindex, f"{config.name}-decap")
            prio = _attach_free_prio(ipr, underlay_ifindex, fds[0], config.name)
            done.append((underlay_ifindex, True))
        except BaseException:
            for ifindex, ingress in done:
                bpf.detach(ipr, ifindex, ingress=ingress, prio=1 if not ingress else prio,
                           ip_only=ingress)
            for fd in fds:
                os.close(fd)
            raise
        self._next_index += 1
        name = _ifname(ipr, underlay_ifindex)
        return _Attached(index, tun_ifindex, underlay_ifindex, name, prio, (fds[0], fds[1]))

    def remove(self, ipr: Any, name: str) -> None:
        """Detach ``name``'s programs (call before its TUN goes: its egress filter goes with it)."""
        self.refused.pop(name, None)
        att = self._attached.pop(name, None)
        if att is None:
            return
        try:
            bpf.detach(ipr, att.underlay_ifindex, ingress=True, prio=att.prio, ip_only=True)
        except OSError as exc:
            log.warning("GRE %s: decapsulation filter on %s not removed: %s", name, att.underlay, exc)
        for fd in att.fds:
            os.close(fd)

    def close(self, ipr: Any) -> None:
        for name in list(self._attached):
            self.remove(ipr, name)
        if self._map_fd >= 0:
            os.close(self._map_fd)
            self._map_fd = -1

    def attached(self) -> list[str]:
        return list(self._attached)

    def counters(self, name: str) -> dict[str, int] | None:
        """The programs' counters for tunnel ``name`` (None if it is not offloaded)."""
        att = self._attached.get(name)
        if att is None or self._map_fd < 0:
            return None
        raw = bpf.lookup(self._map_fd, att.index, bpf_gre.VALUE_SIZE)
        return dict(zip(bpf_gre.COUNTERS, struct.unpack(f"<{len(bpf_gre.COUNTERS)}Q", raw), strict=True))

    def stats(self, name: str) -> dict[str, object]:
        counters = self.counters(name)
        if counters is not None:
            return {"offload": "tc-bpf", "underlay": self._attached[name].underlay, **counters}
        return {"offload": "none", "why": self.refused.get(name, "not attached")}


def _underlay(ipr: Any, config: TunnelConfig) -> int:
    try:
        routes = ipr.route("get", dst=str(config.remote))
    except Exception as exc:  # pyroute2's NetlinkError: no route to the remote yet
        raise bpf.BpfError(getattr(exc, "code", 0), f"no route to the remote {config.remote}: {exc}") from exc
    for route in routes:
        oif = route.get_attr("RTA_OIF")
        if oif:
            return int(oif)
    raise bpf.BpfError(0, f"the route to the remote {config.remote} names no device")


def _ifname(ipr: Any, ifindex: int) -> str:
    links = ipr.get_links(ifindex)
    return str(links[0].get_attr("IFLA_IFNAME")) if links else f"ifindex {ifindex}"


def _remove_stale(ipr: Any, ifindex: int, filter_name: str) -> None:
    """Remove a decapsulation filter an earlier run of this tunnel left (a SIGKILLed node).

    It would redirect the tunnel's packets into a TUN device that is gone, ahead of the new filter.
    Tunnel names are unique in a namespace (they are device names), so the name identifies it.
    """
    for msg in bpf.filters(ipr, ifindex, ingress=True):
        if msg.get("name") == filter_name:
            log.warning("GRE: removing a stale decapsulation filter %s (prio %d) from ifindex %d",
                        filter_name, msg["prio"], ifindex)
            bpf.detach(ipr, ifindex, ingress=True, prio=int(msg["prio"]), ip_only=True)


def _attach_free_prio(ipr: Any, ifindex: int, fd: int, name: str) -> int:
    start = zlib.crc32(name.encode()) % PRIO_SPAN
    for step in range(64):
        prio = PRIO_BASE + (start + step) % PRIO_SPAN
        try:
            bpf.attach(ipr, ifindex, fd, ingress=True, prio=prio, name=f"{name}-decap", ip_only=True)
            return prio
        except OSError as exc:
            if exc.errno != 17:  # EEXIST: another tunnel has this priority on the device
                raise
    raise bpf.BpfError(17, f"no free filter priority on ifindex {ifindex}")
