"""How the benchmark's verdict moves with the cost model: one parameter at a time, below and above
the platform's value (L1i size, 4 KiB iTLB entries, miss penalties, SMI entry cost).

Each point runs the whole benchmark (same workloads, seeds and windows) with one [frontend]
value changed, and keeps the headline ratios, the bound and each policy's share of it (the
baselines static and hot_once too) and where predictive does not beat a baseline; so no figure
hangs on one tuned setting.  By default the grid runs the recorded workloads, the headline's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..frontend.params import FrontendParams
from ..loop.recorded import RECORDED
from .report import BenchReport
from .runner import BenchConfig, WorkloadResult, run

HEADLINE = (
    "predictive_share_of_upper_bound",
    "predictive_over_static_gain",
    "predictive_over_reactive_gain",
    "predictive_share_of_oracle_gain",
)


def _scaled_penalties(p: FrontendParams, factor: float) -> FrontendParams:
    return replace(
        p,
        l1i_miss_cycles=max(1, round(p.l1i_miss_cycles * factor)),
        itlb4k_miss_cycles=max(1, round(p.itlb4k_miss_cycles * factor)),
        itlb2m_miss_cycles=max(1, round(p.itlb2m_miss_cycles * factor)),
    )


def _scaled(name: str) -> Callable[[FrontendParams, float], FrontendParams]:
    return lambda p, f: replace(p, **{name: int(getattr(p, name) * f)})


# name -> (factors applied to the platform's value, how a factor changes the parameters)
GRID: dict[str, tuple[tuple[float, ...], Callable[[FrontendParams, float], FrontendParams]]] = {
    "l1i_size": ((0.5, 2.0), _scaled("l1i_size")),
    "itlb4k_entries": ((0.5, 2.0), _scaled("itlb4k_entries")),
    "miss_penalties": ((0.5, 2.0), _scaled_penalties),
    "smi_entry_cycles": ((0.25, 4.0), _scaled("smi_entry_cycles")),
}


@dataclass
class Point:
    parameter: str  # "baseline" or a GRID name
    factor: float
    params: FrontendParams
    headline: dict[str, float | None]
    upper_bound_gain_share: float  # bound / cycles of `none`, summed over workloads
    violations: list[str]
    shares: dict[str, float | None]  # policy -> its total gain / the total bound
    not_above: list[str]  # workload/baseline where predictive's gain is not above

    def to_dict(self) -> dict[str, Any]:
        return {
            "parameter": self.parameter,
            "factor": self.factor,
            "frontend": self.params.to_dict(),
            **self.headline,
            "upper_bound_gain_share": self.upper_bound_gain_share,
            "share_of_upper_bound": self.shares,
            "predictive_not_above": self.not_above,
            "bound_violations": self.violations,
        }


def points(base: FrontendParams) -> list[tuple[str, float, FrontendParams]]:
    out = [("baseline", 1.0, base)]
    for name, (factors, change) in GRID.items():
        out += [(name, f, change(base, f)) for f in factors]
    return out


# the policies the headline ratios and the baselines need (the grid runs the benchmark 9 times)
GRID_POLICIES = ("none", "reactive", "predictive", "next_window", "static", "hot_once")
# whose share of the bound each point keeps
SHARES = ("predictive", "static", "hot_once", "next_window", "reactive")


def run_grid(cfg: BenchConfig, base: FrontendParams) -> list[Point]:
    cfg = replace(cfg, policies=GRID_POLICIES)
    out = []
    for name, factor, params in points(base):
        results = run(cfg, params)
        report = BenchReport(cfg, params, results, [], 0.0)
        chosen = report.headline_results()  # the ratios are over what the headline is over
        headline, violations = report.headline(), report.bound_violations()
        gains, bound = report.totals(chosen), report.bound_total(chosen)
        shares = {p: gains[p] / bound if bound > 0 else None for p in SHARES if p in gains}
        out.append(Point(name, factor, params, headline, _bound_share(chosen), violations,
                         shares, report.not_beaten(chosen)))  # fmt: skip
    return out


def _bound_share(results: list[WorkloadResult]) -> float:
    base = sum(r.cells["none"].stats["modeled_cycles"] for r in results)
    bound = sum(r.bound.gain for r in results if r.bound is not None)
    return bound / base if base else 0.0


@dataclass
class SensitivityReport:
    config: BenchConfig
    points: list[Point]
    plot: Path | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.__dict__,
            "points": [p.to_dict() for p in self.points],
            "plot": str(self.plot) if self.plot else None,
            "seconds": round(self.seconds, 1),
        }

    def __str__(self) -> str:
        head = (
            f"{'parameter':<18}{'x':>6}{'bound':>8}{'pred/bnd':>10}{'static/bnd':>12}"
            f"{'hot1/bnd':>10}{'pred/static':>13}{'pred/react':>12}{'pred/next-win':>15}"
            f"{'not beaten':>12}"
        )
        lines = [
            "codeisland bench --sensitivity -- modeled cycles (a model); one parameter changed "
            "at a time; 'bound' is the upper bound's gain over none, 'x/bnd' a policy's share "
            "of it, 'not beaten' how many workload/baseline pairs predictive does not beat",
            "",
            head,
            "-" * len(head),
        ]
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        for p in self.points:
            h, sh = p.headline, p.shares
            lines.append(
                f"{p.parameter:<18}{p.factor:>6g}{100 * p.upper_bound_gain_share:>7.1f}%"
                f"{fmt(sh.get('predictive')):>10}{fmt(sh.get('static')):>12}"
                f"{fmt(sh.get('hot_once')):>10}{fmt(h[HEADLINE[1]]):>13}"
                f"{fmt(h[HEADLINE[2]]):>12}{fmt(h[HEADLINE[3]]):>15}{len(p.not_above):>12}"
            )
            if p.not_above:
                lines.append(f"  predictive does NOT beat: {', '.join(p.not_above)}")
            if p.violations:
                lines.append(f"  above the bound: {', '.join(p.violations)}")
        lines.append("")
        recorded = [w for w in self.config.workloads if w in RECORDED]
        over = f"recorded ({', '.join(recorded)})" if recorded else "designed"
        lines.append(
            f"workloads {', '.join(self.config.workloads)}; ratios and bound over the {over} "
            f"workloads; took {self.seconds:.0f} s"
        )
        if self.plot:
            lines.append(f"plot: {self.plot}")
        return "\n".join(lines)
