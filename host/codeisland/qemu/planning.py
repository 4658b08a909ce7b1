"""Plans for the QEMU target's workload: islands from the analysis, placed in the arena.

`codeisland.analysis.analyze` finds the islands of smm/build/app/workload.elf rebased to where the
app copied the blob (read back from guest memory, not assumed); `codeisland.planning.build_plan`
encodes the moves.  This module only chooses destinations: packed, 64-byte aligned, from
HOT_OFFSET into the driver's arena.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..analysis import IslandMap, analyze
from ..plan import layout as L
from ..plan.apply import relocated_bytes
from ..plan.document import Plan
from ..planning import build_plan

HOT_OFFSET = 0x800000  # destinations start 8 MiB into the 16 MiB arena, far above the blob
DST_ALIGN = 64
CHUNK_SIZE = 256  # small diff chunks, so that a plan stages over several SMIs (see e2e)

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
    imap: IslandMap
    names: tuple[str, ...]
    read: Read
    plan: Plan = field(default_factory=Plan)
    placed: list[PlacedCopy] = field(default_factory=list)

    def moves(self, dst_base: int) -> list[tuple[str, int]]:
        out, at = [], dst_base
        for name in self.names:
            at = (at + DST_ALIGN - 1) & ~(DST_ALIGN - 1)
            out.append((name, at))
            at += self.imap[name].size
        return out

    def build(self, dst_base: int, plan_id: int) -> Plan:
        return build_plan(
            self.imap,
            self.moves(dst_base),
            plan_id=plan_id,
            callsites=True,
            read_bytes=self.read,
            chunk_size=CHUNK_SIZE,
        )

    def retargeted(self, dst_base: int, plan_id: int) -> Plan:
        """The same islands aimed at `dst_base` (e.g. inside SMRAM, to be rejected)."""
        return self.build(dst_base, plan_id)


def plan_workload(
    elf: Path, load_base: int, hot_base: int, names: Sequence[str], read: Read, plan_id: int
) -> WorkloadPlan:
    wp = WorkloadPlan(analyze(elf, load_base=load_base), tuple(names), read)
    wp.plan = wp.build(hot_base, plan_id)
    for index, (name, dst) in enumerate(wp.moves(hot_base)):
        isl = wp.imap[name]
        final = relocated_bytes(read(isl.start, isl.size), isl.start, dst, isl.fixup_records(index))
        entry = read(isl.start, L.ENTRY_ABS64_LEN)
        wp.placed.append(PlacedCopy(name, isl.start, dst, final, entry))
    return wp
