"""What a move is expected to save, from the front-end model's per-island miss counts.

At its origin an island's misses are measured per executed block (native hook counters).  In
the hot region (2 MiB pages, islands packed) its iTLB misses are taken as saved entirely and its
L1i misses in part (`l1i_saved_fraction`, an assumption of the model: packing removes conflict
misses, not capacity misses):

    saved per block  = (itlb_misses * itlb4k_miss_cycles
                        + l1i_saved_fraction * l1i_misses * l1i_miss_cycles) / blocks
    saved per sample = saved per block * blocks per sample

Figures come from windows where the island was busy (>= min_samples samples) at its origin; an
island never seen busy takes the mean of those that were.  The closed loop checks every move
against the measurement and rolls back those that fall short, so the assumption is corrected
where it is wrong.
"""

from __future__ import annotations

import numpy as np

from ..frontend.params import FrontendParams
from .target import Observation


class BenefitEstimator:
    def __init__(
        self,
        n: int,
        params: FrontendParams,
        l1i_saved_fraction: float = 0.5,
        min_samples: float = 5,
    ) -> None:
        self.p = params
        self.fraction = l1i_saved_fraction
        self.min_samples = min_samples
        self.saved_per_block = np.full(n, np.nan)
        self.cpb_origin = np.full(n, np.nan)  # cycles per block at the origin, busy windows
        self.blocks_per_sample = np.full(n, np.nan)

    def learn(self, obs: Observation, samples: np.ndarray, resident: np.ndarray) -> None:
        busy = ~resident & (samples >= self.min_samples) & (obs.exact > 0)
        blocks = obs.exact[busy]
        saved = (
            obs.island_itlb_misses[busy] * self.p.itlb4k_miss_cycles
            + self.fraction * obs.island_l1i_misses[busy] * self.p.l1i_miss_cycles
        ) / blocks
        cpb = obs.island_cycles[busy] / blocks
        _ewma(self.saved_per_block, busy, saved)
        _ewma(self.cpb_origin, busy, cpb)
        sampled = samples > 0
        _ewma(self.blocks_per_sample, sampled, obs.exact[sampled] / samples[sampled])

    def saved_per_sample(self) -> np.ndarray:
        spb = _fill(self.saved_per_block, 0.0)
        bps = _fill(self.blocks_per_sample, 64.0)
        return spb * bps

    def predicted_saving_per_block(self, island: int) -> float:
        return float(_fill(self.saved_per_block, 0.0)[island])


def _ewma(target: np.ndarray, mask: np.ndarray, values: np.ndarray) -> None:
    prev = target[mask]
    target[mask] = np.where(np.isnan(prev), values, 0.5 * prev + 0.5 * values)


def _fill(values: np.ndarray, default: float) -> np.ndarray:
    known = values[~np.isnan(values)]
    return np.where(np.isnan(values), float(known.mean()) if known.size else default, values)
