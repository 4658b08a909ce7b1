"""Plans for the emulated run, built with codeisland.plan from island specifications.

An IslandSpec carries what the analysis (codeisland.analysis, issue 4) finds for a function:
its range, its fix-ups and its internal branch targets.  This module only places islands in the
arena's HOT area and encodes the plan; it decodes nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from codeisland.errors import PlanError
from codeisland.plan import layout as L
from codeisland.plan.apply import make_chunks, relocated_bytes
from codeisland.plan.document import Plan

DST_ALIGN = 64


@dataclass(frozen=True)
class FixupSpec:
    kind: int  # L.FIXUP_*
    offset: int  # of the field within the island
    pc_bias: int
    target: int  # absolute, in the original


@dataclass(frozen=True)
class IslandSpec:
    name: str
    src: int
    size: int
    fixups: tuple[FixupSpec, ...] = ()
    targets: tuple[int, ...] = ()  # internal branch target offsets


@dataclass
class PlacedIsland:
    spec: IslandSpec
    dst: int
    island_id: int


@dataclass
class BuiltPlan:
    plan: Plan
    placed: list[PlacedIsland] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return self.plan.to_bytes()


class HotArea:
    """Bump placement of destinations inside the arena's HOT area."""

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


def build_plan(
    specs: list[IslandSpec],
    hot: HotArea,
    read: Callable[[int, int], bytes],
    plan_id: int,
    *,
    entry: int = L.ISLAND_ENTRY_REL32,
    translate_returns: int = 0,
    chunk_size: int = 1024,
) -> BuiltPlan:
    """One generation: every spec copied to a fresh destination, entry-patched, RIPs translated
    (and return addresses within `translate_returns` stack slots when non-zero)."""
    plan = Plan(plan_id=plan_id)
    built = BuiltPlan(plan)
    for index, spec in enumerate(specs):
        dst = hot.place(spec.size)
        island = L.Island()
        island.src, island.dst, island.size = spec.src, dst, spec.size
        island.id, island.flags = index + 1, entry
        plan.islands.append(island)
        fixups = []
        for fx in sorted(spec.fixups, key=lambda f: f.offset):
            rec = L.Fixup()
            rec.island, rec.kind, rec.pc_bias = index, fx.kind, fx.pc_bias
            rec.offset, rec.target = fx.offset, fx.target
            fixups.append(rec)
        plan.fixups.extend(fixups)
        final = relocated_bytes(read(spec.src, spec.size), spec.src, dst, fixups)
        plan.chunks.extend(make_chunks(index, final, chunk_size))
        for off in sorted(set(spec.targets)):
            t = L.Target()
            t.island, t.offset = index, off
            plan.targets.append(t)
        rule = L.Rule()
        rule.island = index
        rule.flags = L.RULE_TRANSLATE_RIP | (L.RULE_TRANSLATE_RETURN if translate_returns else 0)
        rule.stack_slots = translate_returns
        plan.rules.append(rule)
        built.placed.append(PlacedIsland(spec, dst, index + 1))
    return built
