"""Measured, not modeled: a real program's wall time with and without relocation, and BOLT.

Configurations, run interleaved (one of each per repetition, so machine noise spreads over all):

    base               the program as built with Debian's flags
    agent              the same with the agent loaded and sampling, nothing moved (policy none):
                       what the native host costs by itself
    predictive         codeisland native run --policy predictive
    reactive           codeisland native run --policy reactive
    bolt-input         BOLT's input build (the same flags + -fno-reorder-blocks-and-partition)
    bolt-hfsort        BOLT's layout of bolt-input from an instrumented profile of the same input
    bolt-hfsort+blocks the same plus block reordering (ext-tsp) and hot/cold splitting

Wall time is from the start of the program to its exit; CPU time (user + system of the
program, from the kernel's child rusage) is reported beside it, because on a shared machine the
wall time also holds the time the program waited for a CPU.  codeisland's analysis runs before
the program starts and is not in either; its host process (analysis, sampling reads, policy,
planning) is not in the CPU time, the agent's handlers are -- the host's own CPU is the last
column ("host cpu"), since on a 2-core machine it competes with the program for the wall clock.
Every run's output must equal the base run's.
"""

from __future__ import annotations

import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from tqdm import tqdm

from ..errors import CheckFailed
from . import bolt
from .programs import Program
from .run import NativeRun

CONFIGS = (
    "base", "agent", "predictive", "reactive", "bolt-input", "bolt-hfsort", "bolt-hfsort+blocks",
)  # fmt: skip
NATIVE_POLICY = {"agent": "none", "predictive": "predictive", "reactive": "reactive"}


@dataclass
class Measured:
    config: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    host_cpu: list[float] = field(default_factory=list)  # codeisland's own CPU, per native run
    relocations: list[int] = field(default_factory=list)  # islands moved, per native run
    samples_in_copies: list[int] = field(default_factory=list)

    def stats(self, values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        m = median(values)
        return {"median": m, "min": min(values), "max": max(values),
                "spread_pct": 100.0 * (max(values) - min(values)) / m if m else 0.0}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.__dict__)
        out.update(wall_stats=self.stats(self.wall), cpu_stats=self.stats(self.cpu))
        return out


@dataclass
class BenchReport:
    program: str
    command: str
    runs: int
    results: dict[str, Measured]
    notes: list[str] = field(default_factory=list)

    def _vs(self, config: str, kind: str) -> str:
        base = self.results["base"].stats(getattr(self.results["base"], kind)).get("median")
        mine = self.results[config].stats(getattr(self.results[config], kind)).get("median")
        if not base or mine is None:
            return "n/a"
        return f"{100.0 * (mine / base - 1.0):+.1f}%"

    def __str__(self) -> str:
        head = (f"{'config':20} {'wall median':>11} {'min..max':>15} {'spread':>7} {'vs base':>8}"
                f" {'cpu median':>10} {'spread':>7} {'vs base':>8} {'moved':>6}"
                f" {'host cpu':>8}")  # fmt: skip
        lines = [f"{self.program}: {self.command}  ({self.runs} runs each, interleaved)", head]
        for name, m in self.results.items():
            w, c = m.stats(m.wall), m.stats(m.cpu)
            if not w:
                continue
            moved = f"{median(m.relocations):.0f}" if m.relocations else "-"
            host = f"{median(m.host_cpu):7.3f}s" if m.host_cpu else "-"
            lines.append(
                f"{name:20} {w['median']:10.3f}s {w['min']:7.3f}..{w['max']:<7.3f}"
                f" {w['spread_pct']:6.1f}% {self._vs(name, 'wall'):>8} {c['median']:9.3f}s"
                f" {c['spread_pct']:6.1f}% {self._vs(name, 'cpu'):>8} {moved:>6} {host:>8}"
            )
        return "\n".join([*lines, *self.notes]) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"program": self.program, "command": self.command, "runs": self.runs,
                "results": {k: v.to_dict() for k, v in self.results.items()},
                "notes": self.notes}  # fmt: skip


def _children_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def _plain(argv: list[str], out: Path) -> tuple[float, float]:
    cpu0 = _children_cpu()
    with out.open("wb") as f:
        t0 = time.monotonic()
        code = subprocess.run(argv, stdout=f, stderr=subprocess.DEVNULL).returncode
        wall = time.monotonic() - t0
    if code != 0:
        raise CheckFailed(f"{' '.join(argv)} exited {code}")
    return wall, _children_cpu() - cpu0


def _self_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _native(argv: list[str], policy: str, out: Path, m: Measured) -> tuple[float, float]:
    cpu0, host0 = _children_cpu(), _self_cpu()
    with out.open("wb") as f:
        report = NativeRun(argv, policy=policy, stdout=f).run()
    m.host_cpu.append(_self_cpu() - host0)  # analysis, sampling reads, policy, planning
    if not report.ok:
        raise CheckFailed(f"native run ({policy}) of {argv[0]} failed:\n{report}")
    m.relocations.append(report.relocations)
    m.samples_in_copies.append(report.samples_in_copies)
    return report.wall_seconds, _children_cpu() - cpu0


def measure(program: Program, runs: int, configs: tuple[str, ...] = CONFIGS) -> BenchReport:
    work = Path(tempfile.mkdtemp(prefix="codeisland-native-bench-"))
    binaries: dict[str, Path] = {"base": program.binary, "bolt-input": program.bolt_input}
    if any(c.startswith("bolt-") and c != "bolt-input" for c in configs):
        fdata = bolt.instrumented_profile(program.bolt_input, program.argv(), work)
        for layout in bolt.LAYOUTS:
            if layout in configs:
                binaries[layout] = bolt.optimised(program.bolt_input, fdata, layout, work)
    results = {c: Measured(c) for c in configs}
    want: bytes | None = None
    steps = tqdm(total=runs * len(configs), desc=program.name, unit="run", disable=None)
    for rep in range(runs):
        for c in configs:
            out = work / f"{c}.{rep}.out"
            if c in NATIVE_POLICY:
                wall, cpu = _native(program.argv(), NATIVE_POLICY[c], out, results[c])
            else:
                wall, cpu = _plain(program.argv(binaries[c]), out)
            got = out.read_bytes()
            want = got if want is None else want
            if got != want:
                raise CheckFailed(f"{c} run {rep} printed other output than the first run")
            results[c].wall.append(wall)
            results[c].cpu.append(cpu)
            steps.update()
    steps.close()
    notes = [
        "front-end model's predicted saving: n/a -- the model (frontend/) runs on the emulator's "
        "fetch stream; a native process gives RIP samples only, so no prediction is made for it",
    ]
    return BenchReport(program.name, program.what, runs, results, notes)


def plot(report: BenchReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c for c, m in report.results.items() if m.wall]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    for ax, kind, label in ((axes[0], "wall", "wall time (s)"), (axes[1], "cpu", "CPU time (s)")):
        data = [getattr(report.results[c], kind) for c in names]
        ax.boxplot(data)
        ax.set_xticks(range(1, len(names) + 1), names)
        base = median(getattr(report.results["base"], kind)) if "base" in names else None
        if base:
            ax.axhline(base, color="#888888", linestyle="--", linewidth=1, label="base median")
            ax.legend(fontsize=8)
        ax.set_ylabel(label)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.suptitle(f"{report.command} ({report.runs} runs each, measured)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
