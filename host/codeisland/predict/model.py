"""The heat model: scikit-learn gradient-boosted trees predicting each island's next-window heat.

Heat is log1p(samples in the window).  One model serves every island (features carry the
island's own history and relations, see profile/features.py), so it trains on islands x windows
rows and predicts a whole decision in one call.  `retrain` refits on a sliding window of the most
recent windows; the loop calls it every few windows.

File format (version 2; `codeisland model show` reads only the header):
    8 bytes  magic "CIMODEL2"
    4 bytes  little-endian length L of the JSON header
    L bytes  JSON header: format, version, estimator, params, target, features, training
             summary, feature importances, sklearn version
    rest     a skops archive (zip of JSON + .npy arrays, no pickle) of
             {"estimator": HistGradientBoostingRegressor, "relations": {field: array | float}}

Loading a model file cannot run code: the body is read with skops' safe loader, and only if
every type it names is one of TRUSTED_TYPES (numpy, builtins and scikit-learn's own estimator
types, which skops trusts, plus the tree predictor); anything else -- a function, a class
with a __reduce__ -- is refused before a single object is built.  Version 1 files (a pickle
body) are refused without being unpickled: retrain them.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.inspection import permutation_importance
from threadpoolctl import threadpool_limits

from ..documents import parse_json
from ..errors import InputError, UsageError
from ..profile.features import FEATURES, FeatureState, Relations, load_signal, training_rows
from ..profile.format import Profile
from .fasttrees import FlatTrees

MODEL_MAGIC = b"CIMODEL2"
PICKLE_MAGIC = b"CIMODEL1"  # version 1: pickle body, never loaded
MODEL_VERSION = 2
# the one type outside skops' default trust the estimator needs (its fitted trees)
TRUSTED_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
MIN_WINDOWS = 4
MAX_ROWS = 100_000  # sliding window cap: the newest rows are kept
QUIET_GATHER_SHARE = 4  # predict quiet islands once when they are >= 1/4 of the islands


@dataclass
class HeatModel:
    # 20 trees at learning rate 0.3 (was 40 at 0.15): `codeisland bench` gave share of the
    # oracle's gain 0.980 (was 0.969) and 1.66x the reactive gain (was 1.65), and a decision
    # over 10,000 islands evaluates half the trees (scripts/bench_predict.py)
    max_iter: int = 20
    max_leaf_nodes: int = 15
    learning_rate: float = 0.3
    history_windows: int = 48  # sliding window used by retrain
    seed: int = 0
    estimator: HistGradientBoostingRegressor | None = None
    relations: Relations | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    importances: dict[str, float] = field(default_factory=dict)
    _flat: FlatTrees | None = field(default=None, repr=False)

    # -- training ----------------------------------------------------------------------

    def retrain(
        self, counts: np.ndarray, mem: np.ndarray | None, ctx: dict[str, np.ndarray]
    ) -> FeatureState:
        """Fit on the newest `history_windows` windows; returns a state primed on all of them."""
        w = min(self.history_windows, counts.shape[0])
        if w < MIN_WINDOWS:
            raise UsageError(f"too little history to train: {w} windows (need {MIN_WINDOWS})")
        c, m = counts[-w:], (mem[-w:] if mem is not None else None)
        cx = {k: v[-w:] for k, v in ctx.items()}
        load = load_signal(cx["runnable_threads"], cx["busy_cpus"])
        self.relations = Relations.fit(np.log1p(c), cx["input_events"], load)
        x, y, state = training_rows(c, m, cx, self.relations)
        if len(y) > MAX_ROWS:
            x, y = x[-MAX_ROWS:], y[-MAX_ROWS:]
        if len(y) < 8:
            raise UsageError(f"too little history to train: {len(y)} rows (need at least 8)")
        self.fit_rows(x, y)
        self.summary.update(windows=int(w), islands=int(counts.shape[1]))
        return state

    def fit_rows(self, x: np.ndarray, y: np.ndarray) -> None:
        est = HistGradientBoostingRegressor(
            max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes,
            learning_rate=self.learning_rate,
            early_stopping=False,
            random_state=self.seed,
        )
        start = time.perf_counter()
        with threadpool_limits(1):  # 2-core CI machines shared with other work: no oversubscription
            est.fit(x, y)
        self.estimator = est
        self.summary.update(
            rows=len(y),
            fit_seconds=round(time.perf_counter() - start, 4),
            train_mae=float(np.abs(self._predict(x) - y).mean()),
        )

    def compute_importances(self, x: np.ndarray, y: np.ndarray, rows: int = 4000) -> None:
        """Permutation importances on (up to `rows` of) the given rows: inspectable afterwards."""
        est = self._fitted()
        pick = np.random.default_rng(self.seed).permutation(len(y))[:rows]
        with threadpool_limits(1):
            r = permutation_importance(est, x[pick], y[pick], n_repeats=3, random_state=self.seed)
        self.importances = {f: float(v) for f, v in zip(FEATURES, r.importances_mean, strict=True)}

    # -- inference ---------------------------------------------------------------------

    def _fitted(self) -> HistGradientBoostingRegressor:
        if self.estimator is None:
            raise UsageError("the model has not been trained")
        return self.estimator

    def _predict(self, x: np.ndarray) -> np.ndarray:
        est = self._fitted()
        if self._flat is None or self._flat.est is not est:
            self._flat = FlatTrees(est)
        return self._flat.predict(x)

    def predict_heat(self, state: FeatureState, next_time_of_day: float) -> np.ndarray:
        """Predicted samples per island in the next window (>= 0).

        Quiet islands (no samples, data accesses or learned relations: their feature rows are
        identical) are predicted once and the value broadcast when they are a fair share of
        the islands; when they are few (a cheap necessary condition, a zero EWMA, tells most
        of the time without the full test), gathering the other rows would cost more than
        predicting every row (the native evaluator takes well under 0.1 us a row), so all rows
        go to one model call.  Either way the values are the same.
        """
        if self.relations is not None and state.relations is not self.relations:
            state.relations = self.relations
        x = state.features(next_time_of_day)
        if len(x) == 0:
            return np.zeros(0)
        # a quiet island has a zero EWMA: when few have, skip the full quiet() test
        maybe = int(np.count_nonzero(state.ewma == 0))
        quiet = state.quiet() if maybe * QUIET_GATHER_SHARE > len(x) else None
        if quiet is None or int(np.count_nonzero(quiet)) * QUIET_GATHER_SHARE <= len(x):
            out = self._predict(x)
        else:
            out = np.empty(len(x))
            active = ~quiet
            rows = np.concatenate([x[active], x[np.flatnonzero(quiet)[:1]]])
            y = self._predict(rows)
            out[active] = y[:-1]
            out[quiet] = y[-1]
        np.clip(out, 0, 50, out=out)
        return np.expm1(out, out=out)

    # -- persistence -------------------------------------------------------------------

    def header(self) -> dict[str, Any]:
        return {
            "format": "codeisland-model",
            "version": MODEL_VERSION,
            "estimator": "HistGradientBoostingRegressor",
            "params": {
                "max_iter": self.max_iter,
                "max_leaf_nodes": self.max_leaf_nodes,
                "learning_rate": self.learning_rate,
                "history_windows": self.history_windows,
            },
            "target": "log1p(samples of the island in the next window)",
            "features": list(FEATURES),
            "summary": self.summary,
            "feature_importances": self.importances,
            "sklearn": sklearn.__version__,
        }

    def save(self, path: Path) -> None:
        import skops.io

        head = json.dumps(self.header(), sort_keys=True).encode()
        relations = dataclasses.asdict(self.relations) if self.relations is not None else None
        body = skops.io.dumps({"estimator": self._fitted(), "relations": relations})
        path.write_bytes(MODEL_MAGIC + struct.pack("<I", len(head)) + head + body)

    @staticmethod
    def read_header(path: Path) -> tuple[dict[str, Any], bytes]:
        """The checked JSON header and the (unread) body of a model file."""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read model ({exc.strerror})") from None
        if raw[:8] == PICKLE_MAGIC:
            raise InputError(
                f"{path}: model file version 1 (a pickle) is not loaded any more: retrain it "
                "with `codeisland model train`"
            )
        if raw[:8] != MODEL_MAGIC or len(raw) < 12:
            raise InputError(f"{path}: not a codeisland model file (bad magic)")
        (n,) = struct.unpack_from("<I", raw, 8)
        if 12 + n > len(raw):
            raise InputError(f"{path}: model header is truncated")
        head = parse_json(raw[12 : 12 + n], f"{path}: model header")
        _check_header(head, path)
        return head, raw[12 + n :]

    @classmethod
    def load(cls, path: Path) -> HeatModel:
        head, body = cls.read_header(path)
        est, rel = _load_body(body, path, n_features=len(FEATURES))
        p = head["params"]
        model = cls(
            max_iter=p["max_iter"],
            max_leaf_nodes=p["max_leaf_nodes"],
            learning_rate=p["learning_rate"],
            history_windows=p["history_windows"],
        )
        model.estimator, model.relations = est, rel
        model.summary = head["summary"]
        model.importances = head["feature_importances"]
        return model


# header key -> the JSON types its value may have
HEADER_KEYS: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "version": (int,),
    "estimator": (str,),
    "params": (dict,),
    "target": (str,),
    "features": (list,),
    "summary": (dict,),
    "feature_importances": (dict,),
    "sklearn": (str,),
}
PARAM_KEYS: dict[str, tuple[type, ...]] = {
    "max_iter": (int,),
    "max_leaf_nodes": (int,),
    "learning_rate": (int, float),
    "history_windows": (int,),
}


def _check_header(head: Any, path: Path) -> None:
    """Every key `model show` and `load` use, with its type: a malformed header is one line."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise InputError(f"{path}: model header: {what}")

    need(isinstance(head, dict), "not a JSON object")
    need(head.get("format") == "codeisland-model", "format is not codeisland-model")
    need(head.get("version") == MODEL_VERSION, f"version {head.get('version')!r} is not supported")
    for table, keys in ((head, HEADER_KEYS), (head.get("params"), PARAM_KEYS)):
        need(isinstance(table, dict), "params must be an object")
        for key, kinds in keys.items():
            value = table.get(key)
            need(isinstance(value, kinds) and not isinstance(value, bool), f"{key} is missing "
                 f"or not a {' or '.join(k.__name__ for k in kinds)}")  # fmt: skip
    need(head["features"] == list(FEATURES), "trained on other features than this version's")
    for key, value in [*head["summary"].items(), *head["feature_importances"].items()]:
        need(
            isinstance(value, int | float) and not isinstance(value, bool), f"{key} is not a number"
        )


