"""Benchmark workloads with designed phase behaviour, at the level of code islands.

The phase structure is DESIGNED (stated here, reported with every result), not measured from a
real system.  Each workload is a deterministic function of (seed, window):

  daily        a daily cycle on the emulated RTC: 24 windows per day, twelve 2-hour phases, each
               heating its own group of islands (batch jobs at night, services by day)
  interactive  bursts of user activity: input events arrive in a window, the handlers that
               process them run in the next window(s), on top of a weaker daily cycle
  pipeline     islands whose activity foreshadows others': stage A of a pipeline runs in a window
               at random (p 0.3, unpredictable by design), stages B, C, D one, two and three
               windows later
  mixed        all of the above plus load changes (runnable threads per busy CPU switching
               between levels; throttling/scheduling islands heat up under high load)

Every workload also has 600 background islands, each run a steady number of times per window
(0 to a few; they keep the caches and the iTLB under pressure).  Phase islands' executions are
Poisson draws around their rates.  Islands lie scattered over
a 16 MiB text region (4 KiB pages), as functions of many firmware modules would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..profile.format import DAY_SECONDS, ProfiledIsland, WindowContext

WINDOWS_PER_DAY = 24
TEXT_BASE = 0x4000_0000
TEXT_SIZE = 16 << 20
BLOCK_BYTES = 32  # a basic block of the synthetic islands, on average
STAGES = "ABCD"


@dataclass
class WindowActivity(WindowContext):
    rates: np.ndarray  # expected executions per island


@dataclass
class Workload:
    name: str
    description: str
    islands: list[ProfiledIsland]
    fixups: np.ndarray  # fix-ups per island (rel32 calls/RIP-relative operands)
    data_intensity: np.ndarray  # data accesses per executed block, per island
    seed: int
    groups: dict[str, list[int]] = field(default_factory=dict)
    _cache: dict[int, WindowActivity] = field(default_factory=dict, repr=False)

    def activity(self, t: int) -> WindowActivity:
        if t not in self._cache:
            self._cache[t] = _ACTIVITY[self.name](self, t)
        return self._cache[t]

    def has_window(self, t: int) -> bool:
        """Is there a window t?  A designed workload never ends."""
        return t >= 0

    def executions(self, t: int) -> np.ndarray:
        """Executions per island in window t (Poisson draws, deterministic per seed and t)."""
        rates = self.activity(t).rates
        rng = np.random.default_rng([self.seed, t, 1])
        out = rng.poisson(rates)
        out[-BACKGROUND:] = np.round(rates[-BACKGROUND:])  # steady background: no noise
        return out


def _islands(
    rng: np.random.Generator, n: int
) -> tuple[list[ProfiledIsland], np.ndarray, np.ndarray]:
    sizes = np.clip(rng.lognormal(np.log(640), 0.5, n), 128, 4096).astype(int) // 16 * 16
    # scattered: one island per random 4 KiB page of the text region, at a random line offset
    pages = rng.choice(TEXT_SIZE // 4096, size=n, replace=False)
    starts = TEXT_BASE + pages * 4096 + rng.integers(0, 4096 - sizes + 1) // 64 * 64
    islands = [
        ProfiledIsland(id=i + 1, name=f"fn_{i:04d}", start=int(starts[i]), size=int(sizes[i]))
        for i in range(n)
    ]
    fixups = np.maximum(1, sizes // 96 + rng.integers(0, 4, n))
    data = rng.choice([0.2, 1.0, 3.0], size=n, p=[0.5, 0.35, 0.15])
    return islands, fixups, data


def _groups(names_sizes: list[tuple[str, int]], first: int) -> dict[str, list[int]]:
    out, at = {}, first
    for name, size in names_sizes:
        out[name] = list(range(at, at + size))
        at += size
    return out


BACKGROUND = 600
HOT_RATE = 60.0
BG_RATE = 1.5


def make_workload(name: str, seed: int = 1) -> Workload:
    if name not in _ACTIVITY:
        raise KeyError(name)
    rng = np.random.default_rng([seed, 7, len(name)])
    spec = [(f"phase{h}", 24) for h in range(12)] if name in ("daily", "mixed") else []
    if name in ("interactive", "mixed"):
        spec += [("ui", 24)] + [(f"weak{h}", 4) for h in range(4)]
    if name in ("pipeline", "mixed"):
        spec += [(f"pipe{p}{s}", 4) for p in range(3) for s in STAGES]
    if name == "mixed":
        spec += [("load", 8)]
    hot = sum(size for _, size in spec)
    islands, fixups, data = _islands(rng, hot + BACKGROUND)
    return Workload(name, _DESCRIPTIONS[name], islands, fixups, data, seed, _groups(spec, 0))


def _base(w: Workload, t: int) -> tuple[np.ndarray, np.random.Generator, int]:
    rng = np.random.default_rng([w.seed, t, 0])
    rates = np.zeros(len(w.islands))
    steady = np.random.default_rng([w.seed, 5])  # the same every window
    rates[-BACKGROUND:] = BG_RATE * steady.gamma(2.0, 0.5, BACKGROUND)
    tod = (t % WINDOWS_PER_DAY) * (DAY_SECONDS // WINDOWS_PER_DAY)
    return rates, rng, tod


def _daily(w: Workload, rates: np.ndarray, t: int, scale: float = 1.0) -> None:
    hour = t % WINDOWS_PER_DAY
    for i in w.groups.get(f"phase{hour // 2}", []):
        rates[i] += HOT_RATE * scale


def _bursts(w: Workload, t: int) -> int:
    """Input events of window t: a burst starts with probability 0.2 and lasts 1-2 windows."""
    events = 0
    for start in (t, t - 1):
        if start < 0:
            continue
        r = np.random.default_rng([w.seed, start, 2])
        if r.random() < 0.2 and (start == t or r.random() < 0.5):
            events += int(r.integers(40, 120))
    return events


def _load(w: Workload, t: int) -> int:
    """Runnable threads: a level that persists (p 0.75 per window) among 1, 4 and 12."""
    level, at = 4, max(0, t - 40)
    for s in range(at, t + 1):
        r = np.random.default_rng([w.seed, s, 3])
        if r.random() > 0.75:
            level = int(r.choice([1, 4, 12]))
    return level


def _pipelines(w: Workload, rates: np.ndarray, t: int) -> None:
    for p in range(3):
        for lag, stage in enumerate(STAGES):
            s = t - lag
            if s >= 0 and np.random.default_rng([w.seed, s, 4, p]).random() < 0.3:
                for i in w.groups[f"pipe{p}{stage}"]:
                    rates[i] += HOT_RATE


def _ui(w: Workload, rates: np.ndarray, t: int) -> int:
    events = _bursts(w, t)
    prev = _bursts(w, t - 1) if t > 0 else 0
    for i in w.groups["ui"]:
        rates[i] += HOT_RATE * prev / 80.0  # last window's events are handled now
    hour = t % WINDOWS_PER_DAY
    for i in w.groups[f"weak{hour // 6}"]:
        rates[i] += HOT_RATE * 0.5
    return events


def _act_daily(w: Workload, t: int) -> WindowActivity:
    rates, _, tod = _base(w, t)
    _daily(w, rates, t)
    return WindowActivity(t, tod, 0, 4, 2, 2, rates)


def _act_interactive(w: Workload, t: int) -> WindowActivity:
    rates, _, tod = _base(w, t)
    events = _ui(w, rates, t)
    return WindowActivity(t, tod, events, 4, 2, 2, rates)


def _act_pipeline(w: Workload, t: int) -> WindowActivity:
    rates, _, tod = _base(w, t)
    _pipelines(w, rates, t)
    return WindowActivity(t, tod, 0, 4, 2, 2, rates)


def _act_mixed(w: Workload, t: int) -> WindowActivity:
    rates, _, tod = _base(w, t)
    _daily(w, rates, t, 0.8)
    events = _ui(w, rates, t)
    _pipelines(w, rates, t)
    runnable = _load(w, t)
    if runnable >= 12:
        for i in w.groups["load"]:
            rates[i] += HOT_RATE
    busy = min(2, runnable)
    return WindowActivity(t, tod, events, runnable, busy, 2, rates)


_ACTIVITY = {
    "daily": _act_daily,
    "interactive": _act_interactive,
    "pipeline": _act_pipeline,
    "mixed": _act_mixed,
}
_DESCRIPTIONS = {
    "daily": "daily cycle: twelve 2-hour phases, each heats its own 24 islands (RTC-driven)",
    "interactive": "user bursts: input in window t runs 24 UI islands in t+1; weak 6-hour cycle",
    "pipeline": "foreshadowing: 3 pipelines, stage A at random (p 0.3), B/C/D at t+1/t+2/t+3",
    "mixed": "daily cycle + user bursts + pipelines + load levels (1/4/12 runnable threads)",
}
WORKLOADS = tuple(_ACTIVITY)
