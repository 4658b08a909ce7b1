"""The native batch tree evaluator gives sklearn's predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from codeisland.predict.fasttrees import FlatTrees
from smmemu.fetchtrace import library_path


@pytest.mark.skipif(not library_path().is_file(), reason="native library not built")
def test_native_trees_equal_sklearn() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3000, 7))
    y = np.sin(x[:, 0]) + x[:, 1] * (x[:, 2] > 0) + rng.normal(scale=0.1, size=3000)
    est = HistGradientBoostingRegressor(max_iter=25, max_leaf_nodes=15).fit(x, y)
    flat = FlatTrees(est)
    assert flat.lib is not None
    q = rng.normal(size=(500, 7)) * 2
    assert np.allclose(flat.predict(q), est.predict(q), rtol=0, atol=1e-12)
