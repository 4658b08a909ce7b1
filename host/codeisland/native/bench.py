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

Beside each measured figure, the front-end model's prediction for the same runs (calibrate.py):
the model replays each native run's own layout and BOLT's binaries on the same input under QEMU,
and its saving in modeled cycles at the host's clock is set against the measured CPU-time
saving over the configuration's reference: `agent` for the native policies (the model predicts
what the copies do, not what the agent's handlers cost: agent vs base is measured only),
`bolt-input` for BOLT's layouts, `base` for `bolt-input`.
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
from . import bolt, calibrate
from .programs import Program
from .run import NativeRun

CONFIGS = (
    "base", "agent", "predictive", "reactive", "bolt-input", "bolt-hfsort", "bolt-hfsort+blocks",
)  # fmt: skip
NATIVE_POLICY = {"agent": "none", "predictive": "predictive", "reactive": "reactive"}
REFERENCE = {"agent": "base", "predictive": "agent", "reactive": "agent", "bolt-input": "base",
             "bolt-hfsort": "bolt-input", "bolt-hfsort+blocks": "bolt-input"}  # fmt: skip


@dataclass
class Measured:
    config: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    host_cpu: list[float] = field(default_factory=list)  # codeisland's own CPU, per native run
    relocations: list[int] = field(default_factory=list)  # islands moved, per native run
    samples_in_copies: list[int] = field(default_factory=list)
    samples_total: list[int] = field(default_factory=list)
    layouts: list[calibrate.NativeLayout] = field(default_factory=list)  # per native run
    predicted_s: list[float] = field(default_factory=list)  # the model's saving, per layout
    in_copies_pct: list[float] = field(default_factory=list)  # executed blocks run in copies

    def stats(self, values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        m = median(values)
        return {"median": m, "min": min(values), "max": max(values),
                "spread_pct": 100.0 * (max(values) - min(values)) / m if m else 0.0}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.__dict__)
        out["layouts"] = [lay.__dict__ for lay in self.layouts]
        out.update(wall_stats=self.stats(self.wall), cpu_stats=self.stats(self.cpu))
        return out


@dataclass
class BenchReport:
    program: str
    command: str
    runs: int
    results: dict[str, Measured]
    notes: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)  # modeled totals per binary and layout

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
        return "\n".join([*lines, *self.calibration_lines(), *self.notes]) + "\n"

    def saving(self, config: str) -> tuple[float, float, float] | None:
        """(predicted %, measured %, noise %) of `config` over its reference's CPU median;
        noise is half the reference's own CPU spread (max - min over its median)."""
        ref = REFERENCE.get(config)
        m, r = self.results.get(config), self.results.get(ref or "")
        if ref is None or m is None or r is None or not m.cpu or not r.cpu or not m.predicted_s:
            return None
        rc = median(r.cpu)
        measured = 100.0 * (rc - median(m.cpu)) / rc
        return 100.0 * median(m.predicted_s) / rc, measured, r.stats(r.cpu)["spread_pct"] / 2

    def calibration_lines(self) -> list[str]:
        if not self.model:
            return []
        lines = ["front-end model vs measured (saving in CPU time over the reference's median)",
                 f"{'config':20} {'reference':10} {'model':>8} {'model range':>17}"
                 f" {'measured':>9} {'noise':>7} {'in copies':>9} {'sampled':>8}"
                 "  reading"]  # fmt: skip
        for name, m in self.results.items():
            got = self.saving(name)
            if got is None:
                continue
            pred, meas, noise = got
            rc = median(self.results[REFERENCE[name]].cpu)
            lo, hi = (100.0 * min(m.predicted_s) / rc, 100.0 * max(m.predicted_s) / rc)
            ran = f"{median(m.in_copies_pct):8.2f}%" if m.in_copies_pct else "-"
            shares = [
                100.0 * a / b
                for a, b in zip(m.samples_in_copies, m.samples_total, strict=True)
                if b
            ]
            sampled = f"{median(shares):7.2f}%" if shares else "-"
            lines.append(
                f"{name:20} {REFERENCE[name]:10} {pred:+7.2f}% {lo:+7.2f}..{hi:+7.2f}%"
                f" {meas:+8.1f}% {noise:6.1f}% {ran:>9} {sampled:>8}  {_reading(pred, meas, noise)}"
            )
        share = self.model.get("miss_share_pct")
        lines.append("in copies: the share of the program's executed blocks the replay ran in a "
                     "copy; sampled: the share of the native run's SIGPROF samples taken in a "
                     "copy (medians over the runs)")  # fmt: skip
        if share is not None:
            lines.append(f"the model puts {share:.1f}% of base's CPU time in L1i/iTLB misses "
                         f"(at {self.model['clock_mhz']:.0f} MHz; 1 in "
                         f"{self.model['sample']} windows of 2^20 blocks modeled)")  # fmt: skip
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"program": self.program, "command": self.command, "runs": self.runs,
                "results": {k: v.to_dict() for k, v in self.results.items()},
                "model": self.model, "notes": self.notes}  # fmt: skip


