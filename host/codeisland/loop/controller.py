"""The closed loop: monitor -> predict -> plan -> stage/commit -> measure -> keep/move/roll back.

Every window:
  1. monitor   run the window; attribute its RIP samples to original islands through the
               address map; feed the policy.
  2. measure   the generation committed last window has run one window: its measured saving
               (cycles per block at the origin - cycles per block now, x blocks run) is compared
               with the predicted one; if it falls short of `keep_ratio` x the prediction, the
               generation is rolled back (ROLLBACK of the newest generation) and its islands cool
               down for `cooldown` windows.  Each island's hot cost is learned for later picks.
  3. predict   the policy's heat for the next window.
  4. plan      priority = benefit - cost (predict/priority.py) -> the desired hot set.
  5. apply     new islands are committed as one new generation, planned with the last
               PLAN_HISTORY windows' counts (a machine that plans with the planner merges
               address neighbours that run in the same windows into one island).  Islands
               no longer wanted stay until their room is needed; then the generation cut that
               frees enough room while undoing the fewest wanted bytes is rolled back (the
               driver undoes it and every newer one), if the new islands' benefit pays for
               staging the undone wanted ones again; those are committed again ("move again")
               with the new ones.  A full generation stack forces the cheapest cut.
               Copies a rollback kept (retired) hold their room until a RECLAIM frees it; the
               loop asks for one only when the selection with that room gains more priority
               than the RECLAIM's price (machine.reclaim_price: its scan is no small SMI).

               A merged island in place whose members' counts diverged (the planner's Split
               pass takes it apart: machine.conflicts) is split: its generation is rolled back
               with the others the cut needs, and the members still wanted are committed again,
               now as separate islands.

Saved cycles per sample come from the islands' measured misses at their origin (benefit.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..frontend.params import FrontendParams
from ..predict.policies import Policy
from ..predict.priority import CostModel, select_moves
from ..profile.attribution import IslandIndex, attribute
from .benefit import BenefitEstimator
from .target import LoopTarget, RelocationResult

# windows of counts the planner sees when it decides merges and splits: long enough that one
# noisy window does not merge or split, short enough to follow a phase change within a few
PLAN_HISTORY = 8


@dataclass
class LoopStats:
    windows: int = 0
    frontend_cycles: float = 0.0
    relocation_cycles: float = 0.0
    relocations: int = 0  # islands committed
    rollbacks: int = 0  # generations rolled back (each also undoes newer ones)
    shortfall_rollbacks: int = 0  # generations rolled back: measured benefit fell short
    moved_again: int = 0
    merges: int = 0  # merged islands committed (address neighbours moved as one)
    splits: int = 0  # merged islands taken apart again (members' needs diverged)
    refused_plans: int = 0  # commits the planner refused (nothing moved), e.g. no room left
    refusal: str | None = None  # the last refusal's reason
    reclaims: int = 0  # RECLAIM SMIs (retired copies' room freed when a plan needed it)
    reclaim_bytes_freed: int = 0
    reclaims_declined: int = 0  # the room retired copies hold would gain, but not the price
    reclaim_price: float = 0.0  # the last price looked at (modeled cycles)
    bytes_staged: int = 0
    bytes_restored: int = 0
    smis: int = 0
    handler_insns_max: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)  # relocation events, for plots

    def regroup(self, kind: str, members: list[int], window: int, counted: bool) -> None:
        """A merge or a split of `members` (island positions), in the event log."""
        self.events.append({"window": window, "kind": kind, "islands": list(members)})
        if counted and kind == "merge":
            self.merges += 1
        elif counted:
            self.splits += 1

    @property
    def total_cycles(self) -> float:
        return self.frontend_cycles + self.relocation_cycles

    def add(self, r: RelocationResult, kind: str, window: int, counted: bool) -> None:
        if r.refused is not None:
            self.refused_plans += 1
            self.refusal = r.refused
            self.events.append({"window": window, "kind": "refused", "islands": []})
            return
        self.events.append({"window": window, "kind": kind, "islands": list(r.islands)})
        for group in r.merged:
            self.regroup("merge", group, window, counted)
        if not counted:
            return
        self.relocation_cycles += r.cycles
        self.bytes_staged += r.bytes_staged
        self.bytes_restored += r.bytes_restored
        self.smis += r.smis
        self.handler_insns_max = max(self.handler_insns_max, r.handler_insns_max)
        self.reclaims += r.reclaims
        self.reclaim_bytes_freed += r.bytes_freed
        if kind == "commit":
            self.relocations += len(r.islands)
        elif kind == "rollback":
            self.rollbacks += 1


class ClosedLoop:
    def __init__(
        self,
        machine: LoopTarget,
        policy: Policy,
        cost: CostModel,
        *,
        keep_ratio: float = 0.3,
        cooldown: int = 4,
        warmup: int = 0,
        params: FrontendParams | None = None,
        min_share: float = 0.001,
        commit_smis: int = 2,
    ) -> None:
        self.m = machine
        params = params or FrontendParams()
        self.policy = policy
        self.cost = cost
        self.keep_ratio = keep_ratio
        self.cooldown = cooldown
        self.warmup = warmup  # windows run but not counted in the stats
        # a move must be predicted to save this share of a window's front-end cycles: islands
        # that barely run would only churn the hot region (and each cut undoes newer moves)
        self.min_share = min_share
        # a commit takes at least its staging SMI and the commit SMI whole; the per-island
        # move cost charges SMI time pro rata by bytes, which a small batch does not cover:
        # new islands are committed only if their priorities pay this many SMI entries
        self.commit_smis = commit_smis
        self.last_window_cycles = 0.0
        n = len(machine.islands)
        self.index = IslandIndex(machine.islands)
        self.size = np.array([i.size for i in machine.islands])
        self.benefit = BenefitEstimator(n, params)
        self.pending: tuple[int, dict[int, float]] | None = None  # generation, predicted saving
        self.blocked_until = np.zeros(n, dtype=np.int64)
        self.stats = LoopStats()
        self.heat_log: list[np.ndarray] = []
        self.window = 0

    # -- helpers -----------------------------------------------------------------------

    def capacity(self) -> int:
        """The hot region's bytes the loop can use: its capacity less what retired copies hold
        (a rollback that keeps copies reserves their room for the boot)."""
        return self.m.hot_capacity - self.m.retired_bytes()

    def resident(self) -> np.ndarray:
        r = np.zeros(len(self.size), dtype=bool)
        for _, members in self.m.generations():
            r[members] = True
        return r

    # -- one window --------------------------------------------------------------------

    def step(self) -> None:
        counted = self.window >= self.warmup
        obs = self.m.run_window()
        samples, _ = attribute(obs.rips, self.index, self.m.address_map())
        self.heat_log.append(samples.astype(np.float64))
        self.policy.observe(samples, obs.mem, obs.context())
        self.last_window_cycles = float(obs.frontend["cycles"])
        if counted:
            self.stats.frontend_cycles += obs.frontend["cycles"]
            self.stats.windows += 1
        resident = self.resident()
        self.benefit.learn(obs, samples, resident)
        failed = self._measure(obs, samples, resident)
        if failed is not None and not self.policy.keeps_moves:
            r = self.m.rollback(failed)
            self.stats.add(r, "rollback", self.window, counted)
            if counted:
                self.stats.shortfall_rollbacks += 1
            resident = self.resident()
        if self.policy.relocates:
            next_tod = (obs.time_of_day + self._window_seconds()) % 86400
            heat = self.policy.predict(next_tod, self.m.peek_next())
            self._apply(heat, resident, counted)
        self.window += 1

    def _window_seconds(self) -> int:
        return 3600

    def _measure(self, obs: Any, samples: np.ndarray, resident: np.ndarray) -> int | None:
        """The generation committed last window, if its measured saving fell short; else None.

        Predicted saving of a move, per executed block: from the island's misses at its origin
        (loop/benefit.py).  Measured: cycles per block at the origin minus what the island
        actually cost per block in its first hot window.  Both are weighted by
        the blocks the islands really ran, so heat mispredictions (which the next selection
        corrects) do not count against the move, only the placement's effect does.
        """
        pending, self.pending = self.pending, None
        if pending is None:
            return None
        gen, expected = pending
        predicted = measured = 0.0
        for i, saving in expected.items():
            base = self.benefit.cpb_origin[i]
            if not resident[i] or samples[i] < self.benefit.min_samples or np.isnan(base):
                continue
            predicted += saving * obs.exact[i]
            measured += (base - obs.island_cycles[i] / obs.exact[i]) * obs.exact[i]
        if predicted > 0 and measured < self.keep_ratio * predicted:
            for i in expected:
                self.blocked_until[i] = self.window + self.cooldown
            return gen
        return None

    def _select(
        self, heat: np.ndarray, resident: np.ndarray, capacity: int, cost: CostModel
    ) -> tuple[np.ndarray, list[Any]]:
        saved = self.benefit.saved_per_sample()
        return select_moves(heat, saved, self.size, self.m.fixups, resident, capacity, cost)

    def _reclaim_if_it_pays(
        self,
        heat: np.ndarray,
        resident: np.ndarray,
        cost: CostModel,
        chosen: list[Any],
        counted: bool,
    ) -> bool:
        """RECLAIM when retired copies hold room whose best use (the selection with the whole
        hot region) gains more priority than the RECLAIM costs; True if it ran."""
        if not self.m.retired_bytes():
            return False
        _, roomy = self._select(heat, resident, self.m.hot_capacity, cost)
        gain = sum(c.priority for c in roomy) - sum(c.priority for c in chosen)
        self.stats.reclaim_price = price = self.m.reclaim_price()
        if gain <= price:
            self.stats.reclaims_declined += int(gain > 0 and counted)
            return False
        self.stats.add(self.m.reclaim(), "reclaim", self.window, counted)
        return True

    def _apply(self, heat: np.ndarray, resident: np.ndarray, counted: bool) -> None:
        allowed = self.blocked_until <= self.window
        cost = replace(
            self.cost, threshold=max(self.cost.threshold, self.min_share * self.last_window_cycles)
        )
        heat = np.where(allowed, heat, 0.0)
        want, chosen = self._select(heat, resident, self.capacity(), cost)
        if self._reclaim_if_it_pays(heat, resident, cost, chosen, counted):
            want, chosen = self._select(heat, resident, self.capacity(), cost)
        add = want & ~resident
        gens = self.m.generations()
        benefit = np.zeros(len(self.size))
        for c in chosen:
            benefit[c.island] = c.priority
        if add.any() and benefit[add].sum() <= self.commit_smis * self.cost.smi_entry_cycles:
            add[:] = False  # the batch does not pay for the SMIs of its commit
        recent = np.array(self.heat_log[-PLAN_HISTORY:])
        if self.policy.keeps_moves:  # never undo a move: add only what fits beside them
            self._commit(self._fitting(add, chosen, gens), [], recent, benefit, counted)
            return
        splits = self.m.conflicts(recent) if gens else []
        cut = self._rollback_point(gens, want, add, benefit)
        if splits:  # a split undoes the merged island's generation (and every newer one)
            first = min(g for g, _ in splits)
            cut = first if cut is None else min(cut, first)
        readd: list[int] = []
        if cut is not None:
            r = self.m.rollback(cut)
            self.stats.add(r, "rollback", self.window, counted)
            for _, members in splits:
                self.stats.regroup("split", members, self.window, counted)
            readd = [i for i in r.islands if want[i]]
            add[readd] = True
        self._commit(add, readd, recent, benefit, counted)

    def _commit(
        self,
        add: np.ndarray,
        readd: list[int],
        recent: np.ndarray,
        benefit: np.ndarray,
        counted: bool,
    ) -> None:
        if not add.any():
            return
        r = self.m.commit([int(i) for i in np.nonzero(add)[0]], recent, benefit)
        self.stats.add(r, "commit", self.window, counted)
        if counted:
            self.stats.moved_again += sum(1 for i in readd if i in r.islands)
        self.pending = (
            r.generation,
            {i: self.benefit.predicted_saving_per_block(i) for i in r.islands if i not in readd},
        )

    def _fitting(
        self, add: np.ndarray, chosen: list[Any], gens: list[tuple[int, list[int]]]
    ) -> np.ndarray:
        """The islands of `add`, best first, that fit in the room the resident ones leave (and
        none once the generation stack is full)."""
        out = np.zeros_like(add)
        if len(gens) >= self.m.max_generations:
            return out
        room = self.capacity() - sum(int(self.size[m]) for _, members in gens for m in members)
        for c in chosen:
            if add[c.island] and self.size[c.island] <= room:
                out[c.island] = True
                room -= int(self.size[c.island])
        return out

    def _rollback_point(
        self,
        gens: list[tuple[int, list[int]]],
        want: np.ndarray,
        add: np.ndarray,
        benefit: np.ndarray,
    ) -> int | None:
        """The generation to roll back (with every newer one), or None.

        Lazy eviction: islands no longer wanted stay until their room is needed.  A rollback
        undoes the chosen generation and all newer ones, and the wanted islands among them
        must be staged again; so among the cuts that free enough room, the one that undoes the
        fewest wanted bytes is taken, and only if the new islands' predicted benefit exceeds
        the cost of staging those again.  A full generation stack forces the cheapest cut.
        """
        if not gens:
            return None
        used = sum(int(self.size[m]) for _, members in gens for m in members)
        need = int(self.size[add].sum()) - (self.capacity() - used)
        full = add.any() and len(gens) >= self.m.max_generations
        if need <= 0 and not full:
            return None
        best: tuple[float, int] | None = None
        freed = 0
        undone: list[int] = []
        for g, members in reversed(gens):
            freed += sum(int(self.size[m]) for m in members if not want[m])
            undone += [m for m in members if want[m]]
            if freed >= need:
                restage = float(self.cost.move_cost(self.size[undone], self.m.fixups[undone]).sum())
                if best is None or restage < best[0]:
                    best = (restage, g)
        if best is None:
            best = (float("inf"), gens[0][0])
        if full or float(benefit[add].sum()) > best[0]:
            return best[1] if best[0] < float("inf") or full else gens[0][0]
        return None

    def run(self, windows: int) -> LoopStats:
        for _ in range(windows):
            self.step()
        return self.stats
