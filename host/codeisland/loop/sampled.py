"""The closed loop's target on a live program whose observations are RIP samples.

What every host with a live program shares (loop/linux.py: a Linux guest's process under real
SMIs; loop/native.py: a native process under the agent's signals): the program's islands, a
modeled front-end stream from its samples, commits through the caller's planner and the
relocation layer's Relocator (with its RetryPolicy), rollbacks that keep copies, the address
map, and the program's exit ending the windows.  A host says which samples are the program's
(`is_program`) and how a window's samples are gathered (`_collect`).

MODELED (no PMU): the front-end figures.  Each sample of the program stands for one execution of
the island it lies in (all of its BLOCK_BYTES blocks, at the address where the sample was taken:
the copy if it lies in one) or, outside every island (libc, the loader), one block where it
lies.  That stream is fed to the front-end model (emulation/native) `repeat` times per window,
first from the caches the last window left, then as the steady state of the other repeat - 1,
as on the model bench (loop/model_target.py).  `exact` (blocks per island) is that same
estimate, not a count, so the loop's keep-or-roll-back test (measured saving against the
predicted one) is a model here too.  Relocation SMIs are charged as the model bench charges them
(smi_entry_cycles per SMI + stage_cycles_per_byte + fixup_cycles), since their handler
instructions are not counted on these hosts.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..analysis import IslandMap
from ..errors import DriverRejected, PlanError
from ..frontend.params import FrontendParams
from ..hw.vaspace import PageFault
from ..plan import layout as L
from ..profile.format import ProfiledIsland
from ..relocation import RelocationPlan, Relocator, RetryPolicy, movable, occupied
from .model_target import repeated_window
from .target import Observation, RelocationResult

BLOCK_BYTES = 32  # a basic block of the modeled stream, on average (as loop/workloads.py)
MIN_ISLAND = 16  # bytes: smaller functions are not worth a move
REPEAT = 100  # back-to-back runs of a window's modeled stream (model_target.py)
# commits whose SMI found no thread of the program inside (so none had its RIP moved) are rolled
# back (copies retired) and placed again, at most this many times in all; the last one stays
COMMIT_ATTEMPTS = 4

EXITED = "the program exited: nothing sent (its pages are freed)"

# plan(names, plan_id, taken, priorities, counts) -> a plan of the islands in the zone
Planner = Callable[
    [list[str], int, list[tuple[int, int]], dict[str, float], dict[str, list[float]]],
    RelocationPlan,
]


class ProgramEnded(Exception):
    """The program exited: the loop's windows are over (what is committed stays)."""


@dataclass
class SampleTally:
    """Where the window's samples were: this program (in its islands or elsewhere in user
    mode), the kernel, other processes."""

    process: int = 0
    in_islands: int = 0
    kernel: int = 0
    other: int = 0
    per_cpu: Counter[int] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, int]:
        return {"process": self.process, "in_islands": self.in_islands, "kernel": self.kernel,
                "other": self.other}  # fmt: skip

    def add(self, other: SampleTally) -> None:
        for k in ("process", "in_islands", "kernel", "other"):
            setattr(self, k, getattr(self, k) + getattr(other, k))


