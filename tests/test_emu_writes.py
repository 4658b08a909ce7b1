"""The emulator's native write tracker (emulation/writes/writes.c via smmemu.writes): emulated
stores mark their pages (a store across a page's end both), host writes are noted, clear()
forgets, and stores outside the range are not counted."""

from __future__ import annotations

import pytest
from test_emu_common import ensure_built
from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_ALL, Uc
from unicorn.x86_const import UC_X86_REG_RAX

from smmemu.writes import WriteTracker

CODE = 0x10000
MOV_TO_ABS = bytes.fromhex("48890425")  # mov [disp32], rax


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    ensure_built()


def _run_stores(uc: Uc, *addresses: int) -> None:
    code = b"".join(MOV_TO_ABS + a.to_bytes(4, "little") for a in addresses)
    uc.mem_write(CODE, code)
    uc.reg_write(UC_X86_REG_RAX, 0x1122334455667788)
    uc.emu_start(CODE, CODE + len(code))


def test_stores_mark_their_pages_and_host_writes_are_noted() -> None:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(CODE, 0x1000, UC_PROT_ALL)
    uc.mem_map(0x20000, 0x8000, UC_PROT_ALL)
    tracker = WriteTracker(uc, 0x21000, 0x25000)  # pages 0x21000..0x24000
    _run_stores(uc, 0x21FFC, 0x23010, 0x20FF8, 0x26000)
    # across 0x21fff/0x22000: both; below the range's start by 8 and into it: not (it ends at
    # 0x21000 exactly, before the range); past the range's end: not
    assert tracker.pages() == [0x21000, 0x22000, 0x23000]
    assert tracker.stores >= 2
    tracker.clear()
    assert tracker.pages() == []
    _run_stores(uc, 0x20FFC)  # starts before the range, its last 4 bytes inside
    assert tracker.pages() == [0x21000]
    tracker.note(0x24FF0, 0x100)  # a host write running past the range's end
    assert tracker.pages() == [0x21000, 0x24000]
    tracker.close()
    tracker.clear()
    _run_stores(uc, 0x22000)
    assert tracker.pages() == []  # closed: no hook any more


def test_a_range_that_is_not_whole_pages_is_refused() -> None:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    with pytest.raises(ValueError, match="not whole pages"):
        WriteTracker(uc, 0x1000, 0x1800)
