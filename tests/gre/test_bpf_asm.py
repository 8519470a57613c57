"""The eBPF assembler: encodings from the kernel's instruction-set document, jumps, errors."""

from __future__ import annotations

import pytest

from alt_router.gre.bpf_asm import ADD, JEQ, BpfAsmError, Program, wire16, wire32


def test_encodings_match_the_instruction_set() -> None:
    # Documentation/bpf/standardization/instruction-set.rst: opcode, dst | src << 4, off (le16), imm (le32).
    p = Program()
    p.mov_imm(0, 0)        # BPF_ALU64 | BPF_MOV | BPF_K = 0xb7
    p.mov(6, 1)            # BPF_ALU64 | BPF_MOV | BPF_X = 0xbf, src 1, dst 6
    p.load(4, 2, 6, 76)    # BPF_LDX | BPF_MEM | BPF_W = 0x61
    p.store_imm(2, 2, 6, 0x40)  # BPF_ST | BPF_MEM | BPF_H = 0x6a
    p.atomic_add(8, 0, 8, 1)    # BPF_STX | BPF_ATOMIC | BPF_DW = 0xdb, imm BPF_ADD
    p.to_be(8, 16)         # BPF_ALU | BPF_END | BPF_TO_BE = 0xdc
    p.call(23)             # BPF_JMP | BPF_CALL = 0x85
    p.exit()               # BPF_JMP | BPF_EXIT = 0x95
    assert p.assemble().hex(" ", 8).split() == [
        "b700000000000000", "bf16000000000000", "61624c0000000000", "6a02060040000000",
        "db10080000000000", "dc08000010000000", "8500000017000000", "9500000000000000",
    ]


def test_jumps_count_slots_and_a_64_bit_immediate_takes_two() -> None:
    p = Program()
    p.jump_imm(JEQ, 1, 5, "out")   # JMP32 | JEQ | K = 0x16
    p.load_map_fd(1, 3)            # two slots, src = BPF_PSEUDO_MAP_FD
    p.alu_imm(ADD, 1, 1)
    p.label("out")
    p.exit()
    code = p.assemble()
    assert len(code) == 5 * 8 and len(p) == 5
    assert code[:8].hex() == "1601030005000000"  # off 3: over the two halves of the load and the add
    assert code[8:16].hex() == "1811000003000000" and code[16:24] == bytes(8)


def test_immediates_above_2_31_are_encoded_as_their_32_bits() -> None:
    p = Program()
    p.jump_imm(JEQ, 5, wire32(0xC0000201), "x")  # 192.0.2.1 as a little-endian load sees it
    p.label("x")
    p.exit()
    assert p.assemble()[4:8] == bytes([192, 0, 2, 1])
    assert wire16(0x0800) == 0x0008


@pytest.mark.parametrize("build", [
    lambda p: p.jump("nowhere"),
    lambda p: p.mov_imm(0, 2**32),
    lambda p: p.load(4, 0, 1, 2**15),
])
def test_what_cannot_be_encoded_is_refused(build: object) -> None:
    p = Program()
    with pytest.raises(BpfAsmError):
        build(p)  # type: ignore[operator]
        p.assemble()


def test_a_label_defined_twice_is_refused() -> None:
    p = Program()
    p.label("a")
    with pytest.raises(BpfAsmError, match="twice"):
        p.label("a")
