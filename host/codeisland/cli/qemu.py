"""`codeisland qemu`: boot OVMF with the driver under QEMU (real SMM, real SW SMIs); end to end."""

from __future__ import annotations

import logging
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from .options import CPUS, INPUT_FILE, NAME, THREADS, TIMEOUT, emit, emit_check, json_option

log = logging.getLogger(__name__)
UEFI, LINUX = "uefi", "linux"
DRIVER_HELP = "Inject this SMM driver (default: smm/build/CodeIslandSmm.efi)."
VARS_HELP = "The VARS image to copy for the guest (default: Debian's OVMF_VARS_4M.fd)."
WORKDIR_HELP = "Directory for the image, sockets and logs (default: a temporary one)."
guest_option = click.option(
    "--guest",
    type=click.Choice([UEFI, LINUX]),
    default=UEFI,
    show_default=True,
    help="uefi: our target app from a FAT drive; linux: Debian's kernel + our agent.",
)


@click.group("qemu")
def command() -> None:
    """Run the injected firmware under QEMU; the end-to-end relocation scenario."""


@dataclass
class RunReport:
    workdir: str
    image: str
    booted: bool
    driver_log: list[str]
    app_lines: list[str]  # the target's own lines (codeisland-app / -init / -agent)
    exit_code: int | None
    seconds: float
    machine: dict[str, Any] = field(default_factory=dict)
    guest: str = "uefi"
    guest_up_seconds: float | None = None  # Linux: QEMU start -> the agent's ready line

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __str__(self) -> str:
        lines = [f"{self.guest} guest, image {self.image}, workdir {self.workdir}"]
        lines.append(f"driver booted: {'yes' if self.booted else 'NO'}")
        if self.guest_up_seconds is not None:
            lines.append(f"Linux agent ready after {self.guest_up_seconds:.1f} s")
        lines += [f"  debugcon: {line}" for line in self.driver_log]
        lines += [f"  serial:   {line}" for line in self.app_lines[-10:]]
        state = "still running (stopped)" if self.exit_code is None else f"exit {self.exit_code}"
        lines.append(f"QEMU {state} after {self.seconds:.1f} s")
        return "\n".join(lines)


@command.command("run")
@click.option(
    "--image", type=INPUT_FILE,
    help="A firmware image with the driver in it (default: --driver injected into Debian's OVMF).",
)  # fmt: skip
@click.option("--vars", "vars_image", type=INPUT_FILE, help=VARS_HELP)
@click.option("--driver", type=INPUT_FILE, help=DRIVER_HELP)
@click.option(
    "--app",
    type=INPUT_FILE,
    help="UEFI app booted from the FAT drive (default: smm/build/app/CodeIslandApp.efi).",
)
@click.option("--no-app", is_flag=True, help="Boot to the UEFI shell instead of an app.")
@guest_option
@click.option(
    "--kernel",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --guest linux: this bzImage instead of the cached Debian vmlinuz.",
)
@click.option(
    "--threads", default=2, show_default=True, type=THREADS,
    help="With --guest linux: the agent's worker threads.",
)  # fmt: skip
@click.option(
    "--workload",
    type=NAME,
    default="own",
    show_default=True,
    help="With --guest linux: the agent's workload ('own' or an emulator workload name).",
)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), help=WORKDIR_HELP)
@click.option(
    "--memory", "memory_mib", default=512, show_default=True, type=click.IntRange(128, 16384),
    help="Guest RAM in MiB.",
)  # fmt: skip
@click.option("--cpus", default=1, show_default=True, type=CPUS, help="Guest vCPUs.")
@click.option(
    "--timeout", "timeout_s", default=60.0, show_default=True, type=TIMEOUT,
    help="Seconds to wait for the guest to power off (0 < s <= 86400).",
)  # fmt: skip
@json_option
def run_cmd(
    image: Path | None,
    vars_image: Path | None,
    driver: Path | None,
    app: Path | None,
    no_app: bool,
    guest: str,
    kernel: Path | None,
    threads: int,
    workload: str,
    workdir: Path | None,
    memory_mib: int,
    cpus: int,
    timeout_s: float,
    as_json: bool,
) -> None:
    """Boot q35 (smm=on, TCG) with the injected image, pflash secure=on, debugcon on 0x402, QMP
    sockets and guest RAM in a shared file, and either a FAT drive with the target app (--guest
    uefi) or Debian's kernel with an initramfs holding our agent (--guest linux); wait for the
    guest to power off (or the timeout).  While it runs, `codeisland doctor --qemu WORKDIR`
    reaches it through chipsec."""
    from ..qemu import session
    from ..qemu.machine import QemuVm, VmConfig

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="codeisland-qemu-")
        workdir = Path(tmp.name)
    try:
        if guest == LINUX:
            from ..qemu.linux import guest as linux

            settings = linux.LinuxSettings(
                threads=threads, max_seconds=int(timeout_s), workload=workload
            )
            linux.check_settings(settings, memory_mib, kernel)
            image = image or session.prepare_image(workdir, driver)
            config = linux.machine_config(image, workdir, settings, memory_mib, cpus, kernel)
        else:
            image = image or session.prepare_image(workdir, driver)
            the_app = (
                None
                if no_app
                else (app or session.require(session.app_binary(), "make -C smm/app"))
            )
            config = VmConfig(
                image=image, workdir=workdir, app=the_app, memory_mib=memory_mib, cpus=cpus
            )
        if vars_image is not None:
            config.vars_template = vars_image
        t0 = time.monotonic()
        with QemuVm(config) as m:
            click.echo(f"guest running; chipsec helper settings in {m.describe_file()}", err=True)
            up = None
            if guest == LINUX:
                up = linux.wait_booted(m, timeout_s).seconds
                click.echo(f"Linux agent ready after {up:.1f} s", err=True)
            code = m.wait_exit(max(0.0, timeout_s - (time.monotonic() - t0)))
            report = RunReport(
                workdir=str(workdir),
                image=str(image),
                booted="codeisland: mailbox=" in m.debugcon(),
                driver_log=m.debugcon().splitlines(),
                app_lines=[
                    line.strip()
                    for line in m.serial().splitlines()
                    if re.search(r"codeisland-(app|init|agent):", line)
                ],
                exit_code=code,
                seconds=time.monotonic() - t0,
                machine=m.describe(),
                guest=guest,
                guest_up_seconds=up,
            )
        emit(report, as_json)
    finally:
        if tmp is not None:
            tmp.cleanup()


