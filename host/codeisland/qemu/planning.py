"""Plans for the QEMU target's workload: its islands from the analysis, placed in the arena.

The islands (ranges, fix-ups, internal targets) come from `codeisland.analysis.analyze` on
smm/build/app/workload.elf rebased to where the app copied the blob; placement and encoding reuse
the emulator's plan builder (smmemu.plans), so both paths produce plans the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smmemu.plans import FixupSpec, HotArea, IslandSpec, build_plan

from ..analysis import analyze
from ..errors import PlanError
from ..plan import layout as L
from ..plan.apply import relocated_bytes
from ..plan.document import Plan

HOT_OFFSET = 0x800000  # destinations start 8 MiB into the 16 MiB arena, far above the blob
HOT_SIZE = 0x400000

Read = Callable[[int, int], bytes]


@dataclass
class PlacedCopy:
    name: str
    src: int
    dst: int
    final: bytes  # what the destination must hold after STAGE
    original_entry: bytes  # the bytes COMMIT overwrites at src (restored by ROLLBACK)


@dataclass
class WorkloadPlan:
    plan: Plan
    specs: list[IslandSpec]
    read: Read
    placed: list[PlacedCopy] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return self.plan.to_bytes()

    def retargeted(self, dst_base: int, plan_id: int) -> Plan:
        """The same islands aimed at `dst_base` (e.g. inside SMRAM, to be rejected)."""
        return build_plan(self.specs, HotArea(dst_base, HOT_SIZE), self.read, plan_id).plan


def island_specs(elf: Path, load_base: int, names: Sequence[str]) -> list[IslandSpec]:
    imap = analyze(elf, load_base=load_base)
    specs = []
    for name in names:
        isl = imap[name]
        if not isl.relocatable:
            raise PlanError(f"island {name} cannot be relocated: {isl.reason} ({isl.detail})")
        fixups = tuple(FixupSpec(f.kind, f.offset, f.pc_bias, f.target) for f in isl.fixups)
        specs.append(IslandSpec(name, isl.start, isl.size, fixups, tuple(isl.targets)))
    return specs


def plan_workload(
    elf: Path, load_base: int, hot_base: int, names: Sequence[str], read: Read, plan_id: int
) -> WorkloadPlan:
    specs = island_specs(elf, load_base, names)
    built = build_plan(specs, HotArea(hot_base, HOT_SIZE), read, plan_id)
    wp = WorkloadPlan(built.plan, specs, read)
    for placed in built.placed:
        s = placed.spec
        fixups = [f for f in built.plan.fixups if f.island == placed.island_id - 1]
        final = relocated_bytes(read(s.src, s.size), s.src, placed.dst, fixups)
        wp.placed.append(
            PlacedCopy(s.name, s.src, placed.dst, final, read(s.src, L.ENTRY_REL32_LEN))
        )
    return wp
