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
  5. apply     new islands are committed as one new generation.  Islands no longer wanted stay
               until their room is needed; then the newest generation cut that frees enough room
               is rolled back (the driver undoes it and every newer one) and the still-wanted
               islands it undid are committed again ("move again") with the new ones.  A full
               generation stack forces a cut the same way.

Saved cycles per sample start from an optimistic prior (in the hot region a block costs only
its line fetches) and are learned from measurements, per island, at the origin and when hot.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..predict.policies import Policy
from ..predict.priority import CostModel, select_moves
from ..profile.attribution import IslandIndex, attribute
from .machine import Machine, RelocationResult


@dataclass
class LoopStats:
    windows: int = 0
    frontend_cycles: float = 0.0
    relocation_cycles: float = 0.0
    relocations: int = 0  # islands committed
    rollbacks: int = 0  # generations rolled back (each also undoes newer ones)
    shortfall_rollbacks: int = 0  # generations rolled back: measured benefit fell short
    moved_again: int = 0
    bytes_staged: int = 0
    bytes_restored: int = 0
    smis: int = 0
    handler_insns_max: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)  # relocation events, for plots

    @property
    def total_cycles(self) -> float:
        return self.frontend_cycles + self.relocation_cycles

    def add(self, r: RelocationResult, kind: str, window: int, counted: bool) -> None:
        self.events.append({"window": window, "kind": kind, "islands": list(r.islands)})
        if not counted:
            return
        self.relocation_cycles += r.cycles
        self.bytes_staged += r.bytes_staged
        self.bytes_restored += r.bytes_restored
        self.smis += r.smis
        self.handler_insns_max = max(self.handler_insns_max, r.handler_insns_max)
        if kind == "commit":
            self.relocations += len(r.islands)
        else:
            self.rollbacks += 1


