"""Plans for the emulated run: destinations in the arena's HOT area for islands the analysis
found (codeisland.analysis), encoded by the planner (codeisland.planning.build_plan).

This module decodes nothing and encodes nothing itself; it only places destinations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from codeisland.analysis import IslandMap
from codeisland.errors import PlanError
from codeisland.plan.document import Plan
from codeisland.planning import build_plan

DST_ALIGN = 64


@dataclass(frozen=True)
class PlacedIsland:
    name: str
    src: int
    dst: int
    size: int
    fixups: int


@dataclass
class BuiltPlan:
    plan: Plan
    placed: list[PlacedIsland] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return self.plan.to_bytes()

    def island_of(self, address: int) -> str:
        for p in self.placed:
            if p.src <= address < p.src + p.size:
                return p.name
        return "?"


class HotArea:
    """Bump placement of destinations inside the arena's HOT area (or any range, in tests)."""

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.end = base + size
        self.next = base

    def place(self, size: int) -> int:
        dst = (self.next + DST_ALIGN - 1) & ~(DST_ALIGN - 1)
        if dst + size > self.end:
            raise PlanError(f"HOT area full: {size} bytes do not fit")
        self.next = dst + size
        return dst


def plan_moves(
    imap: IslandMap,
    names: list[str],
    hot: HotArea,
    read: Callable[[int, int], bytes],
    plan_id: int,
    *,
    stack_slots: int = 0,
) -> BuiltPlan:
    """Move every named island to a fresh destination; bytes are read from the live machine."""
    moves = [(imap[n], hot.place(imap[n].size)) for n in names]
    plan = build_plan(imap, moves, plan_id=plan_id, stack_slots=stack_slots, read_bytes=read)
    placed = [PlacedIsland(i.name, i.start, dst, i.size, len(i.fixups)) for i, dst in moves]
    return BuiltPlan(plan, placed)
