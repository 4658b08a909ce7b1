"""The benchmark report: a table for people, a dict for --json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..frontend.params import FrontendParams
from .runner import MODEL_NOTE, BenchConfig, WorkloadResult

BASELINES = ("static", "hot_once")  # what predictive must beat (issue 14)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


@dataclass
class BenchReport:
    config: BenchConfig
    params: FrontendParams
    results: list[WorkloadResult]
    plots: list[Path]
    seconds: float
    note: str = MODEL_NOTE

    def recorded(self) -> list[WorkloadResult]:
        return [r for r in self.results if r.recorded]

    def designed(self) -> list[WorkloadResult]:
        return [r for r in self.results if not r.recorded]

    def headline_results(self) -> list[WorkloadResult]:
        """What the headline is over: the recorded workloads when there are any (programs
        nobody designed for this project), else the designed ones."""
        return self.recorded() or self.results

    def headline_over(self) -> str:
        return "recorded" if self.recorded() else "designed"

    def totals(self, results: list[WorkloadResult] | None = None) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.results if results is None else results:
            for p, c in r.cells.items():
                out[p] = out.get(p, 0.0) + c.gain
        return out

    def bound_total(self, results: list[WorkloadResult] | None = None) -> float:
        chosen = self.results if results is None else results
        return sum(r.bound.gain for r in chosen if r.bound is not None)

    def headline(self, results: list[WorkloadResult] | None = None) -> dict[str, float | None]:
        """Ratios of total gains over `results` (default: headline_results; the oracle is the
        next-window one)."""
        chosen = self.headline_results() if results is None else results
        g = self.totals(chosen)
        pred = g.get("predictive", 0)
        return {
            "predictive_share_of_oracle_gain": _ratio(pred, g.get("next_window", 0)),
            "predictive_over_reactive_gain": _ratio(pred, g.get("reactive", 0)),
            "predictive_share_of_upper_bound": _ratio(pred, self.bound_total(chosen)),
            "predictive_over_static_gain": _ratio(pred, g.get("static", 0)),
        }

    def not_beaten(self, results: list[WorkloadResult]) -> list[str]:
        """`workload/baseline` wherever predictive's gain does not exceed a baseline's."""
        return [
            f"{r.name}/{b}"
            for r in results
            for b in BASELINES
            if b in r.cells
            and "predictive" in r.cells
            and r.cells["predictive"].gain <= r.cells[b].gain
        ]

    def _set(self, results: list[WorkloadResult]) -> dict[str, Any]:
        return {
            "workloads": [r.name for r in results],
            **self.headline(results),
            "gains": self.totals(results),
            "upper_bound_gain": self.bound_total(results),
            "predictive_not_above": self.not_beaten(results),
        }

    def bound_violations(self) -> list[str]:
        """Policies whose measured gain exceeds the bound (effects the bound does not model)."""
        return [
            f"{r.name}/{p}"
            for r in self.results
            if r.bound is not None
            for p, c in r.cells.items()
            if c.gain > r.bound.gain * (1 + 1e-9) + 1e-6
        ]

    def decision_ms(self) -> list[float]:
        return [ms for r in self.results for ms in r.decision_ms]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(self.headline())
        ms = self.decision_ms()
        d.update(
            headline_over=self.headline_over(),
            designed=self._set(self.designed()) if self.designed() else None,
            recorded=self._set(self.recorded()) if self.recorded() else None,
            note=self.note,
            config=self.config.__dict__,
            frontend=self.params.to_dict(),
            # over what the headline is over (the designed/recorded blocks have their own)
            gains=self.totals(self.headline_results()),
            upper_bound_gain=self.bound_total(self.headline_results())
            if self.results[0].bound
            else None,
            bound_violations=self.bound_violations(),
            decision_ms_mean=float(np.mean(ms)) if ms else None,
            seconds=round(self.seconds, 1),
            plots=[str(p) for p in self.plots],
            workloads=[
                {
                    "name": r.name,
                    "kind": "recorded" if r.recorded else "designed",
                    "description": r.description,
                    "retrains": r.retrains,
                    "regroups": r.regroups(),
                    "warnings": r.warnings,
                    "upper_bound": r.bound.to_dict() if r.bound else None,
                    "cells": {
                        p: {
                            **c.stats,
                            "gain": c.gain,
                            "share_of_oracle_gain": c.share_of_oracle_gain,
                            "share_of_upper_bound": c.share_of_upper_bound,
                        }
                        for p, c in r.cells.items()
                    },
                }
                for r in self.results
            ],
        )
        return d

    def __str__(self) -> str:
        lines = [f"codeisland bench -- {self.note}", ""]
        head = (
            f"{'workload':<16}{'policy':<12}{'modeled cycles':>16}{'gain':>8}{'of bound':>9}"
            f"{'of next-win':>12}{'reloc':>7}{'rollb':>6}{'staged KiB':>11}{'SMI insns max':>14}"
        )
        lines.append(head)
        lines.append("-" * len(head))
        sections = (("designed workloads (phase behaviour designed by us):", self.designed()),
                    ("recorded workloads (third-party programs, emulator profiles):",
                     self.recorded()))  # fmt: skip
        for title, chosen in sections:
            if chosen and self.recorded():
                lines.append(title)
            for r in chosen:
                lines += _workload_lines(r)
        lines.append("")
        for label, chosen in (("designed", self.designed()), ("recorded", self.recorded())):
            if not chosen:
                continue
            head = "HEADLINE, " if label == self.headline_over() else ""
            lines.append(f"{head}over the {label} workloads ({', '.join(r.name for r in chosen)}):")
            for k, v in self.headline(chosen).items():
                lines.append(f"  {k}: {'n/a' if v is None else f'{v:.3f}'}")
            lost = self.not_beaten(chosen)
            lines.append(
                f"  predictive does NOT beat: {', '.join(lost)}" if lost
                else f"  predictive beats {' and '.join(BASELINES)} on every {label} workload"
            )  # fmt: skip
        over = self.bound_violations()
        if over:
            lines.append(
                "above the bound (cross-island effects it does not credit): " + ", ".join(over)
            )
        ms = self.decision_ms()
        if ms:
            lines.append(
                f"predictive decision time: mean {np.mean(ms):.2f} ms, max {max(ms):.2f} ms"
            )
        lines.append(
            f"counted windows per workload: {self.config.windows - self.config.warmup} "
            f"(after {self.config.warmup} warm-up windows); took {self.seconds:.0f} s"
        )
        for p in self.plots:
            lines.append(f"plot: {p}")
        return "\n".join(lines)


def _workload_lines(r: WorkloadResult) -> list[str]:
    """A workload's rows of the table: a row per policy, its description and its bound."""
    lines = []
    base = r.cells["none"].stats["modeled_cycles"] if "none" in r.cells else 0
    for p, c in r.cells.items():
        s = c.stats
        gain = f"{100 * c.gain / base:6.2f}%" if base else "-"
        share = _percent(c.share_of_oracle_gain)
        of_bound = _percent(c.share_of_upper_bound)
        lines.append(
            f"{r.name:<16}{p:<12}{s['modeled_cycles']:>16.4g}{gain:>8}{of_bound:>9}"
            f"{share:>12}"
            f"{s['relocations']:>7}{s['rollbacks']:>6}{s['bytes_staged'] / 1024:>11.1f}"
            f"{s['handler_insns_max']:>14}"
        )
    lines.append(f"  {r.description}")
    if r.bound is not None:
        b = r.bound
        lines.append(
            f"  upper bound ({b.method}, {b.islands} islands x {b.windows} windows, "
            f"{b.seconds:.1f} s): gain {100 * b.gain / base if base else 0:.2f}%; every "
            f"miss removed for free: {100 * b.all_misses_cycles / base if base else 0:.2f}%"
        )
    lines += _reclaim_lines(r)
    lines += _regroup_lines(r)
    return lines


def _reclaim_lines(r: WorkloadResult) -> list[str]:
    """RECLAIMs of the retired copies' room, per policy that had any to consider."""
    said = [
        f"{p} {s['reclaims']} (freed {s['reclaim_bytes_freed']} bytes), declined "
        f"{s['reclaims_declined']} at {s['reclaim_price_cycles']:.3g} cycles each"
        for p, c in r.cells.items()
        if (s := c.stats).get("reclaims") or s.get("reclaims_declined")
    ]
    return ["  RECLAIM: " + "; ".join(said)] if said else []


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def _regroup_lines(r: WorkloadResult) -> list[str]:
    """Merges and splits of the loop (the emulated target plans through the planner; the
    model machine never merges), and warnings about the machine's environments."""
    out = [f"  warning: {w}" for w in r.warnings]
    for policy, events in r.regroups().items():
        if events:
            said = "; ".join(
                f"{e['kind']} {'+'.join(e['islands'])} at window {e['window']}" for e in events
            )
            out.append(f"  {policy}: {said}")
    return out
