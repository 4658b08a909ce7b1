"""An island-level model target for the benchmark: workload streams through the native model.

This is a MODEL, not the emulator: it does not execute guest instructions.  Each window, the
workload's executions (loop/workloads.py) become a basic-block fetch stream at the islands'
current addresses, fed in bulk to the native front-end model (emulation/native, the same code
the Unicorn hook runs), which counts per-island blocks and modeled cycles.  RIP samples are
taken every `sample_every` blocks, as periodic SMIs would.  Relocation follows the driver's
semantics (generations, rollback of a generation and every newer one, at most 16 generations,
per-SMI staging budget, differential copy); its SMI costs are modeled from bytes and fix-ups:

    handler instructions of an SMI = HANDLER_BASE_INSNS + bytes * INSNS_PER_BYTE
                                     + fixups * INSNS_PER_FIXUP
    cycles taken from the guest    = smi_entry_cycles per SMI + bytes * stage_cycles_per_byte
                                     + fixups * fixup_cycles

A window stands for `repeat` back-to-back runs of its sampled block stream (default 100, about
10 M guest instructions), so SMI costs weigh against a window of realistic length: the stream is
fed twice, the first pass from the caches the previous window left (a fresh copy's cold misses
count once), the second as the steady state of the other repeat - 1 runs.

Destinations are packed first-fit into the hot region (mapped with 2 MiB pages, HOT_BASE is
2 MiB aligned), each at its origin's offset in a 64-byte line: a move changes misses, not how
many lines a block straddles.  This machine keeps its own placement: it moves the
benchmark's islands one by one and never merges or splits them (its islands are abstract
ranges with no code to re-analyse); the driver path (loop/emulated.py) plans through the
planner's passes, merges and splits included.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..frontend.params import FrontendParams
from ..plan import layout as L
from ..profile.attribution import IslandIndex, attribute
from ..profile.format import Profile, ProfiledIsland, Window
from .target import Observation, RelocationResult
from .workloads import BLOCK_BYTES, Workload

if TYPE_CHECKING:
    from ..frontend.fetchtrace import FetchModel

HOT_BASE = 0x7FE0_0000  # 2 MiB aligned
HANDLER_BASE_INSNS = 1500
INSNS_PER_BYTE = 0.75  # copy loop + chunk digest, per byte
INSNS_PER_FIXUP = 24


def repeated_window(
    model: FetchModel, addrs: np.ndarray, sizes: np.ndarray, n: int, repeat: int
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per-island counts and totals of `repeat` back-to-back runs of a window's fetch stream:
    pass 1 runs from the caches the last window left (cold copies miss here, once), pass 2 is
    the steady state that the other repeat - 1 runs see."""
    model.reset_counts()
    model.feed(addrs, sizes)
    first, first_tot = model.island_counts(n), model.totals()
    model.reset_counts()
    model.feed(addrs, sizes)
    steady, steady_tot = model.island_counts(n), model.totals()
    rest = repeat - 1
    counts = {
        k: first[k].astype(np.float64) + rest * steady[k].astype(np.float64)
        for k in ("blocks", "cycles", "l1i_misses", "itlb_misses")
    }
    return counts, {k: first_tot[k] + rest * steady_tot[k] for k in first_tot}


class StreamSource:
    """The workload's per-window block streams, shared by every policy's machine (lock-step)."""

    def __init__(self, workload: Workload, sample_every: int = 64) -> None:
        self.w = workload
        self.sample_every = sample_every
        sizes = np.array([i.size for i in workload.islands])
        self.nblocks = np.maximum(1, sizes // BLOCK_BYTES)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def stream(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(island of each block, offset in island, block size, sample positions) of window t."""
        if t not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k >= t - 1}
            self._cache[t] = self._make(t)
        return self._cache[t]

    def _make(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.w.seed, t, 9])
        execs = np.repeat(np.arange(len(self.w.islands)), self.w.executions(t))
        rng.shuffle(execs)
        nb = self.nblocks[execs]
        island = np.repeat(execs, nb)
        first = np.repeat(np.cumsum(nb) - nb, nb)
        offset = (np.arange(len(island)) - first) * BLOCK_BYTES
        size = np.full(len(island), BLOCK_BYTES, dtype=np.uint32)
        phase = int(rng.integers(0, self.sample_every))
        samples = np.arange(phase, len(island), self.sample_every)
        return island.astype(np.int64), offset.astype(np.uint64), size, samples

    def mean_samples(self, windows: int) -> np.ndarray:
        """Expected samples per island per window over windows 0..windows-1: the whole profile
        (exact executions x blocks / sampling period), for offline layouts."""
        execs = sum(self.w.executions(t).astype(np.float64) for t in range(windows))
        return np.asarray(execs) / max(windows, 1) * self.nblocks / self.sample_every

    def samples_per_island(self, t: int) -> np.ndarray:
        island, _, _, samples = self.stream(t)
        return np.bincount(island[samples], minlength=len(self.w.islands)).astype(np.float64)


