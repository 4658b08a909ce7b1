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

    def headline(self) -> dict[str, float | None]:
        g = self.totals()
        return {
            "predictive_share_of_oracle_gain": _ratio(g.get("predictive", 0), g.get("oracle", 0)),
            "predictive_over_reactive_gain": _ratio(g.get("predictive", 0), g.get("reactive", 0)),
        }

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
                    "cells": {
                        p: {
                            **c.stats,
                            "gain": c.gain,
                            "share_of_oracle_gain": c.share_of_oracle_gain,
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
            f"{'workload':<12}{'policy':<11}{'modeled cycles':>16}{'gain':>8}{'of oracle':>10}"
            f"{'reloc':>7}{'rollb':>6}{'staged KiB':>11}{'SMI insns max':>14}"
        )
        lines.append(head)
        lines.append("-" * len(head))
        for r in self.results:
            base = r.cells["none"].stats["modeled_cycles"] if "none" in r.cells else 0
            for p, c in r.cells.items():
                s = c.stats
                gain = f"{100 * c.gain / base:6.2f}%" if base else "-"
                share = (
                    f"{100 * c.share_of_oracle_gain:8.1f}%"
                    if c.share_of_oracle_gain is not None
                    else "-"
                )
                lines.append(
                    f"{r.name:<12}{p:<11}{s['modeled_cycles']:>16.4g}{gain:>8}{share:>10}"
                    f"{s['relocations']:>7}{s['rollbacks']:>6}{s['bytes_staged'] / 1024:>11.1f}"
                    f"{s['handler_insns_max']:>14}"
                )
            lines.append(f"  {r.description}")
            lines += _regroup_lines(r)
        h = self.headline()
        lines.append("")
        for k, v in h.items():
            lines.append(f"{k}: {'n/a' if v is None else f'{v:.3f}'}")
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


def _regroup_lines(r: WorkloadResult) -> list[str]:
    """Merges and splits of the loop (the emulated machine plans through the planner; the
    model machine never merges), and warnings about the machine's environments."""
    out = [f"  warning: {w}" for w in r.warnings]
    for policy, events in r.regroups().items():
        if events:
            said = "; ".join(
                f"{e['kind']} {'+'.join(e['islands'])} at window {e['window']}" for e in events
            )
            out.append(f"  {policy}: {said}")
    return out
