"""bench/bound.py: the schedule bound is the true optimum where brute force can check it, and
its LP relaxation is never below the integer optimum."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from codeisland.bench import bound as B


def _brute_force(b: np.ndarray, size: np.ndarray, cost: np.ndarray, cap: int, win: int) -> float:
    T, n = b.shape
    best = 0.0
    for bits in itertools.product((0, 1), repeat=T * n):
        x = np.array(bits).reshape(T, n)
        if (x @ size > cap).any():
            continue
        moves = np.maximum(0, x[1:] - x[:-1])
        if (moves @ size > win).any():
            continue
        best = max(best, float((b * x).sum() - (moves * cost).sum()))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_exact_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    b = rng.choice([0.0, 0.0, 50.0, 120.0, 400.0], size=(4, 3))
    size = rng.integers(1, 4, 3) * 100
    cost = rng.uniform(20, 300, 3)
    got = B.upper_bound(b, size, cost, capacity=300, window_bytes=200)
    assert got.method == "exact"
    assert got.gain == pytest.approx(_brute_force(b, size, cost, 300, 200))
    assert got.gain <= got.all_misses_cycles + 1e-9


def test_lp_relaxation_is_not_below_the_integer_optimum(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    b = rng.exponential(100, size=(12, 40)) * (rng.random((12, 40)) < 0.3)
    size, cost = rng.integers(2, 9, 40) * 64, rng.uniform(100, 2000, 40)
    exact = B.upper_bound(b, size, cost, capacity=1500, window_bytes=800)
    monkeypatch.setattr(B, "EXACT_MAX_VARIABLES", 0)
    lp = B.upper_bound(b, size, cost, capacity=1500, window_bytes=800)
    assert exact.method == "exact" and lp.method == "lp"
    assert lp.gain >= exact.gain - 1e-6
    assert lp.gain <= float(b.sum()) + 1e-6


def test_first_window_free_then_moves_pay() -> None:
    # one island: hot from the start for free; a second that only pays in window 2 must be
    # moved in (cost 30 < saving 100) while the first is dropped for lack of room
    b = np.array([[100.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    got = B.upper_bound(b, np.array([64, 64]), np.array([30.0, 30.0]), 64, 64)
    assert got.gain == pytest.approx(270.0)
    nothing = B.upper_bound(b, np.array([64, 64]), np.array([30.0, 30.0]), 32, 64)
    assert nothing.gain == 0.0 and nothing.islands == 0


def test_sensitivity_grid_changes_one_parameter_group_at_a_time() -> None:
    from codeisland.bench.sensitivity import points
    from codeisland.frontend.params import FrontendParams

    base = FrontendParams()
    grid = points(base)
    assert grid[0] == ("baseline", 1.0, base) and len(grid) == 9
    for name, factor, p in grid[1:]:
        changed = {k for k, v in p.to_dict().items() if v != base.to_dict()[k]}
        expected = (
            {"l1i_miss_cycles", "itlb4k_miss_cycles", "itlb2m_miss_cycles"}
            if name == "miss_penalties"
            else {name}
        )
        assert changed == expected, (name, factor)


def test_sensitivity_report_table_json_and_plot(tmp_path: Path) -> None:
    from codeisland.bench.plots import sensitivity_plot
    from codeisland.bench.runner import BenchConfig
    from codeisland.bench.sensitivity import HEADLINE, Point, SensitivityReport, points
    from codeisland.frontend.params import FrontendParams

    grid = [
        Point(
            name,
            f,
            p,
            dict.fromkeys(HEADLINE, 0.5 + k / 10),
            0.2,
            ["mixed/ewma"] if k else [],
            {"predictive": 0.3, "static": 0.25 + k / 100, "hot_once": 0.1},
            ["mixed/static"] if k == 2 else [],
        )
        for k, (name, f, p) in enumerate(points(FrontendParams()))
    ]
    grid[0].headline[HEADLINE[1]] = None  # a ratio without a static gain prints as n/a
    plot = sensitivity_plot(grid, tmp_path / "s.png")
    report = SensitivityReport(BenchConfig(workloads=("mixed",)), grid, plot, 3.0)
    text = str(report)
    assert "smi_entry_cycles" in text and "n/a" in text and "above the bound: mixed/ewma" in text
    assert "predictive does NOT beat: mixed/static" in text and "0.270" in text  # static/bnd
    d = report.to_dict()
    assert [p["parameter"] for p in d["points"]][:2] == ["baseline", "l1i_size"]
    assert d["points"][1]["predictive_share_of_upper_bound"] == 0.6
    assert d["points"][1]["share_of_upper_bound"]["static"] == 0.26
    assert d["points"][2]["predictive_not_above"] == ["mixed/static"]
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_report_says_how_often_reclaim_ran_and_was_declined() -> None:
    from types import SimpleNamespace

    from codeisland.bench.report import _reclaim_lines

    quiet = {"reclaims": 0, "reclaim_bytes_freed": 0, "reclaims_declined": 0}
    busy = {"reclaims": 1, "reclaim_bytes_freed": 512, "reclaims_declined": 24,
            "reclaim_price_cycles": 16_777_216.0}  # fmt: skip
    cells = {p: SimpleNamespace(stats=s) for p, s in (("none", quiet), ("predictive", busy))}
    assert _reclaim_lines(SimpleNamespace(cells=cells)) == [  # type: ignore[arg-type]
        "  RECLAIM: predictive 1 (freed 512 bytes), declined 24 at 1.68e+07 cycles each"
    ]
    cells = {"none": SimpleNamespace(stats=quiet)}
    assert _reclaim_lines(SimpleNamespace(cells=cells)) == []  # type: ignore[arg-type]
