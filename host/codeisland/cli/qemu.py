"""`codeisland qemu`: boot OVMF with the driver under QEMU (real SMM, real SW SMIs); end to end."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from .options import emit, json_option

log = logging.getLogger(__name__)


@click.group("qemu")
def command() -> None:
    """Run the injected firmware under QEMU; the end-to-end relocation scenario."""


@dataclass
class RunReport:
    workdir: str
    image: str
    booted: bool
    driver_log: list[str]
    app_lines: list[str]
    exit_code: int | None
    seconds: float
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __str__(self) -> str:
        lines = [f"image {self.image}, workdir {self.workdir}"]
        lines.append(f"driver booted: {'yes' if self.booted else 'NO'}")
        lines += [f"  debugcon: {line}" for line in self.driver_log]
        lines += [f"  serial:   {line}" for line in self.app_lines[-10:]]
        state = "still running (stopped)" if self.exit_code is None else f"exit {self.exit_code}"
        lines.append(f"QEMU {state} after {self.seconds:.1f} s")
        return "\n".join(lines)


@command.command("run")
@click.option("--image", type=click.Path(dir_okay=False, path_type=Path), help="Injected image.")
@click.option("--driver", type=click.Path(dir_okay=False, path_type=Path), help="Inject this.")
@click.option(
    "--app",
    type=click.Path(dir_okay=False, path_type=Path),
    help="UEFI app booted from the FAT drive (default: smm/build/app/CodeIslandApp.efi).",
)
@click.option("--no-app", is_flag=True, help="Boot to the UEFI shell instead of an app.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--memory", "memory_mib", default=512, show_default=True, help="Guest MiB.")
@click.option("--cpus", default=1, show_default=True)
@click.option("--timeout", "timeout_s", default=60.0, show_default=True, help="Seconds.")
@json_option
def run_cmd(
    image: Path | None,
    driver: Path | None,
    app: Path | None,
    no_app: bool,
    workdir: Path | None,
    memory_mib: int,
    cpus: int,
    timeout_s: float,
    as_json: bool,
) -> None:
    """Boot q35 (smm=on, TCG) with the injected image, pflash secure=on, a FAT drive with the
    target app, debugcon on 0x402, QMP sockets and guest RAM in a shared file; wait for the
    guest to power off (or the timeout).  While it runs, `codeisland doctor --qemu WORKDIR`
    reaches it through chipsec."""
    from ..qemu import session
    from ..qemu.machine import Machine, MachineConfig

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="codeisland-qemu-")
        workdir = Path(tmp.name)
    try:
        image = image or session.prepare_image(workdir, driver)
        the_app = (
            None if no_app else (app or session.require(session.app_binary(), "make -C smm/app"))
        )
        config = MachineConfig(
            image=image, workdir=workdir, app=the_app, memory_mib=memory_mib, cpus=cpus
        )
        t0 = time.monotonic()
        with Machine(config) as m:
            click.echo(f"guest running; chipsec helper settings in {m.describe_file()}", err=True)
            code = m.wait_exit(timeout_s)
            report = RunReport(
                workdir=str(workdir),
                image=str(image),
                booted="codeisland: mailbox=" in m.debugcon(),
                driver_log=m.debugcon().splitlines(),
                app_lines=[
                    line.strip() for line in m.serial().splitlines() if "codeisland-app" in line
                ],
                exit_code=code,
                seconds=time.monotonic() - t0,
                machine=m.describe(),
            )
        emit(report, as_json)
    finally:
        if tmp is not None:
            tmp.cleanup()


@command.command("e2e")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--driver", type=click.Path(dir_okay=False, path_type=Path), help="Inject this.")
@click.option("--no-build", is_flag=True, help="Use the existing smm/build outputs.")
@click.option("--cpus", default=1, show_default=True, help="Guest vCPUs (all enter SMM).")
@click.option(
    "--workload",
    default="own",
    show_default=True,
    help="'own' (smm/app/workload.c) or an emulator workload name (hashtab, lz, ...).",
)
@json_option
def e2e_cmd(
    workdir: Path | None,
    driver: Path | None,
    no_build: bool,
    cpus: int,
    workload: str,
    as_json: bool,
) -> None:
    """Build, inject, boot; analyze and plan the target's workload; reject a plan aimed at SMRAM;
    stage and commit through chipsec while the target runs; check checksums, copies, samples,
    translated contexts and a rollback.  Exits non-zero unless every check holds."""
    from ..errors import EmulationError
    from ..qemu.e2e import run_e2e

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="codeisland-e2e-")
        workdir = Path(tmp.name)
    try:
        report = run_e2e(workdir, driver, do_build=not no_build, cpus=cpus, workload=workload)
    finally:
        if tmp is not None:
            tmp.cleanup()
    emit(report, as_json)
    if not report.ok:
        raise EmulationError("end-to-end run failed (see the report above)")