class SampledTarget:
    """A LoopTarget over a Relocator and a live program's samples (see the module docstring);
    a host's subclass defines is_program and _collect."""

    max_generations = L.MAX_GENERATIONS

    def __init__(
        self,
        rel: Relocator,
        imap: IslandMap,
        zone: tuple[int, int, bool],
        plan: Planner,
        alive: Callable[[], bool],
        *,
        contiguous: Callable[[int, int], bool] = lambda _a, _n: True,
        read: Callable[[int, int], bytes] | None = None,
        params: FrontendParams | None = None,
        cpus: int = 1,
        commit_attempts: int = COMMIT_ATTEMPTS,
    ) -> None:
        from ..frontend.fetchtrace import FetchModel

        self.rel, self.imap = rel, imap
        self.plan, self.alive, self.read = plan, alive, read
        self.params = params or FrontendParams()
        self.cpus = cpus
        self.commit_attempts = commit_attempts
        chosen = [i for i in movable(imap) if i.size >= MIN_ISLAND and contiguous(i.start, i.size)]
        self.islands = [
            ProfiledIsland(k + 1, i.name, i.start, i.size) for k, i in enumerate(chosen)
        ]
        self.fixups = np.array([len(i.fixups) for i in chosen])
        self._pos = {i.name: k for k, i in enumerate(self.islands)}
        base, size, huge = zone
        self.hot_capacity = size
        self.model = FetchModel(self.params.native())
        if huge:
            self.model.add_huge_region(base, size)
        self.t = 0
        self.plan_id = 1
        self.tally = SampleTally()
        self.window_tallies: list[dict[str, int]] = []
        self.commits: list[dict[str, object]] = []  # per commit: what the driver answered
        self.first_refusal: DriverRejected | None = None
        self.first_refusal_untouched = False  # its spans read the same before and after
        self.last_plan: RelocationPlan | None = None  # the plan of the last commit
        self._map: list[L.MapEntry] = []
        self._set_ranges()

    # -- what a host defines --------------------------------------------------------------

    def is_program(self, s: L.Sample) -> bool:
        """The sample was taken in the program's own code (user mode, its address space)."""
        raise NotImplementedError

    def _collect(self, tally: SampleTally) -> list[int]:
        """One window's RIPs of the program, counted into `tally` (count_sample)."""
        raise NotImplementedError

    def threads(self, tally: SampleTally) -> int:
        """The window's runnable threads: the CPUs its samples came from."""
        return len(tally.per_cpu)

    def count_sample(self, s: L.Sample, tally: SampleTally, rips: list[int]) -> None:
        if self.is_program(s):
            tally.process += 1
            tally.per_cpu[int(s.cpu)] += 1
            rips.append(int(s.rip))
            tally.in_islands += self._range_of(int(s.rip)) is not None
        elif s.cpl == 0:
            tally.kernel += 1
        else:
            tally.other += 1

    # -- where code runs ----------------------------------------------------------------------

    def _members(self, e: L.MapEntry) -> list[int]:
        if not e.flags & L.MAP_ACTIVE:
            return []
        lo, hi = int(e.orig), int(e.orig) + int(e.size)
        return [k for k, i in enumerate(self.islands) if lo <= i.start < hi]

    def _set_ranges(self) -> None:
        """Each island's original range and its active copies', sorted (for the model and for
        finding the execution a sample stands for)."""
        ranges = [(i.start, i.start + i.size, k) for k, i in enumerate(self.islands)]
        for e in self._map:
            for k in self._members(e):
                at = int(e.cur) + self.islands[k].start - int(e.orig)
                ranges.append((at, at + self.islands[k].size, k))
        ranges.sort()
        self._ranges = ranges
        self._starts = [lo for lo, _, _ in ranges]
        self.model.set_ranges(
            [r[0] for r in ranges], [r[1] for r in ranges], [r[2] for r in ranges]
        )

    def _range_of(self, rip: int) -> tuple[int, int, int] | None:
        i = bisect_right(self._starts, rip) - 1
        if i >= 0 and rip < self._ranges[i][1]:
            return self._ranges[i]
        return None

    def _stream(self, rips: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The modeled fetch stream the samples stand for (see the module docstring)."""
        addrs: list[np.ndarray] = []
        for rip in rips:
            r = self._range_of(rip)
            if r is None:
                addrs.append(np.array([rip & ~(BLOCK_BYTES - 1)], dtype=np.uint64))
            else:
                lo, hi, _ = r
                addrs.append(np.arange(lo, hi, BLOCK_BYTES, dtype=np.uint64))
        a = np.concatenate(addrs) if addrs else np.zeros(0, dtype=np.uint64)
        return a, np.full(len(a), BLOCK_BYTES, dtype=np.uint32)

    # -- LoopTarget protocol --------------------------------------------------------------

    def run_window(self) -> Observation:
        if not self.alive():
            raise ProgramEnded
        tally = SampleTally()
        rips = self._collect(tally)
        self.tally.add(tally)
        self.window_tallies.append(tally.to_dict())
        addrs, sizes = self._stream(rips)
        n = len(self.islands)
        c, frontend = repeated_window(self.model, addrs, sizes, n, REPEAT)
        obs = Observation(
            index=self.t, time_of_day=int(time.time()) % 86400, input_events=0,
            runnable_threads=(threads := self.threads(tally)),
            busy_cpus=min(threads, self.cpus), cpus=self.cpus,
            rips=np.array(rips, dtype=np.uint64), exact=c["blocks"], mem=np.zeros(n),
            island_cycles=c["cycles"], island_l1i_misses=c["l1i_misses"],
            island_itlb_misses=c["itlb_misses"],
            frontend=frontend,
        )  # fmt: skip
        self.t += 1
        return obs

    def peek_next(self) -> np.ndarray | None:
        return None  # a live program has no recorded future

    def commit(
        self,
        islands: list[int],
        counts: np.ndarray | None = None,
        priorities: np.ndarray | None = None,
    ) -> RelocationResult:
        if not self.alive():
            return RelocationResult(generation=0, refused=EXITED)
        names = [self.islands[i].name for i in islands]
        prio = (
            {}
            if priorities is None
            else {self.islands[i].name: float(priorities[i]) for i in islands}
        )
        series = {} if counts is None or not len(counts) else {
            self.islands[i].name: [float(x) for x in counts[:, i]] for i in islands
        }  # fmt: skip
        try:
            plan = self.plan(names, self.plan_id, occupied(self._map), prio, series)
        except PlanError as exc:
            return RelocationResult(generation=0, refused=str(exc))
        except PageFault:  # the planner read its bytes after the process exited
            if self.alive():
                raise
            return RelocationResult(generation=0, refused=EXITED)
        if not plan.placed:
            return RelocationResult(generation=0, refused=f"nothing placed: {plan.rejected}")
        self.plan_id += 1
        mark = len(self.rel.smis)
        first = not self.commits and self.first_refusal is None
        before = self._spans(plan) if first else None
        plans = {1: plan}

        def replan(attempt: int) -> bytes:
            """The last attempt's copies are retired now: place around them."""
            self._refresh()
            plans[attempt] = self.plan(names, self.plan_id, occupied(self._map), prio, series)
            self.plan_id += 1
            return plans[attempt].to_bytes()

        retry = RetryPolicy(
            attempts=self.commit_attempts, accept=lambda r: r.contexts_translated > 0,
            replan=replan, before_commit=lambda: self._wait_inside(plans[max(plans)]),
        )  # fmt: skip
        try:
            out = self.rel.apply(plan.to_bytes(), retry)
        except DriverRejected as exc:
            if first:  # the firmware's answer to any plan (e.g. stock): the caller decides
                self.first_refusal = exc
                self.first_refusal_untouched = before is not None and self._spans(plan) == before
                raise
            self._refresh()
            return RelocationResult(generation=0, refused=L.Status(exc.status).name)
        except PlanError as exc:  # a retry found no room beside the retired copies
            self._refresh()
            return RelocationResult(generation=0, refused=str(exc))
        except PageFault:  # a retry's planner read after the process exited
            if self.alive():
                raise
            return RelocationResult(generation=0, refused=EXITED)
        plan = self.last_plan = plans[out.attempts]
        res = out.result
        self._refresh()
        smis = len(self.rel.since(mark))
        # every attempt's bytes (a rejected attempt is rolled back, its copies retired)
        written = sum(r.bytes_written for r in self.rel.since(mark))
        fixups = out.stage.fixups_applied + int(res.fixups_applied)
        moved = [self._pos[m] for p in plan.placed for m in p.members if m in self._pos]
        self.commits.append({
            "generation": int(res.generation), "islands": [p.name for p in plan.placed],
            "redirect": {p.name: p.redirect for p in plan.placed}, "bytes_written": written,
            "fixups": fixups, "callsites_patched": int(res.callsites_patched),
            "contexts_translated": int(res.contexts_translated), "smis": smis,
            "attempts": out.attempts,
            "rejected": dict(plan.rejected), "jump_tables": [
                p.name for p in plan.placed if p.island is not None and p.island.indirect_jumps
            ],
        })  # fmt: skip
        merged = [[self._pos[m] for m in g if m in self._pos] for g in plan.merged]
        return RelocationResult(
            int(res.generation), moved, written, 0, 0, fixups, smis, 0,
            self.params.relocation_cycles(smis, written, fixups), merged,
        )  # fmt: skip

    def _wait_inside(self, plan: RelocationPlan) -> None:
        """Between STAGED and COMMIT: wait for a thread of the program inside an island of the
        plan (the commit is sent either way; contexts_translated says what it found)."""
        spans = [(p.src, p.src + p.size) for p in plan.placed]
        self.rel.sample_until(
            lambda s: self.is_program(s) and any(lo <= s.rip < hi for lo, hi in spans)
        )

    def _spans(self, plan: RelocationPlan) -> list[bytes] | None:
        """What the plan may write, as it reads now (None without a reader)."""
        if self.read is None:
            return None
        try:
            return [self.read(a, n) for a, n in plan.written_spans()]
        except PageFault:  # not mapped (any more): nothing to compare
            return None

    def rollback(self, generation: int) -> RelocationResult:
        if not self.alive():  # never written after the exit: its pages may be someone else's
            return RelocationResult(generation, refused=EXITED)
        before = self.generations()
        mark = len(self.rel.smis)
        try:
            res = self.rel.rollback(generation)
        except DriverRejected as exc:  # e.g. the process exited: its pages are not written
            return RelocationResult(generation, refused=L.Status(exc.status).name)
        self._refresh()
        smis = len(self.rel.since(mark))
        undone = [i for g, m in before if g >= generation for i in m]
        restored = int(res.bytes_restored)
        cycles = self.params.relocation_cycles(smis, restored, 0)
        return RelocationResult(generation, undone, 0, 0, restored, 0, smis, 0, cycles)

    def _refresh(self) -> None:
        self._map = self.rel.address_map()
        self._set_ranges()

    def address_map(self) -> list[L.MapEntry]:
        return list(self._map)  # changes only by this target's commits and rollbacks

    def conflicts(self, counts: np.ndarray) -> list[tuple[int, list[int]]]:
        return []  # plans keep the islands apart (keep_order): nothing merged to split

    def retired_bytes(self) -> int:
        return sum(int(e.size) for e in self._map if e.flags & L.MAP_RETIRED)

    def reclaim_price(self) -> float:
        """No RECLAIM pays here: in a Linux guest the engine keeps every retired copy in a
        process's address space (RECLAIM_KEPT_SPACE: it cannot scan that process's stacks), and
        the native agent registers no STACK region, so a RECLAIM there could not see a return
        address into a copy.  The retired copies' room stays taken (the zone is 2 MiB)."""
        return math.inf

    def reclaim(self) -> RelocationResult:
        """RECLAIM now (the loop never asks: reclaim_price); its SMIs are charged."""
        mark = len(self.rel.smis)
        report = self.rel.reclaim()
        self._refresh()
        smis = len(self.rel.since(mark))
        cycles = self.params.relocation_cycles(smis, 0, 0)
        return RelocationResult(0, [], smis=smis, cycles=cycles, reclaims=1,
                                bytes_freed=report.bytes_freed)  # fmt: skip

    def generations(self) -> list[tuple[int, list[int]]]:
        gens: dict[int, list[int]] = {}
        for e in self._map:
            if members := self._members(e):
                gens.setdefault(int(e.generation), []).extend(members)
        return sorted(gens.items())