def _reading(pred: float, meas: float, noise: float) -> str:
    """Whether the measured saving bears the prediction out, at this machine's resolution."""
    if abs(meas - pred) <= noise:
        if abs(pred) <= noise:
            return "agree: both inside the noise (the model predicts less than can be seen)"
        return "agree within noise"
    return "DISAGREE: measured saving is outside prediction +- noise"


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
    m.samples_total.append(report.samples_total)
    m.layouts.append(calibrate.NativeLayout.of_report(report))
    return report.wall_seconds, _children_cpu() - cpu0


def measure(
    program: Program, runs: int, configs: tuple[str, ...] = CONFIGS, model_sample: int = 0
) -> BenchReport:
    """The runs, interleaved; then, unless model_sample is 0, the model's prediction for them
    (1 in model_sample windows modeled)."""
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
    report = BenchReport(program.name, program.what, runs, results)
    if model_sample:
        predict(report, program, binaries, work, model_sample)
    return report


def predict(
    report: BenchReport, program: Program, binaries: dict[str, Path], work: Path, sample: int
) -> None:
    """The front-end model's saving for every configuration of `report`, in seconds."""
    res = report.results
    native = [c for c in ("predictive", "reactive") if c in res]
    layouts = [lay for c in native for lay in res[c].layouts]
    hz = calibrate.clock_hz()
    steps = tqdm(total=1 + len([c for c in binaries if c != "base"]), desc=f"{program.name} model",
                 unit="binary", disable=None)  # fmt: skip
    modeled = calibrate.model_binary(program.argv(), layouts, work, sample)
    steps.update()
    ref = modeled[0]
    k = 1
    for c in native:
        mine = modeled[k : k + runs_of(res[c])]
        res[c].predicted_s = [(ref.cycles - m.cycles) / hz for m in mine]
        res[c].in_copies_pct = [100.0 * m.totals["in_copies"] / max(m.totals["counted"], 1)
                                for m in mine]  # fmt: skip
        k += runs_of(res[c])
    by_binary = {"base": ref}
    for c in (c for c in binaries if c != "base" and c in res):
        by_binary[c] = calibrate.model_binary(program.argv(binaries[c]), [], work, sample)[0]
        steps.update()
    steps.close()
    for c, m in by_binary.items():
        if c != "base":
            res[c].predicted_s = [(by_binary[REFERENCE[c]].cycles - m.cycles) / hz]
    p = calibrate.load_frontend_params()
    base_cpu = median(res["base"].cpu)
    report.model = {
        "clock_mhz": hz / 1e6, "sample": sample,
        "miss_share_pct": 100.0 * ref.miss_cycles(p) / hz / base_cpu if base_cpu else None,
        "binaries": {c: m.to_dict() for c, m in by_binary.items()},
        "native_layouts": [m.to_dict() for m in modeled[1:]],
    }  # fmt: skip


def runs_of(m: Measured) -> int:
    return len(m.layouts)


def plot(report: BenchReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c for c, m in report.results.items() if m.wall]
    cal = [c for c in names if report.saving(c) is not None]
    fig, axes = plt.subplots(1, 3 if cal else 2, figsize=(18 if cal else 12, 4.8), dpi=110)
    if cal:
        _plot_calibration(axes[2], report, cal)
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


def _plot_calibration(ax: Any, report: BenchReport, names: list[str]) -> None:
    """Predicted next to measured saving per configuration; the bar is the measured one with the
    reference's noise as its error bar."""
    got = [report.saving(c) for c in names]
    x = range(len(names))
    meas = [g[1] for g in got if g]
    ax.bar([i - 0.2 for i in x], [g[0] for g in got if g], 0.4, label="model (predicted)",
           color="#4c72b0")  # fmt: skip
    ax.bar([i + 0.2 for i in x], meas, 0.4, yerr=[g[2] for g in got if g], capsize=3,
           label="measured (CPU) +- noise", color="#dd8452")  # fmt: skip
    ax.axhline(0, color="#888888", linewidth=1)
    ax.set_xticks(list(x), [f"{c}\nvs {REFERENCE[c]}" for c in names])
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylabel("saving over the reference (%)")
    ax.set_title("front-end model vs measured", fontsize=9)
    ax.legend(fontsize=8)
