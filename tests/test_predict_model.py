"""Heat model train/save/load/predict; priority and selection; the baseline policies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from codeisland.errors import InputError, UsageError
from codeisland.frontend.params import FrontendParams
from codeisland.predict import CostModel, HeatModel, make_policy, select_moves
from codeisland.predict.model import MODEL_MAGIC


def synthetic(t: int = 72, n: int = 30) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    counts = rng.poisson(1.0, (t, n)).astype(float)
    for w in range(t):
        hour = w % 24
        counts[w, hour % 12] += 80  # a daily cycle: island (hour mod 12) is hot
        if w and w % 5 == 0:
            counts[w, 20] += 60
        if w > 0 and (w - 1) % 5 == 0:
            counts[w, 21] += 60  # island 21 follows island 20
    ctx = {
        "time_of_day": (np.arange(t) * 3600.0) % 86400,
        "input_events": np.zeros(t),
        "runnable_threads": np.full(t, 2.0),
        "busy_cpus": np.full(t, 2.0),
        "cpus": np.full(t, 2.0),
    }
    return counts, ctx


def test_train_predict_save_load(tmp_path: Path) -> None:
    counts, ctx = synthetic()
    model = HeatModel(history_windows=60)
    state = model.retrain(counts[:-1], None, {k: v[:-1] for k, v in ctx.items()})
    heat = model.predict_heat(state, ctx["time_of_day"][-1])
    truth = counts[-1]
    # the hot island of the next window and the follower are ranked on top
    assert set(np.argsort(-heat)[:2]) == set(np.argsort(-truth)[:2])
    assert model.summary["rows"] == 59 * 30
    path = tmp_path / "m.cim"
    model.save(path)
    assert path.read_bytes()[:8] == MODEL_MAGIC
    again = HeatModel.load(path)
    assert np.allclose(again.predict_heat(state, ctx["time_of_day"][-1]), heat)
    header, _ = HeatModel.read_header(path)
    assert header["version"] == 2 and header["summary"]["rows"] == 59 * 30


def test_importances_name_every_feature() -> None:
    counts, ctx = synthetic()
    model = HeatModel(history_windows=48)
    model.retrain(counts, None, ctx)
    from codeisland.profile.features import FEATURES, training_rows

    x, y, _ = training_rows(counts[-48:], None, {k: v[-48:] for k, v in ctx.items()},
                            model.relations)  # fmt: skip
    model.compute_importances(x, y, rows=800)
    assert set(model.importances) == set(FEATURES)
    assert max(model.importances, key=model.importances.get) in ("seasonal", "leader_pred", "y_t2",
                                                                  "tod_sin", "tod_cos")  # fmt: skip


def test_corrupt_model_files(tmp_path: Path) -> None:
    counts, ctx = synthetic()
    model = HeatModel(history_windows=30)
    model.retrain(counts, None, ctx)
    good = tmp_path / "m.cim"
    model.save(good)
    raw = good.read_bytes()
    cases = {
        "magic": (b"XXXXXXXX" + raw[8:], "bad magic"),
        "short": (raw[:40], "truncated"),
        "body": (raw[: len(raw) - 50], "corrupt"),
    }
    for name, (data, message) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(InputError, match=message):
            HeatModel.load(p)


def test_too_little_history() -> None:
    counts, ctx = synthetic(t=3)
    with pytest.raises(UsageError, match="too little history"):
        HeatModel().retrain(counts, None, ctx)


def cost() -> CostModel:
    return CostModel(stage_cycles_per_byte=2, fixup_cycles=40, smi_entry_cycles=20000,
                     stage_budget=16384, smis_per_window=1)  # fmt: skip


def test_priority_is_benefit_minus_cost() -> None:
    c = cost()
    size, fix = np.array([1024]), np.array([10])
    assert c.move_cost(size, fix)[0] == 1024 * 2 + 10 * 40 + 20000 * 1024 / 16384
    want, chosen = select_moves(np.array([10.0]), np.array([1000.0]), size, fix,
                                np.array([False]), 4096, c)  # fmt: skip
    assert want.tolist() == [True]
    assert chosen[0].priority == pytest.approx(10_000 - c.move_cost(size, fix)[0])


def test_selection_respects_threshold_capacity_and_budget() -> None:
    c = cost()
    heat = np.array([100.0, 90.0, 80.0, 1.0, 50.0])
    saved = np.full(5, 1000.0)
    size = np.array([2048, 2048, 2048, 64, 12000])
    fix = np.zeros(5)
    resident = np.array([False, False, True, False, False])
    want, chosen = select_moves(heat, saved, size, fix, resident, 6144, c)
    # 0, 1 by priority; 2 is resident (no cost) and fits; 3 is below cost; 4 exceeds capacity
    assert want.tolist() == [True, True, True, False, False]
    assert [x.island for x in chosen] == [0, 1, 2]  # 2 pays no move cost but saves less
    tight = CostModel(2, 40, 20000, stage_budget=2048, smis_per_window=1)
    want, _ = select_moves(heat, saved, size, fix, resident, 6144, tight)
    assert want.tolist() == [True, False, True, False, False]  # one new island per window


def test_baseline_policies() -> None:
    ctx = {"time_of_day": 0, "input_events": 0, "runnable_threads": 1, "busy_cpus": 1, "cpus": 1}
    r, e = make_policy("reactive", 2), make_policy("ewma", 2)
    for counts in ([4, 0], [0, 8]):
        r.observe(np.array(counts), np.zeros(2), ctx)
        e.observe(np.array(counts), np.zeros(2), ctx)
    assert r.predict(0, None).tolist() == [0, 8]
    assert e.predict(0, None).tolist() == [2, 4]
    assert make_policy("none", 2).predict(0, None).tolist() == [0, 0]
    assert make_policy("next_window", 2).predict(0, np.array([3, 1])).tolist() == [3, 1]
    with pytest.raises(UsageError):
        make_policy("next_window", 2).predict(0, None)
    with pytest.raises(UsageError, match="unknown policy"):
        make_policy("psychic", 2)
    _ = FrontendParams()


def reference_select(heat, saved, size, fixups, resident, capacity, c):  # type: ignore[no-untyped-def]
    """The selection rule spelled out over every island in priority order (the spec)."""
    priority = heat * saved * c.horizon - np.where(resident, 0.0, c.move_cost(size, fixups))
    want = np.zeros(len(heat), dtype=bool)
    used = staged = 0
    for i in np.argsort(-priority, kind="stable"):
        if priority[i] <= c.threshold:
            break
        s = int(size[i])
        if used + s > capacity or (not resident[i] and staged + s > c.window_bytes):
            continue
        want[i] = True
        used += s
        staged += 0 if resident[i] else s
    return want, priority


def test_selection_equals_the_rule_on_many_islands() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    for threshold in (0.0, 5000.0):
        c = CostModel(2, 40, 20000, stage_budget=16384, smis_per_window=4, threshold=threshold)
        heat = np.round(rng.exponential(3, n))  # many ties
        saved = np.full(n, 640.0)
        size = rng.integers(64, 4096, n)
        fix = rng.integers(0, 20, n)
        resident = rng.random(n) < 0.05
        want, chosen = select_moves(heat, saved, size, fix, resident, 64 * 1024, c)
        ref, priority = reference_select(heat, saved, size, fix, resident, 64 * 1024, c)
        assert np.array_equal(want, ref)
        assert [x.island for x in chosen] == [i for i in np.argsort(-priority, kind="stable")
                                              if ref[i]]  # fmt: skip


def test_quiet_islands_predicted_once_or_with_the_rest_alike() -> None:
    counts, ctx = synthetic(n=40)
    counts[:, 30:] = 0  # a quarter of the islands never ran: predicted once, broadcast
    model = HeatModel(history_windows=60)
    state = model.retrain(counts, None, ctx)
    heat = model.predict_heat(state, 3600.0)
    quiet = state.quiet()
    assert quiet.sum() >= 10
    x = state.features(3600.0)
    assert np.array_equal(heat, np.expm1(np.clip(model._predict(x), 0, 50)))
    assert len(set(heat[quiet].tolist())) == 1