def _load_body(
    body: bytes, path: Path, n_features: int
) -> tuple[HistGradientBoostingRegressor, Relations | None]:
    """The estimator and relations, through skops' safe loader and nothing else."""
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(data=body)
    except (zipfile.BadZipFile, ValueError, KeyError, TypeError, OSError, EOFError):
        raise InputError(f"{path}: model body is corrupt (not a skops archive)") from None
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise InputError(f"{path}: model body names types that are not trusted: "
                         f"{', '.join(refused[:3])}")  # fmt: skip
    try:
        payload = skops.io.loads(body, trusted=TRUSTED_TYPES)
        est, rel = payload["estimator"], payload["relations"]
    except Exception:  # a corrupt archive raises many kinds; all mean the same here
        raise InputError(f"{path}: model body is corrupt") from None
    if not isinstance(est, HistGradientBoostingRegressor) or not hasattr(est, "_predictors"):
        raise InputError(f"{path}: model body holds no fitted estimator")
    if getattr(est, "n_features_in_", None) != n_features:
        raise InputError(f"{path}: model estimator takes {est.n_features_in_} features")
    return est, None if rel is None else _relations(rel, path)


def _relations(doc: Any, path: Path) -> Relations:
    names = [f.name for f in dataclasses.fields(Relations)]
    if not isinstance(doc, dict) or sorted(doc) != sorted(names):
        raise InputError(f"{path}: model relations are malformed")
    arrays = [v for v in doc.values() if isinstance(v, np.ndarray)]
    if any(a.ndim != 1 or len(a) != len(arrays[0]) or a.dtype.kind not in "fiu" for a in arrays):
        raise InputError(f"{path}: model relations are malformed")
    return Relations(**doc)


def train_from_profile(profile: Profile, model: HeatModel, importances: bool = True) -> HeatModel:
    """Train on a recorded profile's samples (what the loop sees at run time)."""
    counts = profile.counts("samples")
    mem = profile.counts("mem")
    model.retrain(counts, mem, profile.context())
    if importances:
        x, y, _ = training_rows(
            counts[-model.history_windows :],
            mem[-model.history_windows :],
            {k: v[-model.history_windows :] for k, v in profile.context().items()},
            model.relations or Relations.empty(counts.shape[1]),
        )
        model.compute_importances(x, y)
    return model
