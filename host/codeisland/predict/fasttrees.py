"""A fitted HistGradientBoostingRegressor compiled for the native batch evaluator.

emulation/native/treeeval.c evaluates the whole ensemble for every row in C.  Two layouts:

* bit tables (trees of <= 64 leaves, the heat model's case): per used feature, the sorted
  distinct thresholds the ensemble splits that feature on, and for every position of x among
  them one leaf mask per tree (the leaves x's failed tests rule out).  A row costs one
  binary search and one AND of a table row per used feature, then one count-trailing-zeros
  per tree: no walk down the trees.  See treeeval.c for the argument that it is exact.
* the node walk (any tree): a flat node table walked row by row; kept for trees of more
  than 64 leaves and as the reference the bit tables are tested against.

The tables are derived from the estimator once per training (nothing new is stored in model
files).  Without the native library, or for rows holding NaN (whose routing is sklearn's
missing-value logic), predictions come from sklearn's own predict.  Results equal sklearn's
(tested) for the numerical features the heat model uses.
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
MAX_BIT_LEAVES = 64
FEATURE_DTYPE = np.dtype(  # ci_bits_feature in treeeval.c
    [
        ("origin", "<f8"),
        ("scale", "<f8"),
        ("feature", "<u4"),
        ("count", "<u4"),
        ("thr_off", "<u4"),
        ("bucket_off", "<u4"),
        ("buckets", "<u4"),
        ("probes", "<u4"),
        ("tab_row", "<u4"),
        ("reserved", "<u4"),
    ]
)
assert FEATURE_DTYPE.itemsize == 48
MAX_PROBES = 2  # the grid is refined until no cell holds more thresholds than this ...
MAX_BUCKETS_PER_THRESHOLD = 32  # ... or it has this many cells per threshold


def _grid(thr: np.ndarray) -> tuple[float, float, int, np.ndarray, int]:
    """The cell grid over one feature's sorted thresholds (see ci_bits_feature in treeeval.c).

    Cells are computed exactly as the C code does (IEEE double subtract, multiply, clamp,
    truncate), so each threshold lands in the cell the evaluator will look in.
    """
    origin = float(thr[0])
    span = float(thr[-1] - thr[0])
    factor = 4
    while True:
        buckets = max(1, len(thr) * factor)
        scale = buckets / span if span > 0 and np.isfinite(buckets / span) else 0.0
        cell = np.clip((thr - origin) * scale, 0.0, buckets - 1).astype(np.uint32)
        probes = int(np.bincount(cell, minlength=buckets).max())
        if probes <= MAX_PROBES or factor >= MAX_BUCKETS_PER_THRESHOLD:
            break
        factor *= 2
    first = np.searchsorted(cell, np.arange(buckets, dtype=np.uint32), side="left")
    return origin, scale, buckets, first.astype(np.uint32), probes


def _library() -> ctypes.CDLL | None:
    try:
        from codeisland.frontend.fetchtrace import FetchModelError, load_library
    except ImportError:
        return None
    try:
        lib = load_library()
    except FetchModelError:
        return None
    vp, u32, f64 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_double
    fn = lib.ci_trees_predict
    fn.restype = ctypes.c_int
    fn.argtypes = [vp, u32, u32, vp, u32, vp, u32, f64, vp]
    fn = lib.ci_trees_predict_bits
    fn.restype = ctypes.c_int
    fn.argtypes = [vp, u32, u32, vp, u32, vp, u32, vp, u32, vp, u32, u32, u32, vp, f64, vp]
    return lib


class BitTables:
    """The bit-table layout of an ensemble of trees with at most 64 leaves each."""

    def __init__(self, trees: list[np.ndarray], n_features: int) -> None:
        leaves = max(int(t["is_leaf"].sum()) for t in trees)
        self.mask_dtype = np.dtype(np.uint16 if leaves <= 16 else np.uint64)
        self.leaf_stride = 16 if leaves <= 16 else MAX_BIT_LEAVES
        all_ones = np.iinfo(self.mask_dtype).max
        n_trees = len(trees)
        self.leaf_value = np.zeros((n_trees, self.leaf_stride))
        # per feature: (threshold, tree, mask) of every split node
        splits: dict[int, list[tuple[float, int, int]]] = {}
        for ti, nodes in enumerate(trees):
            leaf_no, under = _number_leaves(nodes)
            for i, node in enumerate(nodes):
                if node["is_leaf"]:
                    self.leaf_value[ti, leaf_no[i]] = node["value"]
                else:
                    left = under[int(node["left"])]
                    mask = all_ones & ~left
                    f = int(node["feature_idx"])
                    splits.setdefault(f, []).append((float(node["num_threshold"]), ti, mask))
        feats = sorted(splits)
        used, thresholds, firsts, tables = [], [], [], []
        thr_at = first_at = row = 0
        for f in feats:
            thr = np.unique([s[0] for s in splits[f]])
            tab = np.full((len(thr) + 1, n_trees), all_ones, dtype=self.mask_dtype)
            for value, ti, mask in splits[f]:
                j = int(np.searchsorted(thr, value))  # x > value  <=>  rank(x) > j
                tab[j + 1 :, ti] &= self.mask_dtype.type(mask)
            origin, scale, buckets, first, probes = _grid(thr)
            probes = max(probes, 2)  # the evaluator's fast path makes exactly two probes
            used.append((origin, scale, f, len(thr), thr_at, first_at, buckets, probes, row, 0))
            thresholds.append(np.concatenate([thr, np.full(probes, np.inf)]))
            firsts.append(first)
            tables.append(tab)
            thr_at += len(thr) + probes
            first_at += buckets
            row += len(tab)
        self.used = np.array(used, dtype=FEATURE_DTYPE)
        self.thresholds = np.concatenate(thresholds) if thresholds else np.zeros(1)
        self.first = np.concatenate(firsts) if firsts else np.zeros(1, dtype=np.uint32)
        # rows padded to whole 64-bit words, then to an even count of words: the evaluator ANDs
        # 16 bytes at once (padding masks are all ones and never read)
        per_word = 64 // self.leaf_stride
        words = (-(-n_trees // per_word) + 1) & ~1
        table = np.full((max(row, 1), words * per_word), all_ones, dtype=self.mask_dtype)
        if tables:
            table[:, :n_trees] = np.vstack(tables)
        self.table = table.view(np.uint64)
        self.n_features = n_features

    @property
    def nbytes(self) -> int:
        return sum(
            int(a.nbytes) for a in (self.table, self.leaf_value, self.thresholds, self.first)
        )


def _number_leaves(nodes: np.ndarray) -> tuple[dict[int, int], dict[int, int]]:
    """Leaves numbered left to right, and for every node the bit set of the leaves under it."""
    leaf_no: dict[int, int] = {}
    under: dict[int, int] = {}
    order: list[int] = []
    stack = [0]
    while stack:  # preorder, left child first: leaves come out left to right
        i = stack.pop()
        order.append(i)
        if nodes[i]["is_leaf"]:
            leaf_no[i] = len(leaf_no)
        else:
            stack.append(int(nodes[i]["right"]))
            stack.append(int(nodes[i]["left"]))
    for i in reversed(order):  # children before parents
        if nodes[i]["is_leaf"]:
            under[i] = 1 << leaf_no[i]
        else:
            under[i] = under[int(nodes[i]["left"])] | under[int(nodes[i]["right"])]
    return leaf_no, under


class FlatTrees:
    def __init__(self, est: HistGradientBoostingRegressor) -> None:
        self.est = est
        tables, roots, raw, at = [], [], [], 0
        for (predictor,) in est._predictors:
            n = predictor.nodes
            if n["is_categorical"].any():
                raise ValueError("categorical splits are not supported by the native evaluator")
            raw.append(n)
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
        self.n_features = int(est.n_features_in_)
        leaves = max((int(n["is_leaf"].sum()) for n in raw), default=0)
        self.bits = BitTables(raw, self.n_features) if 0 < leaves <= MAX_BIT_LEAVES else None
        self.lib = _library()

    def predict(self, x: np.ndarray, walk: bool = False) -> np.ndarray:
        """Predictions for the rows of x; `walk` forces the node walk (for tests)."""
        if self.lib is None:
            return np.asarray(self.est.predict(x))
        x = np.ascontiguousarray(x, dtype=np.float64)
        out = np.empty(len(x))
        if x.ndim != 2 or x.shape[1] != self.n_features:
            return np.asarray(self.est.predict(x))  # sklearn says what is wrong
        b = self.bits
        if b is not None and not walk:
            rc = self.lib.ci_trees_predict_bits(
                x.ctypes.data, len(x), x.shape[1], b.used.ctypes.data, len(b.used),
                b.thresholds.ctypes.data, len(b.thresholds), b.first.ctypes.data, len(b.first),
                b.table.ctypes.data, b.table.shape[0], len(self.roots), b.leaf_stride,
                b.leaf_value.ctypes.data, self.baseline, out.ctypes.data,
            )  # fmt: skip
        else:
            rc = self.lib.ci_trees_predict(
                x.ctypes.data, len(x), x.shape[1], self.nodes.ctypes.data, len(self.nodes),
                self.roots.ctypes.data, len(self.roots), self.baseline, out.ctypes.data,
            )  # fmt: skip
        if rc != 0:
            return np.asarray(self.est.predict(x))
        return out
