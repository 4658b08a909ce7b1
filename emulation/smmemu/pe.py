"""Load the SMM driver's PE32+ into emulated SMRAM, as PiSmmCore would: map the sections at a
chosen address and apply the base relocations (DIR64) for the difference to ImageBase."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import lief

from codeisland.errors import InputError

SUBSYSTEM_BOOT_SERVICE_DRIVER = 11
MACHINE_AMD64 = 0x8664
REL_ABSOLUTE = 0
REL_DIR64 = 10


@dataclass(frozen=True)
class LoadedImage:
    path: Path
    base: int
    size: int
    entry: int
    relocations: int
    image: bytes  # the mapped, relocated bytes
    writable: tuple[tuple[int, int], ...] = ()  # (address, size) of its writable sections


def load_pe(path: Path, base: int, limit: int) -> LoadedImage:
    """Map `path` at `base` (page aligned, at most `limit` bytes); InputError on anything odd."""
    if not path.is_file():
        raise InputError(f"{path}: no such driver binary (build it with `make -C smm`)")
    lief.logging.disable()
    pe = lief.PE.parse(str(path))
    if pe is None or not isinstance(pe, lief.PE.Binary):
        raise InputError(f"{path}: not a PE image")
    if pe.header.machine.value != MACHINE_AMD64 or pe.optional_header.magic.value != 0x20B:
        raise InputError(f"{path}: not a PE32+ x86-64 image")
    if pe.optional_header.subsystem.value != SUBSYSTEM_BOOT_SERVICE_DRIVER:
        raise InputError(
            f"{path}: subsystem {pe.optional_header.subsystem.value}, expected 11 (SMM driver)"
        )
    if pe.has_imports and len(pe.imports) > 0:
        raise InputError(f"{path}: has imports; an SMM driver must not")
    size = pe.optional_header.sizeof_image
    if size > limit:
        raise InputError(f"{path}: SizeOfImage {size:#x} exceeds the {limit:#x} bytes reserved")
    image = bytearray(size)
    headers = path.read_bytes()[: min(pe.optional_header.sizeof_headers, size)]
    image[: len(headers)] = headers
    for section in pe.sections:
        data = bytes(section.content)
        rva = section.virtual_address
        if rva + len(data) > size:
            raise InputError(f"{path}: section {section.name} lies outside SizeOfImage")
        image[rva : rva + len(data)] = data
    delta = base - pe.optional_header.imagebase
    count = _relocate(image, pe, delta, path)
    entry = pe.optional_header.addressof_entrypoint
    if not 0 < entry < size:
        raise InputError(f"{path}: entry point RVA {entry:#x} is outside the image")
    align = max(pe.optional_header.section_alignment, 1)
    writable = tuple(
        (base + sec.virtual_address, -(-sec.virtual_size // align) * align)
        for sec in pe.sections
        if sec.has_characteristic(lief.PE.Section.CHARACTERISTICS.MEM_WRITE)
    )
    return LoadedImage(path, base, size, base + entry, count, bytes(image), writable)


def _relocate(image: bytearray, pe: lief.PE.Binary, delta: int, path: Path) -> int:
    count = 0
    for block in pe.relocations:
        for entry in block.entries:
            kind = entry.type.value if hasattr(entry.type, "value") else int(entry.type)
            if kind == REL_ABSOLUTE:
                continue
            if kind != REL_DIR64:
                raise InputError(f"{path}: unsupported base relocation type {kind}")
            rva = entry.address
            if rva + 8 > len(image):
                raise InputError(f"{path}: base relocation at {rva:#x} is outside the image")
            (value,) = struct.unpack_from("<Q", image, rva)
            struct.pack_into("<Q", image, rva, (value + delta) & 0xFFFFFFFFFFFFFFFF)
            count += 1
    return count
