"""`codeisland loop --guest linux`: the closed loop on an unmodified program in a Linux guest."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from ..errors import UsageError
from .options import (
    CPUS,
    INPUT_FILE,
    WINDOWS,
    cost_model_option,
    emit,
    emit_check,
    json_option,
    plots_options,
)
from .outputs import plot_dir, write_heat_plot
from .qemu import VARS_HELP, WORKDIR_HELP
from .qemu_process import FIRMWARE_HELP, exec_option, pid_option, refusal

GUESTS = ("linux", "native")


@click.command(name="loop")
@click.option(
    "--guest",
    type=click.Choice(GUESTS),
    required=True,
    help="Where the program runs: linux (a QEMU guest, real SMIs), native (this host, the agent's "
    "signals as SMIs; --window-samples counts SIGPROF samples); the emulated board's loop is "
    "`bench --emulated`.",
)
@exec_option
@pid_option
@click.argument("args", nargs=-1)
@click.option(
    "--input",
    "input_cmd",
    help="A busybox shell pipeline whose output is the program's stdin (default: /dev/null).",
)
@click.option("--policy", default="predictive", show_default=True,
              type=click.Choice(["none", "reactive", "ewma", "predictive", "hot_once"]),
              help="The loop's policy.")  # fmt: skip
@click.option("--windows", default=200, show_default=True, type=WINDOWS,
              help="At most this many windows (fewer when the program exits first).")  # fmt: skip
@click.option("--window-samples", default=40, show_default=True, type=click.IntRange(1, 10_000),
              help="SAMPLE SMIs per window.")  # fmt: skip
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0, 10_000),
              help="Windows run before the loop's figures count.")  # fmt: skip
@cost_model_option
@click.option("--firmware", type=INPUT_FILE, help=FIRMWARE_HELP)
@click.option("--vars", "vars_image", type=INPUT_FILE, help=VARS_HELP)
@click.option("--cpus", default=1, show_default=True, type=CPUS, help="Guest vCPUs.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), help=WORKDIR_HELP)
@plots_options(Path("out/loop"), "PNG plot")
@json_option
def command(
    guest: str,
    exe: Path,
    attach: str | None,
    args: tuple[str, ...],
    input_cmd: str | None,
    policy: str,
    windows: int,
    window_samples: int,
    warmup: int,
    platform: Path | None,
    firmware: Path | None,
    vars_image: Path | None,
    cpus: int,
    workdir: Path | None,
    out: Path,
    no_plots: bool,
    as_json: bool,
) -> None:
    """Run PROGRAM [ARGS]... in the guest under our landing zone and drive the closed loop of
    `bench` on it: SAMPLE SMIs attributed to its islands by CR3, the policy's heat, plans into
    the zone through the planner, stage/commit/rollback through the relocation layer, until the
    program exits; then its output against the unrelocated run.  Front-end cycles are modeled;
    output, run time, SMIs and bytes written are measured.  With --pid the guest starts the
    program itself and the loop attaches to the process named.  Exit 4 when the firmware refuses
    the plans (stock firmware keeps SMM restricted memory access)."""
    from ..frontend.params import load_frontend_params
    from ..qemu.linux.process import Firmware
    from ..qemu.linux.program import ProgramRun

    if guest == "native":
        from .native import loop_native

        guest_only = {"--firmware": firmware, "--vars": vars_image, "--workdir": workdir,
                      "--pid": attach, "--cpus": cpus != 1 or None}  # fmt: skip
        loop_native(
            [str(exe), *args], input_cmd, policy=policy, windows=windows,
            window_samples=window_samples, warmup=warmup, platform=platform, out=out,
            no_plots=no_plots, as_json=as_json,
            linux_only=[k for k, v in guest_only.items() if v is not None],
        )  # fmt: skip
        return
    if cpus > 8:
        raise UsageError(f"--cpus must be 1..8 for a Linux guest (got {cpus})")
    params = load_frontend_params(platform)
    plot_dir(out, no_plots)  # before the run: an unwritable --out must not cost a boot
    from ..bench.linux import run_loop

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="codeisland-loop-")
        workdir = Path(tmp.name)
    try:
        report, heat = run_loop(
            ProgramRun(exe, args, input_cmd, attach), workdir, Firmware(firmware, vars_image),
            cpus=cpus, policy=policy, windows=windows, warmup=warmup,
            window_samples=window_samples, params=params,
        )  # fmt: skip
    finally:
        if tmp is not None:
            tmp.cleanup()
    if not no_plots and report.windows:
        from ..bench.linux import MODELED_NOTE, as_bench_result

        write_heat_plot(
            out / f"loop_linux_{exe.name}.png", as_bench_result(report, heat), report.plots,
            warmup=warmup, policy=policy, note=MODELED_NOTE,
            window=f"{window_samples} SAMPLE SMIs each",
        )  # fmt: skip
    if report.refused:
        emit(report, as_json)
        raise refusal(report, "the loop's first plan")
    emit_check(report, as_json, report.ok, "the loop on the Linux program failed (see the report)")
