"""Relocation priority: predicted benefit (modeled cycles saved) minus the cost of the move.

    benefit_i = predicted_heat_i * saved_cycles_per_sample_i * horizon
    cost_i    = size_i * stage_cycles_per_byte + fixups_i * fixup_cycles
                + smi_entry_cycles * size_i / stage_budget        (its share of the staging SMIs)
    priority  = benefit - cost   (an island already in place pays no cost to stay)

Islands whose priority exceeds the threshold are kept in / moved to the hot region, best first,
until its capacity or the window's staging allowance (per-SMI budget x SMIs per window) is spent.
Everything is in modeled cycles of the front-end cost model (a model, not a measurement).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..frontend.params import FrontendParams


@dataclass(frozen=True)
class CostModel:
    stage_cycles_per_byte: float
    fixup_cycles: float
    smi_entry_cycles: float
    stage_budget: int  # bytes the handler copies per SMI
    smis_per_window: int  # SMIs the loop may spend on staging in one window
    horizon: float = 1.0  # windows a move is expected to pay over
    threshold: float = 0.0  # minimum priority, cycles

    @classmethod
    def from_params(
        cls, p: FrontendParams, stage_budget: int, smis_per_window: int, **kw: float
    ) -> CostModel:
        return cls(
            p.stage_cycles_per_byte, p.fixup_cycles, p.smi_entry_cycles, stage_budget,
            smis_per_window, **kw,
        )  # fmt: skip

    def move_cost(self, size: np.ndarray, fixups: np.ndarray) -> np.ndarray:
        size = np.asarray(size, dtype=np.float64)
        return (
            size * self.stage_cycles_per_byte
            + np.asarray(fixups, dtype=np.float64) * self.fixup_cycles
            + self.smi_entry_cycles * size / self.stage_budget
        )

    @property
    def window_bytes(self) -> int:
        return self.stage_budget * self.smis_per_window


@dataclass(frozen=True)
class Candidate:
    """Why an island was chosen: the numbers behind the decision, for reports."""

    island: int
    heat: float
    benefit: float
    cost: float
    priority: float


def select_moves(
    heat: np.ndarray,
    saved_per_sample: np.ndarray,
    size: np.ndarray,
    fixups: np.ndarray,
    resident: np.ndarray,
    capacity: int,
    cost: CostModel,
) -> tuple[np.ndarray, list[Candidate]]:
    """The desired hot set (boolean per island) and the ranked candidates that made it.

    Greedy by priority (ties by island index): only islands above the threshold are ranked,
    and the capacity / staging checks run over them alone (the rest are never chosen).
    """
    benefit = np.asarray(heat) * np.asarray(saved_per_sample) * cost.horizon
    resident = np.asarray(resident, dtype=bool)
    move = np.where(resident, 0.0, cost.move_cost(size, fixups))
    priority = benefit - move
    above = np.flatnonzero(priority > cost.threshold)
    order = above[np.argsort(-priority[above], kind="stable")]
    want = np.zeros(len(priority), dtype=bool)
    used = staged = 0
    window = cost.window_bytes
    sizes = np.asarray(size)[order].astype(np.int64).tolist()
    smallest = min(sizes, default=0)
    picked: list[int] = []
    for i, s, res in zip(order.tolist(), sizes, resident[order].tolist(), strict=True):
        if used + s > capacity:
            if capacity - used < smallest:
                break  # nothing left fits
            continue
        if not res and staged + s > window:
            continue
        picked.append(i)
        used += s
        staged += 0 if res else s
    pick = np.array(picked, dtype=np.int64)
    want[pick] = True
    chosen = [
        Candidate(*c)
        for c in zip(
            picked,
            np.asarray(heat, dtype=np.float64)[pick].tolist(),
            benefit[pick].tolist(),
            move[pick].tolist(),
            priority[pick].tolist(),
            strict=True,
        )
    ]
    return want, chosen
