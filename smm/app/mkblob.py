#!/usr/bin/env python3
"""Lay a PIC workload ELF out as the flat image the target app copies into the arena.

    mkblob.py ELF ENTRY_SYMBOL KIND OUT.bin OUT.h

OUT.bin holds every PT_LOAD's file bytes at its vaddr (linked at 0); bss is not stored.  OUT.h
tells the app where the entry is, how large the image is in memory, and where the writable
segment is, so the app can restore it before every round (a round then always starts from the
same state, and its output must be the same), and lists the R_X86_64_RELATIVE relocations the
app applies after each copy.  Any other dynamic relocation is refused with one line naming it.
"""

from __future__ import annotations

import sys

from elftools.elf.elffile import ELFFile

from codeisland.errors import InputError
from codeisland.formats import open_image

PF_W = 2


def main(elf_path: str, entry_name: str, kind: str, out_bin: str, out_h: str) -> int:
    with open(elf_path, "rb") as f:
        elf = ELFFile(f)
        try:
            relocations = open_image(elf_path).loader_relocations()
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        if not loads or min(s["p_vaddr"] for s in loads) != 0:
            print(f"{elf_path}: not linked at 0", file=sys.stderr)
            return 1
        image = bytearray(max(s["p_vaddr"] + s["p_filesz"] for s in loads))
        for s in loads:
            image[s["p_vaddr"] : s["p_vaddr"] + s["p_filesz"]] = s.data()
        writable = [s for s in loads if s["p_flags"] & PF_W]
        if len(writable) != 1 or writable[0] is not loads[-1]:
            print(f"{elf_path}: expected one writable segment, last", file=sys.stderr)
            return 1
        rw = writable[0]
        symtab = elf.get_section_by_name(".symtab")
        entry = [s for s in symtab.iter_symbols() if s.name == entry_name] if symtab else []
        if len(entry) != 1:
            print(f"{elf_path}: no unique symbol {entry_name}", file=sys.stderr)
            return 1
        mem_size = max(s["p_vaddr"] + s["p_memsz"] for s in loads)
        outside = [site for site, _ in relocations if site + 8 > mem_size]
        if outside:
            print(f"error: {elf_path}: relocation at {outside[0]:#x} outside", file=sys.stderr)
            return 1
    with open(out_bin, "wb") as f:
        f.write(image)
    with open(out_h, "w") as f:
        f.write(f'#define CI_WORKLOAD_BIN "{out_bin}"\n')
        f.write(f'#define CI_WORKLOAD_NAME "{entry_name}"\n')
        f.write(f"#define CI_WORKLOAD_KIND {int(kind)}u\n")
        f.write(f"#define CI_WORKLOAD_ENTRY {entry[0]['st_value']:#x}ULL\n")
        f.write(f"#define CI_WORKLOAD_MEM_SIZE {mem_size:#x}ULL\n")
        f.write(f"#define CI_WORKLOAD_RW_OFFSET {rw['p_vaddr']:#x}ULL\n")
        f.write(f"#define CI_WORKLOAD_RW_FILESZ {rw['p_filesz']:#x}ULL\n")
        f.write(f"#define CI_WORKLOAD_RW_MEMSZ {rw['p_memsz']:#x}ULL\n")
        f.write(f"#define CI_WORKLOAD_RELOCATION_COUNT {len(relocations)}u\n")
        table = ", ".join(
            f"{{{site:#x}ULL, {addend & (2**64 - 1):#x}ULL}}" for site, addend in relocations
        )
        f.write(f"#define CI_WORKLOAD_RELOCATIONS {table or '{0, 0}'}\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
