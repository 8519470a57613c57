"""A small eBPF assembler: just enough instructions for the GRE programs in ``bpf_gre``.

Why hand assembly: the GRE programs are a few dozen instructions, and a compiler toolchain (clang with
the BPF target) is not something an ALT node should need at run time. The kernel's verifier checks
every program at load time, so a mistake here is a load error, never a bad packet.

Encoding follows the kernel's ``struct bpf_insn`` (Documentation/bpf/standardization/instruction-set.rst):
8 bytes, ``code``, ``dst:4 | src:4``, signed 16-bit ``off``, signed 32-bit ``imm``, little endian on
the hosts this runs on.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from typing import Final

# Instruction classes, sizes, modes and operations (include/uapi/linux/bpf_common.h, bpf.h).
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
IMM, MEM, ATOMIC = 0x00, 0x60, 0xC0
K, X = 0x00, 0x08
ADD, SUB, OR, AND, LSH, RSH, XOR, MOV, END = 0x00, 0x10, 0x40, 0x50, 0x60, 0x70, 0xA0, 0xB0, 0xD0
TO_BE: Final = 0x08
JA, JEQ, JGT, JGE, JNE, JLT, CALL, EXIT = 0x00, 0x10, 0x20, 0x30, 0x50, 0xA0, 0x80, 0x90
PSEUDO_MAP_FD: Final = 1

SIZES: Final = {1: B, 2: H, 4: W, 8: DW}

if sys.byteorder != "little":  # pragma: no cover - every host this runs on is little endian
    raise ImportError("the eBPF assembler encodes little-endian instructions only")


class BpfAsmError(ValueError):
    """A program that cannot be encoded (an unknown label, an operand out of range)."""


@dataclass(frozen=True, slots=True)
class Insn:
    code: int
    dst: int = 0
    src: int = 0
    off: int | str = 0  # a label name until ``assemble`` resolves it
    imm: int = 0


class Program:
    """Instructions and labels; ``assemble`` resolves jumps and returns the bytes the kernel loads."""

    def __init__(self) -> None:
        self.insns: list[Insn] = []
        self.labels: dict[str, int] = {}

    # --- slots -------------------------------------------------------------------------------------

    def label(self, name: str) -> None:
        if name in self.labels:
            raise BpfAsmError(f"label {name!r} defined twice")
        self.labels[name] = self._slot()

    def _slot(self) -> int:
        # LD_IMM64 takes two slots; jump offsets count slots, not instructions.
        return sum(2 if i.code == LD | DW | IMM else 1 for i in self.insns)

    def _emit(self, insn: Insn) -> None:
        self.insns.append(insn)

    # --- instructions ------------------------------------------------------------------------------

    def mov(self, dst: int, src: int) -> None:
        self._emit(Insn(ALU64 | MOV | X, dst, src))

    def mov_imm(self, dst: int, imm: int) -> None:
        self._emit(Insn(ALU64 | MOV | K, dst, 0, 0, _s32(imm)))

    def alu_imm(self, op: int, dst: int, imm: int) -> None:
        self._emit(Insn(ALU64 | op | K, dst, 0, 0, _s32(imm)))

    def alu(self, op: int, dst: int, src: int) -> None:
        self._emit(Insn(ALU64 | op | X, dst, src))

    def to_be(self, dst: int, bits: int) -> None:
        """Byte-swap ``dst``'s low ``bits`` to network order (and zero the rest)."""
        self._emit(Insn(ALU | END | TO_BE, dst, 0, 0, bits))

    def load(self, size: int, dst: int, src: int, off: int) -> None:
        self._emit(Insn(LDX | MEM | SIZES[size], dst, src, _s16(off)))

    def store(self, size: int, dst: int, off: int, src: int) -> None:
        self._emit(Insn(STX | MEM | SIZES[size], dst, src, _s16(off)))

    def store_imm(self, size: int, dst: int, off: int, imm: int) -> None:
        self._emit(Insn(ST | MEM | SIZES[size], dst, 0, _s16(off), _s32(imm)))

    def atomic_add(self, size: int, dst: int, off: int, src: int) -> None:
        self._emit(Insn(STX | ATOMIC | SIZES[size], dst, src, _s16(off), ADD))

    def load_map_fd(self, dst: int, fd: int) -> None:
        self._emit(Insn(LD | DW | IMM, dst, PSEUDO_MAP_FD, 0, fd))

    def jump(self, label: str) -> None:
        self._emit(Insn(JMP | JA, 0, 0, label))

    def jump_imm(self, op: int, dst: int, imm: int, label: str, *, wide: bool = False) -> None:
        """Compare ``dst`` with ``imm``: the low 32 bits (JMP32), or all 64 with ``wide``."""
        self._emit(Insn((JMP if wide else JMP32) | op | K, dst, 0, label, _s32(imm)))

    def jump_reg(self, op: int, dst: int, src: int, label: str) -> None:
        self._emit(Insn(JMP | op | X, dst, src, label))

    def call(self, helper: int) -> None:
        self._emit(Insn(JMP | CALL, 0, 0, 0, helper))

    def exit(self) -> None:
        self._emit(Insn(JMP | EXIT))

    def ret(self, value: int) -> None:
        """Return ``value`` (a tc verdict) from the program."""
        self.mov_imm(0, value)
        self.exit()

    # --- output ------------------------------------------------------------------------------------

    def assemble(self) -> bytes:
        out = bytearray()
        slot = 0
        for insn in self.insns:
            off = insn.off
            if isinstance(off, str):
                if off not in self.labels:
                    raise BpfAsmError(f"jump to undefined label {off!r}")
                off = _s16(self.labels[off] - slot - 1)
            out += struct.pack("<BBhi", insn.code, (insn.src << 4) | insn.dst, off, insn.imm)
            slot += 1
            if insn.code == LD | DW | IMM:  # the second half of a 64-bit immediate (all zero here)
                out += struct.pack("<BBhi", 0, 0, 0, 0)
                slot += 1
        return bytes(out)

    def __len__(self) -> int:
        return self._slot()


def _s32(value: int) -> int:
    """A 32-bit immediate, given signed or unsigned (an IPv4 address is often above 2**31)."""
    if not -(2**31) <= value < 2**32:
        raise BpfAsmError(f"immediate {value} does not fit 32 bits")
    return value - 2**32 if value >= 2**31 else value


def _s16(value: int) -> int:
    if not -(2**15) <= value < 2**15:
        raise BpfAsmError(f"offset {value} does not fit 16 bits")
    return value


def wire16(value: int) -> int:
    """The value a little-endian 16-bit load of the network-order field ``value`` yields."""
    return int.from_bytes(value.to_bytes(2, "big"), "little")


def wire32(value: int) -> int:
    """The value a little-endian 32-bit load of the network-order field ``value`` yields."""
    return int.from_bytes(value.to_bytes(4, "big"), "little")
