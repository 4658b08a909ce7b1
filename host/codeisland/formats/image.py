"""Typed, lazy views of executable images: what analysis needs and nothing more.

An `Image` answers questions about one x86-64 binary (ELF or PE32+) in its *link* address space:
its sections, function symbols, unwind ranges, entry points and the 8-byte absolute pointers that
relocations would adjust.  Everything is parsed on first use and cached, so opening a 20 MB binary
costs nothing until someone asks.  Library errors (pyelftools, lief, struct) become `InputError`
here, at the boundary.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property

from ..errors import InputError


@dataclass(frozen=True)
class Section:
    """An allocated section (or segment, when a file has no section table)."""

    name: str
    addr: int
    size: int
    offset: int  # file offset of the bytes; meaningless when nobits
    executable: bool
    nobits: bool = False

    @property
    def end(self) -> int:
        return self.addr + self.size

    def __contains__(self, addr: int) -> bool:
        return self.addr <= addr < self.end


@dataclass(frozen=True)
class Symbol:
    """A function symbol: a name for [addr, addr + size).  size 0 means unknown."""

    name: str
    addr: int
    size: int
    source: str  # "symtab", "dynsym", "coff", "dwarf", "export"
    unit: str = ""  # source file of a local symbol (ELF STT_FILE before it), when known


# The one dynamic relocation the workload loaders (smmemu's guest loader, the QEMU target app)
# apply: base + addend.  Anything else needs a symbol resolver they do not have.
LOADER_RELOCATION = "R_X86_64_RELATIVE"


@dataclass(frozen=True)
class DynamicRelocation:
    """One entry of an allocated (dynamic) relocation table, in link addresses."""

    site: int
    kind: str  # "R_X86_64_RELATIVE", "R_X86_64_GLOB_DAT", ...
    addend: int
    symbol: str = ""  # "" for none

    @property
    def loader_applies(self) -> bool:
        return self.kind == LOADER_RELOCATION and not self.symbol

    def describe(self) -> str:
        against = f" against {self.symbol}" if self.symbol else ""
        return f"{self.kind} at {self.site:#x}{against}"


class Image(ABC):
    """One executable image, addressed by link-time virtual addresses."""

    format: str = "?"

    def __init__(self, data: bytes, path: str | None) -> None:
        self.data = data
        self.path = path

    # -- what each format provides ------------------------------------------------------

    @property
    @abstractmethod
    def link_base(self) -> int:
        """Lowest address the image is linked at (PE ImageBase, ELF first PT_LOAD)."""

    @property
    @abstractmethod
    def entry(self) -> int | None:
        """Entry point address, if the image declares one."""

    @abstractmethod
    def _sections(self) -> list[Section]: ...

    @abstractmethod
    def _symbols(self) -> list[Symbol]: ...

    @abstractmethod
    def _unwind_ranges(self) -> list[tuple[int, int]]: ...

    @abstractmethod
    def _abs_pointers(self) -> dict[int, int]: ...

    def _dynamic_relocations(self) -> list[DynamicRelocation]:
        """Relocations a loader of this format must apply; PE base relocations are applied by
        every PE loader (firmware included), so only ELF lists them."""
        return []

    # -- cached views ------------------------------------------------------------------

    @cached_property
    def sections(self) -> list[Section]:
        return sorted(self._sections(), key=lambda s: s.addr)

    @cached_property
    def code_sections(self) -> list[Section]:
        return [s for s in self.sections if s.executable and not s.nobits and s.size]

    @cached_property
    def symbols(self) -> list[Symbol]:
        """Function symbols inside code sections, one per address (best name wins)."""
        best: dict[int, Symbol] = {}
        rank = {"symtab": 0, "coff": 0, "dwarf": 1, "dynsym": 2, "export": 3}
        for sym in self._symbols():
            if not self.in_code(sym.addr):
                continue
            old = best.get(sym.addr)
            if old is None or (rank.get(sym.source, 9), -sym.size) < (
                rank.get(old.source, 9),
                -old.size,
            ):
                best[sym.addr] = sym
        return sorted(best.values(), key=lambda s: s.addr)

    @cached_property
    def unwind_ranges(self) -> list[tuple[int, int]]:
        """[start, end) of every function that unwind data (.eh_frame FDE, .pdata) describes."""
        return sorted({r for r in self._unwind_ranges() if r[1] > r[0] and self.in_code(r[0])})

    @cached_property
    def abs_pointers(self) -> dict[int, int]:
        """8-byte fields that relocations fill with absolute addresses: site -> link-time value.
        A loader that puts the image elsewhere writes value + bias at each site."""
        return self._abs_pointers()

    @cached_property
    def abs_pointer_sites(self) -> list[int]:
        return sorted(self.abs_pointers)

    @cached_property
    def dynamic_relocations(self) -> list[DynamicRelocation]:
        return self._dynamic_relocations()

    @cached_property
    def unapplied_relocations(self) -> list[DynamicRelocation]:
        """Dynamic relocations the workload loaders would not apply (they apply
        LOADER_RELOCATION only): an image with any of them runs with wrong pointers."""
        return [r for r in self.dynamic_relocations if not r.loader_applies]

    def loader_relocations(self) -> list[tuple[int, int]]:
        """(site, addend) of every relocation a workload loader applies (it writes base + addend
        at base + site); InputError naming the first relocation it cannot apply."""
        if self.unapplied_relocations:
            first = self.unapplied_relocations[0]
            more = len(self.unapplied_relocations) - 1
            raise InputError(
                f"{self.path or 'image'}: dynamic relocation {first.describe()} is not applied by "
                f"the workload loaders (only {LOADER_RELOCATION})"
                + (f"; {more} more" if more else "")
            )
        return [(r.site, r.addend) for r in self.dynamic_relocations]

    # -- reading -----------------------------------------------------------------------

    def section_at(self, addr: int) -> Section | None:
        for sec in self.sections:
            if addr in sec:
                return sec
        return None

    @cached_property
    def _code_starts(self) -> list[int]:
        return [s.addr for s in self.code_sections]

    def in_code(self, addr: int) -> bool:
        i = bisect_right(self._code_starts, addr) - 1
        return i >= 0 and addr < self.code_sections[i].end

    def section_bytes(self, sec: Section) -> memoryview:
        if sec.nobits:
            return memoryview(bytes(sec.size))
        return memoryview(self.data)[sec.offset : sec.offset + sec.size]

    def read(self, addr: int, size: int) -> bytes:
        """Bytes at link address `addr` as the file holds them; InputError outside the image."""
        sec = self.section_at(addr)
        if sec is None or addr + size > sec.end:
            raise InputError(f"{addr:#x}+{size:#x} is not inside one section of the image")
        if sec.nobits:
            return bytes(size)
        start = sec.offset + addr - sec.addr
        return bytes(self.data[start : start + size])

    def check_sections(self) -> None:
        """Reject sections whose bytes lie past the end of the file (a truncated image)."""
        for sec in self.sections:
            if not sec.nobits and sec.offset + sec.size > len(self.data):
                raise InputError(
                    f"image is truncated: section {sec.name or '?'} needs bytes up to "
                    f"{sec.offset + sec.size:#x}, file has {len(self.data):#x}"
                )
