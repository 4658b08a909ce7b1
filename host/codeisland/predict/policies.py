"""Policies that predict each island's heat in the next window (samples).

  none        never relocates (the baseline every gain is measured against)
  reactive    last window's count
  ewma        exponentially weighted moving average of the counts (alpha 0.5)
  predictive  the scikit-learn heat model, retrained on a sliding window every few windows
              (EWMA until it has enough history for its first training)
  next_window the myopic oracle: knows the next window's counts exactly (given by a machine that
              can replay them), nothing later; with the same greedy selection it is NOT an upper
              bound (bench/bound.py computes one)
  static      an offline layout from the whole profile, as BOLT-style function reordering would
              give: the islands hottest over the whole trace, moved once, never moved again
  hot_once    moves every island the first time it is hot and never evicts or rolls back

All policies share the priority and selection of priority.py, so they differ only in foresight
(and static/hot_once in never undoing a move: `keeps_moves`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import numpy as np

from ..errors import UsageError
from ..profile.features import FeatureState
from .model import HeatModel


class Policy(ABC):
    name = "policy"
    relocates = True
    keeps_moves = False  # True: the loop never evicts or rolls back what this policy moved

    def __init__(self, n_islands: int) -> None:
        self.n = n_islands
        self.counts: list[np.ndarray] = []
        self.mem: list[np.ndarray] = []
        self.ctx: dict[str, list[float]] = {
            k: [] for k in ("time_of_day", "input_events", "runnable_threads", "busy_cpus", "cpus")
        }
        self.decision_seconds: list[float] = []

    def observe(self, samples: np.ndarray, mem: np.ndarray, ctx: dict[str, float]) -> None:
        self.counts.append(np.asarray(samples, dtype=np.float64))
        self.mem.append(np.asarray(mem, dtype=np.float64))
        for k in self.ctx:
            self.ctx[k].append(float(ctx[k]))
        self._observed()

    def _observed(self) -> None:  # noqa: B027 - optional hook
        """Update internal state after a window was appended."""

    @abstractmethod
    def predict(self, next_time_of_day: float, future: np.ndarray | None) -> np.ndarray:
        """Predicted samples per island in the next window."""


class NonePolicy(Policy):
    name = "none"
    relocates = False

    def predict(self, next_time_of_day: float, future: np.ndarray | None) -> np.ndarray:
        return np.zeros(self.n)


class ReactivePolicy(Policy):
    name = "reactive"

    def predict(self, next_time_of_day: float, future: np.ndarray | None) -> np.ndarray:
        return self.counts[-1] if self.counts else np.zeros(self.n)


class EwmaPolicy(Policy):
    name = "ewma"
    alpha = 0.5

    def __init__(self, n_islands: int) -> None:
        super().__init__(n_islands)
        self.value = np.zeros(n_islands)

    def _observed(self) -> None:
        c = self.counts[-1]
        self.value = c if len(self.counts) == 1 else self.alpha * c + (1 - self.alpha) * self.value

    def predict(self, next_time_of_day: float, future: np.ndarray | None) -> np.ndarray:
        return self.value


class PredictivePolicy(EwmaPolicy):
    name = "predictive"

    def __init__(
        self, n_islands: int, min_history: int = 24, retrain_every: int = 8, history: int = 96
    ) -> None:
        super().__init__(n_islands)
        self.model = HeatModel(history_windows=history)
        self.min_history = min_history
        self.retrain_every = retrain_every
        self.state: FeatureState | None = None
        self.trained_at = -1
        self.retrains = 0

    def _observed(self) -> None:
        super()._observed()
        t = len(self.counts)
        due = self.trained_at < 0 or t - self.trained_at >= self.retrain_every
        if t >= self.min_history and due:
            ctx = {k: np.array(v) for k, v in self.ctx.items()}
            self.state = self.model.retrain(np.array(self.counts), np.array(self.mem), ctx)
            self.trained_at = t
            self.retrains += 1
        elif self.state is not None:
            self.state.update(
                self.counts[-1],
                self.mem[-1],
                self.ctx["time_of_day"][-1],
                self.ctx["input_events"][-1],
                self.ctx["runnable_threads"][-1],
                self.ctx["busy_cpus"][-1],
            )

    def predict(self, next_time_of_day: float, future: np.ndarray | None) -> np.ndarray:
        if self.state is None:
            return self.value
        start = time.perf_counter()
        heat = self.model.predict_heat(self.state, next_time_of_day)
        self.decision_seconds.append(time.perf_counter() - start)
        return heat


class NextWindowOraclePolicy(Policy):
    name = "next_window"

    def predict(self, next_time_of_day: float, future: np.ndarray | None) -> np.ndarray:
        if future is None:
            raise UsageError(
                "the next-window oracle needs a machine that can replay the next window"
            )
        return np.asarray(future, dtype=np.float64)


class StaticPolicy(Policy):
    """The whole run's mean heat per island, every window: the same hot set throughout."""

    name = "static"
    keeps_moves = True

    def __init__(self, n_islands: int, profile: np.ndarray | None = None) -> None:
        super().__init__(n_islands)
        self.profile = profile  # mean samples per island per window over the whole trace

    def predict(self, next_time_of_day: float, future: np.ndarray | None) -> np.ndarray:
        if self.profile is None:
            raise UsageError("the static layout needs the whole profile (a replayable trace)")
        return self.profile


class HotOncePolicy(Policy):
    """Each island's highest count so far: once hot, wanted for good."""

    name = "hot_once"
    keeps_moves = True

    def __init__(self, n_islands: int) -> None:
        super().__init__(n_islands)
        self.peak = np.zeros(n_islands)

    def _observed(self) -> None:
        self.peak = np.maximum(self.peak, self.counts[-1])

    def predict(self, next_time_of_day: float, future: np.ndarray | None) -> np.ndarray:
        return self.peak


POLICIES: dict[str, type[Policy]] = {
    p.name: p
    for p in (
        NonePolicy,
        ReactivePolicy,
        EwmaPolicy,
        PredictivePolicy,
        NextWindowOraclePolicy,
        StaticPolicy,
        HotOncePolicy,
    )
}
# policies that need what only a replayable trace gives (the next window, the whole profile)
CLAIRVOYANT = ("next_window", "static")


def make_policy(name: str, n_islands: int, profile: np.ndarray | None = None) -> Policy:
    if name not in POLICIES:
        raise UsageError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})")
    if name == StaticPolicy.name:
        return StaticPolicy(n_islands, profile)
    return POLICIES[name](n_islands)