class ModelTarget:
    max_generations = 16

    def __init__(
        self,
        source: StreamSource,
        params: FrontendParams,
        hot_capacity: int,
        stage_budget: int = L.STAGE_BUDGET_DEFAULT,
        repeat: int = 100,
    ) -> None:
        from codeisland.frontend.fetchtrace import FetchModel

        self.source = source
        self.w = source.w
        self.islands: list[ProfiledIsland] = self.w.islands
        self.fixups = self.w.fixups
        self.hot_capacity = hot_capacity
        self.params = params
        self.stage_budget = stage_budget
        self.repeat = repeat
        self.model = FetchModel(params.native())
        self.model.add_huge_region(HOT_BASE, 2 << 20)
        self.orig = np.array([i.start for i in self.islands], dtype=np.uint64)
        self.size = np.array([i.size for i in self.islands], dtype=np.int64)
        self.cur = self.orig.copy()
        self.t = 0
        self.generation = 0
        self._gens: list[tuple[int, list[int]]] = []
        self._dest_content: dict[int, int] = {}  # destination -> island whose bytes are there
        self._set_ranges()

    # -- placement ---------------------------------------------------------------------

    def _set_ranges(self) -> None:
        n = len(self.islands)
        moved = np.nonzero(self.cur != self.orig)[0]
        starts = np.concatenate([self.orig, self.cur[moved]])
        ends = starts + np.concatenate([self.size, self.size[moved]]).astype(np.uint64)
        index = np.concatenate([np.arange(n), moved])
        self.model.set_ranges(starts, ends, index)

    def _allocate(self, islands: list[int]) -> dict[int, int]:
        used = sorted(
            (int(self.cur[i]), int(self.cur[i] + self.size[i]))
            for i in range(len(self.islands))
            if self.cur[i] != self.orig[i]
        )
        out: dict[int, int] = {}
        for i in sorted(islands, key=lambda k: -self.size[k]):
            # the copy keeps its origin's offset in a cache line: a move changes which lines
            # and pages the island shares, never how many lines its blocks straddle
            line = int(self.orig[i]) % 64
            at = HOT_BASE + line
            for lo, hi in used:
                if at + self.size[i] <= lo:
                    break
                at = max(at, (hi + 63) // 64 * 64 + line)
            if at + self.size[i] > HOT_BASE + self.hot_capacity:
                continue  # does not fit: the caller's selection respected capacity; skip
            out[i] = at
            used = sorted([*used, (at, at + int(self.size[i]))])
        return out

    # -- LoopTarget protocol --------------------------------------------------------------

    def run_window(self) -> Observation:
        t = self.t
        island, offset, size, samples = self.source.stream(t)
        addrs = self.cur[island] + offset
        counts, frontend = repeated_window(self.model, addrs, size, len(self.islands), self.repeat)
        rng = np.random.default_rng([self.w.seed, t, 10])
        rips = addrs[samples] + rng.integers(0, BLOCK_BYTES, len(samples)).astype(np.uint64)
        exact = counts["blocks"]
        mem = np.round(exact * self.w.data_intensity / 1600.0)  # sampled: 1 in 1600 accesses
        a = self.w.activity(t)
        self.t += 1
        return Observation(
            **a.window_fields(), rips=rips, exact=exact, mem=mem,
            island_cycles=counts["cycles"], island_l1i_misses=counts["l1i_misses"],
            island_itlb_misses=counts["itlb_misses"], frontend=frontend,
        )  # fmt: skip

    def peek_next(self) -> np.ndarray | None:
        if not self.source.w.has_window(self.t):
            # past a recording's end: the decision after its last window, for a window that
            # never runs (as the emulated replay has it)
            return np.zeros(len(self.islands))
        return self.source.samples_per_island(self.t)

    def retired_bytes(self) -> int:
        return 0  # this machine's rollback restores the destination (no copies are kept)

    def reclaim_price(self) -> float:
        return 0.0  # nothing is ever retired here, so the loop never asks

    def reclaim(self) -> RelocationResult:
        return RelocationResult(generation=0)  # nothing retired: nothing to free, no SMI

    def generations(self) -> list[tuple[int, list[int]]]:
        return [(g, list(m)) for g, m in self._gens]

    def conflicts(self, counts: np.ndarray) -> list[tuple[int, list[int]]]:
        return []  # never merges, so nothing to split

    def commit(
        self,
        islands: list[int],
        counts: np.ndarray | None = None,
        priorities: np.ndarray | None = None,
    ) -> RelocationResult:
        if len(self._gens) >= self.max_generations:
            raise RuntimeError("generation stack is full (the driver would refuse the plan)")
        dest = self._allocate(islands)
        if not dest:
            return RelocationResult(generation=self.generation)
        self.generation += 1
        staged = skipped = fix = 0
        for i, at in dest.items():
            if self._dest_content.get(at) == i:
                skipped += int(self.size[i])  # differential copy: identical chunks not written
            else:
                staged += int(self.size[i])
            self._dest_content[at] = i
            fix += int(self.fixups[i])
            self.cur[i] = at
        self._gens.append((self.generation, sorted(dest)))
        self._set_ranges()
        return self._cost(self.generation, sorted(dest), staged, skipped, 0, fix)

    def rollback(self, generation: int) -> RelocationResult:
        undone = [(g, m) for g, m in self._gens if g >= generation]
        self._gens = [(g, m) for g, m in self._gens if g < generation]
        islands = [i for _, m in undone for i in m]
        restored = int(sum(self.size[i] for i in islands))
        for i in islands:
            self.cur[i] = self.orig[i]
        self._set_ranges()
        # the undo log restores the entry bytes and the destination: content there is gone
        for i in islands:
            self._dest_content = {k: v for k, v in self._dest_content.items() if v != i}
        return self._cost(generation, islands, 0, 0, restored, 0)

    def _cost(
        self, gen: int, islands: list[int], staged: int, skipped: int, restored: int, fix: int
    ) -> RelocationResult:
        work = staged + restored
        smis = max(1, math.ceil(work / self.stage_budget)) + (1 if staged else 0)
        per_smi = min(work, self.stage_budget)
        insns = HANDLER_BASE_INSNS + per_smi * INSNS_PER_BYTE + fix * INSNS_PER_FIXUP
        cycles = self.params.relocation_cycles(smis, work, fix)
        return RelocationResult(
            gen, islands, staged, skipped, restored, fix, smis, int(insns), int(cycles)
        )

    def address_map(self) -> list[L.MapEntry]:
        out = []
        for g, members in self._gens:
            for i in members:
                out.append(
                    L.MapEntry(
                        orig=int(self.orig[i]),
                        cur=int(self.cur[i]),
                        size=int(self.size[i]),
                        island_id=self.islands[i].id,
                        generation=g,
                        flags=L.MAP_ACTIVE,
                    )
                )
        return out


def record_model(workload: str, windows: int, seed: int = 1) -> Profile:
    """A profile from the benchmark's island-level model machine (no relocation)."""
    from .workloads import make_workload

    w = make_workload(workload, seed)
    m = ModelTarget(StreamSource(w), FrontendParams(), hot_capacity=0)
    index = IslandIndex(w.islands)
    profile = Profile(list(w.islands), [], 0, {"kind": "model", "workload": workload, "seed": seed})
    for _ in range(windows):
        obs = m.run_window()
        counts, unattributed = attribute(obs.rips, index)
        profile.windows.append(
            Window(
                **obs.window_fields(), samples=[int(x) for x in counts],
                exact=[int(x) for x in obs.exact], mem=[int(x) for x in obs.mem],
                unattributed=unattributed,
            )
        )  # fmt: skip
    return profile
