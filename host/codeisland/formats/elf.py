"""ELF64 x86-64 images through pyelftools (headers, symbols) and direct reads (bulk tables)."""

from __future__ import annotations

import struct
from functools import cached_property
from io import BytesIO

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_RELOC_TYPE_x64

from ..errors import InputError
from .ehframe import fde_ranges
from .image import DynamicRelocation, Image, Section, Symbol

SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
PF_X = 0x1
R_X86_64_64, R_X86_64_RELATIVE = 1, 8
_RELOC_NAMES = {v: k for k, v in ENUM_RELOC_TYPE_x64.items() if isinstance(v, int)}
_MACHINES = {"EM_X86_64"}
# what pyelftools raises on corrupt input (found by mutating real images: a seek past 2**63
# raises OverflowError, a bad table TypeError/AttributeError deep inside construct)
_ELF_ERRORS = (
    ELFError,
    ValueError,
    struct.error,
    KeyError,
    IndexError,
    OverflowError,
    TypeError,
    AttributeError,
    AssertionError,
    EOFError,
)


class ElfImage(Image):
    format = "elf64"

    def __init__(self, data: bytes, path: str | None) -> None:
        super().__init__(data, path)
        try:
            self.elf = ELFFile(BytesIO(data))
            header = self.elf.header
        except _ELF_ERRORS as exc:
            raise InputError(f"not a readable ELF image: {exc or type(exc).__name__}") from None
        if self.elf.elfclass != 64 or header["e_machine"] not in _MACHINES:
            raise InputError(
                f"unsupported ELF: class {self.elf.elfclass}, machine {header['e_machine']} "
                "(only x86-64 ELF64 is supported)"
            )
        if header["e_type"] == "ET_REL":
            raise InputError(
                "relocatable object files are not supported: link them first "
                "(their branch fields are not resolved)"
            )
        if header["e_type"] not in ("ET_EXEC", "ET_DYN"):
            raise InputError(f"unsupported ELF type {header['e_type']}")

    def _guard(self, what: str, fn):  # type: ignore[no-untyped-def]
        try:
            return fn()
        except _ELF_ERRORS as exc:
            raise InputError(f"corrupt ELF {what}: {exc or type(exc).__name__}") from None

    @cached_property
    def _raw_sections(self) -> list:  # type: ignore[type-arg]
        return self._guard("section table", lambda: list(self.elf.iter_sections()))

    @cached_property
    def _loads(self) -> list:  # type: ignore[type-arg]
        return self._guard(
            "program headers",
            lambda: [s for s in self.elf.iter_segments() if s["p_type"] == "PT_LOAD"],
        )

    @property
    def link_base(self) -> int:
        if not self._loads:
            return min((s.addr for s in self.sections), default=0)
        return min(s["p_vaddr"] for s in self._loads) & ~0xFFF

    @property
    def entry(self) -> int | None:
        value = int(self.elf.header["e_entry"])
        return value or None

    def _sections(self) -> list[Section]:
        out = []
        for sec in self._raw_sections:
            if not sec["sh_flags"] & SHF_ALLOC or not sec["sh_size"]:
                continue
            out.append(
                Section(
                    name=sec.name,
                    addr=int(sec["sh_addr"]),
                    size=int(sec["sh_size"]),
                    offset=int(sec["sh_offset"]),
                    executable=bool(sec["sh_flags"] & SHF_EXECINSTR),
                    nobits=sec["sh_type"] == "SHT_NOBITS",
                )
            )
        if out:
            return out
        # no section table (stripped hard): fall back to the loadable segments
        return [
            Section(
                name=f"load{i}",
                addr=int(seg["p_vaddr"]),
                size=int(seg["p_filesz"]),
                offset=int(seg["p_offset"]),
                executable=bool(seg["p_flags"] & PF_X),
            )
            for i, seg in enumerate(self._loads)
            if seg["p_filesz"]
        ]

    def _symbols(self) -> list[Symbol]:
        out: list[Symbol] = []
        for sec in self._raw_sections:
            if sec["sh_type"] not in ("SHT_SYMTAB", "SHT_DYNSYM"):
                continue
            source = "symtab" if sec["sh_type"] == "SHT_SYMTAB" else "dynsym"
            out.extend(
                self._guard(
                    "symbol table", lambda s=sec, src=source: _funcs(self.elf, self.data, s, src)
                )
            )
        if not out:
            out.extend(self._dwarf_functions())
        return out

    def _dwarf_functions(self) -> list[Symbol]:
        if not self._guard("debug info", self.elf.has_dwarf_info):
            return []
        return self._guard("debug info", lambda: _dwarf_subprograms(self.elf))

    def _unwind_ranges(self) -> list[tuple[int, int]]:
        for sec in self._raw_sections:
            if sec.name == ".eh_frame" and sec["sh_type"] != "SHT_NOBITS":
                raw = self.data[sec["sh_offset"] : sec["sh_offset"] + sec["sh_size"]]
                return fde_ranges(raw, int(sec["sh_addr"]))
        return []

    def _abs_pointers(self) -> dict[int, int]:
        # RELATIVE, and R_X86_64_64 without a symbol: the loader writes base + addend
        return {
            r.site: r.addend & 0xFFFFFFFFFFFFFFFF
            for r in self.dynamic_relocations
            if not r.symbol and r.kind in ("R_X86_64_RELATIVE", "R_X86_64_64")
        }

    def _dynamic_relocations(self) -> list[DynamicRelocation]:
        out: list[DynamicRelocation] = []
        for sec in self._raw_sections:
            rela = sec["sh_type"] == "SHT_RELA"
            if sec["sh_type"] not in ("SHT_RELA", "SHT_REL") or not sec["sh_flags"] & SHF_ALLOC:
                continue
            raw = self.data[sec["sh_offset"] : sec["sh_offset"] + sec["sh_size"]]
            step = 24 if rela else 16
            raw = raw[: len(raw) - len(raw) % step]
            rows = struct.iter_unpack("<QQq", raw) if rela else struct.iter_unpack("<QQ", raw)
            for row in rows:
                offset, info = row[0], row[1]
                kind, symbol = info & 0xFFFFFFFF, info >> 32
                name = _RELOC_NAMES.get(kind, f"relocation type {kind}")
                addend = row[2] if rela else 0
                out.append(DynamicRelocation(offset, name, addend, self._symbol_name(sec, symbol)))
        return out

    def _symbol_name(self, sec, index: int) -> str:  # type: ignore[no-untyped-def]
        if not index:
            return ""

        def lookup() -> str:
            return str(self.elf.get_section(sec["sh_link"]).get_symbol(index).name) or f"#{index}"

        return self._guard("dynamic symbol table", lookup)


