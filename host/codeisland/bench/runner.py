"""The benchmark: workloads x policies through the closed loop on the island-level model machine.

All policies of a workload run in lock-step over the same block streams (one StreamSource), so
their differences come from their decisions only.  The first `warmup` windows (two emulated days
by default) run but are not counted: every policy starts cold and the predictive model needs
history for its first training.  Gains are measured against policy `none` in modeled front-end
cycles plus the modeled cycles the relocation SMIs took.  Every policy's gain is also given as a
share of the trace's upper bound (bound.py), computed from the `none` run's per-window misses.
THE COST MODEL IS A MODEL.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from ..frontend.params import FrontendParams
from ..loop.controller import ClosedLoop
from ..loop.model_target import ModelTarget, StreamSource
from ..loop.recorded import RECORDED, load_recorded
from ..loop.target import Observation
from ..loop.workloads import WINDOWS_PER_DAY, WORKLOADS, Workload, make_workload
from ..predict.policies import CLAIRVOYANT, POLICIES, PredictivePolicy, make_policy
from ..predict.priority import CostModel
from .bound import EXACT_TIME_LIMIT_S, UpperBound, upper_bound

MODEL_NOTE = (
    "figures are modeled front-end cycles (L1i/iTLB cost model fed by an island-level block "
    "stream), not measurements; designed workloads have designed phase structure, recorded "
    "ones replay third-party programs' per-window block counts from the emulator"
)
EMULATED_NOTE = (
    "figures are modeled front-end cycles (L1i/iTLB cost model fed by the emulated guest's fetch "
    "stream through the native hook), not measurements; handler instructions are measured in "
    "the emulator; the workload's phase structure is designed"
)


@dataclass(frozen=True)
class BenchConfig:
    workloads: tuple[str, ...] = WORKLOADS + RECORDED
    policies: tuple[str, ...] = tuple(POLICIES)
    windows: int = 7 * WINDOWS_PER_DAY
    warmup: int = 2 * WINDOWS_PER_DAY
    hot_capacity: int = 32 * 1024
    stage_budget: int = 16 * 1024
    smis_per_window: int = 4
    seed: int = 1
    bound_seconds: float = EXACT_TIME_LIMIT_S  # for the exact bound before its dual/LP

    @classmethod
    def quick(cls, **kw: Any) -> BenchConfig:
        return cls(windows=4 * WINDOWS_PER_DAY, bound_seconds=5.0, **kw)


@dataclass
class Cell:
    workload: str
    policy: str
    stats: dict[str, Any]
    gain: float = 0.0
    share_of_oracle_gain: float | None = None  # of the next-window oracle's gain (myopic)
    share_of_upper_bound: float | None = None


@dataclass
class WorkloadResult:
    name: str
    description: str
    cells: dict[str, Cell]
    heat: np.ndarray  # windows x islands, samples seen by the predictive policy's loop
    events: dict[str, list[dict[str, Any]]]  # relocation events per policy
    group_of: list[str]
    decision_ms: list[float] = field(default_factory=list)
    retrains: int = 0
    island_names: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. large pages the arena cannot have
    bound: UpperBound | None = None
    plot_png: bytes | None = None  # its heat plot, when run() was asked to draw it

    @property
    def recorded(self) -> bool:
        """Recorded from a program nobody designed for this project (loop/recorded.py)."""
        return self.name in RECORDED

    def regroups(self) -> dict[str, list[dict[str, Any]]]:
        """Merges and splits per policy: window, kind and the member islands by name."""
        name = lambda i: self.island_names[i] if i < len(self.island_names) else str(i)  # noqa: E731
        return {
            p: [
                {
                    "window": e["window"],
                    "kind": e["kind"],
                    "islands": [name(i) for i in e["islands"]],
                }
                for e in events
                if e["kind"] in ("merge", "split")
            ]
            for p, events in self.events.items()
        }


class _Recorder:
    """A machine whose windows' per-island miss cycles are kept (for the bound): the `none` run
    gives each island's misses at its origin, window by window."""

    def __init__(self, machine: Any, params: FrontendParams) -> None:
        self.machine = machine
        self.params = params
        self.saving: list[np.ndarray] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.machine, name)

    def run_window(self) -> Observation:
        obs = self.machine.run_window()
        self.saving.append(
            obs.island_itlb_misses * self.params.itlb4k_miss_cycles
            + obs.island_l1i_misses * self.params.l1i_miss_cycles
        )
        return obs


class _Replay:
    """A machine that knows its next window from a recorded run of the same seeded workload
    (the emulator is deterministic for a seed): what the clairvoyant policies need there.
    Relocation adds a few instructions (entry jumps), so a window of the replayed run can
    differ slightly from the recorded one: the oracle is clairvoyant up to that."""

    def __init__(self, machine: Any, recorded: np.ndarray) -> None:
        self.machine = machine
        self.recorded = recorded  # windows x islands, samples of the recorded (`none`) run
        self.ran = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.machine, name)

    def run_window(self) -> Observation:
        self.ran += 1
        return self.machine.run_window()

    def peek_next(self) -> np.ndarray | None:
        if self.ran < len(self.recorded):
            return self.recorded[self.ran]
        # past the recording: a decision for a window that never runs (the loop's last step)
        return np.zeros(self.recorded.shape[1])


