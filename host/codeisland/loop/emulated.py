"""The closed loop's target on the emulated board: the real SMM driver, a workload, N CPUs.

Everything goes through the driver: SAMPLE SMIs every `sample_every` guest instructions (every
CPU's saved RIP) plus the emulator's slice-boundary samples; STAGE/COMMIT of plans the planner
builds; ROLLBACK of a generation; STATS for the address map.

Plans go through the relocation layer (codeisland.relocation): the planner's passes with the
loop's recent per-window counts and priorities, so address-adjacent islands that run in the
same windows are committed as one merged island, and its live Place (first fit in the
platform's hot region, capped at `hot_capacity`, around the copies the driver's address map
holds); the layer's Relocator stages and commits them.  Rollbacks keep the copies (retired);
RECLAIM frees those no thread can reach any more (relocation.reclaim), only when a plan needs
their room and the gain pays for the scan: when the loop asks (`reclaim()`, after comparing
`reclaim_price()` with what the room would let it move), or when a plan finds no room beside
retired copies and its priorities pay the price.  Every RECLAIM SMI is charged like a move's.
The scan reads every word of the STACK regions -- the driver registers its whole 16 MiB arena
(the guest's stacks live there), about 16M handler instructions -- so on short windows it
seldom pays; a RECLAIM every few windows used to cost 20-28 times the baseline's cycles.
`conflicts()` runs the planner's Split pass over the merged islands in place: when their
members' counts diverge, the loop rolls that generation back and commits the members it still
wants as separate islands.

The native hook (fetchtrace) counts per-island blocks and runs the front-end cost model on the
real fetch stream, copies attributed to their islands.  Handler instructions per SMI come
from the emulator's SMI records (measured, not modeled).  Relocation SMI time is charged at the
platform's smi_entry_cycles per SMI plus one cycle per handler instruction (a model).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from ..analysis import Island as AnalysedIsland
from ..emulator.record import MIN_MOVABLE_SIZE, EmulatedInputs
from ..errors import EmulationError, PlanError
from ..frontend.params import FrontendParams
from ..plan import layout as L
from ..planning.passes import Candidate, Options, PlanContext, Split
from ..planning.platform import large_page_ranges, load_platform
from ..profile.format import ProfiledIsland
from ..relocation import (
    ReclaimReport,
    RelocationPlan,
    SmiReport,
    movable,
    occupied,
    plan_relocation,
)
from .target import Observation, RelocationResult

HOT = "hot"  # the platform region the loop places into (capped at hot_capacity)


# ROLLBACK keeps the copies (retired: a return address deeper in a stack stays valid), and
# translates return addresses back in this many 8-byte slots above each saved RSP
# (CI_RULE_TRANSLATE_RETURN), so threads leave the copies sooner and RECLAIM can free them
STACK_SLOTS = 32

# RECLAIM's scan costs about this many handler instructions per STACK-region word (measured on
# the driver: 16,022,543 for the 2,097,152 words of its arena); the price of a RECLAIM before
# one has been measured in this run
SCAN_INSNS_PER_WORD = 8


class EmulatedTarget:
    max_generations = L.MAX_GENERATIONS

    def __init__(
        self,
        workload: str,
        *,
        cpus: int = 2,
        threads: int = 2,
        window_instructions: int = 400_000,
        sample_every: int = 20_000,
        seed: int = 1,
        params: FrontendParams | None = None,
        hot_capacity: int = 32 * 1024,
        keep_copies: bool = True,
    ) -> None:
        from codeisland.analysis import analyze
        from codeisland.emulator.session import boot
        from codeisland.frontend.fetchtrace import FetchLibraryMissing, FetchModel, FetchModelError
        from smmemu.workload import load_workload

        self.params = params or FrontendParams()
        # the planner's default: a ROLLBACK keeps the copies (retired, their room reserved:
        # retired_bytes(), until a RECLAIM frees them); False restores them and frees the room
        # (the plans ask for STACK_SLOTS of return addresses to be translated back)
        self.keep_copies = keep_copies
        self.reclaim_smis: list[SmiReport] = []
        self.s = boot(cpus=cpus)
        self.rel = self.s.relocator
        image = load_workload(workload)
        self.guest = self.s.guest(image, threads)
        self.guest.sample_slices = True
        self.imap = analyze(image.path, load_base=self.guest.base)
        chosen = [i for i in movable(self.imap) if i.size >= MIN_MOVABLE_SIZE]
        self.islands = [
            ProfiledIsland(k + 1, i.name, i.start, i.size) for k, i in enumerate(chosen)
        ]
        self.fixups = np.array([len(i.fixups) for i in chosen])
        base, _ = self.s.arena
        self.platform = load_platform("emulated")
        self.hot_capacity = min(self.platform.region(HOT).size, hot_capacity)
        self.cpus, self.window_instructions, self.sample_every = (
            cpus,
            window_instructions,
            sample_every,
        )
        self.inputs = EmulatedInputs.on(self.s.machine, seed)
        # large pages only where the arena's address allows them; the rest is modeled with
        # 4 KiB pages and reported (describe(), the bench report), never silently assumed
        huge, self.warnings = large_page_ranges(self.platform, base)
        try:
            self.model = FetchModel(self.params.native())
            for start, size in huge:
                self.model.add_huge_region(start, size)
            self.model.attach(self.s.machine.uc, data_accesses=True)
        except FetchLibraryMissing:
            raise  # not an emulation stop: a missing build, said as such
        except FetchModelError as exc:
            raise EmulationError(str(exc)) from None
        self.jitter = random.Random(seed)
        self.t = 0
        self.plan_id = 1
        self._merged: dict[int, AnalysedIsland] = {}  # merged islands committed, by start
        self._set_ranges([])

    # -- helpers -----------------------------------------------------------------------

    def _members(self, e: L.MapEntry) -> list[int]:
        """Island positions an active map entry moved: one, or the members of a merged island."""
        if not e.flags & L.MAP_ACTIVE:
            return []
        lo, hi = int(e.orig), int(e.orig) + int(e.size)
        return [k for k, i in enumerate(self.islands) if lo <= i.start < hi]

    def _set_ranges(self, entries: list[L.MapEntry]) -> None:
        starts = [i.start for i in self.islands]
        ends = [i.start + i.size for i in self.islands]
        index = list(range(len(self.islands)))
        for e in entries:
            for k in self._members(e):  # a merged copy keeps its members at their offsets
                at = int(e.cur) + self.islands[k].start - int(e.orig)
                starts.append(at)
                ends.append(at + self.islands[k].size)
                index.append(k)
        self.model.set_ranges(starts, ends, index)

    def _smi_cost(self, smis: list[SmiReport]) -> tuple[int, int, int]:
        """(SMIs, most handler instructions in one, modeled cycles) of the layer's reports."""
        insns = [r.handler_instructions or 0 for r in smis]
        cycles = len(smis) * self.params.smi_entry_cycles + sum(insns)
        return len(smis), max(insns, default=0), int(cycles * self.params.cycles_per_handler_insn)

    # -- LoopTarget protocol --------------------------------------------------------------

    def run_window(self) -> Observation:
        if self.guest.done:
            raise EmulationError("the workload ended before the loop's last window")
        self.inputs.new_window(self.t)
        self.model.reset_counts()
        self.guest.samples.clear()
        ring: list[L.Sample] = []
        self.guest.run(
            instructions=self.window_instructions,
            every=self.sample_every,
            on_boundary=lambda g: ring.extend(self.rel.sample()),
            jitter=self.jitter,
        )
        rips = np.array([s.rip for s in ring] + [r for _, r in self.guest.samples], np.uint64)
        c = self.model.island_counts(len(self.islands))
        f = lambda k: c[k].astype(np.float64)  # noqa: E731
        obs = Observation(
            index=self.t, time_of_day=self.inputs.time_of_day, input_events=self.inputs.delivered,
            runnable_threads=self.guest.runnable_threads, busy_cpus=self.guest.busy_cpus,
            cpus=self.cpus, rips=rips, exact=f("blocks"), mem=f("mem_accesses"),
            island_cycles=f("cycles"), island_l1i_misses=f("l1i_misses"),
            island_itlb_misses=f("itlb_misses"), frontend=self.model.totals(),
        )  # fmt: skip
        self.t += 1
        return obs

    def peek_next(self) -> np.ndarray | None:
        return None  # the emulator cannot see its future; the oracle runs on the model machine

    def _series(self, islands: list[int], counts: np.ndarray | None) -> dict[str, list[float]]:
        if counts is None or not len(counts):
            return {}
        return {self.islands[i].name: [float(x) for x in counts[:, i]] for i in islands}

    def _plan(
        self, islands: list[int], counts: np.ndarray | None, priorities: np.ndarray | None
    ) -> RelocationPlan:
        """The planner's moves for `islands` through the relocation layer: merged groups,
        order and live first-fit placement in the (capped) hot region."""
        names = [self.islands[i].name for i in islands]
        prio = (
            {}
            if priorities is None
            else {n: float(priorities[i]) for n, i in zip(names, islands, strict=True)}
        )
        opts = Options(names=tuple(names), plan_id=self.plan_id, stack_slots=STACK_SLOTS,
                       arena_base=self.s.arena[0], priorities=prio, callsites=False,
                       keep_copies=self.keep_copies)  # fmt: skip
        return plan_relocation(
            self.imap, self.platform, opts, counts=self._series(islands, counts),
            taken=occupied(self.address_map()), read_bytes=self.s.transport.read_phys,
            all_or_nothing=True, only=(HOT,), capacity={HOT: self.hot_capacity},
        )  # fmt: skip

    def commit(
        self,
        islands: list[int],
        counts: np.ndarray | None = None,
        priorities: np.ndarray | None = None,
    ) -> RelocationResult:
        """Commit `islands` as one generation, planned with `counts` (recent windows x islands)
        and `priorities` (per island) by the planner's passes; merged islands are reported."""
        mark, reclaims = len(self.rel.smis), len(self.reclaim_smis)
        try:
            plan = self._plan(islands, counts, priorities)
        except PlanError as exc:  # nothing moved: said in the result, counted by the loop
            if not self._reclaim_pays(islands, priorities) or not self._reclaim():
                return RelocationResult(generation=0, refused=str(exc))
            try:
                plan = self._plan(islands, counts, priorities)
            except PlanError as again:
                return RelocationResult(generation=0, refused=str(again))
        self.plan_id += 1
        out = self.rel.apply(plan.to_bytes())
        staged = out.stage.bytes_written + int(out.result.bytes_written)
        fix = sum(p.fixups for p in plan.placed)
        # remembered so conflicts() can hand the same merged island to the Split pass
        self._merged.update(
            {p.src: p.island for p in plan.placed if len(p.members) > 1 and p.island is not None}
        )
        smis, worst, cycles = self._smi_cost(self.rel.since(mark))
        self._set_ranges(self.address_map())  # bookkeeping, not a cost of the move
        pos = {i.name: k for k, i in enumerate(self.islands)}
        moved = [pos[m] for p in plan.placed for m in p.members]
        merged = [[pos[m] for m in members] for members in plan.merged]
        return RelocationResult(
            int(out.result.generation), moved, staged, 0, 0, fix, smis, worst, cycles, merged,
            reclaims=len(self.reclaim_smis) - reclaims,
        )  # fmt: skip

    def _reclaim_pays(self, islands: list[int], priorities: np.ndarray | None) -> bool:
        """Would the plan's islands pay for a RECLAIM?  (No priorities: the caller asked.)"""
        return priorities is None or float(priorities[islands].sum()) > self.reclaim_price()

    def _reclaim(self) -> bool:
        """RECLAIM when the driver holds retired copies; True if it freed any."""
        if not any(e.flags & L.MAP_RETIRED for e in self.address_map()):
            return False
        return bool(self._reclaim_now().freed)

    def _reclaim_now(self) -> ReclaimReport:
        report = self.rel.reclaim()
        self.reclaim_smis.append(self.rel.smis[-1])
        return report

    def reclaim_price(self) -> float:
        """Modeled cycles of one RECLAIM SMI: the dearest measured in this run (a scan stops
        early once every copy is kept), else the scan of the whole arena, which the driver
        registers as a STACK region, at SCAN_INSNS_PER_WORD."""
        insns = max((r.handler_instructions or 0 for r in self.reclaim_smis), default=0)
        if not insns:
            insns = self.s.arena[1] // 8 * SCAN_INSNS_PER_WORD
        return (self.params.smi_entry_cycles + insns) * self.params.cycles_per_handler_insn

    def reclaim(self) -> RelocationResult:
        """RECLAIM now (the loop found that the room pays for it); its SMI is charged."""
        mark = len(self.rel.smis)
        report = self._reclaim_now()
        smis, worst, cycles = self._smi_cost(self.rel.since(mark))
        return RelocationResult(
            0, [], smis=smis, handler_insns_max=worst, cycles=cycles, reclaims=1,
            bytes_freed=report.bytes_freed,
        )  # fmt: skip

    def conflicts(self, counts: np.ndarray) -> list[tuple[int, list[int]]]:
        """(generation, members) of every merged island in place that the planner's Split pass
        takes apart under `counts` (recent windows x islands): its members' needs now differ."""
        out = []
        for e in self.address_map():
            members = self._members(e)
            isl = self._merged.get(int(e.orig))
            if len(members) < 2 or isl is None:
                continue
            series = self._series(members, counts)
            freq = {n: float(sum(v)) for n, v in series.items()}
            ctx = PlanContext(self.imap, self.platform, series, Options())
            ctx.candidates = [Candidate(isl, sum(freq.values()), member_freq=freq)]
            Split().run(ctx)
            if len(ctx.candidates) > 1:
                out.append((int(e.generation), members))
        return out

    def rollback(self, generation: int) -> RelocationResult:
        mark = len(self.rel.smis)
        before = self.generations()
        result = self.rel.rollback(generation)
        undone = [i for g, m in before if g >= generation for i in m]
        smis, worst, cycles = self._smi_cost(self.rel.since(mark))
        self._set_ranges(self.address_map())
        return RelocationResult(
            generation, undone, 0, 0, int(result.bytes_restored), 0, smis, worst, cycles
        )

    def address_map(self) -> list[L.MapEntry]:
        return self.rel.address_map()

    def retired_bytes(self) -> int:
        """Hot-region bytes that copies kept at rollback hold (reserved until RECLAIM frees
        them)."""
        return sum(int(e.size) for e in self.address_map() if e.flags & L.MAP_RETIRED)

    def generations(self) -> list[tuple[int, list[int]]]:
        gens: dict[int, list[int]] = {}
        for e in self.address_map():
            members = self._members(e)
            if members:
                gens.setdefault(int(e.generation), []).extend(members)
        return sorted(gens.items())

    def describe(self) -> dict[str, Any]:
        freed = sum(1 for r in self.reclaim_smis if r.bytes_written)
        return {
            "islands": len(self.islands), "cpus": self.cpus, "warnings": self.warnings,
            "reclaim_smis": len(self.reclaim_smis), "reclaims_that_freed": freed,
            "reclaim_handler_insns_max": max(
                (r.handler_instructions or 0 for r in self.reclaim_smis), default=0
            ),
        }  # fmt: skip
