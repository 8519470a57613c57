"""What callers use: open a set of tunnels in kernel or userspace mode behind one interface."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial
from typing import Protocol

from alt_router.gre.bpf import probe as probe_bpf
from alt_router.gre.config import MODES, TunnelConfig, check_set
from alt_router.gre.dataplane import FastHook, InnerHook
from alt_router.gre.kernel import KernelTunnels, probe_kernel_gre
from alt_router.gre.offload import BpfOffload
from alt_router.gre.userspace import Engine, EventSink, off_loop

log = logging.getLogger(__name__)


class Tunnels(Protocol):
    """Running tunnels.  ``poll`` does the work (userspace) or just waits (kernel)."""

    @property
    def mode(self) -> str: ...

    def open(self) -> None: ...
    def close(self) -> None: ...
    def poll(self, timeout: float | None) -> None: ...
    def stop(self) -> None: ...
    def stats(self) -> dict[str, object]: ...


class ModeError(ValueError):
    """The requested tunnel mode cannot be honoured."""


def choose_mode(
    requested: str, *, kernel_ok: bool, kernel_why: str, needs_userspace: bool,
    bpf_ok: bool = False, bpf_why: str = "not probed",
) -> tuple[str, str]:
    """Pick "kernel", "bpf" or "userspace" and say why (for the log).

    "bpf" is the userspace engine with tc-BPF programs doing the GRE work in the kernel; like
    kernel GRE it hands every inner packet to the kernel, so an inner-packet hook rules both out.
    """
    if requested not in MODES:
        raise ModeError(f"mode {requested!r} is not one of {', '.join(MODES)}")
    if requested == "userspace":
        return "userspace", "userspace mode requested"
    if needs_userspace:
        if requested in {"kernel", "bpf"}:
            raise ModeError(f"an inner-packet hook needs the userspace data path, not {requested} GRE")
        return "userspace", "an inner-packet hook needs the userspace data path"
    if requested == "kernel":
        if not kernel_ok:
            raise ModeError(f"kernel mode requested but {kernel_why}")
        return "kernel", "kernel mode requested"
    if requested == "bpf":
        if not bpf_ok:
            raise ModeError(f"bpf mode requested but {bpf_why}")
        return "bpf", "bpf mode requested"
    if kernel_ok:
        return "kernel", f"auto: {kernel_why}"
    if bpf_ok:
        return "bpf", f"auto: {kernel_why}; {bpf_why}"
    return "userspace", f"auto: falling back to userspace because {kernel_why} and {bpf_why}"


def make_tunnels(
    configs: Iterable[TunnelConfig], mode: str = "auto", hook: InnerHook | None = None,
    *, fast_hook: FastHook | None = None, events: EventSink | None = None,
) -> Tunnels:
    """Build (not yet open) the tunnels in the mode ``mode`` resolves to, logging the choice.

    A userspace engine gets ``hook``, ``fast_hook`` and ``events`` (``Engine``) here, once.
    """
    tunnels = check_set(configs)
    kernel_ok, why = True, "not probed"
    if mode in {"auto", "kernel"} and hook is None:
        for family in sorted({t.family for t in tunnels}):
            kernel_ok, why = off_loop(partial(probe_kernel_gre, family))
            if not kernel_ok:
                break
    bpf_ok, bpf_why = False, "not probed"
    if mode in {"auto", "bpf"} and hook is None and fast_hook is None and not (mode == "auto" and kernel_ok):
        bpf_ok, bpf_why = probe_bpf()
    chosen, reason = choose_mode(mode, kernel_ok=kernel_ok, kernel_why=why,
                                 needs_userspace=hook is not None or fast_hook is not None,
                                 bpf_ok=bpf_ok, bpf_why=bpf_why)
    # A fallback is worth a warning: the operator asked for something better.
    log.log(logging.WARNING if "falling back" in reason else logging.INFO, "GRE tunnel mode: %s (%s)",
            chosen, reason)
    if chosen == "kernel":
        return KernelTunnels(tunnels)
    return Engine(tunnels, hook, fast_hook, events=events,
                  offload=BpfOffload() if chosen == "bpf" else None)