def workload(name: str, seed: int) -> Workload:
    """A designed workload (loop/workloads.py) or a recorded one (loop/recorded.py) by name."""
    return load_recorded(name, seed) if name in RECORDED else make_workload(name, seed)


def run_workload(
    name: str, cfg: BenchConfig, params: FrontendParams, progress: tqdm | None = None
) -> WorkloadResult:
    w = workload(name, cfg.seed)
    source = StreamSource(w)
    cost = CostModel.from_params(params, cfg.stage_budget, cfg.smis_per_window)
    profile = source.mean_samples(cfg.windows)
    policies = cfg.policies if "none" in cfg.policies else ("none", *cfg.policies)
    recorder = _Recorder(ModelTarget(source, params, cfg.hot_capacity, cfg.stage_budget), params)
    loops = {
        p: ClosedLoop(
            recorder
            if p == "none"
            else ModelTarget(source, params, cfg.hot_capacity, cfg.stage_budget),
            make_policy(p, len(w.islands), profile),
            cost,
            warmup=cfg.warmup,
            params=params,
        )
        for p in policies
    }
    for _ in range(cfg.windows):
        for loop in loops.values():
            loop.step()
        if progress is not None:
            progress.update(1)
    cells = {p: Cell(name, p, loop_stats(loop)) for p, loop in loops.items()}
    size = np.array([i.size for i in w.islands])
    bound = upper_bound(
        np.array(recorder.saving[cfg.warmup :]),
        size,
        cost.move_cost(size, w.fixups),
        cfg.hot_capacity,
        cost.window_bytes,
        cfg.bound_seconds,
    )
    _gains(cells, bound)
    ref = loops.get("predictive") or next(iter(loops.values()))
    group_of = ["background"] * len(w.islands)
    for g, members in w.groups.items():
        for i in members:
            group_of[i] = g
    result = WorkloadResult(
        name,
        w.description,
        cells,
        np.array(ref.heat_log),
        {p: loop.stats.events for p, loop in loops.items()},
        group_of,
        island_names=[i.name for i in w.islands],
        bound=bound,
    )
    pol = ref.policy
    if isinstance(pol, PredictivePolicy):
        result.decision_ms = [s * 1000 for s in pol.decision_seconds]
        result.retrains = pol.retrains
    return result


def loop_stats(loop: ClosedLoop) -> dict[str, Any]:
    s = loop.stats
    return {
        "windows": s.windows,
        "modeled_cycles": s.total_cycles,
        "frontend_cycles": s.frontend_cycles,
        "relocation_cycles": s.relocation_cycles,
        "relocations": s.relocations,
        "rollbacks": s.rollbacks,
        "shortfall_rollbacks": s.shortfall_rollbacks,
        "moved_again": s.moved_again,
        "merges": s.merges,
        "splits": s.splits,
        "refused_plans": s.refused_plans,
        "reclaims": s.reclaims,
        "reclaim_bytes_freed": s.reclaim_bytes_freed,
        "reclaims_declined": s.reclaims_declined,
        "reclaim_price_cycles": s.reclaim_price,
        "bytes_staged": s.bytes_staged,
        "bytes_restored": s.bytes_restored,
        "smis": s.smis,
        "handler_insns_max": s.handler_insns_max,
    }


def _gains(cells: dict[str, Cell], bound: UpperBound | None = None) -> None:
    if "none" not in cells:
        return
    base = cells["none"].stats["modeled_cycles"]
    for c in cells.values():
        c.gain = base - c.stats["modeled_cycles"]
    oracle = cells.get("next_window")
    if oracle is not None and oracle.gain > 0:
        for c in cells.values():
            c.share_of_oracle_gain = c.gain / oracle.gain
    if bound is not None and bound.gain > 0:
        for c in cells.values():
            c.share_of_upper_bound = c.gain / bound.gain


Draw = Callable[[WorkloadResult], bytes]