_STT_FUNC, _STT_FILE, _STT_GNU_IFUNC = 2, 4, 10
_STB_LOCAL = 0
_SHN_UNDEF, _SHN_ABS = 0, 0xFFF1


def _funcs(elf: ELFFile, data: bytes, sec, source: str) -> list[Symbol]:  # type: ignore[no-untyped-def]
    """Function symbols of a symbol table, read in bulk (pyelftools parses one at a time)."""
    strtab = elf.get_section(sec["sh_link"])
    str_off, str_end = strtab["sh_offset"], strtab["sh_offset"] + strtab["sh_size"]
    raw = data[sec["sh_offset"] : sec["sh_offset"] + sec["sh_size"]]
    if len(raw) % 24 or str_end > len(data):
        raise InputError(f"corrupt ELF symbol table {sec.name}")
    out = []
    unit = ""  # local symbols follow the STT_FILE symbol of their source file
    for name, info, _other, shndx, value, size in struct.iter_unpack("<IBBHQQ", raw):
        if info & 0xF == _STT_FILE:
            unit = _name(data, str_off + name, str_end)
            continue
        if info & 0xF not in (_STT_FUNC, _STT_GNU_IFUNC) or shndx in (_SHN_UNDEF, _SHN_ABS):
            continue
        if not value:
            continue
        label = _name(data, str_off + name, str_end) or f"fn_{value:x}"
        out.append(Symbol(label, value, size, source, unit if info >> 4 == _STB_LOCAL else ""))
    return out


def _name(data: bytes, start: int, end: int) -> str:
    stop = data.find(b"\0", start, end)
    return data[start:stop].decode("utf-8", "replace") if stop > start else ""


def _dwarf_subprograms(elf: ELFFile) -> list[Symbol]:
    out = []
    for cu in elf.get_dwarf_info().iter_CUs():
        for die in cu.iter_DIEs():
            if die.tag != "DW_TAG_subprogram" or "DW_AT_low_pc" not in die.attributes:
                continue
            low = die.attributes["DW_AT_low_pc"].value
            high_attr = die.attributes.get("DW_AT_high_pc")
            if high_attr is None:
                continue
            high = high_attr.value
            if high_attr.form != "DW_FORM_addr":
                high += low
            name_attr = die.attributes.get("DW_AT_name")
            name = name_attr.value.decode("utf-8", "replace") if name_attr else f"fn_{low:x}"
            out.append(Symbol(name, low, high - low, "dwarf"))
    return out
