"""The benchmark report: a table for people, a dict for --json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..frontend.params import FrontendParams
from .runner import MODEL_NOTE, BenchConfig, WorkloadResult


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

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.results:
            for p, c in r.cells.items():
                out[p] = out.get(p, 0.0) + c.gain
        return out

    def bound_total(self) -> float:
        return sum(r.bound.gain for r in self.results if r.bound is not None)

    def headline(self) -> dict[str, float | None]:
        """Ratios of total gains over the workloads (the oracle is the next-window one)."""
        g = self.totals()
        pred = g.get("predictive", 0)
        return {
            "predictive_share_of_oracle_gain": _ratio(pred, g.get("next_window", 0)),
            "predictive_over_reactive_gain": _ratio(pred, g.get("reactive", 0)),
            "predictive_share_of_upper_bound": _ratio(pred, self.bound_total()),
            "predictive_over_static_gain": _ratio(pred, g.get("static", 0)),
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
            note=self.note,
            config=self.config.__dict__,
            frontend=self.params.to_dict(),
            gains=self.totals(),
            upper_bound_gain=self.bound_total() if self.results[0].bound else None,
            bound_violations=self.bound_violations(),
            decision_ms_mean=float(np.mean(ms)) if ms else None,
            seconds=round(self.seconds, 1),
            plots=[str(p) for p in self.plots],
            workloads=[
                {
                    "name": r.name,
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
            f"{'workload':<12}{'policy':<12}{'modeled cycles':>16}{'gain':>8}{'of bound':>9}"
            f"{'of next-win':>12}{'reloc':>7}{'rollb':>6}{'staged KiB':>11}{'SMI insns max':>14}"
        )
        lines.append(head)
        lines.append("-" * len(head))
        for r in self.results:
            base = r.cells["none"].stats["modeled_cycles"] if "none" in r.cells else 0
            for p, c in r.cells.items():
                s = c.stats
                gain = f"{100 * c.gain / base:6.2f}%" if base else "-"
                share = _percent(c.share_of_oracle_gain)
                of_bound = _percent(c.share_of_upper_bound)
                lines.append(
                    f"{r.name:<12}{p:<12}{s['modeled_cycles']:>16.4g}{gain:>8}{of_bound:>9}"
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
            lines += _regroup_lines(r)
        h = self.headline()
        lines.append("")
        for k, v in h.items():
            lines.append(f"{k}: {'n/a' if v is None else f'{v:.3f}'}")
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
