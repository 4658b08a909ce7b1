"""Analysis: from an ELF64 or PE32+ x86-64 image to an `IslandMap`.

    from codeisland.analysis import analyze
    imap = analyze("workload.elf")                       # link addresses
    imap = analyze("workload.elf", load_base=0x7f0000)   # or imap.rebased(0x7f0000)
    for isl in imap:               # Island: name, start, size, source, relocatable, reason, detail
        isl.fixups                 #   FixupSite(kind, offset, pc_bias, target), plan.h semantics
        isl.targets, isl.calls     #   internal branch offsets, direct call targets (absolute)
        isl.fixup_records(index)   #   the same as plan records (layout.Fixup) for table slot index
    imap["name"], imap.island_at(addr)
    imap.callsites[isl.start]      # [(opcode address, 0xE8/0xE9)] direct calls/jumps into it
    imap.read(addr, size)          # bytes as a loader at load_base leaves them
    imap.call_graph(), imap.coverage(), imap.not_relocatable(), imap.to_dict()

Modules: `discover` (functions from symbols, DWARF, .eh_frame/.pdata, recursive descent),
`decode` (the iced-x86 island scan), `model` (Island, IslandMap, reasons), `merge` (neighbours
into one island), `coexec` (co-execution weights from {name: per-window counts}), `verify`
(engine-exact relocation of every island and re-decode).

Bad input (truncated, non-x86, corrupt, unsupported) raises InputError.
"""

from __future__ import annotations

import gc
import os

from ..formats import Image, open_image
from .discover import Discovery
from .model import ENDBR64_LEN, FixupSite, Island, IslandMap

__all__ = ["FixupSite", "Island", "IslandMap", "analyze"]


def analyze(
    source: str | os.PathLike[str] | bytes | Image,
    *,
    progress: bool = False,
    load_base: int | None = None,
) -> IslandMap:
    """Find the islands of an image, with their fix-ups, targets, calls and limits."""
    image = source if isinstance(source, Image) else open_image(source)
    islands = Discovery(image, progress=progress)
    # hundreds of thousands of long-lived tuples and no cycles: the cyclic collector would
    # rescan them again and again (measured: a third of the time on a 6 MB .text)
    collecting = gc.isenabled()
    gc.disable()
    try:
        found = islands.run()
    finally:
        if collecting:
            gc.enable()
    # coverage is measured against the code the sections hold, not the zero fill that pads
    # them to the file alignment (4 KiB in UEFI images)
    code_bytes = sum(len(bytes(image.section_bytes(s)).rstrip(b"\0")) for s in image.code_sections)
    callsites = dict(islands.callsites)
    for isl in found:  # a direct call to a function's endbr64 enters the island after it
        if isl.endbr:
            callsites[isl.start] = callsites.pop(isl.start - ENDBR64_LEN, []) + callsites.get(
                isl.start, []
            )
    imap = IslandMap(image, found, callsites, code_bytes)
    return imap.rebased(load_base) if load_base is not None else imap
