"""`codeisland doctor`: is this machine ready for a relocation? Checked through chipsec."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import UsageError
from .options import INPUT_FILE, emit_check, json_option

if TYPE_CHECKING:
    from ..doctor import DoctorReport


@click.command("doctor")
@click.option(
    "--qemu",
    "qemu_dir",
    type=click.Path(file_okay=False, path_type=Path),  # a missing one: "no running guest"
    help="Check a guest started by `codeisland qemu run --workdir DIR` (through qemuhelper).",
)
@click.option("--boot", is_flag=True, help="Boot OVMF with the driver under QEMU and check it.")
@click.option(
    "--helper",
    "helper_name",
    metavar="NAME",
    help="A chipsec helper by name, e.g. linuxhelper on a board (loads chipsec's kernel module).",
)
@click.option(
    "--driver", type=INPUT_FILE,
    help="With --boot: inject this SMM driver (default: smm/build/CodeIslandSmm.efi).",
)  # fmt: skip
@click.option(
    "--firmware",
    type=INPUT_FILE,
    help="With --boot: a CODE image with the driver built in (codeisland firmware build).",
)
@click.option(
    "--vars",
    "vars_image",
    type=INPUT_FILE,
    help="With --boot: the VARS image (default: Debian's OVMF_VARS_4M.fd).",
)
@json_option
def command(
    qemu_dir: Path | None,
    boot: bool,
    helper_name: str | None,
    driver: Path | None,
    firmware: Path | None,
    vars_image: Path | None,
    as_json: bool,
) -> None:
    """SMM present and locked, SMRR, the driver and its limits (QUERY), SW SMI delivery,
    restricted-memory mode, virtualization extensions: each with a verdict and what to do."""
    from ..doctor import Doctor
    from ..hw.transport import ChipsecTransport
    from ..qemu import session

    if sum(x is not None and x is not False for x in (qemu_dir, boot or None, helper_name)) != 1:
        raise UsageError("choose exactly one of --qemu DIR, --boot, --helper NAME")
    if helper_name:
        with ChipsecTransport(helper_name, memory_size=_board_memory()) as t:
            _verdict(Doctor(t, under_qemu=helper_name == "qemuhelper").run(), as_json)
        return
    if qemu_dir is not None:
        with session.transport_from_workdir(qemu_dir) as t:
            _verdict(Doctor(t, under_qemu=True).run(), as_json)  # type: ignore[arg-type]
        return
    from ..qemu.machine import QemuVm, VmConfig

    with tempfile.TemporaryDirectory(prefix="codeisland-doctor-") as tmp:
        work = Path(tmp)
        config = VmConfig(image=session.boot_image(work, driver, firmware), workdir=work)
        if vars_image is not None:
            config.vars_template = vars_image
        with QemuVm(config) as m:
            m.wait_for("debugcon", session.DRIVER_BOOT_LINE, 60)
            session.wait_ready_to_lock(m)
            with session.transport_for(m) as t:
                _verdict(Doctor(t, under_qemu=True).run(), as_json)


def _verdict(report: DoctorReport, as_json: bool) -> None:
    failed = [c.name for c in report.checks if c.verdict == "fail"]  # doctor.FAIL
    emit_check(report, as_json, report.ready, f"not ready to relocate: {', '.join(failed)} failed")


def _board_memory() -> int:
    """Physical memory to scan for the EFI system table: all of it below 4 GiB (unreadable
    chunks are skipped), or the guest's RAM when qemuhelper is named with its settings."""
    mib = os.environ.get("CODEISLAND_QEMU_MEM_MIB", "")
    return int(mib) << 20 if mib.isdigit() else 1 << 32
