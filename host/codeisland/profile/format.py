"""The profile file: versioned JSON, validated as a whole on load.

    {"format": "codeisland-profile", "version": 1,
     "source": {...how it was recorded: workload, machine, seed...},
     "window_instructions": N,             # guest instructions per window
     "islands": [{"id", "name", "start", "size", ["fixups", "movable"]}, ...],
     "windows": [{"index", "time_of_day", "input_events", "runnable_threads", "busy_cpus",
                  "cpus", "samples": [per island], "exact": [per island] | null,
                  "mem": [per island] | null, "unattributed": n}, ...]}

`samples` are RIP samples attributed to original islands (SAMPLE at periodic SMIs and slice
boundaries); `exact` are block counts from the native hook (ground truth, optional); `mem` are
sampled data accesses per island.  Every list has one entry per island, in island order.
An island may say what the analysis found (optional, written when known): `fixups`, the
fix-ups a move of it needs, and `movable`, whether the planner can move it at all; a profile
replayed as a benchmark workload (loop/recorded.py) needs both.
"""

from __future__ import annotations

import gzip
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..documents import parse_json, read_bytes
from ..errors import InputError

PROFILE_FORMAT = "codeisland-profile"
PROFILE_VERSION = 1
DAY_SECONDS = 86400


@dataclass(frozen=True)
class ProfiledIsland:
    id: int
    name: str
    start: int
    size: int
    fixups: int | None = None  # from the analysis, when the recorder knew it
    movable: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The file's island object: the optional fields only when known."""
        return {k: v for k, v in asdict(self).items() if v is not None}


# the context features of a window, in this order
CONTEXT_FEATURES = ("time_of_day", "input_events", "runnable_threads", "busy_cpus", "cpus")


@dataclass
class WindowContext:
    """A window's position and context, defined once: profile windows, the closed loop's
    observations and the designed workloads' activities all extend it (same fields, same order)."""

    index: int
    time_of_day: int  # seconds since midnight, from the emulated RTC
    input_events: int  # emulated input events in the window
    runnable_threads: int
    busy_cpus: int
    cpus: int

    def context(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in CONTEXT_FEATURES}

    def window_fields(self) -> dict[str, int]:
        """The six fields by name: another kind of window for the same window is built with
        `Kind(**w.window_fields(), ...)` instead of ten positional arguments."""
        return {k: getattr(self, k) for k in ("index", *CONTEXT_FEATURES)}


@dataclass
class Window(WindowContext):
    samples: list[int]
    exact: list[int] | None = None
    mem: list[int] | None = None
    unattributed: int = 0


@dataclass
class Profile:
    islands: list[ProfiledIsland]
    windows: list[Window] = field(default_factory=list)
    window_instructions: int = 0
    source: dict[str, Any] = field(default_factory=dict)

    # -- arrays for the feature builder ----------------------------------------------

    def counts(self, kind: str = "samples") -> np.ndarray:
        """windows x islands matrix of `samples`, `exact` or `mem` (missing -> zeros)."""
        out = np.zeros((len(self.windows), len(self.islands)), dtype=np.float64)
        for row, w in enumerate(self.windows):
            values = getattr(w, kind)
            if values is not None:
                out[row] = values
        return out

    def context(self) -> dict[str, np.ndarray]:
        return {
            k: np.array([getattr(w, k) for w in self.windows], dtype=np.float64)
            for k in CONTEXT_FEATURES
        }

    # -- file ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "version": PROFILE_VERSION,
            "source": self.source,
            "window_instructions": self.window_instructions,
            "islands": [i.to_dict() for i in self.islands],
            "windows": [asdict(w) for w in self.windows],
        }

    def save(self, path: Path) -> None:
        text = json.dumps(self.to_dict(), separators=(",", ":"))
        if path.suffix == ".gz":
            path.write_bytes(gzip.compress(text.encode()))
        else:
            path.write_text(text)

    @classmethod
    def load(cls, path: Path) -> Profile:
        raw = read_bytes(path, "profile")
        try:
            doc = parse_json(raw, "profile")
        except InputError as exc:
            raise InputError(f"{path}: not a profile file ({exc})") from None
        try:
            return cls.from_dict(doc)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, doc: Any) -> Profile:
        _check(isinstance(doc, dict), "profile is not a JSON object")
        _check(doc.get("format") == PROFILE_FORMAT, "not a codeisland profile (format field)")
        version = doc.get("version")
        _check(version == PROFILE_VERSION, f"profile version {version!r} is not supported")
        # where the samples came from is what makes a profile comparable: required
        _check(
            isinstance(doc.get("source"), dict), "source must be an object (how it was recorded)"
        )
        wi = doc.get("window_instructions", 0)
        _check(_is_count(wi), "window_instructions must be a non-negative integer")
        islands = [_island(i, n) for n, i in enumerate(_list(doc, "islands"))]
        ids = [i.id for i in islands]
        _check(len(set(ids)) == len(ids), "island ids are not unique")
        _check_disjoint(islands)
        windows = [_window(w, n, len(islands)) for n, w in enumerate(_list(doc, "windows"))]
        for n, w in enumerate(windows):
            _check(w.index == n, f"window {n} has index {w.index}; windows must be in order")
        return cls(islands, windows, wi, doc["source"])


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    _check(isinstance(value, list), f"{key} must be a list")
    return value  # type: ignore[no-any-return]


def _island(d: Any, n: int) -> ProfiledIsland:
    _check(isinstance(d, dict), f"island {n} is not an object")
    for key in ("id", "start", "size"):
        _check(_is_count(d.get(key)), f"island {n}: {key} must be a non-negative integer")
    _check(d["size"] > 0, f"island {n}: size must be positive")
    _check(isinstance(d.get("name", ""), str), f"island {n}: name must be a string")
    fixups, movable = d.get("fixups"), d.get("movable")
    _check(fixups is None or _is_count(fixups), f"island {n}: fixups must be a count")
    _check(movable is None or isinstance(movable, bool), f"island {n}: movable must be a boolean")
    return ProfiledIsland(d["id"], d.get("name", ""), d["start"], d["size"], fixups, movable)


def _check_disjoint(islands: list[ProfiledIsland]) -> None:
    ordered = sorted(islands, key=lambda i: i.start)
    for a, b in itertools.pairwise(ordered):
        _check(a.start + a.size <= b.start, f"islands {a.id} and {b.id} overlap")


def _window(d: Any, n: int, islands: int) -> Window:
    _check(isinstance(d, dict), f"window {n} is not an object")
    scalars = ("index", "time_of_day", "input_events", "runnable_threads", "busy_cpus", "cpus")
    for key in scalars:
        _check(_is_count(d.get(key)), f"window {n}: {key} must be a non-negative integer")
    _check(d["time_of_day"] < DAY_SECONDS, f"window {n}: time_of_day is past midnight")
    _check(d["busy_cpus"] <= d["cpus"], f"window {n}: more busy CPUs than CPUs")
    _check(_is_count(d.get("unattributed", 0)), f"window {n}: unattributed must be a count")
    vectors: dict[str, list[int] | None] = {}
    for key in ("samples", "exact", "mem"):
        v = d.get(key)
        if v is None and key != "samples":
            vectors[key] = None
            continue
        ok = isinstance(v, list) and len(v) == islands and all(_is_count(x) for x in v)
        _check(ok, f"window {n}: {key} must list one non-negative count per island")
        vectors[key] = v
    return Window(
        **{k: d[k] for k in scalars},
        samples=vectors["samples"] or [],
        exact=vectors["exact"],
        mem=vectors["mem"],
        unattributed=d.get("unattributed", 0),
    )
