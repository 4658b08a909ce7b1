"""The closed loop's machine on smmemu: the real SMM driver, a workload, N CPUs.

Everything goes through the driver: SAMPLE SMIs every `sample_every` guest instructions (every
CPU's saved RIP) plus the emulator's slice-boundary samples; STAGE/COMMIT of plans the planner
builds (codeisland.planning via smmemu.plans); ROLLBACK of a generation; STATS for the address
map.  The native hook (fetchtrace) counts per-island blocks and runs the front-end cost model on
the real fetch stream, copies attributed to their islands.  Handler instructions per SMI come
from the emulator's SMI records (measured, not modeled).  Relocation SMI time is charged at the
platform's smi_entry_cycles per SMI plus one cycle per handler instruction (a model).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from ..errors import EmulationError, PlanError
from ..frontend.params import FrontendParams
from ..plan import layout as L
from ..planning.platform import large_page_ranges, load_platform
from ..profile.format import Island
from ..profile.record import EmulatedInputs
from .machine import Observation, RelocationResult

RUNTIME = {"ci_start", "ci_putc", "ci_puts", "ci_puthex", "ci_putdec", "ci_line", "ci_fail",
           "ci_input", "ci_memset", "ci_memcpy"}  # fmt: skip


# ROLLBACK restores the copy's bytes, so a return address into a copy that a thread still has
# on its stack would return into undone bytes: every plan asks for return addresses in this
# many 8-byte slots above each saved RSP to be translated (back) as well (CI_RULE_TRANSLATE_RETURN)
STACK_SLOTS = 32


class _FirstFit:
    """Destinations in the HOT area around the copies that are live now (rolled-back space is
    reused), 64-byte aligned; duck-types smmemu.plans.HotArea for plan_moves."""

    def __init__(self, base: int, size: int, live: list[L.MapEntry]) -> None:
        self.base, self.end = base, base + size
        self.used = sorted(
            (int(e.cur), int(e.cur) + int(e.size)) for e in live if e.flags & L.MAP_ACTIVE
        )

    def place(self, size: int) -> int:
        at = self.base
        for lo, hi in self.used:
            if at + size <= lo:
                break
            at = max(at, (hi + 63) // 64 * 64)
        if at + size > self.end:
            raise PlanError(f"HOT area full: {size} bytes do not fit")
        self.used = sorted([*self.used, (at, at + size)])
        return at


class EmulatedMachine:
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
    ) -> None:
        from codeisland.analysis import analyze
        from smmemu.fetchtrace import FetchModel, FetchModelError
        from smmemu.guest import HOT_OFFSET, HOT_SIZE
        from smmemu.session import boot
        from smmemu.workload import load_workload

        self.params = params or FrontendParams()
        self.s = boot(cpus=cpus)
        image = load_workload(workload)
        self.guest = self.s.guest(image, threads)
        self.guest.sample_slices = True
        self.imap = analyze(image.path, load_base=self.guest.base)
        chosen = [i for i in self.imap if i.relocatable and i.name not in RUNTIME and i.size >= 16]
        self.islands = [Island(k + 1, i.name, i.start, i.size) for k, i in enumerate(chosen)]
        self.fixups = np.array([len(i.fixups) for i in chosen])
        base, _ = self.s.arena
        self.hot_capacity = min(HOT_SIZE, hot_capacity)
        self.hot_base = base + HOT_OFFSET
        self.cpus, self.window_instructions, self.sample_every = (
            cpus,
            window_instructions,
            sample_every,
        )
        self.inputs = EmulatedInputs.on(self.s.machine, seed)
        self.platform = load_platform("emulated")
        # large pages only where the arena's address allows them; the rest is modeled with
        # 4 KiB pages and reported (describe(), the bench report), never silently assumed
        huge, self.warnings = large_page_ranges(self.platform, base)
        try:
            self.model = FetchModel(self.params.native())
            for start, size in huge:
                self.model.add_huge_region(start, size)
            self.model.attach(self.s.machine.uc, data_accesses=True)
        except FetchModelError as exc:
            raise EmulationError(str(exc)) from None
        self.jitter = random.Random(seed)
        self.head = self.s.client._read_u32("sample_head")
        self.t = 0
        self.plan_id = 1
        self._set_ranges([])

    # -- helpers -----------------------------------------------------------------------

    def _set_ranges(self, entries: list[L.MapEntry]) -> None:
        pos = {i.start: k for k, i in enumerate(self.islands)}
        starts = [i.start for i in self.islands]
        ends = [i.start + i.size for i in self.islands]
        index = list(range(len(self.islands)))
        for e in entries:
            if e.flags & L.MAP_ACTIVE and int(e.orig) in pos:
                starts.append(int(e.cur))
                ends.append(int(e.cur) + int(e.size))
                index.append(pos[int(e.orig)])
        self.model.set_ranges(starts, ends, index)

    def _smi_cost(self, first_smi: int) -> tuple[int, int, int]:
        smis = [r for r in self.s.machine.smis if r.number >= first_smi]
        insns = [r.handler_instructions for r in smis]
        cycles = len(smis) * self.params.smi_entry_cycles + sum(insns)
        return len(smis), max(insns, default=0), int(cycles * self.params.cycles_per_handler_insn)

    def _next_smi(self) -> int:
        return len(self.s.machine.smis) and self.s.machine.smis[-1].number + 1

    # -- Machine protocol --------------------------------------------------------------

    def run_window(self) -> Observation:
        if self.guest.done:
            raise EmulationError("the workload ended before the loop's last window")
        self.inputs.new_window(self.t)
        self.model.reset_counts()
        self.guest.samples.clear()
        self.guest.run(
            instructions=self.window_instructions,
            every=self.sample_every,
            on_boundary=lambda g: self.s.client.sample(),
            jitter=self.jitter,
        )
        ring, self.head = self.s.client.samples_since(self.head)
        rips = np.array([s.rip for s in ring] + [r for _, r in self.guest.samples], np.uint64)
        c = self.model.island_counts(len(self.islands))
        f = lambda k: c[k].astype(np.float64)  # noqa: E731
        obs = Observation(
            self.t, self.inputs.time_of_day, self.inputs.delivered, self.guest.runnable_threads,
            self.guest.busy_cpus, self.cpus, rips, f("blocks"), f("mem_accesses"), f("cycles"),
            f("l1i_misses"), f("itlb_misses"), self.model.totals(),
        )  # fmt: skip
        self.t += 1
        return obs

    def peek_next(self) -> np.ndarray | None:
        return None  # the emulator cannot see its future; the oracle runs on the model machine

    def commit(self, islands: list[int]) -> RelocationResult:
        from smmemu.plans import plan_moves

        first = self._next_smi()
        names = [self.islands[i].name for i in islands]
        try:
            hot = _FirstFit(self.hot_base, self.hot_capacity, self.address_map())
            built = plan_moves(self.imap, names, hot, self.s.machine.read, self.plan_id,
                               stack_slots=STACK_SLOTS)  # fmt: skip
        except PlanError:
            return RelocationResult(generation=0)  # HOT area exhausted: nothing moved
        self.plan_id += 1
        c = self.s.client
        staged = fix = 0
        reply = c.stage(built.to_bytes())
        staged += int(reply.result.bytes_written)
        while reply.result.state == L.STATE_STAGING:
            reply = c.stage()
            staged += int(reply.result.bytes_written)
        reply = c.commit()
        staged += int(reply.result.bytes_written)
        fix = sum(p.fixups for p in built.placed)
        smis, worst, cycles = self._smi_cost(first)
        self._set_ranges(c.stats().map_entries)
        return RelocationResult(
            int(reply.result.generation), list(islands), staged, 0, 0, fix, smis, worst, cycles
        )

    def rollback(self, generation: int) -> RelocationResult:
        first = self._next_smi()
        before = self.generations()
        reply = self.s.client.rollback(generation)
        undone = [i for g, m in before if g >= generation for i in m]
        smis, worst, cycles = self._smi_cost(first)
        self._set_ranges(self.s.client.stats().map_entries)
        return RelocationResult(
            generation, undone, 0, 0, int(reply.result.bytes_restored), 0, smis, worst, cycles
        )

    def address_map(self) -> list[L.MapEntry]:
        return list(self.s.client.stats().map_entries)

    def generations(self) -> list[tuple[int, list[int]]]:
        pos = {i.start: k for k, i in enumerate(self.islands)}
        gens: dict[int, list[int]] = {}
        for e in self.address_map():
            if e.flags & L.MAP_ACTIVE and int(e.orig) in pos:
                gens.setdefault(int(e.generation), []).append(pos[int(e.orig)])
        return sorted(gens.items())

    def describe(self) -> dict[str, Any]:
        return {"islands": len(self.islands), "cpus": self.cpus, "warnings": self.warnings}
