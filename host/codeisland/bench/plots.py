"""PNG plots of a benchmark run: island heat over time with relocation events; policy comparison."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from .runner import MODEL_NOTE, WorkloadResult

POLICY_COLORS = {
    "none": "#9e9e9e",
    "reactive": "#e69f00",
    "ewma": "#56b4e9",
    "predictive": "#009e73",
    "next_window": "#cc79a7",
    "static": "#795548",
    "hot_once": "#d55e00",
}


def heat_plot(
    r: WorkloadResult,
    path: Path | IO[bytes],  # a file, or a buffer the PNG goes into
    warmup: int,
    policy: str = "predictive",
    note: str = MODEL_NOTE,
    window: str = "1 emulated hour each",
) -> Path:
    """Phase islands' sampled heat per window, with the policy's commits and rollbacks."""
    phase = [i for i, g in enumerate(r.group_of) if g != "background"]
    # groups in the order the workload defines them (phase2 before phase10), islands by index
    first = {}
    for i in phase:
        first.setdefault(r.group_of[i], i)
    order = sorted(phase, key=lambda i: (first[r.group_of[i]], i))
    heat = r.heat[:, order].T
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    im = ax.imshow(np.log1p(heat), aspect="auto", cmap="magma", interpolation="nearest")
    row = {isl: k for k, isl in enumerate(order)}
    for kind, marker, color in (("commit", "|", "#00e5ff"), ("rollback", "x", "#ffffff")):
        xs, ys = [], []
        for e in r.events.get(policy, []):
            if e["kind"] != kind:
                continue
            for isl in e["islands"]:
                if isl in row:
                    xs.append(e["window"] + 0.5)  # takes effect from the next window
                    ys.append(row[isl])
        ax.scatter(xs, ys, marker=marker, s=14, c=color, linewidths=1, label=f"{policy} {kind}")
    ax.axvline(warmup - 0.5, color="white", linestyle="--", linewidth=1)
    ax.text(warmup, len(order) - 1, " counted from here", color="white", fontsize=8, va="bottom")
    ticks, labels = [], []
    for k, isl in enumerate(order):
        g = r.group_of[isl]
        if k == 0 or r.group_of[order[k - 1]] != g:
            ticks.append(k)
            labels.append(g)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlabel(f"window ({window})")
    ax.set_title(
        f"{r.name}: island heat (log samples) and {policy} relocations\n{r.description}", fontsize=9
    )
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    fig.colorbar(im, ax=ax, label="log(1 + samples)")
    fig.text(0.01, 0.01, note, fontsize=6, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def comparison_plot(results: list[WorkloadResult], path: Path) -> Path:
    """Gain over `none` per workload and policy, with the trace's upper bound; and each gain as
    a share of that bound."""
    policies = [p for p in POLICY_COLORS if p != "none" and p in results[0].cells]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), dpi=110)
    width = 0.8 / len(policies)
    x = np.arange(len(results))
    for k, p in enumerate(policies):
        gains = [100 * r.cells[p].gain / r.cells["none"].stats["modeled_cycles"] for r in results]
        share = [100 * (r.cells[p].share_of_upper_bound or 0) for r in results]
        ax1.bar(x + k * width, gains, width, label=p, color=POLICY_COLORS[p])
        ax2.bar(x + k * width, share, width, label=p, color=POLICY_COLORS[p])
    bounds = [
        100 * r.bound.gain / r.cells["none"].stats["modeled_cycles"] if r.bound else np.nan
        for r in results
    ]
    ax1.hlines(bounds, x - width / 2, x + width * (len(policies) - 0.5), colors="black",
               linestyles="--", linewidth=1.2, label="upper bound")  # fmt: skip
    # designed | recorded: a line between the two sets (the headline is over the recorded)
    split = [k for k in range(1, len(results)) if results[k].recorded != results[k - 1].recorded]
    for ax in (ax1, ax2):
        ax.set_xticks(x + width * (len(policies) - 1) / 2, [r.name for r in results],
                      fontsize=8, rotation=20, ha="right")  # fmt: skip
        ax.axhline(0, color="black", linewidth=0.8)
        for k in split:
            ax.axvline(k - 0.1 - width / 2, color="#555555", linestyle=":", linewidth=1)
    ax1.set_ylabel("modeled cycles saved vs none (%)")
    ax1.set_title("gain over no relocation (dashed: upper bound of the trace; dotted line: "
                  "designed | recorded)", fontsize=9)  # fmt: skip
    ax1.legend(fontsize=7, ncol=2, loc="center right")
    ax2.set_ylabel("share of the upper bound (%)")
    ax2.set_title("share of the upper bound (bench/bound.py)", fontsize=10)
    fig.text(0.01, 0.01, MODEL_NOTE, fontsize=6, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def sensitivity_plot(points: list[Any], path: Path) -> Path:
    """Headline ratios per cost-model setting (bench/sensitivity.py points)."""
    labels = [p.parameter if p.parameter == "baseline" else f"{p.parameter} x{p.factor:g}"
              for p in points]  # fmt: skip
    x = np.arange(len(points))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.6), dpi=110)
    bound = [100 * p.upper_bound_gain_share for p in points]
    ax1.bar(x - 0.3, bound, 0.2, label="upper bound: gain over none (%)", color="#9e9e9e")
    for k, policy in enumerate(("predictive", "static", "hot_once")):
        share = [100 * (p.shares.get(policy) or 0) for p in points]
        ax1.bar(x - 0.1 + 0.2 * k, share, 0.2, label=f"{policy}: share of the bound (%)",
                color=POLICY_COLORS[policy])  # fmt: skip
    ax1.set_title("the bound and each policy's share of it", fontsize=10)
    for key, color, off in (
        ("predictive_over_static_gain", POLICY_COLORS["static"], -0.2),
        ("predictive_over_reactive_gain", POLICY_COLORS["reactive"], 0.2),
    ):
        ax2.bar(x + off, [p.headline[key] or 0 for p in points], 0.4, label=key, color=color)
        for k, p in enumerate(points):  # no baseline gain to divide by: said, not drawn as 0
            if p.headline[key] is None:
                ax2.text(k + off, 0.02, "n/a", ha="center", fontsize=6, rotation=90)
    ax2.axhline(1.0, color="black", linestyle=":", linewidth=1)
    ax2.set_title("predictive's gain over the baselines' (dotted: equal)", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_xticks(x, labels, fontsize=7, rotation=35, ha="right")
        ax.legend(fontsize=7)
    fig.text(0.01, 0.01, MODEL_NOTE + "; one parameter changed at a time", fontsize=6,
             color="#555555")  # fmt: skip
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path
