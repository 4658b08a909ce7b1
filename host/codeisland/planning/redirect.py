"""How callers reach a moved island, chosen so that no thread is ever left inside patched bytes.

A thread that no CPU holds during the SMI (parked by an OS scheduler) keeps its saved RIP: the
handler cannot translate it.  If that RIP lay inside bytes the entry jump overwrote, it would
resume in the middle of the jump.  So, at plan time (never as a post-mortem):

    entry jump   only when it replaces exactly one instruction (Island.entry_patch_safe: a
                 5-byte NOP from -fpatchable-function-entry=5 under clang, any first
                 instruction of 5+ bytes); a parked thread is then before it or past it
    call sites   otherwise: the island's entry stays intact and every direct E8/E9 call or
                 jump into it is re-pointed to the copy (each one instruction, patched whole)
    not moved    when there is neither

`parked_threads=False` is for targets where every thread of the moved code is on a CPU during
the SMI (a single-threaded firmware application): the entry jump is then always safe, except
in an island with indirect jumps (IslandMap.allowing_indirect_jumps), whose targets could lie
inside a patch of several instructions.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..analysis import Island, IslandMap
from ..plan import layout as L
from ..plan.document import Plan

ENTRY_JUMP = "entry jump"
CALL_SITES = "call sites"


@dataclass(frozen=True)
class Redirect:
    method: str | None  # ENTRY_JUMP, CALL_SITES, or None: the island must not move
    why: str = ""  # why not an entry jump (empty for one)
    callsites: int = 0  # direct call sites there are to re-point

    @property
    def moves(self) -> bool:
        return self.method is not None

    def describe(self) -> str:
        if self.method == ENTRY_JUMP:
            return ENTRY_JUMP
        if self.method == CALL_SITES:
            return f"{CALL_SITES} ({self.callsites}): {self.why}"
        return f"not moved: {self.why}"

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "why": self.why, "callsites": self.callsites}


def outside_callsites(imap: IslandMap, isl: Island) -> list[tuple[int, int]]:
    """Direct calls/jumps into `isl` from code outside it: the ones re-pointing can use."""
    return [(a, op) for a, op in imap.callsites.get(isl.start, ()) if not isl.start <= a < isl.end]


def redirect(
    imap: IslandMap, isl: Island, *, parked_threads: bool = True, patch: int = L.ENTRY_REL32_LEN
) -> Redirect:
    """The safe way to redirect callers of `isl` for an entry patch of `patch` bytes."""
    sites = len(outside_callsites(imap, isl))
    # an indirect jump may target any instruction the patch replaces: one instruction only
    parked_threads = parked_threads or isl.indirect_jumps > 0
    if not parked_threads or isl.entry_patch_safe(patch):
        return Redirect(ENTRY_JUMP, callsites=sites)
    why = isl.entry_hazard or f"an {patch}-byte entry patch would replace several instructions"
    if patch != L.ENTRY_REL32_LEN and isl.entry_preemption_safe:
        why = f"the rel32 entry jump does not reach; a {patch}-byte patch replaces several"
    if sites:
        return Redirect(CALL_SITES, why, sites)
    return Redirect(None, f"{why}, and no direct call site to re-point")


def planned_redirect(plan: Plan, index: int) -> str:
    """How `plan` sends callers to the copy of its island `index`, for reports."""
    if plan.islands[index].flags & L.ISLAND_ENTRY_MASK != L.ISLAND_ENTRY_NONE:
        return ENTRY_JUMP
    return f"{CALL_SITES} ({sum(1 for c in plan.callsites if c.island == index)})"
