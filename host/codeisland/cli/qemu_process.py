"""`codeisland qemu process`: relocate an unmodified program's own code in a Linux guest."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import DriverRejected

if TYPE_CHECKING:
    from ..qemu.linux.process import ProcessReport
from .options import CPUS, INPUT_FILE, emit, emit_check, json_option
from .qemu import DRIVER_HELP, VARS_HELP, WORKDIR_HELP

FIRMWARE_HELP = (
    "CODE image with the driver built in; relocating a process's own pages needs the test-board "
    "variant (codeisland firmware build --variant unrestricted).  Default: Debian's OVMF with the "
    "driver injected, which keeps SMM restricted memory access (the plan is refused)."
)


exec_option = click.option(
    "--exec",
    "exe",
    required=True,
    type=click.Path(path_type=Path),
    help="Absolute path of a dynamically linked x86-64 program of this host (copied into the "
    "guest with its libraries, unmodified).",
)

pid_option = click.option(
    "--pid",
    "attach",
    metavar="PID|NAME",
    help="Attach to a process the guest started, instead of starting PROGRAM under the landing "
    "library: the guest's init runs PROGRAM (with its --input) as the board's own background "
    "job, nothing of codeisland in it, and codeisland attaches to the guest process named here "
    "without restarting it (ptrace: zone and text set up, detached).  A PID as the guest's ps "
    "shows it (its PID namespace), or a name as pidof takes it (exactly one process).",
)


@click.command("process")
@exec_option
@pid_option
@click.option(
    "--arg", "args", multiple=True, help="An argument of the program (repeatable; default none)."
)
@click.option(
    "--input",
    "input_cmd",
    help="A busybox shell pipeline whose output is the program's stdin (e.g. 'seq 1 1000000'; "
    "default: /dev/null).",
)
@click.option("--firmware", type=INPUT_FILE, help=FIRMWARE_HELP)
@click.option("--vars", "vars_image", type=INPUT_FILE, help=VARS_HELP)
@click.option("--driver", type=INPUT_FILE, help=DRIVER_HELP + "  Without --firmware only.")
@click.option("--cpus", default=1, show_default=True, type=CPUS, help="Guest vCPUs.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), help=WORKDIR_HELP)
@json_option
def process_cmd(
    exe: Path,
    attach: str | None,
    args: tuple[str, ...],
    input_cmd: str | None,
    firmware: Path | None,
    vars_image: Path | None,
    driver: Path | None,
    cpus: int,
    workdir: Path | None,
    as_json: bool,
) -> None:
    """Boot Linux with the program under our LD_PRELOAD landing zone (2 MiB pages where the kernel
    gives them); find its address space by SAMPLE (CR3), analyse the same ELF, rank its islands by
    samples, plan the hottest into the zone (re-pointed call sites, entry jumps only where safe)
    as USER islands of that CR3, stage and commit while it runs, check the copies through a page
    walk, roll back while it still runs, and compare its output with the same run on the host.
    On restricted firmware the plan is refused with nothing written (exit 4).  With --pid the
    guest starts the program itself and codeisland attaches to the process named."""
    from ..qemu.linux.process import Firmware, run_process
    from ..qemu.linux.program import ProgramRun

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="codeisland-process-")
        workdir = Path(tmp.name)
    try:
        report = run_process(
            ProgramRun(exe, args, input_cmd, attach),
            workdir,
            Firmware(firmware, vars_image, driver),
            cpus,
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
    if report.refused:
        emit(report, as_json)
        raise refusal(report, "the plan")
    emit_check(report, as_json, report.ok, "process relocation failed (see the report)")


def refusal(report: ProcessReport, what: str) -> DriverRejected:
    """The one line (exit 4) for a plan the driver refused: its status, whether anything was
    written, the program's fate, and for a refused page walk which firmware to use."""
    from ..qemu.linux.process import RESTRICTED_HINT

    return DriverRejected(
        0,
        f"driver refused {what} ({report.refused}; nothing written: "
        f"{report.refused_untouched}; the program ran on"
        f"{' unharmed' if report.output_matches else ' but its output DIFFERS'}): "
        + (RESTRICTED_HINT if report.refused == "WALK_TABLE_OUTSIDE" else "see the report"),
    )
