"""Glue shared by `qemu run`, `qemu e2e` and `doctor --boot`: image preparation and reaching a
running guest through chipsec."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from ..errors import InputError, ToolMissing
from ..firmware import inject as inject_module
from ..firmware.inject import inject
from ..hw.qemuhelper import QemuHelper
from ..hw.transport import ChipsecTransport
from ..paths import driver_binary, emulation_build_dir, smm_build_dir
from .machine import QemuVm

log = logging.getLogger(__name__)
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
KEEP_INJECTED = 4  # injected images kept (a few drivers in turn)
DRIVER_BOOT_LINE = r"codeisland: mailbox=(0x[0-9a-fA-F]+)"  # the driver's entry log on debugcon


OWN_WORKLOAD = "own"


def app_binary(workload: str = OWN_WORKLOAD) -> Path:
    """The target app; `make -C smm/app [WORKLOAD=name]` builds one per workload."""
    name = "CodeIslandApp.efi" if workload == OWN_WORKLOAD else f"CodeIslandApp-{workload}.efi"
    return smm_build_dir() / "app" / name


def workload_elf(workload: str = OWN_WORKLOAD) -> Path:
    """The ELF the app embeds: smm/app's own, or one of the emulator's (workload.h ABI)."""
    if workload == OWN_WORKLOAD:
        return smm_build_dir() / "app" / "workload.elf"
    return emulation_build_dir() / "workloads" / f"{workload}.elf"


def require(path: Path, how: str) -> Path:
    if not path.is_file():
        raise ToolMissing(f"{path} is missing: build it with `{how}`")
    return path


def prepare_image(workdir: Path, driver: Path | None = None, base: Path = OVMF_CODE) -> Path:
    """Inject the driver into a copy of OVMF, as workdir/codeisland.fd.  Injection recompresses
    the DXE volume (seconds of CPU), so its result is kept by content (base image, driver,
    injector) in smm/build/injected and copied from there by every later run."""
    driver = require(driver or driver_binary(), "make -C smm")
    if not base.is_file():
        raise ToolMissing(f"{base} is missing (apt-get install ovmf)")
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "codeisland.fd"
    cached = _injected(base, driver)
    tmp = workdir / "codeisland.fd.tmp"
    shutil.copyfile(cached, tmp)
    tmp.replace(out)
    return out


def _injected(base: Path, driver: Path) -> Path:
    h = hashlib.sha256(base.read_bytes() + b"\0" + driver.read_bytes())
    for src in sorted(Path(inject_module.__file__).parent.glob("*.py")):  # the injector's code
        h.update(src.read_bytes())
    cache = smm_build_dir() / "injected"
    out = cache / f"{h.hexdigest()[:24]}.fd"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"{out.name}.{os.getpid()}.tmp"
    report = inject(base, driver, tmp)
    tmp.replace(out)  # concurrent runs write whole files under one name
    log.info("injected %s into %s (%.1f s)", driver, out, report.seconds)
    for old in sorted(cache.glob("*.fd"), key=lambda p: p.stat().st_mtime)[:-KEEP_INJECTED]:
        old.unlink(missing_ok=True)
    return out


def boot_image(workdir: Path, driver: Path | None = None, firmware: Path | None = None) -> Path:
    """The CODE image to boot: one with the driver built in (`codeisland firmware build`) as it
    is, or else Debian's OVMF with the driver injected."""
    if firmware is not None:
        return require(firmware, "codeisland firmware build")
    return prepare_image(workdir, driver)


def helper_for(machine: QemuVm) -> QemuHelper:
    d = machine.describe()
    return QemuHelper(str(d["ram"]), str(d["qmp"]), int(str(d["memory_mib"])))


def transport_for(machine: QemuVm) -> ChipsecTransport:
    machine.ram()  # wait until QEMU created the RAM file
    return ChipsecTransport(helper_for(machine), machine.config.memory_mib << 20)


def transport_from_workdir(workdir: Path) -> ChipsecTransport:
    """Reach a guest started by `codeisland qemu run` (its machine.json) through chipsec."""
    try:
        d = json.loads((workdir / "machine.json").read_text())
        helper = QemuHelper(d["ram"], d["qmp"], int(d["memory_mib"]))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{workdir} holds no running codeisland QEMU guest ({exc})") from exc
    return ChipsecTransport(helper, int(d["memory_mib"]) << 20)


def wait_ready_to_lock(machine: QemuVm, timeout_s: float = 60.0) -> None:
    """Wait until BDS has passed SmmReadyToLock: the firmware reached its boot manager or an app.

    Before lock the driver's allow-list is open.  The evidence of lock is what runs after BDS of
    the final boot (the first boot resets once, as the driver's reservations change the memory
    type information): the shell's startup prompt or our app's first line.
    """
    machine.wait_for("serial", r"codeisland-app:|Shell>|startup\.nsh", timeout_s)
