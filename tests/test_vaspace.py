"""The host's page walk (hw.vaspace) over page tables built in a fake physical memory: 4 KiB,
2 MiB and 1 GiB leaves, holes, the user bit, PCID bits in CR3, runs split and merged."""

from __future__ import annotations

import pytest

from codeisland.hw.vaspace import LARGE, PRESENT, USER, PageFault, VirtualSpace

MEM = 64 << 20
P, U, PS = PRESENT | 2, USER, LARGE  # present + writable


class Tables:
    def __init__(self) -> None:
        self.mem = bytearray(MEM)
        self.next = 0x100000
        self.cr3 = self.page()

    def page(self) -> int:
        at, self.next = self.next, self.next + 0x1000
        return at

    def entry(self, table: int, index: int) -> int:
        return int.from_bytes(self.mem[table + 8 * index : table + 8 * index + 8], "little")

    def set(self, table: int, index: int, value: int) -> None:
        self.mem[table + 8 * index : table + 8 * index + 8] = value.to_bytes(8, "little")

    def map(self, va: int, pa: int, size: int = 0x1000, flags: int = P | U) -> None:
        levels = {0x1000: 3, 2 << 20: 2, 1 << 30: 1}[size]
        table = self.cr3
        for depth, shift in enumerate((39, 30, 21, 12)):
            index = (va >> shift) & 0x1FF
            if depth == levels:
                leaf = PS if size != 0x1000 else 0
                self.set(table, index, pa | flags | leaf)
                return
            e = self.entry(table, index)
            if not e & PRESENT:
                e = self.page() | P | U
                self.set(table, index, e)
            table = e & 0x000F_FFFF_FFFF_F000

    def read(self, pa: int, n: int) -> bytes:
        return bytes(self.mem[pa : pa + n])


def test_translates_4k_2m_and_1g_leaves_and_keeps_the_offset() -> None:
    t = Tables()
    t.map(0x5555_0000_1000, 0x0040_0000)
    t.map(0x5555_4000_0000 + (2 << 20), 0x0060_0000, 2 << 20)
    t.map(0x7F00_0000_0000, 0x4000_0000, 1 << 30)
    s = VirtualSpace(t.read, t.cr3 | 0x123)  # PCID bits are not part of the table address
    a = s.translate(0x5555_0000_1ABC)
    assert (a.phys, a.page_size, a.user) == (0x0040_0ABC, 0x1000, True)
    b = s.translate(0x5555_4000_0000 + (2 << 20) + 0x12345)
    assert (b.phys, b.page_size) == (0x0061_2345, 2 << 20)
    c = s.translate(0x7F00_0012_3456)
    assert (c.phys, c.page_size) == (0x4012_3456, 1 << 30)


def test_unmapped_noncanonical_and_supervisor_pages() -> None:
    t = Tables()
    t.map(0x1000, 0x200000, flags=P)  # supervisor
    s = VirtualSpace(t.read, t.cr3)
    assert s.translate(0x1000).user is False
    with pytest.raises(PageFault, match="not mapped"):
        s.translate(0x2000)
    with pytest.raises(PageFault, match="canonical"):
        s.translate(0x0000_9000_0000_0000)
    assert s.contiguous(0x2000, 4) is False


def test_reads_and_runs_across_pages() -> None:
    t = Tables()
    t.mem[0x300FF0:0x301000] = b"A" * 16
    t.mem[0x300000:0x300010] = b"C" * 16
    t.mem[0x301000:0x301010] = b"B" * 16
    t.map(0x10000, 0x300000)
    t.map(0x11000, 0x301000)  # physically adjacent: one run
    t.map(0x12000, 0x300000)  # back to the first page: a second run
    s = VirtualSpace(t.read, t.cr3)
    assert s.read(0x10FF0, 32) == b"A" * 16 + b"B" * 16
    assert s.pieces(0x10FF0, 32) == [(0x300FF0, 32)]
    assert s.contiguous(0x10FF0, 32)
    assert s.pieces(0x11FF8, 16) == [(0x301FF8, 8), (0x300000, 8)]
    assert not s.contiguous(0x11FF8, 16)
    assert s.read(0x11FF8, 16) == bytes(8) + b"C" * 8


def test_every_entry_is_read_when_asked() -> None:
    t = Tables()
    t.map(0x10000, 0x300000)
    s = VirtualSpace(t.read, t.cr3)
    assert s.translate(0x10000).phys == 0x300000
    t.map(0x10000, 0x500000)  # the guest changed its mapping: seen at once
    assert s.translate(0x10000).phys == 0x500000