class ClosedLoop:
    def __init__(
        self,
        machine: Machine,
        policy: Policy,
        cost: CostModel,
        *,
        keep_ratio: float = 0.3,
        cooldown: int = 4,
        warmup: int = 0,
        fetch_cycles_per_block: float = 1.5,
        min_share: float = 0.005,
    ) -> None:
        self.m = machine
        self.policy = policy
        self.cost = cost
        self.keep_ratio = keep_ratio
        self.cooldown = cooldown
        self.warmup = warmup  # windows run but not counted in the stats
        # a move must be predicted to save this share of a window's front-end cycles: islands
        # that barely run would only churn the hot region (and each cut undoes newer moves)
        self.min_share = min_share
        self.last_window_cycles = 0.0
        n = len(machine.islands)
        self.index = IslandIndex(machine.islands)
        self.size = np.array([i.size for i in machine.islands])
        self.cpb_origin = np.full(n, np.nan)  # cycles per block measured at the origin
        # optimistic prior for an island never measured in the hot region (all line fetches
        # hit); the first hot window measures it, and a move that falls short is undone
        self.cpb_hot = fetch_cycles_per_block
        self.blocks_per_sample = np.full(n, np.nan)
        self.pending: tuple[int, dict[int, float]] | None = None  # generation, expected cpb
        self.cpb_hot_island = np.full(n, np.nan)  # measured per island while hot
        self.min_blocks = 1000.0  # moved, first hot window not measured yet
        self.blocked_until = np.zeros(n, dtype=np.int64)
        self.stats = LoopStats()
        self.heat_log: list[np.ndarray] = []
        self.window = 0

    # -- helpers -----------------------------------------------------------------------

    def resident(self) -> np.ndarray:
        r = np.zeros(len(self.size), dtype=bool)
        for _, members in self.m.generations():
            r[members] = True
        return r

    def _expected_hot_cpb(self) -> np.ndarray:
        return np.where(np.isnan(self.cpb_hot_island), self.cpb_hot, self.cpb_hot_island)

    def _saved_per_sample(self) -> np.ndarray:
        origin = np.where(np.isnan(self.cpb_origin), np.nanmean(self.cpb_origin), self.cpb_origin)
        origin = np.nan_to_num(origin, nan=self.cpb_hot * 4)
        bps = np.nan_to_num(self.blocks_per_sample, nan=float(np.nanmean(self.blocks_per_sample)))
        bps = np.nan_to_num(bps, nan=64.0)
        return np.maximum(origin - self._expected_hot_cpb(), 0.0) * bps

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
        self._learn(obs, samples, resident)
        failed = self._measure(obs, resident)
        if failed is not None:
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

    def _learn(self, obs: Any, samples: np.ndarray, resident: np.ndarray) -> None:
        ran = obs.exact > 0
        cpb = np.where(ran, obs.island_cycles / np.maximum(obs.exact, 1), np.nan)
        at_origin = ran & ~resident
        self.cpb_origin[at_origin] = np.where(
            np.isnan(self.cpb_origin[at_origin]),
            cpb[at_origin],
            0.5 * self.cpb_origin[at_origin] + 0.5 * cpb[at_origin],
        )
        hot = ran & resident
        prev_hot = self.cpb_hot_island[hot]
        self.cpb_hot_island[hot] = np.where(
            np.isnan(prev_hot), cpb[hot], 0.5 * prev_hot + 0.5 * cpb[hot]
        )
        sampled = samples > 0
        bps = obs.exact[sampled] / samples[sampled]
        prev = self.blocks_per_sample[sampled]
        self.blocks_per_sample[sampled] = np.where(np.isnan(prev), bps, 0.5 * prev + 0.5 * bps)

    def _measure(self, obs: Any, resident: np.ndarray) -> int | None:
        """The generation committed last window, if its measured saving fell short; else None.

        Predicted saving of a move, per executed block: cycles per block at the origin minus
        the cycles per block expected in the hot region.  Measured: the origin's figure minus
        what the island actually cost per block in its first hot window.  Both are weighted by
        the blocks the islands really ran, so heat mispredictions (which the next selection
        corrects) do not count against the move, only the placement's effect does.
        """
        pending, self.pending = self.pending, None
        if pending is None:
            return None
        gen, expected = pending
        predicted = measured = 0.0
        for i, exp_cpb in expected.items():
            base = self.cpb_origin[i]
            if not resident[i] or obs.exact[i] < self.min_blocks or np.isnan(base):
                continue
            predicted += (base - exp_cpb) * obs.exact[i]
            measured += (base - obs.island_cycles[i] / obs.exact[i]) * obs.exact[i]
        if predicted > 0 and measured < self.keep_ratio * predicted:
            for i in expected:
                self.blocked_until[i] = self.window + self.cooldown
            return gen
        return None

    def _apply(self, heat: np.ndarray, resident: np.ndarray, counted: bool) -> None:
        allowed = self.blocked_until <= self.window
        cost = replace(
            self.cost, threshold=max(self.cost.threshold, self.min_share * self.last_window_cycles)
        )
        want, _ = select_moves(
            np.where(allowed, heat, 0.0),
            self._saved_per_sample(),
            self.size,
            self.m.fixups,
            resident,
            self.m.hot_capacity,
            cost,
        )
        add = want & ~resident
        gens = self.m.generations()
        cut = self._rollback_point(gens, want, add)
        readd: list[int] = []
        if cut is not None:
            r = self.m.rollback(cut)
            self.stats.add(r, "rollback", self.window, counted)
            readd = [i for i in r.islands if want[i]]
            add[readd] = True
        if add.any():
            r = self.m.commit([int(i) for i in np.nonzero(add)[0]])
            self.stats.add(r, "commit", self.window, counted)
            if counted:
                self.stats.moved_again += sum(1 for i in readd if i in r.islands)
            exp = self._expected_hot_cpb()
            self.pending = (r.generation, {i: float(exp[i]) for i in r.islands if i not in readd})

    def _rollback_point(
        self,
        gens: list[tuple[int, list[int]]],
        want: np.ndarray,
        add: np.ndarray,
    ) -> int | None:
        """The newest generation to roll back (with every newer one), or None.

        Lazy eviction: islands no longer wanted stay until their room is needed.  A rollback
        undoes the chosen generation and all newer ones, so the newest cut that frees enough
        room for the new islands is taken (wanted islands it undoes are committed again).
        A full generation stack forces a cut that merges the newest generations into the next
        commit.
        """
        if not gens:
            return None
        cuts: list[int] = []
        used = sum(int(self.size[m]) for _, members in gens for m in members)
        need = int(self.size[add].sum()) - (self.m.hot_capacity - used)
        if need > 0:
            freed = 0
            for g, members in reversed(gens):
                freed += sum(int(self.size[m]) for m in members if not want[m])
                if freed >= need:
                    cuts.append(g)
                    break
            else:
                cuts.append(gens[0][0])
        if add.any() and len(gens) >= self.m.max_generations:
            cuts.append(gens[len(gens) // 2][0])
        return min(cuts) if cuts else None

    def run(self, windows: int) -> LoopStats:
        for _ in range(windows):
            self.step()
        return self.stats
