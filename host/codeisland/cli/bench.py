"""`codeisland bench`: workloads x policies through the closed loop (modeled front-end cycles)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import UsageError
from .options import (
    NAME,
    WINDOWS,
    cost_model_option,
    emit,
    json_option,
    plots_options,
    seed_option,
)
from .outputs import OutputFile

if TYPE_CHECKING:
    from ..bench.runner import WorkloadResult


@click.command(name="bench")
@click.option("--quick", is_flag=True, help="Four emulated days per workload instead of seven.")
@click.option(
    "--workload", "workloads", multiple=True, metavar="NAME",
    help="Only this workload (repeatable; default: all): daily, interactive, pipeline, mixed "
    "(designed) or zlib-linked, zlib-scattered, bzip2-linked, bzip2-scattered (recorded).",
)  # fmt: skip
@plots_options(Path("out/bench"), "PNG plots")
@cost_model_option
@seed_option("Workload seed")
@click.option(
    "--emulated",
    "emulated",
    type=NAME,
    metavar="WORKLOAD",
    help="Run the closed loop on the emulated board (the real driver) with this guest "
    "workload instead.",
)
@click.option("--windows", type=WINDOWS, help="Windows per policy (emulated run; default 36).")
@click.option(
    "--hot-kib",
    default=32,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Capacity of the hot region in KiB (emulated run; capped at the platform's hot region).",
)
@click.option(
    "--restore-copies",
    is_flag=True,
    help="Emulated run: a rollback restores the copies and frees their room (default: the "
    "planner's keep-copies, whose retired copies hold their room for the rest of the boot).",
)
@click.option(
    "--sensitivity",
    is_flag=True,
    help="Run the benchmark over a small grid of cost-model settings (L1i size, iTLB entries, "
    "miss penalties, SMI cost; table + plot); default workloads: the recorded ones.",
)
@json_option
def command(
    quick: bool,
    workloads: tuple[str, ...],
    out: Path,
    no_plots: bool,
    platform: Path | None,
    seed: int,
    emulated: str | None,
    windows: int | None,
    hot_kib: int,
    restore_copies: bool,
    sensitivity: bool,
    as_json: bool,
) -> None:
    """Compare relocation policies (none, reactive, ewma, predictive, the next-window oracle,
    a static offline layout, move-hot-once), each as a share of the trace's upper bound, on
    workloads with designed phase behaviour and on profiles recorded from third-party programs
    (zlib, bzip2) in the emulator; the headline is over the recorded ones.  Every figure is
    from the front-end cost model: a model.

    Reading the headline: predictive_share_of_upper_bound is how much of the provable best
    (a loose bound) predictive gets; predictive_over_static_gain below 1 means the run-time
    moves do worse than one offline layout (the report lists where predictive does not win)."""
    from ..bench.plots import comparison_plot  # before the workers fork: they draw too
    from ..bench.report import BenchReport
    from ..bench.runner import BenchConfig, run, run_emulated
    from ..frontend.params import load_frontend_params
    from ..loop.recorded import RECORDED
    from ..loop.workloads import WORKLOADS

    known = WORKLOADS + RECORDED
    unknown = sorted(set(workloads) - set(known))
    if unknown:
        raise UsageError(f"unknown workload(s) {', '.join(unknown)} (known: {', '.join(known)})")
    if windows is not None and not emulated:
        raise UsageError("--windows applies to an --emulated run only")
    if restore_copies and not emulated:
        raise UsageError("--restore-copies applies to an --emulated run only")
    if sensitivity and emulated:
        raise UsageError("--sensitivity runs the model bench only (not with --emulated)")
    params = load_frontend_params(platform)
    if not no_plots:  # before the run: an unwritable --out must not cost a whole bench
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create {out}: {exc.strerror}") from None
    # the grid runs the benchmark nine times: by default over the headline's (recorded) ones
    kw = {"workloads": workloads or (RECORDED if sensitivity else known), "seed": seed}
    cfg = BenchConfig.quick(**kw) if quick else BenchConfig(**kw)
    start = time.perf_counter()
    if sensitivity:
        from ..bench.plots import sensitivity_plot
        from ..bench.sensitivity import SensitivityReport, run_grid

        grid = run_grid(cfg, params)
        plot = None if no_plots else _plot(out / "sensitivity.png", sensitivity_plot, grid)
        emit(SensitivityReport(cfg, grid, plot, time.perf_counter() - start), as_json)
        return
    from ..bench.runner import EMULATED_NOTE, MODEL_NOTE

    note = EMULATED_NOTE if emulated else MODEL_NOTE
    if emulated:
        n = windows if windows is not None else (24 if quick else 36)
        warm = min(36, n // 2)
        cfg = BenchConfig(workloads=(emulated,), windows=n, warmup=warm, seed=seed,
                          hot_capacity=hot_kib * 1024)  # fmt: skip
        results = [
            run_emulated(
                emulated,
                cfg.policies,
                n,
                warm,
                params,
                seed=seed,
                hot_capacity=cfg.hot_capacity,
                keep_copies=not restore_copies,
            )
        ]
    else:  # each worker renders its workload's heat plot beside the others' runs
        results = run(cfg, params, draw=None if no_plots else partial(_heat_png, cfg.warmup, note))
    plots: list[Path] = []
    if not no_plots:
        plots = [_heat(out, cfg.warmup, note, r) for r in results]
        if not emulated:
            plots.append(_plot(out / "policies.png", comparison_plot, results))
    emit(BenchReport(cfg, params, results, plots, time.perf_counter() - start, note), as_json)


def _heat_png(warmup: int, note: str, r: WorkloadResult) -> bytes:
    """A workload's heat plot as PNG bytes (module level: a bench worker renders it)."""
    from ..bench.plots import heat_plot

    buf = io.BytesIO()
    heat_plot(r, path=buf, warmup=warmup, note=note)
    return buf.getvalue()


def _heat(out: Path, warmup: int, note: str, r: WorkloadResult) -> Path:
    """A workload's heat plot written to `out`: the worker's rendering, or drawn here."""
    from ..bench.plots import heat_plot

    path = out / f"heat_{r.name}.png"
    if r.plot_png is None:
        return _plot(path, heat_plot, r, warmup=warmup, note=note)
    return _plot(path, _write, r.plot_png)


def _write(data: bytes, path: Path) -> None:
    path.write_bytes(data)


def _plot(path: Path, draw: Callable[..., object], *args: Any, **kwargs: Any) -> Path:
    """draw(*args, path=..., **kwargs) into a temporary file beside `path`, renamed over it once
    complete: an error or Ctrl-C while drawing leaves the previous plot as it was."""
    with OutputFile(path, what="plot") as tmp:
        draw(*args, path=tmp, **kwargs)
    return path
