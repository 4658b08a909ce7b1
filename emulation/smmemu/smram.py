"""Emulated SMRAM (a TSEG): what lives where, and the SMM pool/page allocator.

SMRAM_BASE + 0x000000 +--------------------+
                      | SMM trap page      |  SMST and SMM protocol service stubs
             0x001000 +--------------------+
                      | SMM tables         |  SMST, protocol interfaces, save-state
                      |                    |  pointer arrays, dispatch contexts
             0x010000 +--------------------+
                      | driver image       |  the PE32+, relocated here
             0x200000 +--------------------+
                      | SMM pool / pages   |  gSmst->SmmAllocatePool/Pages, bump
             0x500000 +--------------------+
                      | SMI handler stack  |  one stack: CPUs rendezvous and the
             0x540000 +--------------------+  handler runs on one of them
                      | SMBASE tiles       |  CPU n: SMBASE = here + n * 0x2000,
                      |                    |  save-state map at SMBASE + 0x8000 +
                      |                    |  map_start (top of the SMBASE+0x8000 page)
SMRAM_BASE + SMRAM_SIZE
"""

from __future__ import annotations

from codeisland.errors import EmulationError

from .memory import SMRAM_BASE, SMRAM_SIZE

TRAP = SMRAM_BASE
TABLES = SMRAM_BASE + 0x1000
TABLES_END = SMRAM_BASE + 0x10000
IMAGE = SMRAM_BASE + 0x10000
IMAGE_END = SMRAM_BASE + 0x200000
POOL = SMRAM_BASE + 0x200000
POOL_END = SMRAM_BASE + 0x500000
STACK_TOP = SMRAM_BASE + 0x540000
SMBASE0 = SMRAM_BASE + 0x540000
SMBASE_STRIDE = 0x2000


class Smram:
    """Allocators over the fixed SMRAM areas above."""

    base = SMRAM_BASE
    size = SMRAM_SIZE

    def __init__(self) -> None:
        self._tables = TABLES
        self._pool = POOL

    def table_alloc(self, size: int, align: int = 16) -> int:
        base = (self._tables + align - 1) & ~(align - 1)
        if base + size > TABLES_END:
            raise EmulationError("emulated SMM table area is full")
        self._tables = base + size
        return base

    def pool_alloc(self, size: int, align: int = 16) -> int | None:
        """SmmAllocatePool / SmmAllocatePages: None when SMRAM is exhausted."""
        base = (self._pool + align - 1) & ~(align - 1)
        if size <= 0 or base + size > POOL_END:
            return None
        self._pool = base + size
        return base

    @staticmethod
    def smbase(cpu: int) -> int:
        base = SMBASE0 + cpu * SMBASE_STRIDE
        if base + 0x10000 > SMRAM_BASE + SMRAM_SIZE:
            raise EmulationError(f"no SMBASE tile for CPU {cpu}")
        return base
