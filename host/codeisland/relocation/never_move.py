"""The one never-move list: islands no host's driver chooses on its own, derived from the image.

    entry      the image's entry point (ELF e_entry / PE AddressOfEntryPoint): a stub that
               starts a thread and never returns into anything worth moving
    runtime    every function of the workload runtime's compilation unit (the symbol table's
               STT_FILE grouping names it): output, input, exit and mem* helpers, the ABI's
               plumbing rather than where a workload spends its time

The workload's own code, its thread entry `workload_thread` included, is movable: a copy of a
function that has frames on a stack is what the engine's return-address translation is for.
Naming an island explicitly (`--island`) still moves it; this list only limits automatic choice.
"""

from __future__ import annotations

from ..analysis import Island, IslandMap

RUNTIME_UNIT = "runtime.c"  # emulation/workloads/runtime.c, linked into every workload


def never_move(imap: IslandMap) -> frozenset[str]:
    """Names of the islands of `imap` that automatic selection leaves where they are."""
    names: set[str] = set()
    entry = imap.image.entry
    if entry is not None:
        isl = imap.island_at(entry + imap.bias)
        if isl is not None:
            names.add(isl.name)
    names.update(s.name for s in imap.image.symbols if s.unit == RUNTIME_UNIT)
    return frozenset(n for n in names if imap.get(n) is not None)


def movable(imap: IslandMap) -> list[Island]:
    """Relocatable islands outside the never-move list, in address order."""
    keep = never_move(imap)
    return [i for i in imap if i.relocatable and i.name not in keep]
