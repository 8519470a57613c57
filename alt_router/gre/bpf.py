"""The bpf(2) system call and tc attachment for ``bpf_gre``'s programs (edge).

Only what the GRE programs need: an array map for their counters, ``BPF_PROG_LOAD`` with the
verifier's log on failure, ``BPF_PROG_TEST_RUN`` (tests run the programs on packets without a
network), and clsact filters through pyroute2.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

SYS_BPF: Final = 321  # x86_64; other architectures get an OSError at load time and stay userspace
MAP_CREATE, MAP_LOOKUP_ELEM, PROG_LOAD, PROG_TEST_RUN = 0, 1, 5, 10
MAP_TYPE_ARRAY: Final = 2
PROG_TYPE_SCHED_CLS: Final = 3
ATTR_SIZE: Final = 144
LOG_SIZE: Final = 1 << 20

TC_H_CLSACT_INGRESS: Final = "ffff:fff2"
TC_H_CLSACT_EGRESS: Final = "ffff:fff3"
ETH_P_ALL: Final = 0x0003
ETH_P_IP: Final = 0x0800

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """The kernel refused a map, a program (with the verifier's log) or an attachment."""


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    ret = _libc.syscall(ctypes.c_long(SYS_BPF), ctypes.c_int(cmd), attr, ctypes.c_uint(ATTR_SIZE))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"bpf({cmd}): {os.strerror(err)}")
    return int(ret)


def _attr(fmt: str, *values: Any) -> ctypes.Array[ctypes.c_char]:
    buf = ctypes.create_string_buffer(ATTR_SIZE)
    struct.pack_into(fmt, buf, 0, *values)
    return buf


