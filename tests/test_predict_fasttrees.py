"""The native tree evaluators (bit tables and node walk) give sklearn's predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from codeisland.frontend.fetchtrace import library_path
from codeisland.predict.fasttrees import FlatTrees, _grid

native = pytest.mark.skipif(not library_path().is_file(), reason="native library not built")


def fitted(leaves: int, trees: int, seed: int = 4) -> tuple[HistGradientBoostingRegressor, int]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3000, 7))
    x[:, 3] = rng.integers(0, 4, 3000)  # a few distinct values (like log1p of small counts)
    x[:, 4] = rng.integers(0, 3, 3000)  # <= 2 thresholds: ranked without the grid
    y = np.sin(x[:, 0]) + x[:, 1] * (x[:, 2] > 0) + x[:, 3] + x[:, 4] * x[:, 0]
    y += rng.normal(scale=0.1, size=3000)
    est = HistGradientBoostingRegressor(max_iter=trees, max_leaf_nodes=leaves, random_state=0)
    return est.fit(x, y), 7


def queries(est: HistGradientBoostingRegressor, n: int, seed: int = 5) -> np.ndarray:
    """Random rows, rows sitting exactly on split thresholds, infinities, a constant column."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 7)) * 2
    thr = np.concatenate(
        [p.nodes["num_threshold"][p.nodes["is_leaf"] == 0] for (p,) in est._predictors]
    )
    feat = np.concatenate(
        [p.nodes["feature_idx"][p.nodes["is_leaf"] == 0] for (p,) in est._predictors]
    )
    pick = rng.integers(0, len(thr), n // 2)
    q[np.arange(n // 2), feat[pick]] = thr[pick]  # x == threshold goes left
    q[-3, 0], q[-2, 1] = np.inf, -np.inf
    q[:, 3] = 1.0  # the same in every row (a used feature): ANDed in once per call
    return q


@native
@pytest.mark.parametrize(
    ("leaves", "trees"),
    [(15, 25), (15, 40), (16, 70), (31, 20), (64, 10)],  # 16-bit masks, wide rows, 64-bit masks
)
def test_bit_tables_and_walk_equal_sklearn(leaves: int, trees: int) -> None:
    est, _ = fitted(leaves, trees)
    flat = FlatTrees(est)
    assert flat.lib is not None and flat.bits is not None
    assert flat.bits.mask_dtype == (np.uint16 if leaves <= 16 else np.uint64)
    for n in (1, 3, 4, 5, 501):  # whole and partial blocks of rows
        q = queries(est, n) if n > 4 else queries(est, 8)[:n]
        want = est.predict(q)
        assert np.array_equal(flat.predict(q), want)  # same leaves, summed in the same order
        assert np.allclose(flat.predict(q, walk=True), want, rtol=0, atol=1e-12)


@native
def test_wide_trees_use_the_walk() -> None:
    est, _ = fitted(100, 8)
    flat = FlatTrees(est)
    assert flat.bits is None  # more than 64 leaves: no bit tables
    q = queries(est, 300)
    assert np.allclose(flat.predict(q), est.predict(q), rtol=0, atol=1e-12)


@native
def test_nan_rows_take_sklearn_missing_value_routing() -> None:
    est, _ = fitted(15, 20)
    flat = FlatTrees(est)
    q = queries(est, 50)
    q[7, 2] = np.nan
    assert np.array_equal(flat.predict(q), est.predict(q))


def test_grid_cells_hold_few_thresholds_and_rank_exactly() -> None:
    """The cell grid reproduces searchsorted(thresholds, x, 'left') for any x (Python model of
    ci_rank in treeeval.c)."""
    rng = np.random.default_rng(1)
    for thr in (
        np.array([0.5]),
        np.sort(rng.normal(size=80)),
        np.unique(np.concatenate([rng.normal(size=40) * 1e-9, [1e6]])),  # very uneven
    ):
        origin, scale, buckets, first, probes = _grid(thr)
        padded = np.concatenate([thr, np.full(probes, np.inf)])
        x = np.concatenate([thr, np.nextafter(thr, -np.inf), np.nextafter(thr, np.inf),
                            rng.normal(size=200) * 3, [-np.inf, np.inf]])  # fmt: skip
        with np.errstate(invalid="ignore"):  # inf * 0 is NaN; the C clamp (maxsd) makes it 0
            c = (x - origin) * scale
            c = np.where(c > 0, c, 0.0)
        cell = np.where(c < buckets - 1, c, buckets - 1).astype(np.uint32)
        k = first[cell].astype(np.int64)
        rank = k + sum((padded[k + j] < x).astype(np.int64) for j in range(probes))
        assert np.array_equal(np.minimum(rank, len(thr)), np.searchsorted(thr, x, side="left"))