FIRMWARE_HELP = "A CODE image with the driver built in (codeisland firmware build); no injection."


@command.command("e2e")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), help=WORKDIR_HELP)
@click.option("--driver", type=INPUT_FILE, help=DRIVER_HELP)
@click.option("--firmware", type=INPUT_FILE, help=FIRMWARE_HELP)
@click.option("--vars", "vars_image", type=INPUT_FILE, help=VARS_HELP)
@click.option("--no-build", is_flag=True, help="Use the existing smm/build outputs.")
@click.option(
    "--cpus", default=1, show_default=True, type=CPUS, help="Guest vCPUs (all enter SMM)."
)
@click.option(
    "--workload",
    type=NAME,
    default="own",
    show_default=True,
    help="'own' (smm/app/workload.c) or an emulator workload name (hashtab, lz, ...).",
)
@guest_option
@click.option(
    "--virtual",
    is_flag=True,
    help="With --guest linux: map the arena where the kernel chooses (ASLR) and plan USER "
    "islands of the process's CR3; the engine walks the process's page tables, which needs "
    "firmware without SMM restricted memory access (`codeisland firmware build --variant "
    "unrestricted`, booted with --firmware/--vars).  Default: arena at virtual == physical.",
)
@json_option
def e2e_cmd(
    workdir: Path | None,
    driver: Path | None,
    firmware: Path | None,
    vars_image: Path | None,
    no_build: bool,
    cpus: int,
    workload: str,
    guest: str,
    virtual: bool,
    as_json: bool,
) -> None:
    """Build, inject, boot; analyze and plan the target's workload; reject a plan aimed at SMRAM;
    stage and commit through chipsec while the target runs; check checksums, copies, samples,
    translated contexts and a rollback.  Exits non-zero unless every check holds.  With --guest
    linux the target is a process of a running Linux (our agent), relocated from outside."""
    from ..qemu.e2e import run_e2e

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="codeisland-e2e-")
        workdir = Path(tmp.name)
    try:
        if guest == LINUX:
            from ..qemu.linux.e2e import run_linux_e2e

            report = run_linux_e2e(
                workdir,
                driver,
                not no_build,
                cpus=cpus,
                workload=workload,
                identity=not virtual,
                firmware=firmware,
                vars_template=vars_image,
            )
        else:
            if virtual:
                raise UsageError("--virtual is for --guest linux (a process's address space)")
            report = run_e2e(
                workdir,
                driver,
                do_build=not no_build,
                cpus=cpus,
                workload=workload,
                firmware=firmware,
                vars_template=vars_image,
            )
    finally:
        if tmp is not None:
            tmp.cleanup()
    emit_check(report, as_json, report.ok, "end-to-end run failed (see the report)")


def _process_command() -> None:
    from .qemu_process import process_cmd

    command.add_command(process_cmd)


_process_command()
