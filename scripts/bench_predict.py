#!/usr/bin/env python3
"""Prediction figures (printed, not timed tests): inference per decision with 10,000 islands and
a retrain on 100,000 rows.  Targets: <= 1 ms per decision, <= 1 s per retrain.

A decision = features for every island from the rolling state + the model over all islands
(HeatModel.predict_heat) + priority and selection (select_moves), timed together; the breakdown
times each stage alone (minimum over --repeat runs; the stages add up to about the whole):

  features    FeatureState.features: the islands x features matrix
  quiet       FeatureState.quiet: which islands have identical (history-free) rows
  trees       the tree ensemble over every island's row (native bit-table evaluator; --walk and
              --sklearn use the native node walk or sklearn's predict instead, everywhere)
  select      priority (benefit - cost) and the greedy selection under capacity and budget
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from codeisland.frontend.params import FrontendParams
from codeisland.predict.model import HeatModel
from codeisland.predict.priority import CostModel, select_moves
from codeisland.profile.features import FEATURES, FeatureState, Relations


def synthetic_history(
    windows: int, islands: int, seed: int, active: float = 1.0
) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.5, (windows, islands)).astype(float)
    counts[:, int(islands * active) :] = 0  # islands that never ran in the history
    hot = rng.choice(islands, size=min(200, islands), replace=False)
    for t in range(windows):
        counts[t, hot[(t % 24) :: 24]] += 80  # a daily cycle over a few hundred islands
    ctx = {
        "time_of_day": (np.arange(windows) * 3600.0) % 86400,
        "input_events": rng.choice([0.0, 60.0], windows, p=[0.8, 0.2]),
        "runnable_threads": rng.choice([1.0, 4.0, 12.0], windows),
        "busy_cpus": np.full(windows, 2.0),
        "cpus": np.full(windows, 2.0),
    }
    return counts, ctx


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def island_costs(islands: int, seed: int) -> dict[str, np.ndarray]:
    """Sizes, fix-ups, savings and residency of synthetic islands (for priority and selection)."""
    rng = np.random.default_rng(seed)
    return {
        "size": rng.integers(64, 2048, islands),
        "fixups": rng.integers(0, 24, islands),
        "saved": rng.uniform(2.0, 60.0, islands) * 64,  # cycles per block x blocks per sample
        "resident": rng.random(islands) < 0.01,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--islands", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument(
        "--active",
        type=float,
        default=1.0,
        help="share of islands with any history (1.0 = every island, worst case)",
    )
    ap.add_argument("--hot-capacity", type=int, default=32 * 1024)
    ap.add_argument("--stage-budget", type=int, default=16 * 1024)
    ap.add_argument("--smis-per-window", type=int, default=4)
    ap.add_argument("--walk", action="store_true", help="time the native node walk instead")
    ap.add_argument("--sklearn", action="store_true", help="time sklearn's predict instead")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    # retrain: 100,000 rows of the model's features (islands x windows of a real history)
    windows = 11
    counts, ctx = synthetic_history(windows, a.rows // (windows - 1), 1)
    model = HeatModel(history_windows=windows)
    model.retrain(counts, None, ctx)  # warm-up (imports, allocation)
    rows = model.summary["rows"]
    fit_min, fit_med = best_of(lambda: model.retrain(counts, None, ctx), 3)

    # inference: one decision over 10,000 islands
    counts, ctx = synthetic_history(48, a.islands, 2, a.active)
    model = HeatModel(history_windows=48)
    state = model.retrain(counts, None, ctx)
    est = model.estimator
    assert est is not None
    x = state.features(3600.0)
    model._predict(x)  # builds the evaluator's tables (once per training)
    flat = model._flat
    assert flat is not None
    if a.sklearn:
        flat.lib = None
    if a.walk:
        flat.bits = None
    isl = island_costs(a.islands, 3)
    cost = CostModel.from_params(FrontendParams(), a.stage_budget, a.smis_per_window)

    def select(heat: np.ndarray) -> None:
        select_moves(heat, isl["saved"], isl["size"], isl["fixups"], isl["resident"],
                     a.hot_capacity, cost)  # fmt: skip

    def decide() -> None:
        select(model.predict_heat(state, 3600.0))

    decide()
    heat = model.predict_heat(state, 3600.0)
    ms_min, ms_med = best_of(decide, a.repeat)
    parts = {
        "features": best_of(lambda: state.features(3600.0), a.repeat)[0],
        "quiet": best_of(state.quiet, a.repeat)[0],
        "trees": best_of(lambda: flat.predict(x), a.repeat)[0],
        "predict_heat": best_of(lambda: model.predict_heat(state, 3600.0), a.repeat)[0],
        "select": best_of(lambda: select(heat), a.repeat)[0],
    }
    upd_min, _ = best_of(
        lambda: FeatureState(a.islands, model.relations or Relations.empty(a.islands)).update(
            counts[-1], None, 0, 0, 4, 2
        ),
        a.repeat,
    )
    evaluator = (
        "sklearn predict"
        if a.sklearn or flat.lib is None
        else "native node walk"
        if flat.bits is None
        else f"native bit tables ({flat.bits.nbytes // 1024} KiB)"
    )
    out = {
        "retrain_rows": rows,
        "retrain_s_min": round(fit_min, 3),
        "retrain_s_median": round(fit_med, 3),
        "islands": a.islands,
        "active_share": a.active,
        "quiet_islands": int(state.quiet().sum()),
        "features": len(FEATURES),
        "decision_ms_min": round(ms_min * 1000, 3),
        "decision_ms_median": round(ms_med * 1000, 3),
        "breakdown_ms_min": {k: round(v * 1000, 3) for k, v in parts.items()},
        "state_update_ms_min": round(upd_min * 1000, 3),
        "estimator": "HistGradientBoostingRegressor "
        f"(max_iter={model.max_iter}, max_leaf_nodes={model.max_leaf_nodes}), 1 thread",
        "trees": len(est._predictors),
        "evaluator": evaluator,
    }
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"retrain on {rows} rows: min {fit_min:.3f} s, median {fit_med:.3f} s (target <= 1 s)")
    print(
        f"decision for {a.islands} islands ({a.active:.0%} with history, {out['quiet_islands']} "
        f"quiet): min {ms_min * 1000:.2f} ms, median {ms_med * 1000:.2f} ms (target <= 1 ms)"
    )
    p = {k: v * 1000 for k, v in parts.items()}
    print(
        f"  breakdown (min, ms): features {p['features']:.3f}, quiet {p['quiet']:.3f}, "
        f"trees over all {a.islands} rows {p['trees']:.3f} [{evaluator}], "
        f"predict_heat {p['predict_heat']:.3f}, priority+selection {p['select']:.3f}"
    )
    print(f"state update for one window: {upd_min * 1000:.2f} ms; {out['estimator']}")


if __name__ == "__main__":
    main()
