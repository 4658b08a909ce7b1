"""Co-execution weights from a profile: which islands run in the same windows.

Input is deliberately simple, {island name -> per-window counts} (every list the same length),
so any profile source can feed it; `counts_from_profile` adapts the prediction engineer's
codeisland-profile documents.  The weight of a pair is the sum over windows of the smaller of
the two counts: the number of samples both islands could have shared a window with.  The
planner merges and orders by these weights (C3-style: heaviest edges first).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
        islands = doc.get("islands") or []
        windows = doc.get("windows") or []
        names = [str(i.get("name")) for i in islands]
        out: dict[str, list[float]] = {n: [] for n in names}
        for w in windows:
            values = w.get("exact") or w.get("samples") or []
            if len(values) != len(names):
                raise InputError("profile window has a count per island missing")
            for n, v in zip(names, values, strict=True):
                out[n].append(float(v))
        return out
    if isinstance(doc, dict) and all(
        isinstance(v, list) and all(isinstance(x, int | float) for x in v) for v in doc.values()
    ):
        return {str(k): [float(x) for x in v] for k, v in doc.items()}
    raise InputError("profile must be {island name: [per-window counts]} or a codeisland-profile")


def load_counts(path: Path) -> dict[str, list[float]]:
    import gzip

    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return counts_from_document(json.loads(raw))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read profile {path}: {exc}") from None
