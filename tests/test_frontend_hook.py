"""The native UC_HOOK_BLOCK callback on Unicorn: exact counts on a tiny hand-assembled guest."""

from __future__ import annotations

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc

from codeisland.frontend import FrontendParams
from codeisland.frontend.fetchtrace import FetchModel, library_path

pytestmark = pytest.mark.skipif(
    not library_path().is_file(), reason="make -C emulation/native has not been run"
)

BASE = 0x100000
#   f:  mov ecx, N        ; b9 imm32          (5)   island 0 at BASE
#   l:  call g            ; e8 rel32          (5)
#       dec ecx           ; ff c9             (2)
#       jnz l             ; 75 f7             (2)
#       hlt               ; f4
#   g:  (at BASE + 0x1000) add eax, 1 ; 83 c0 01 (3)  island 1
#       mov [rsp-16], eax ; 89 44 24 f0 (4)
#       ret               ; c3
N = 100


def guest() -> bytes:
    code = bytearray(0x2000)
    rel = (BASE + 0x1000) - (BASE + 10)
    f = bytes([0xB9]) + N.to_bytes(4, "little") + bytes([0xE8]) + rel.to_bytes(4, "little")
    f += bytes([0xFF, 0xC9, 0x75, 0xF7, 0xF4])
    code[: len(f)] = f
    code[0x1000:0x1008] = bytes([0x83, 0xC0, 0x01, 0x89, 0x44, 0x24, 0xF0, 0xC3])
    return bytes(code)


def run(data_accesses: bool) -> FetchModel:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(BASE, 0x2000)
    uc.mem_map(0x200000, 0x1000)
    uc.mem_write(BASE, guest())
    from unicorn.x86_const import UC_X86_REG_RSP

    uc.reg_write(UC_X86_REG_RSP, 0x200800)
    model = FetchModel(FrontendParams().native())
    model.set_ranges([BASE, BASE + 0x1000], [BASE + 15, BASE + 0x1008], [0, 1])
    model.attach(uc, data_accesses=data_accesses)
    uc.emu_start(BASE, BASE + 14)  # stop at hlt
    model.detach()
    return model


def test_block_counts_are_exact() -> None:
    c = run(data_accesses=False).island_counts(2)
    # island 0: first block (mov+call, 10 B), then N times "dec; jnz" (4 B) after each return,
    # and the last jnz falls through to hlt which is not executed (until = hlt)
    # blocks in island 0: 1 + N ; bytes: 10 + N*4 ... except the loop-back jnz lands on the call
    # at l (BASE+5) which is a block of its own: "call g" (5 B) for iterations 2..N
    assert c["blocks"][1] == N
    assert c["bytes"][1] == N * 8
    assert c["blocks"][0] == 1 + N + (N - 1)
    assert c["bytes"][0] == 10 + N * 4 + (N - 1) * 5


def test_data_accesses_attributed_to_island() -> None:
    c = run(data_accesses=True).island_counts(2)
    # island 1: the store and ret's stack read per call; island 0: call's return-address push
    assert c["mem_accesses"][1] == 2 * N
    assert c["mem_accesses"][0] == N


def test_fetch_model_misses_once_per_line_cold() -> None:
    t = run(data_accesses=False).totals()
    # two lines (BASE's line 0 and BASE+0x1000) and two 4 KiB pages, each missed once, then warm
    assert t["l1i_misses"] == 2
    assert t["itlb4k_misses"] == 2
