"""Model features, built one window at a time by the same code in training and in the loop.

For every island i, after window t, the features that predict its heat in window t+1:

  history    y_t, y_{t-1}, y_{t-2} (y = log1p of the window's samples), EWMA, trend y_t - y_{t-1},
             mean of the last 8 windows
  time       sin/cos of the next window's time of day (emulated RTC; the clock is known ahead),
             seasonal: the island's mean y at the next window's hour in earlier days
  user       log1p(input events in window t) and the island's input response
             beta_i * (u_t - mean u), beta_i from cov(u_t, y_{i,t+1}) over the history
  load       runnable threads / busy CPUs in window t, and the island's load response (same form)
  data       log1p(sampled data accesses of the island in window t)
  co-activ.  the island's leader: the island j (among the most active) whose y_t best predicts
             y_{i,t+1} (lagged correlation); features: the leader's linear prediction and the
             correlation

Relations (leaders, responses) come from the training history (`Relations.fit`); the state is
updated window by window (`FeatureState.update`), so a decision costs O(islands).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .format import DAY_SECONDS

FEATURES = (
    "y_t",
    "y_t1",
    "y_t2",
    "ewma",
    "trend",
    "mean8",
    "tod_sin",
    "tod_cos",
    "seasonal",
    "input_log",
    "input_response",
    "load",
    "load_response",
    "mem_log",
    "leader_pred",
    "leader_corr",
)
HOURS = 24
EWMA_ALPHA = 0.5
LEADER_CANDIDATES = 256


def load_signal(runnable: np.ndarray, busy: np.ndarray) -> np.ndarray:
    """System load: runnable threads per busy CPU (a CPU with nothing to run counts as 1)."""
    return np.asarray(runnable, dtype=np.float64) / np.maximum(np.asarray(busy, dtype=float), 1)


def hour_of(tod: np.ndarray | float) -> np.ndarray:
    return (np.asarray(tod, dtype=np.float64) // (DAY_SECONDS / HOURS)).astype(np.int64) % HOURS


@dataclass
class Relations:
    """Per-island relations learned from a history window (windows x islands of y)."""

    leader: np.ndarray  # island index of each island's leader
    leader_a: np.ndarray  # y_{i,t+1} ~ a + b * y_{leader,t}
    leader_b: np.ndarray
    leader_corr: np.ndarray
    input_beta: np.ndarray
    input_mean: float
    load_beta: np.ndarray
    load_mean: float

    @classmethod
    def empty(cls, n: int) -> Relations:
        z = np.zeros(n)
        return cls(np.arange(n), z, z.copy(), z.copy(), z.copy(), 0.0, z.copy(), 0.0)

    @classmethod
    def fit(cls, y: np.ndarray, inputs: np.ndarray, load: np.ndarray) -> Relations:
        t, n = y.shape
        if t < 4:
            return cls.empty(n)
        now, nxt = y[:-1], y[1:]
        cand = np.argsort(-now.mean(axis=0), kind="stable")[: min(LEADER_CANDIDATES, n)]
        zc = _standardize(now[:, cand])
        zn = _standardize(nxt)
        corr = zc.T @ zn / (t - 1)  # candidates x islands
        corr[np.arange(len(cand)), cand] = -np.inf  # an island is not its own leader
        best = np.argmax(corr, axis=0)
        leader = cand[best]
        lc = corr[best, np.arange(n)]
        lc = np.where(np.isfinite(lc), lc, 0.0)
        x = now[:, leader]
        xm, ym = x.mean(axis=0), nxt.mean(axis=0)
        var = ((x - xm) ** 2).mean(axis=0)
        b = np.where(var > 1e-12, ((x - xm) * (nxt - ym)).mean(axis=0) / np.maximum(var, 1e-12), 0)
        a = ym - b * xm
        u = np.log1p(inputs[:-1])
        ib, im = _response(u, nxt)
        lb, lm = _response(load[:-1], nxt)
        return cls(leader, a, b, lc, ib, im, lb, lm)


def _standardize(m: np.ndarray) -> np.ndarray:
    sd = m.std(axis=0)
    return (m - m.mean(axis=0)) / np.where(sd > 1e-12, sd, 1.0)


def _response(signal: np.ndarray, nxt: np.ndarray) -> tuple[np.ndarray, float]:
    s = signal - signal.mean()
    var = float((s**2).mean())
    if var < 1e-12:
        return np.zeros(nxt.shape[1]), float(signal.mean())
    beta = (s[:, None] * (nxt - nxt.mean(axis=0))).mean(axis=0) / var
    return beta, float(signal.mean())


class FeatureState:
    """Rolling per-island state: feed windows with `update`, read features with `features`."""

    def __init__(self, n_islands: int, relations: Relations | None = None) -> None:
        self.n = n_islands
        self.relations = relations or Relations.empty(n_islands)
        self.lags = np.zeros((3, n_islands))  # y_t, y_{t-1}, y_{t-2}
        self.recent = np.zeros((8, n_islands))
        self.ewma = np.zeros(n_islands)
        self.season_sum = np.zeros((HOURS, n_islands))
        self.season_n = np.zeros(HOURS)
        self.mem = np.zeros(n_islands)
        self.inputs = 0.0
        self.load = 0.0
        self.windows = 0

    def update(
        self,
        samples: np.ndarray,
        mem: np.ndarray | None,
        time_of_day: float,
        input_events: float,
        runnable: float,
        busy: float,
    ) -> None:
        y = np.log1p(np.asarray(samples, dtype=np.float64))
        self.lags = np.roll(self.lags, 1, axis=0)
        self.lags[0] = y
        self.recent[self.windows % 8] = y
        self.ewma = y if self.windows == 0 else EWMA_ALPHA * y + (1 - EWMA_ALPHA) * self.ewma
        hour = int(hour_of(time_of_day))
        self.season_sum[hour] += y
        self.season_n[hour] += 1
        self.mem = np.log1p(np.asarray(mem, dtype=np.float64)) if mem is not None else self.mem * 0
        self.inputs = float(np.log1p(input_events))
        self.load = float(load_signal(np.array(runnable), np.array(busy)))
        self.windows += 1

    def quiet(self) -> np.ndarray:
        """Islands whose feature rows are all alike: no samples in the lags, EWMA or any hour,
        no data accesses now, and no learned relation (their rows differ in nothing)."""
        r = self.relations
        q = ~self.lags.any(axis=0) & (self.ewma == 0) & (self.mem == 0)
        q &= ~self.season_sum.any(axis=0) & ~self.recent.any(axis=0)
        for v in (r.input_beta, r.load_beta, r.leader_a, r.leader_b, r.leader_corr):
            q &= v == 0
        return q  # type: ignore[no-any-return]

    def features(self, next_time_of_day: float) -> np.ndarray:
        """islands x len(FEATURES) matrix predicting the next window."""
        r = self.relations
        angle = 2 * np.pi * float(next_time_of_day) / DAY_SECONDS
        hour = int(hour_of(next_time_of_day))
        seen = self.season_n[hour]
        seasonal = self.season_sum[hour] / seen if seen else self.ewma
        depth = min(self.windows, 8) or 1
        x = np.empty((self.n, len(FEATURES)))
        x[:, 0:3] = self.lags.T
        x[:, 3] = self.ewma
        x[:, 4] = self.lags[0] - self.lags[1]
        x[:, 5] = self.recent.sum(axis=0) / depth
        x[:, 6] = np.sin(angle)
        x[:, 7] = np.cos(angle)
        x[:, 8] = seasonal
        x[:, 9] = self.inputs
        x[:, 10] = r.input_beta * (self.inputs - r.input_mean)
        x[:, 11] = self.load
        x[:, 12] = r.load_beta * (self.load - r.load_mean)
        x[:, 13] = self.mem
        x[:, 14] = r.leader_a + r.leader_b * self.lags[0][r.leader]
        x[:, 15] = r.leader_corr
        return x


def training_rows(
    y_counts: np.ndarray,
    mem: np.ndarray | None,
    ctx: dict[str, np.ndarray],
    relations: Relations,
    start: int = 0,
) -> tuple[np.ndarray, np.ndarray, FeatureState]:
    """Replay windows through a FeatureState: rows (features after t, target y_{t+1}).

    Rows are produced for t >= start; the returned state has seen every window.
    """
    t_count, n = y_counts.shape
    state = FeatureState(n, relations)
    xs, ys = [], []
    for t in range(t_count):
        state.update(
            y_counts[t],
            None if mem is None else mem[t],
            ctx["time_of_day"][t],
            ctx["input_events"][t],
            ctx["runnable_threads"][t],
            ctx["busy_cpus"][t],
        )
        if t + 1 < t_count and t >= start:
            xs.append(state.features(ctx["time_of_day"][t + 1]))
            ys.append(np.log1p(y_counts[t + 1]))
    if not xs:
        return np.empty((0, len(FEATURES))), np.empty(0), state
    return np.vstack(xs), np.concatenate(ys), state
