"""The emulated machine's physical memory: layout, page allocations with their EFI types, and
the access rules of normal mode and SMM.

    0x0000_0000 +----------------------+
                | unmapped             |  a NULL dereference faults
    0x0001_0000 +----------------------+
                | DXE trap page        |  boot-service stubs, return/idle stubs (BS code)
    0x0001_1000 +----------------------+
                | DXE data             |  system table, boot services, protocol
    0x0011_0000 +----------------------+  interfaces, config table array, DXE stack (BS data)
                | page pool            |  gBS->AllocatePages, top-down, each allocation's
                |                      |  EFI memory type recorded (mailbox, arena, ...);
                |                      |  allocations of >= 2 MiB start on a 2 MiB boundary
    0x0411_0000 +----------------------+
                | unmapped             |
    0x0800_0000 +----------------------+
                | SMRAM (TSEG, 8 MiB)  |  see smram.py; inaccessible outside SMM
    0x0880_0000 +----------------------+

Large allocations: AllocateAnyPages promises nothing beyond 4 KiB alignment, and real firmware
gives no more.  This emulator's choice is to start every allocation of 2 MiB or more on a 2 MiB
boundary (the pages skipped stay conventional memory), so the driver's 16 MiB arena -- and the
platform's 2 MiB "hot" region inside it -- can be mapped with large pages.  Code above this
layer must still check the alignment it needs (planning.platform does), because a board may
not align.

Rules:
- outside SMM, SMRAM has no access at all: a guest touching it faults (a Unicorn page
  protection, opened at SMI entry and closed before code runs outside SMM again, so guest
  code runs without any check);
- in SMM after SmmReadyToLock, every page outside SMRAM whose type at lock time was not one of
  efi.SMM_ACCESSIBLE_TYPES (reserved, runtime, ACPI, MMIO) faults on access, as EDK2's
  restricted memory access makes it (FACTS.md), and code outside SMRAM faults on fetch (SMM
  code-access check): the emulator catches what would hang a board.  These are checked by
  memory hooks present only while an SMI is handled (machine.py), because switching page
  protections of the large conventional ranges at every SMI costs milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from unicorn import UC_PROT_ALL, UC_PROT_NONE, Uc

from codeisland.errors import EmulationError

from . import efi

PAGE = 0x1000
LARGE_PAGE = 0x20_0000
TRAP_BASE = 0x0001_0000
TRAP_SIZE = 0x1000
DXE_BASE = 0x0001_1000
DXE_SIZE = 0x0010_0000 - 0x1000
POOL_BASE = 0x0011_0000
POOL_SIZE = 0x0400_0000
SMRAM_BASE = 0x0800_0000
SMRAM_SIZE = 0x0080_0000


@dataclass(frozen=True)
class Allocation:
    base: int
    pages: int
    memory_type: int

    @property
    def end(self) -> int:
        return self.base + self.pages * PAGE

    @property
    def type_name(self) -> str:
        t = self.memory_type
        return efi.MEMORY_TYPES[t] if t < len(efi.MEMORY_TYPES) else f"type {t}"


class MemoryMap:
    """Mappings, the page allocator and the protection switches of SMM entry and exit."""

    def __init__(self, uc: Uc) -> None:
        self.uc = uc
        # Host arrays back the board's RAM (Unicorn maps them, it does not copy them), so a
        # host that must look at all of it -- the plan fuzzer diffs every byte per case --
        # reads it in place instead of copying 76 MB out through uc_mem_read.
        self.ram: dict[int, np.ndarray] = {}
        for base, size in (
            (TRAP_BASE, TRAP_SIZE),
            (DXE_BASE, DXE_SIZE),
            (POOL_BASE, POOL_SIZE),
            (SMRAM_BASE, SMRAM_SIZE),
        ):
            self.ram[base] = np.zeros(size, dtype=np.uint8)  # untouched pages stay unallocated
            uc.mem_map_ptr(base, size, UC_PROT_ALL, self.ram[base].ctypes.data)
        self.allocations: list[Allocation] = []
        self._pool_top = POOL_BASE + POOL_SIZE
        self._dxe_next = DXE_BASE
        self.locked_holes: list[tuple[int, int]] | None = None  # set at ready-to-lock
        uc.mem_protect(SMRAM_BASE, SMRAM_SIZE, UC_PROT_NONE)
        self.smram_open = False

    # -- allocation -----------------------------------------------------------------

    def allocate_pages(self, pages: int, memory_type: int) -> int | None:
        """AllocateAnyPages: top-down from the pool, 2 MiB aligned when 2 MiB or larger (the
        emulator's choice, see the module doc); None when it does not fit."""
        size = pages * PAGE
        if pages <= 0:
            return None
        base = self._pool_top - size
        if size >= LARGE_PAGE:
            base &= ~(LARGE_PAGE - 1)
        if base < POOL_BASE:
            return None
        self._pool_top = base
        self.allocations.append(Allocation(base, pages, memory_type))
        return base

    def dxe_alloc(self, size: int, align: int = 16) -> int:
        """Firmware-internal boot-services data (tables, interfaces)."""
        base = (self._dxe_next + align - 1) & ~(align - 1)
        if base + size > DXE_BASE + DXE_SIZE:
            raise EmulationError("emulated DXE data area is full")
        self._dxe_next = base + size
        return base

    def allocation_at(self, address: int) -> Allocation | None:
        for a in self.allocations:
            if a.base <= address < a.end:
                return a
        return None

    # -- SMM page rules -------------------------------------------------------------

    def lock(self) -> None:
        """SmmReadyToLock: remember which non-SMRAM ranges were not SMM-accessible now."""
        keep = sorted(
            (a.base, a.end) for a in self.allocations if a.memory_type in efi.SMM_ACCESSIBLE_TYPES
        )
        holes: list[tuple[int, int]] = [(TRAP_BASE, TRAP_SIZE + DXE_SIZE)]
        cursor = POOL_BASE
        for lo, hi in keep:
            if lo > cursor:
                holes.append((cursor, lo - cursor))
            cursor = max(cursor, hi)
        if cursor < POOL_BASE + POOL_SIZE:
            holes.append((cursor, POOL_BASE + POOL_SIZE - cursor))
        self.locked_holes = holes

    def enter_smm(self) -> None:
        """SMRAM opens (nothing to do if no code ran outside SMM since the last SMI)."""
        if not self.smram_open:
            self.uc.mem_protect(SMRAM_BASE, SMRAM_SIZE, UC_PROT_ALL)
            self.smram_open = True

    def close_smram(self) -> None:
        """Before code runs outside SMM: SMRAM closes.  Done lazily, not at RSM, because a
        protection switch costs ~2 ms each way and back-to-back SMIs (a host staging a plan)
        run no code in between; the host's own accesses go through the transport, which
        refuses SMRAM whether it is open or not."""
        if self.smram_open:
            self.uc.mem_protect(SMRAM_BASE, SMRAM_SIZE, UC_PROT_NONE)
            self.smram_open = False

    def smm_denied(self, address: int, size: int) -> bool:
        """After lock: does [address, address+size) touch memory SMM may not access?"""
        for base, length in self.locked_holes or ():
            if address < base + length and address + size > base:
                return True
        return False

    @staticmethod
    def in_smram(address: int, size: int = 1) -> bool:
        return address < SMRAM_BASE + SMRAM_SIZE and address + size > SMRAM_BASE

    def describe(self, address: int) -> str:
        """Name the memory an address lies in (for fault messages)."""
        if self.in_smram(address):
            return "SMRAM"
        a = self.allocation_at(address)
        if a is not None:
            return f"{a.type_name} pages at {a.base:#x}"
        if TRAP_BASE <= address < DXE_BASE + DXE_SIZE:
            return "boot-services memory"
        if POOL_BASE <= address < POOL_BASE + POOL_SIZE:
            return "conventional memory"
        return "unmapped memory"
