"""Co-execution weights from a profile: which islands run in the same windows.

Input is deliberately simple, {island name -> per-window counts} (every list the same length),
so any profile source can feed it; `counts_from_profile` adapts the prediction engineer's
codeisland-profile documents.  The weight of a pair is the sum over windows of the smaller of
the two counts: the number of samples both islands could have shared a window with.  The
planner merges and orders by these weights (C3-style: heaviest edges first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..documents import load_json
from ..errors import InputError

Counts = Mapping[str, Sequence[float]]


def coexecution(counts: Counts, min_weight: float = 0.0) -> dict[tuple[str, str], float]:
    """{(a, b): weight} for a < b by name, weights above `min_weight`."""
    names = sorted(n for n, c in counts.items() if any(c))
    if not names:
        return {}
    lengths = {len(counts[n]) for n in names}
    if len(lengths) != 1:
        raise InputError(f"profile counts have different window counts: {sorted(lengths)}")
    mat = np.array([counts[n] for n in names], dtype=np.float64)  # islands x windows
    out: dict[tuple[str, str], float] = {}
    for i in range(len(names) - 1):
        weights = np.minimum(mat[i], mat[i + 1 :]).sum(axis=1)
        for j in np.nonzero(weights > min_weight)[0]:
            out[(names[i], names[i + 1 + int(j)])] = float(weights[j])
    return out


def totals(counts: Counts) -> dict[str, float]:
    return {name: float(sum(values)) for name, values in counts.items()}


def counts_from_document(doc: Any) -> dict[str, list[float]]:
    """Accept {name: [counts]} or a codeisland-profile document (its `samples`, or `exact`)."""
    if isinstance(doc, dict) and doc.get("format") == "codeisland-profile":
        from ..profile.format import Profile

        profile = Profile.from_dict(doc)  # the one validator of profile documents
        names = [i.name for i in profile.islands]
        out: dict[str, list[float]] = {n: [] for n in names}
        for w in profile.windows:
            for n, v in zip(names, w.exact or w.samples, strict=True):
                out[n].append(float(v))
        return out
    if isinstance(doc, dict) and all(
        isinstance(v, list)
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        for v in doc.values()
    ):
        return {str(k): [float(x) for x in v] for k, v in doc.items()}
    raise InputError("profile must be {island name: [per-window counts]} or a codeisland-profile")


def load_counts(path: Path) -> dict[str, list[float]]:
    doc = load_json(path, "profile")
    try:
        return counts_from_document(doc)
    except InputError as exc:
        raise InputError(f"profile {path}: {exc}") from None
