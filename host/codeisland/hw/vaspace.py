"""A guest's virtual address space read from outside: x86-64 4-level paging from a saved CR3.

    space = VirtualSpace(transport.read_phys, cr3)
    space.translate(va)            # (physical address, page size) or PageFault
    space.read(va, n)              # bytes, page by page
    space.contiguous(va, n)        # True when [va, va+n) is one physical range

The host's own view, for planning and checking only (which islands the engine can take, the
bytes a plan starts from, what a commit wrote): the engine walks the tables itself at every SMI
(smm/core/pagewalk.c) and never uses an address the host supplies.  Every entry is read when
asked (nothing cached), so a mapping the guest changed is seen as it is now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CodeIslandError
from ..plan import layout as L

ReadPhys = Callable[[int, int], bytes]

PRESENT, USER, LARGE = 1 << 0, 1 << 2, 1 << 7
ADDR = 0x000F_FFFF_FFFF_F000  # bits 51:12 of an entry
LEVELS = ((39, 0), (30, 1 << 30), (21, 2 << 20), (12, 4 << 10))  # shift, leaf size (0: no leaf)


class PageFault(CodeIslandError):
    """The address is not mapped (or not a user page where a user page is needed)."""


@dataclass(frozen=True)
class Translation:
    phys: int
    page_size: int  # 4 KiB, 2 MiB or 1 GiB
    user: bool  # every level allows user access


class VirtualSpace:
    def __init__(self, read_phys: ReadPhys, cr3: int) -> None:
        self.read_phys = read_phys
        self.cr3 = cr3 & L.CR3_ADDR_MASK

    def translate(self, va: int) -> Translation:
        if not (va < 1 << 47 or va >= 0xFFFF_8000_0000_0000):
            raise PageFault(f"{va:#x} is not canonical")
        table, user = self.cr3, True
        for shift, leaf in LEVELS:
            index = (va >> shift) & 0x1FF
            entry = int.from_bytes(self.read_phys(table + 8 * index, 8), "little")
            if not entry & PRESENT:
                raise PageFault(f"{va:#x} is not mapped (level at bit {shift})")
            user = user and bool(entry & USER)
            if leaf and (shift == 12 or entry & LARGE):
                base = entry & ADDR & ~(leaf - 1)
                return Translation(base + (va & (leaf - 1)), leaf, user)
            table = entry & ADDR
        raise AssertionError("unreachable: the last level is always a leaf")

    def pieces(self, va: int, n: int) -> list[tuple[int, int]]:
        """(physical address, length) runs covering [va, va+n), split at page ends."""
        out: list[tuple[int, int]] = []
        end = va + n
        while va < end:
            t = self.translate(va)
            take = min(end - va, t.page_size - (va & (t.page_size - 1)))
            if out and out[-1][0] + out[-1][1] == t.phys:
                out[-1] = (out[-1][0], out[-1][1] + take)
            else:
                out.append((t.phys, take))
            va += take
        return out

    def read(self, va: int, n: int) -> bytes:
        return b"".join(self.read_phys(pa, k) for pa, k in self.pieces(va, n))

    def contiguous(self, va: int, n: int) -> bool:
        try:
            return len(self.pieces(va, n)) <= 1
        except PageFault:
            return False