def _addr(buf: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(buf)


def create_array(value_size: int, entries: int, name: bytes = b"alt_gre") -> int:
    """An array map; the caller closes the fd."""
    attr = _attr("<IIIII", MAP_TYPE_ARRAY, 4, value_size, entries, 0)
    struct.pack_into("16s", attr, 28, name[:15])
    return _bpf(MAP_CREATE, attr)


def lookup(map_fd: int, key: int, value_size: int) -> bytes:
    k = ctypes.create_string_buffer(struct.pack("<I", key), 4)
    v = ctypes.create_string_buffer(value_size)
    _bpf(MAP_LOOKUP_ELEM, _attr("<IIQQQ", map_fd, 0, _addr(k), _addr(v), 0))
    return v.raw


def prog_name(name: str) -> bytes:
    """The kernel takes only letters, digits, '_' and '.' in a program name (15 at most)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", name).encode()[:15]


def load_sched_cls(code: bytes, name: str) -> int:
    """Load a tc program; a verifier refusal raises ``BpfError`` with the end of its log."""
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(b"GPL")  # bpf_redirect_neigh is a GPL-only helper
    log = ctypes.create_string_buffer(LOG_SIZE)
    attr = _attr("<IIQQIIQII16s", PROG_TYPE_SCHED_CLS, len(code) // 8, _addr(insns), _addr(lic), 0, 0, 0,
                 0, 0, prog_name(name))
    try:
        return _bpf(PROG_LOAD, attr)
    except BpfError:
        pass
    # Again with the verifier's log: only a refused program pays for it.
    attr = _attr("<IIQQIIQII16s", PROG_TYPE_SCHED_CLS, len(code) // 8, _addr(insns), _addr(lic), 1,
                 LOG_SIZE, _addr(log), 0, 0, prog_name(name))
    try:
        return _bpf(PROG_LOAD, attr)
    except BpfError as exc:
        text = log.value.decode(errors="replace").strip().splitlines()
        said = " | ".join(text[-6:]) if text else "(no verifier log: refused before verification)"
        raise BpfError(exc.errno, f"the kernel refused BPF program {name}: {exc.strerror}; verifier: "
                       + said) from None


def probe() -> tuple[bool, str]:
    """Can this process load tc programs (root or CAP_BPF, a kernel with BPF and cls_bpf)?"""
    trivial = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)  # r0 = 0; exit
    try:
        map_fd = create_array(8, 1, b"alt_probe")
        os.close(map_fd)
        os.close(load_sched_cls(trivial, "alt_probe"))
    except OSError as exc:
        return False, f"the kernel refused a tc-BPF program: {exc}"
    return True, "tc-BPF programs load"


@dataclass(frozen=True, slots=True)
class TestRun:
    retval: int
    data: bytes


def test_run(prog_fd: int, packet: bytes, out_size: int = 2048) -> TestRun:
    """Run a loaded tc program on ``packet`` (``BPF_PROG_TEST_RUN``): its verdict and the packet after."""
    data_in = ctypes.create_string_buffer(packet, len(packet))
    data_out = ctypes.create_string_buffer(out_size)
    attr = _attr("<IIIIQQII", prog_fd, 0, len(packet), out_size, _addr(data_in), _addr(data_out), 1, 0)
    _bpf(PROG_TEST_RUN, attr)
    retval, = struct.unpack_from("<I", attr, 4)
    size, = struct.unpack_from("<I", attr, 12)
    return TestRun(ctypes.c_int32(retval).value, data_out.raw[:size])


@contextmanager
def closing_fd(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


# --- tc ---------------------------------------------------------------------------------------------

def _tc_error(exc: Exception, what: str) -> BpfError:
    """pyroute2's NetlinkError (its ``code`` is the errno) as this layer's error."""
    return BpfError(getattr(exc, "code", errno.EIO), f"{what}: {exc}")


def ensure_clsact(ipr: Any, ifindex: int) -> None:
    """Add the clsact qdisc unless the device has it already (another tunnel on the same underlay)."""
    try:
        ipr.tc("add", "clsact", ifindex)
    except Exception as exc:  # pyroute2's NetlinkError; EEXIST means it is there
        if getattr(exc, "code", None) != errno.EEXIST:
            raise _tc_error(exc, f"tc clsact on ifindex {ifindex}") from exc


def attach(ipr: Any, ifindex: int, prog_fd: int, *, ingress: bool, prio: int, name: str,
           ip_only: bool) -> None:
    """A direct-action bpf filter at ``prio`` (the tunnel's own, so it can be removed alone)."""
    try:
        ipr.tc("add-filter", "bpf", ifindex, prio << 16 | 1, fd=prog_fd, name=name,
               parent=TC_H_CLSACT_INGRESS if ingress else TC_H_CLSACT_EGRESS, classid=1,
               direct_action=True, prio=prio, protocol=ETH_P_IP if ip_only else ETH_P_ALL)
    except Exception as exc:
        raise _tc_error(exc, f"tc filter {name} on ifindex {ifindex}") from exc


def detach(ipr: Any, ifindex: int, *, ingress: bool, prio: int, ip_only: bool) -> None:
    """Remove the filter ``attach`` added; a device that is gone has nothing to remove."""
    try:
        ipr.tc("del-filter", "bpf", ifindex, prio << 16 | 1,
               parent=TC_H_CLSACT_INGRESS if ingress else TC_H_CLSACT_EGRESS, prio=prio,
               protocol=ETH_P_IP if ip_only else ETH_P_ALL)
    except Exception as exc:
        if getattr(exc, "code", None) not in {errno.ENODEV, errno.ENOENT, errno.EINVAL}:
            raise _tc_error(exc, f"tc filter del on ifindex {ifindex}") from exc


def filters(ipr: Any, ifindex: int, *, ingress: bool) -> list[dict[str, Any]]:
    """The bpf filters on a device's clsact hook: their priority and program name."""
    try:
        msgs = ipr.get_filters(index=ifindex, parent=TC_H_CLSACT_INGRESS if ingress else TC_H_CLSACT_EGRESS)
    except Exception as exc:
        raise _tc_error(exc, f"tc filter show on ifindex {ifindex}") from exc
    out: list[dict[str, Any]] = []
    for msg in msgs:
        if msg.get_attr("TCA_KIND") != "bpf":
            continue
        opts = msg.get_attr("TCA_OPTIONS")
        name = opts.get_attr("TCA_BPF_NAME") if opts is not None else None
        if name is not None:  # the chain head (no handle) has no options
            out.append({"prio": msg["info"] >> 16, "name": name})
    return out
