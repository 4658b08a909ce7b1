"""The closed loop of `bench` on a live program, whichever host runs it (`loop --guest linux`,
`loop --guest native`): its windows until the program exits, and the figures of its report.

The loop (loop/controller.py) is the benchmark's; the target is the host's SampledTarget
(loop/sampled.py).  What is modeled and what is measured differs by host: each report says so
in its note."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from ..loop.controller import ClosedLoop
from ..loop.sampled import ProgramEnded, SampledTarget
from ..predict.policies import PredictivePolicy
from .runner import Cell, WorkloadResult, loop_stats


def run_windows(loop: ClosedLoop, windows: int, desc: str) -> str:
    """Step the loop until the program exits or `windows` ran; what ended it."""
    bar = tqdm(range(windows), desc=desc, unit="win", leave=False, disable=None)
    try:
        for _ in bar:
            loop.step()
    except ProgramEnded:
        return "program exit"
    finally:
        bar.close()
    return "window limit"


@dataclass
class LiveLoopFields:
    """The closed loop's figures in a live program's report (text lines and JSON fields)."""

    policy: str = ""
    windows: int = 0
    ended_by: str = ""  # "program exit" | "window limit" | ...
    islands_in_loop: int = 0
    loop: dict[str, Any] = field(default_factory=dict)  # the bench's per-policy stats
    commits: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[str, int] = field(default_factory=dict)
    smi_counts: dict[str, int] = field(default_factory=dict)
    predictive: dict[str, Any] = field(default_factory=dict)
    heat: list[list[float]] = field(default_factory=list)  # windows x islands
    island_names: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)

    def record(self, loop: ClosedLoop, target: SampledTarget) -> np.ndarray:
        """The loop's figures once its windows are over; returns its heat (windows x
        islands)."""
        self.windows = loop.window
        self.loop = loop_stats(loop)
        self.loop["last_refusal"] = loop.stats.refusal  # the planner's or driver's reason
        if self.loop.get("reclaim_price_cycles") == math.inf:  # never pays (SampledTarget)
            self.loop["reclaim_price_cycles"] = None
        self.commits = target.commits
        self.events = loop.stats.events
        self.samples = target.tally.to_dict()
        self.island_names = [i.name for i in target.islands]
        heat = np.array(loop.heat_log) if loop.heat_log else np.zeros((0, len(target.islands)))
        self.heat = heat.tolist()
        policy = loop.policy
        if isinstance(policy, PredictivePolicy):
            ms = [x * 1000 for x in policy.decision_seconds]
            self.predictive = {"retrains": policy.retrains,
                               "decision_ms_max": round(max(ms), 2) if ms else None}  # fmt: skip
        return heat

    def loop_lines(self) -> list[str]:
        """A line per commit, then the loop's relocations, rollbacks and modeled cycles."""
        lines = [
            f"  commit gen {c['generation']}: {', '.join(c['islands'])}; "
            f"{c['bytes_written']} B, {c['callsites_patched']} call sites, "
            f"{c['contexts_translated']} contexts translated (attempt {c['attempts']}), "
            f"{c['smis']} SMIs"
            for c in self.commits
        ]
        s = self.loop
        if s:
            lines.append(
                f"relocations {s['relocations']}, rollbacks {s['rollbacks']} (asked for a modeled "
                f"shortfall: {s['shortfall_rollbacks']}), refused plans "
                f"{s['refused_plans']}"
                + (f" (last: {s['last_refusal']})" if s.get("last_refusal") else "")
                + f"; modeled front-end cycles {s['frontend_cycles']:.4g} "
                f"+ modeled relocation cycles {s['relocation_cycles']:.4g}"
            )
        if self.predictive:
            p = self.predictive
            lines.append(f"predictive model: {p['retrains']} retrains, longest decision "
                         f"{p['decision_ms_max']} ms")  # fmt: skip
        return lines


def as_bench_result(
    report: LiveLoopFields, heat: np.ndarray, name: str, description: str
) -> WorkloadResult:
    """This run as one bench workload (for bench/plots.heat_plot): the islands the samples saw
    as its rows, the loop's commits and rollbacks as its events."""
    seen = heat.sum(axis=0) > 0 if heat.size else np.zeros(len(report.island_names), bool)
    group_of = [n if seen[k] else "background" for k, n in enumerate(report.island_names)]
    return WorkloadResult(
        name, description, {report.policy: Cell(name, report.policy, report.loop)}, heat,
        {report.policy: report.events}, group_of, island_names=list(report.island_names),
    )  # fmt: skip
