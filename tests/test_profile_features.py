"""Features on synthetic windows: history, time of day, user activity, load, co-activation."""

from __future__ import annotations

import numpy as np
import pytest

from codeisland.profile.features import (
    EWMA_ALPHA,
    FEATURES,
    FeatureState,
    Relations,
    load_signal,
    training_rows,
)

F = {name: k for k, name in enumerate(FEATURES)}


def ctx(t: int, inputs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    return {
        "time_of_day": (np.arange(t) * 3600.0) % 86400,
        "input_events": np.zeros(t) if inputs is None else inputs,
        "runnable_threads": np.full(t, 4.0),
        "busy_cpus": np.full(t, 2.0),
        "cpus": np.full(t, 2.0),
    }


def test_history_features() -> None:
    s = FeatureState(2)
    for counts in ([0, 10], [3, 10], [7, 10]):
        s.update(np.array(counts), None, 0, 0, 4, 2)
    x = s.features(3600)
    y = np.log1p([7, 3, 0])
    assert x[0, F["y_t"]] == pytest.approx(y[0])
    assert x[0, F["y_t1"]] == pytest.approx(y[1])
    assert x[0, F["y_t2"]] == pytest.approx(y[2])
    assert x[0, F["trend"]] == pytest.approx(y[0] - y[1])
    a = EWMA_ALPHA
    assert x[0, F["ewma"]] == pytest.approx(a * y[0] + (1 - a) * (a * y[1] + (1 - a) * y[2]))
    assert x[1, F["trend"]] == 0
    assert x[0, F["mean8"]] == pytest.approx(y.sum() / 3)


def test_time_of_day_and_seasonal() -> None:
    s = FeatureState(1)
    for _day in range(3):
        for hour in range(24):
            s.update(np.array([100 if hour == 5 else 0]), None, hour * 3600, 0, 1, 1)
    at5 = s.features(5 * 3600)
    at6 = s.features(6 * 3600)
    assert at5[0, F["seasonal"]] == pytest.approx(np.log1p(100))
    assert at6[0, F["seasonal"]] == 0
    assert at5[0, F["tod_sin"]] == pytest.approx(np.sin(2 * np.pi * 5 / 24))
    assert at5[0, F["tod_cos"]] == pytest.approx(np.cos(2 * np.pi * 5 / 24))


def test_leader_and_input_response_are_found() -> None:
    rng = np.random.default_rng(3)
    t, n = 80, 6
    counts = rng.poisson(2, (t, n)).astype(float)
    counts[1:, 4] = counts[:-1, 2] * 3  # island 2 foreshadows island 4 by one window
    inputs = rng.choice([0.0, 50.0], t)
    counts[1:, 5] = inputs[:-1]  # island 5 handles last window's input events
    c = ctx(t, inputs)
    rel = Relations.fit(
        np.log1p(counts), inputs, load_signal(c["runnable_threads"], c["busy_cpus"])
    )
    assert rel.leader[4] == 2
    assert rel.leader_corr[4] > 0.95
    assert rel.input_beta[5] > 0.5
    assert abs(rel.input_beta[0]) < 0.3
    x, y, state = training_rows(counts, None, c, rel)
    assert x.shape == ((t - 1) * n, len(FEATURES)) and y.shape == ((t - 1) * n,)
    # the row predicting window t+1 from window t: the leader feature sees island 2 now
    last = state.features(0)
    assert last[4, F["leader_pred"]] == pytest.approx(
        rel.leader_a[4] + rel.leader_b[4] * np.log1p(counts[-1, 2])
    )
    assert y[-n + 4] == pytest.approx(np.log1p(counts[-1, 4]))


def test_load_and_data_features() -> None:
    s = FeatureState(2)
    s.update(np.array([1, 1]), np.array([0, 99]), 0, 0, 12, 2)
    x = s.features(3600)
    assert x[0, F["load"]] == 6.0  # 12 runnable threads on 2 busy CPUs
    assert x[1, F["mem_log"]] == pytest.approx(np.log1p(99))
    assert load_signal(np.array([3.0]), np.array([0.0]))[0] == 3.0  # idle CPUs count as one