def run(
    cfg: BenchConfig, params: FrontendParams, jobs: int | None = None, draw: Draw | None = None
) -> list[WorkloadResult]:
    """Every workload of `cfg`, in order.  Workloads are independent (each runs its policies in
    lock-step over its own streams), so they run in `jobs` worker processes (default: one per
    CPU, at most 2): same results, about half the wall time on two cores.  `draw` (picklable:
    a module-level function or a partial of one) renders a result's plot in its worker, beside
    the other workloads' runs, into `plot_png`; the caller writes it (a worker ended by the
    pool never leaves a half-written file)."""
    jobs = min(len(cfg.workloads), jobs or min(2, os.cpu_count() or 1))
    total = cfg.windows * len(cfg.workloads)
    with tqdm(total=total, desc="bench windows", unit="win", leave=False, disable=None) as bar:
        if jobs <= 1:
            return [_timed(name, cfg, params, draw, bar) for name in cfg.workloads]
        out = []
        ctx = multiprocessing.get_context("fork")  # the parent's imports and native library
        with ctx.Pool(jobs, initializer=_worker_init) as pool:  # leaving it terminates workers
            for r in pool.imap(_timed_star, [(n, cfg, params, draw) for n in cfg.workloads]):
                out.append(r)
                bar.update(cfg.windows)
        return out


def _timed(
    name: str,
    cfg: BenchConfig,
    params: FrontendParams,
    draw: Draw | None = None,
    bar: tqdm | None = None,
) -> WorkloadResult:
    start = time.perf_counter()
    r = run_workload(name, cfg, params, bar)
    r.cells[next(iter(r.cells))].stats["seconds"] = round(time.perf_counter() - start, 2)
    if draw is not None:
        r.plot_png = draw(r)
    return r


def _timed_star(args: tuple[str, BenchConfig, FrontendParams, Draw | None]) -> WorkloadResult:
    return _timed(*args)


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: the parent reports it once and ends the pool;
    # the pool ends its workers with SIGTERM, which must not go through the CLI's handler
    # (inherited by fork: a KeyboardInterrupt traceback from an idle worker) nor unwind the
    # worker (a SystemExit there could hang in the interpreter's shutdown: seen once)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_emulated(
    workload: str,
    policies: tuple[str, ...],
    windows: int,
    warmup: int,
    params: FrontendParams,
    *,
    window_instructions: int = 300_000,
    seed: int = 1,
    hot_capacity: int = 32 * 1024,
    keep_copies: bool = True,
) -> WorkloadResult:
    """The same loop on smmemu: the real driver relocates the real workload's functions.

    keep_copies is the planner's rollback mode: copies kept (retired, their room reserved for
    the boot, so every eviction shrinks the hot region for good) or restored (room freed).

    Each policy boots its own machine and runs the same seeded windows.  `none` runs first and
    is recorded: its samples are replayed to the clairvoyant policies (next-window oracle,
    static layout from the whole profile) and its misses give the bound, as on the model bench.
    """
    from ..loop.emulated import EmulatedTarget

    cells: dict[str, Cell] = {}
    events: dict[str, list[dict[str, Any]]] = {}
    heat = np.zeros((0, 0))
    group_of: list[str] = []
    result_policy = None
    warnings: list[str] = []
    cost = CostModel.from_params(params, 16 * 1024, 4)
    recorder: _Recorder | None = None
    refusals: list[str] = []
    recorded = np.zeros((0, 0))
    order = ["none", *[p for p in policies if p != "none"]]
    bound: UpperBound | None = None
    for p in order:
        m: Any = EmulatedTarget(workload, seed=seed, params=params, hot_capacity=hot_capacity,
                                window_instructions=window_instructions,
                                keep_copies=keep_copies)  # fmt: skip
        if p == "none":
            m = recorder = _Recorder(m, params)
        elif p in CLAIRVOYANT:
            m = _Replay(m, recorded)
        profile = recorded.mean(axis=0) if recorded.size else None
        loop = ClosedLoop(m, make_policy(p, len(m.islands), profile), cost, warmup=warmup,
                          params=params)  # fmt: skip
        for _ in tqdm(range(windows), desc=f"emulated {p}", leave=False, disable=None):
            loop.step()
        if p == "none":
            recorded = np.array(loop.heat_log)
            size = np.array([i.size for i in m.islands])
            bound = upper_bound(np.array(recorder.saving[warmup:]), size,
                                cost.move_cost(size, m.fixups), m.hot_capacity,
                                cost.window_bytes)  # fmt: skip
        cells[p] = Cell(workload, p, loop_stats(loop))
        events[p] = loop.stats.events
        warnings = m.describe()["warnings"] + refusals
        if loop.stats.refused_plans:
            refusals.append(
                f"{p}: {loop.stats.refused_plans} plans refused (last: {loop.stats.refusal}); "
                f"retired copies hold {m.retired_bytes()} of the {m.hot_capacity} bytes"
            )
            warnings.append(refusals[-1])
        if p == "predictive" or result_policy is None:
            heat, result_policy = np.array(loop.heat_log), loop.policy
            group_of = [i.name for i in m.islands]
    _gains(cells, bound)
    r = WorkloadResult(workload, f"smmemu, real driver: {workload}", cells, heat, events, group_of)
    r.island_names, r.warnings, r.bound = list(group_of), list(warnings), bound
    if isinstance(result_policy, PredictivePolicy):
        r.decision_ms = [s * 1000 for s in result_policy.decision_seconds]
        r.retrains = result_policy.retrains
    return r
