"""A fitted HistGradientBoostingRegressor flattened for the native batch evaluator.

emulation/native/treeeval.c walks every tree for every row in C; this module builds its node
table from the estimator's predictors once per training and falls back to sklearn's predict
when the native library is not built.  Results equal sklearn's (tested) for the numerical,
missing-free features the heat model uses.
"""

from __future__ import annotations

import ctypes

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

NODE_DTYPE = np.dtype(
    [
        ("value", "<f8"),
        ("threshold", "<f8"),
        ("feature", "<u4"),
        ("left", "<u4"),
        ("right", "<u4"),
        ("is_leaf", "<u4"),
    ]
)


def _library() -> ctypes.CDLL | None:
    try:
        from smmemu.fetchtrace import FetchModelError, load_library
    except ImportError:
        return None
    try:
        lib = load_library()
    except FetchModelError:
        return None
    fn = lib.ci_trees_predict
    vp, u32 = ctypes.c_void_p, ctypes.c_uint32
    fn.restype = ctypes.c_int
    fn.argtypes = [vp, u32, u32, vp, u32, vp, u32, ctypes.c_double, vp]
    return lib


class FlatTrees:
    def __init__(self, est: HistGradientBoostingRegressor) -> None:
        self.est = est
        tables, roots, at = [], [], 0
        for (predictor,) in est._predictors:
            n = predictor.nodes
            if n["is_categorical"].any():
                raise ValueError("categorical splits are not supported by the native evaluator")
            t = np.zeros(len(n), dtype=NODE_DTYPE)
            t["value"] = n["value"]
            t["threshold"] = n["num_threshold"]
            t["feature"] = np.where(n["is_leaf"] == 1, 0, n["feature_idx"])
            t["left"] = n["left"] + at
            t["right"] = n["right"] + at
            t["is_leaf"] = n["is_leaf"]
            tables.append(t)
            roots.append(at)
            at += len(n)
        self.nodes = np.concatenate(tables) if tables else np.zeros(0, dtype=NODE_DTYPE)
        self.roots = np.array(roots, dtype=np.uint32)
        self.baseline = float(np.asarray(est._baseline_prediction).ravel()[0])
        self.lib = _library()

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.lib is None:
            return np.asarray(self.est.predict(x))
        x = np.ascontiguousarray(x, dtype=np.float64)
        out = np.empty(len(x))
        rc = self.lib.ci_trees_predict(
            x.ctypes.data, len(x), x.shape[1], self.nodes.ctypes.data, len(self.nodes),
            self.roots.ctypes.data, len(self.roots), self.baseline, out.ctypes.data,
        )  # fmt: skip
        if rc != 0:
            return np.asarray(self.est.predict(x))
        return out
