"""`codeisland native`: the engine inside a live Linux process (LD_PRELOAD agent, signals as
SMIs, ucontexts as save states)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import IO

import click

from .options import emit_check, json_option


@click.group("native")
def command() -> None:
    """The native host: relocate a running program's code with the same engine and plans."""


@command.command("run", context_settings={"ignore_unknown_options": True})
@click.option(
    "--policy", default="predictive", show_default=True,
    type=click.Choice(["none", "reactive", "ewma", "predictive", "hot_once"]),
    help="Who predicts the next window's hot islands (none: profile only, move nothing).",
)  # fmt: skip
@click.option(
    "--window-ms", default=200, show_default=True, type=click.IntRange(20, 60_000),
    help="Length of one profile window.",
)  # fmt: skip
@click.option(
    "--warmup", default=2, show_default=True, type=click.IntRange(1, 1000),
    help="Windows profiled before the first move.",
)  # fmt: skip
@click.option(
    "--sample-hz", default=1000, show_default=True, type=click.IntRange(1, 10_000),
    help="SIGPROF samples per CPU second (the kernel's tick bounds the real rate).",
)  # fmt: skip
@click.option(
    "--program-output", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write the program's stdout here (default: this terminal's stdout, before the report).",
)  # fmt: skip
@json_option
@click.argument("program", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    policy: str,
    window_ms: int,
    warmup: int,
    sample_hz: int,
    program_output: Path | None,
    as_json: bool,
    program: tuple[str, ...],
) -> None:
    """Run PROGRAM [ARGS...] (after `--`) with the agent: profile it by SIGPROF samples, predict,
    plan and commit moves of its hot islands while it runs, and report."""
    from ..errors import UsageError
    from ..native.run import NativeRun

    out: IO[bytes] | contextlib.nullcontext[None] = contextlib.nullcontext()  # inherit stdout
    if program_output is not None:
        try:
            out = program_output.open("wb")
        except OSError as exc:
            raise UsageError(f"{program_output}: {exc.strerror}") from None
    with out as stdout:
        report = NativeRun(
            list(program), policy=policy, window_s=window_ms / 1000, warmup=warmup,
            sample_hz=sample_hz, stdout=stdout,
        ).run()  # fmt: skip
    emit_check(report, as_json, report.ok, f"native run of {program[0]} failed its checks")


def loop_native(
    argv: list[str],
    input_cmd: str | None,
    *,
    policy: str,
    windows: int,
    window_samples: int,
    warmup: int,
    platform: Path | None,
    out: Path,
    no_plots: bool,
    as_json: bool,
    linux_only: list[str],
) -> None:
    """`loop --guest native`: the closed loop of `bench` on PROGRAM running here with the agent
    (bench/native.py), its report and heat plot as `loop --guest linux` gives them."""
    import subprocess
    import tempfile

    from ..errors import UsageError
    from ..frontend.params import load_frontend_params
    from .outputs import plot_dir, write_heat_plot

    if linux_only:
        raise UsageError(f"{', '.join(linux_only)}: only for --guest linux")
    params = load_frontend_params(platform)
    plot_dir(out, no_plots)  # before the run: an unwritable --out must not cost one
    from ..bench.native import MODELED_NOTE, as_bench_result, run_loop

    with tempfile.TemporaryDirectory(prefix="codeisland-loop-") as tmp:
        stdin = None
        if input_cmd is not None:  # the same pipeline feeds both runs
            stdin = Path(tmp) / "stdin"
            with stdin.open("wb") as f:
                done = subprocess.run(["/bin/sh", "-c", input_cmd], stdout=f)
            if done.returncode != 0:
                raise UsageError(f"--input: {input_cmd!r} exited with status {done.returncode}")
        report, heat = run_loop(
            argv, Path(tmp) / "stdout", stdin, policy=policy, windows=windows, warmup=warmup,
            window_samples=window_samples, params=params,
        )  # fmt: skip
    if not no_plots and report.windows:
        write_heat_plot(
            out / f"loop_native_{Path(argv[0]).name}.png", as_bench_result(report, heat),
            report.plots, warmup=warmup, policy=policy, note=MODELED_NOTE,
            window=f"{window_samples} SIGPROF samples each",
        )  # fmt: skip
    emit_check(report, as_json, report.ok, "the loop on the native program failed (see the report)")
