"""`codeisland emulate`: the real SMM driver in the emulated multi-CPU machine, a workload run
unrelocated and again while its hot functions are moved at SMIs, outputs compared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from .options import (
    CPUS,
    CPUS_HELP,
    ISLAND_HELP,
    KEEP_COPIES_HELP,
    NAME,
    THREADS,
    THREADS_HELP,
    emit_check,
    json_option,
    seed_option,
)


@click.command("emulate")
@click.option(
    "--workload", default="bytecode", show_default=True, type=NAME, help="Workload name or .elf."
)
@click.option("--cpus", default=2, show_default=True, type=CPUS, help=CPUS_HELP)
@click.option("--threads", default=2, show_default=True, type=THREADS, help=THREADS_HELP)
@click.option(
    "--smi-every", default=200_000, show_default=True, type=click.IntRange(1000),
    help="Guest instructions between SMIs.",
)  # fmt: skip
@seed_option("Chooses SMI points")
@click.option(
    "--periodic", is_flag=True,
    help="SMIs exactly every --smi-every instructions (default: seeded random gaps around it).",
)  # fmt: skip
@click.option(
    "--layout", default="intel64", show_default=True, type=click.Choice(["intel64", "amd64"]),
    help="Save-state map of the emulated CPUs.",
)  # fmt: skip
@click.option(
    "--islands",
    default=3,
    show_default=True,
    type=click.IntRange(1, 64),
    help="How many of the hottest relocatable islands to move.",
)
@click.option("--island", "names", multiple=True, help=ISLAND_HELP)
@click.option(
    "--sw-smi", "sw_smi", default="dispatch", show_default=True,
    type=click.Choice(["dispatch", "root"]),
    help="Emulate EFI_SMM_SW_DISPATCH2_PROTOCOL (dispatch) or not (the driver's root handler).",
)  # fmt: skip
@click.option(
    "--rollback-after", type=click.IntRange(1), default=None,
    help="ROLLBACK the generation this many SMIs after the COMMIT, then move it again.",
)  # fmt: skip
@click.option(
    "--stack-slots", default=0, show_default=True, type=click.IntRange(0, 64),
    help="Also translate return addresses found in this many 8-byte slots of each stack.",
)  # fmt: skip
@click.option(
    "--stage-budget", default=0, show_default=True, type=click.IntRange(0),
    help="Bytes the driver stages per SMI (0 = its default; it clamps to 4096..262144).",
)  # fmt: skip
@click.option(
    "--keep-copies/--restore-copies", default=True, show_default=True,
    help=KEEP_COPIES_HELP,
)  # fmt: skip
@click.option(
    "--reclaim-every", default=4, show_default=True, type=click.IntRange(0),
    help="After a rollback that kept copies, RECLAIM (free the copies a scan of every CPU's "
    "registers and of the stack regions proves unreachable) at the Nth SMI, then at doubling "
    "intervals while copies are kept (0 = never: they stay reserved).",
)  # fmt: skip
@click.option(
    "--control/--no-control", default=None,
    help="Run the baseline twice under different schedules and report threads whose output "
    "changes as nondeterministic (default: with more than one thread).",
)  # fmt: skip
@click.option("--show-output", is_flag=True, help="Print each thread's output (stderr).")
@click.option(
    "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Write thread-N.out (relocated run) and thread-N.baseline.out for each thread.",
)  # fmt: skip
@json_option
def command(
    workload: str,
    cpus: int,
    threads: int,
    smi_every: int,
    seed: int,
    periodic: bool,
    layout: str,
    islands: int,
    names: tuple[str, ...],
    sw_smi: str,
    rollback_after: int | None,
    stack_slots: int,
    stage_budget: int,
    keep_copies: bool,
    reclaim_every: int,
    control: bool | None,
    show_output: bool,
    output_dir: Path | None,
    as_json: bool,
) -> None:
    """Run a workload on the emulated board with the real SMM driver, unrelocated and again
    while its hot islands move at SMIs, and compare the outputs byte for byte."""
    from codeisland.emulator.differential import EmulateConfig, run_emulation

    _check_workload(workload, names)  # before the baseline run, not after it
    cfg = EmulateConfig(
        workload=workload, cpus=cpus, threads=threads, smi_every=smi_every, seed=seed,
        layout=layout, islands=islands, sw_dispatch=sw_smi == "dispatch",
        rollback_after=rollback_after, names=names, random_points=not periodic,
        stack_slots=stack_slots, stage_budget=stage_budget, keep_copies=keep_copies,
        reclaim_every=reclaim_every, control=control,
    )  # fmt: skip
    with _Bars() as bars:
        report = run_emulation(cfg, progress=bars.update)
    if output_dir is not None:
        _write_outputs(output_dir, report.outputs, report.baseline_outputs)
    if show_output:
        for i, text in enumerate(report.outputs):
            click.echo(f"--- thread {i} output ({len(text)} bytes) ---", err=True)
            click.echo(text, err=True, nl=not text.endswith("\n"))
    emit_check(
        report,
        as_json,
        report.identical,
        "the relocated run is not identical to the baseline "
        f"(divergent threads {report.divergent_threads or 'none'}; see the report)",
    )


def _check_workload(workload: str, names: tuple[str, ...]) -> None:
    """The workload loads and has every function named (a few ms, not a baseline run)."""
    from smmemu.workload import load_workload

    functions = load_workload(workload).functions
    unknown = [n for n in names if n not in functions]
    if unknown:
        raise UsageError(f"workload {workload} has no function named {', '.join(unknown)}")


def _write_outputs(directory: Path, outputs: list[str], baseline: list[str]) -> None:
    from ..errors import InputError

    try:
        directory.mkdir(parents=True, exist_ok=True)
        for i, (got, ref) in enumerate(zip(outputs, baseline, strict=True)):
            (directory / f"thread-{i}.out").write_bytes(got.encode("latin-1"))
            (directory / f"thread-{i}.baseline.out").write_bytes(ref.encode("latin-1"))
    except OSError as exc:
        raise InputError(f"cannot write outputs to {directory}: {exc.strerror or exc}") from None


class _Bars:
    """One tqdm bar per run (baseline, relocated) on stderr, in guest instructions."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.phase = ""
        self.total: int | None = None

    def update(self, phase: str, done: int) -> None:
        from tqdm import tqdm

        if phase != self.phase:
            if self.bar is not None:
                if self.phase == "baseline":
                    self.total = self.bar.n
                self.bar.close()
            self.phase = phase
            total = self.total if phase == "relocated" else None
            self.bar = tqdm(
                total=total, desc=phase, unit=" insn", unit_scale=True, leave=False, disable=None
            )
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
