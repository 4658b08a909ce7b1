"""PE32+ x86-64 images: headers and sections through lief, bulk tables read directly.

UEFI drivers (Debian's OVMF, our own SMM driver) are stripped PE32+: functions come from the
entry point, exports, .pdata (when the toolchain emits it) and, in analysis, recursive descent.
"""

from __future__ import annotations

import io
import struct
import warnings
from functools import cached_property

import lief

from ..errors import InputError
from .image import Image, Section, Symbol

IMAGE_SCN_MEM_EXECUTE = 0x20000000
IMAGE_SCN_CNT_CODE = 0x20
IMAGE_REL_BASED_DIR64 = 10
IMAGE_FILE_MACHINE_AMD64 = 0x8664
PE32_PLUS_MAGIC = 0x20B

lief.logging.disable()


class PeImage(Image):
    format = "pe32+"

    def __init__(self, data: bytes, path: str | None) -> None:
        super().__init__(data, path)
        binary = lief.PE.parse(io.BytesIO(data))
        if binary is None:
            raise InputError("not a readable PE image (lief could not parse its headers)")
        with warnings.catch_warnings():  # lief warns when a number is not a known enum value
            warnings.simplefilter("ignore")
            machine = int(binary.header.machine)
            magic = int(binary.optional_header.magic)
        if machine != IMAGE_FILE_MACHINE_AMD64:
            raise InputError(f"unsupported PE machine {machine:#06x} (only AMD64 is supported)")
        if magic != PE32_PLUS_MAGIC:
            raise InputError(
                f"unsupported PE (optional header magic {magic:#x}): only PE32+ "
                "(64-bit) images are supported"
            )
        self.pe = binary
        self._base = int(binary.optional_header.imagebase)

    @property
    def link_base(self) -> int:
        return self._base

    @property
    def entry(self) -> int | None:
        rva = int(self.pe.optional_header.addressof_entrypoint)
        return self._base + rva if rva else None

    def _sections(self) -> list[Section]:
        out = []
        for sec in self.pe.sections:
            raw = int(sec.sizeof_raw_data)
            vsize = int(sec.virtual_size) or raw
            chars = int(sec.characteristics)
            addr = self._base + int(sec.virtual_address)
            executable = bool(chars & (IMAGE_SCN_MEM_EXECUTE | IMAGE_SCN_CNT_CODE))
            filled = min(vsize, raw)
            if filled:
                out.append(Section(sec.name, addr, filled, int(sec.pointerto_raw_data), executable))
            if vsize > filled:  # the loader zero-fills the rest (.bss merged into .data)
                out.append(
                    Section(sec.name, addr + filled, vsize - filled, 0, executable, nobits=True)
                )
        return out

    def _directory(self, kind: lief.PE.DataDirectory.TYPES) -> bytes:
        d = self.pe.data_directory(kind)
        if d is None or not d.rva or not d.size:
            return b""
        try:
            return self.read(self._base + int(d.rva), int(d.size))
        except InputError:
            raise InputError(f"PE {kind.name} directory lies outside the sections") from None

    def _symbols(self) -> list[Symbol]:
        out = []
        sections = list(self.pe.sections)
        for sym in self.pe.symbols:  # COFF symbol table, rare in UEFI images
            index = int(sym.section_idx)  # 1-based; 0 undefined, negative absolute/debug
            if not sym.is_function or not 0 < index <= len(sections):
                continue
            addr = self._base + int(sections[index - 1].virtual_address) + int(sym.value)
            out.append(Symbol(sym.name, addr, 0, "coff"))
        if self.pe.has_exports:
            for ent in self.pe.get_export().entries:
                if not ent.is_extern and ent.address:
                    out.append(
                        Symbol(
                            ent.name or f"export_{ent.ordinal}",
                            self._base + int(ent.address),
                            0,
                            "export",
                        )
                    )
        return out

    def _unwind_ranges(self) -> list[tuple[int, int]]:
        raw = self._directory(lief.PE.DataDirectory.TYPES.EXCEPTION_TABLE)
        raw = raw[: len(raw) - len(raw) % 12]
        return [
            (self._base + begin, self._base + end)
            for begin, end, _unwind in struct.iter_unpack("<III", raw)
            if end > begin
        ]

    def _abs_pointers(self) -> dict[int, int]:
        raw = self._directory(lief.PE.DataDirectory.TYPES.BASE_RELOCATION_TABLE)
        out: dict[int, int] = {}
        pos = 0
        while pos + 8 <= len(raw):
            page, block = struct.unpack_from("<II", raw, pos)
            if block < 8 or pos + block > len(raw):
                raise InputError(f"PE base relocation block at +{pos:#x} is corrupt")
            for (entry,) in struct.iter_unpack("<H", raw[pos + 8 : pos + block]):
                if entry >> 12 == IMAGE_REL_BASED_DIR64:
                    site = self._base + page + (entry & 0xFFF)
                    try:
                        out[site] = int.from_bytes(self.read(site, 8), "little")
                    except InputError:
                        continue  # a site in zero-fill: the loader adds the bias to zero

            pos += block
        return out

    @cached_property
    def subsystem(self) -> int:
        return int(self.pe.optional_header.subsystem.value)
