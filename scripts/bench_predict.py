#!/usr/bin/env python3
"""Prediction figures (printed, not timed tests): inference per decision with 10,000 islands and
a retrain on 100,000 rows.  Targets: <= 1 ms per decision, <= 1 s per retrain.

A decision = features for every island from the rolling state + one model call over all islands.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from codeisland.predict.model import HeatModel
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


def best_of(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))  # type: ignore[return-value]


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
    ms_min, ms_med = best_of(lambda: model.predict_heat(state, 3600.0), a.repeat)
    feat_min, _ = best_of(lambda: state.features(3600.0), a.repeat)
    upd_min, _ = best_of(
        lambda: FeatureState(a.islands, model.relations or Relations.empty(a.islands)).update(
            counts[-1], None, 0, 0, 4, 2
        ),
        a.repeat,
    )
    out = {
        "retrain_rows": rows,
        "retrain_s_min": round(fit_min, 3),
        "retrain_s_median": round(fit_med, 3),
        "islands": a.islands,
        "active_share": a.active,
        "features": len(FEATURES),
        "decision_ms_min": round(ms_min * 1000, 3),
        "decision_ms_median": round(ms_med * 1000, 3),
        "features_ms_min": round(feat_min * 1000, 3),
        "state_update_ms_min": round(upd_min * 1000, 3),
        "estimator": "HistGradientBoostingRegressor "
        f"(max_iter={model.max_iter}, max_leaf_nodes={model.max_leaf_nodes}), 1 thread",
    }
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"retrain on {rows} rows: min {fit_min:.3f} s, median {fit_med:.3f} s (target <= 1 s)")
    print(
        f"decision for {a.islands} islands ({a.active:.0%} with history): min "
        f"{ms_min * 1000:.2f} ms, median {ms_med * 1000:.2f} ms (target <= 1 ms); "
        f"of which features {feat_min * 1000:.2f} ms"
    )
    print(f"state update for one window: {upd_min * 1000:.2f} ms; {out['estimator']}")


if __name__ == "__main__":
    main()
