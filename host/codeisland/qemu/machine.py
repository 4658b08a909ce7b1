"""One QEMU guest: OVMF with SMM, the injected image, a target app, and every evidence channel.

host                                   guest (q35, smm=on, TCG)
work/guest.ram  <-- mmap, share=on --> RAM, guest physical X = file offset X (<= 2 GiB)
work/qmp.sock   <-- QMP / HMP ------> monitor: I/O ports (o/i), quit
work/serial.log <------------------- COM1 (the app's ConOut: progress, checksums)
work/debugcon.log <----------------- port 0x402 (the driver's log; release OVMF is silent)
work/fat/       ------------------>  FAT drive: EFI/BOOT/BOOTX64.EFI = the target app
-kernel/-initrd ------------------>  or a Linux guest through OVMF's fw_cfg loader (qemu/linux/)
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EmulationError, InputError, ToolMissing, TransportError
from ..hw.qmp import Qmp

PR_SET_PDEATHSIG = 1  # linux/prctl.h

QEMU = "qemu-system-x86_64"
VARS_TEMPLATE = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
MAX_LOWMEM_MIB = 2048  # q35 keeps all RAM below 4 GiB up to here, so address == file offset


@dataclass
class VmConfig:
    image: Path  # firmware code image (injected)
    workdir: Path
    app: Path | None = None  # UEFI app booted from the FAT drive as BOOTX64.EFI
    app_files: dict[str, Path] = field(default_factory=dict)  # extra files on the FAT drive
    memory_mib: int = 512
    cpus: int = 1
    vars_template: Path = VARS_TEMPLATE
    extra_args: list[str] = field(default_factory=list)
    accel: str = "tcg"  # multi-threaded TCG: one host thread per vCPU
    # a Linux guest: OVMF's fw_cfg loader boots this kernel (EFI stub) with this initrd
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""

    def check(self) -> None:
        if not 64 <= self.memory_mib <= MAX_LOWMEM_MIB:
            raise InputError(
                f"guest memory must be 64..{MAX_LOWMEM_MIB} MiB (got {self.memory_mib})"
            )
        if not 1 <= self.cpus <= 8:
            raise InputError(f"cpus must be 1..8 (got {self.cpus})")
        optional = [p for p in (self.app, self.kernel, self.initrd) if p is not None]
        for p in (self.image, self.vars_template, *optional):
            if not p.is_file():
                raise InputError(f"{p} does not exist")

    def firmware_args(self) -> list[str]:
        """What the image needs from the machine: S3 off for X64-PEI OVMF (OvmfPkgX64 with SMM
        stops silently in PlatformPei while QEMU offers S3; nothing here suspends a guest)."""
        from ..firmware.image import has_x64_pei

        if has_x64_pei(self.image.read_bytes()):
            return ["-global", "ICH9-LPC.disable_s3=1"]
        return []

    def boot_args(self) -> list[str]:
        """-kernel/-initrd/-append for a Linux guest, else nothing (the FAT drive boots)."""
        if self.kernel is None:
            return []
        args = ["-kernel", str(self.kernel), "-append", self.append]
        return args + (["-initrd", str(self.initrd)] if self.initrd else [])


class QemuVm:
    """A running guest; use as a context manager so QEMU is always stopped."""

    def __init__(self, config: VmConfig) -> None:
        config.check()
        if shutil.which(QEMU) is None:
            raise ToolMissing(f"{QEMU} is not installed (apt-get install qemu-system-x86)")
        self.config = config
        self.work = config.workdir
        self.work.mkdir(parents=True, exist_ok=True)
        self.ram_path = self.work / "guest.ram"
        self.qmp_path = self.work / "qmp.sock"
        self.helper_qmp_path = self.work / "chipsec.sock"
        self.serial_path = self.work / "serial.log"
        self.debugcon_path = self.work / "debugcon.log"
        self.workload_path = self.work / "workload.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: Qmp | None = None
        self._ram: mmap.mmap | None = None
        self.started_at = 0.0

    # -- lifecycle --------------------------------------------------------------------

    def command_line(self) -> list[str]:
        c = self.config
        vars_copy = self.work / "vars.fd"
        shutil.copyfile(c.vars_template, vars_copy)
        fat = self._fat_dir()
        return [
            QEMU,
            "-machine", "q35,smm=on,memory-backend=ram",
            "-accel", c.accel,
            "-m", f"{c.memory_mib}M",
            "-smp", str(c.cpus),
            "-object",
            f"memory-backend-file,id=ram,size={c.memory_mib}M,mem-path={self.ram_path},share=on",
            "-global", "driver=cfi.pflash01,property=secure,value=on",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={c.image}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            "-drive", f"format=raw,file=fat:rw:{fat}",
            "-debugcon", f"file:{self.debugcon_path}",
            "-global", "isa-debugcon.iobase=0x402",
            "-chardev", f"file,id=wl,path={self.workload_path}",
            "-device", "isa-debugcon,iobase=0xe9,chardev=wl",
            "-serial", f"file:{self.serial_path}",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-qmp", f"unix:{self.helper_qmp_path},server=on,wait=off",
            "-nic", "none",
            "-display", "none",
            "-monitor", "none",
            *c.firmware_args(),
            *c.boot_args(),
            *c.extra_args,
        ]  # fmt: skip

    def _fat_dir(self) -> Path:
        fat = self.work / "fat"
        if fat.exists():
            shutil.rmtree(fat)
        (fat / "EFI" / "BOOT").mkdir(parents=True)
        if self.config.app is not None:
            shutil.copyfile(self.config.app, fat / "EFI" / "BOOT" / "BOOTX64.EFI")
        for name, src in self.config.app_files.items():
            shutil.copyfile(src, fat / name)
        return fat

    def start(self) -> QemuVm:
        for p in (
            self.serial_path,
            self.debugcon_path,
            self.workload_path,
            self.qmp_path,
            self.helper_qmp_path,
            self.ram_path,
        ):
            p.unlink(missing_ok=True)
        self.started_at = time.monotonic()
        with open(self.work / "qemu.stderr", "wb") as err:
            # QEMU dies with us: its own session (a terminal's Ctrl-C reaches only us, and
            # stop() quits it), and SIGKILL when the process that started it dies however
            # it dies (a killed CLI used to leave QEMU running)
            self.proc = subprocess.Popen(
                self.command_line(), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                start_new_session=True, preexec_fn=_die_with_parent(),
            )  # fmt: skip
        try:
            self.describe_file().write_text(json.dumps(self.describe(), indent=2))
            self.qmp = Qmp(str(self.qmp_path))
        except TransportError:
            self.stop()
            raise EmulationError(f"QEMU did not start: {self.qemu_stderr()}") from None
        except BaseException:  # Ctrl-C while QEMU starts: __exit__ will not run
            self.stop(timeout_s=1.0)
            raise
        return self

    def describe(self) -> dict[str, object]:
        """What a chipsec helper needs to reach this guest (also written to machine.json)."""
        return {
            "ram": str(self.ram_path),
            "qmp": str(self.helper_qmp_path),
            "memory_mib": self.config.memory_mib,
            "serial": str(self.serial_path),
            "debugcon": str(self.debugcon_path),
            "pid": self.proc.pid if self.proc else None,
        }

    def describe_file(self) -> Path:
        return self.work / "machine.json"

    def qemu_stderr(self) -> str:
        try:
            return (self.work / "qemu.stderr").read_text(errors="replace").strip()[-500:]
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """CPU time QEMU has used so far (user + system, all its threads): what a TCG guest
        costs, independent of how many other processes share the cores."""
        if self.proc is None:
            return 0.0
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """Quit QEMU (QMP quit, then terminate, then kill); returns its exit code."""
        if self._ram is not None:
            self._ram.close()
            self._ram = None
        if self.qmp is not None:
            if self.running:
                with contextlib.suppress(TransportError):
                    self.qmp.execute("quit")
            self.qmp.close()
            self.qmp = None
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def wait_exit(self, timeout_s: float) -> int | None:
        """Wait for the guest to power off by itself; None if it is still running."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> QemuVm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- evidence channels --------------------------------------------------------------

    def serial(self) -> str:
        return _read_text(self.serial_path)

    def debugcon(self) -> str:
        return _read_text(self.debugcon_path)

    def workload_output(self) -> str:
        return _read_text(self.workload_path)

    def wait_for(self, channel: str, pattern: str, timeout_s: float) -> re.Match[str]:
        """Wait until `pattern` appears on 'serial' or 'debugcon'; EmulationError on timeout."""
        rx = re.compile(pattern)
        read = self.serial if channel == "serial" else self.debugcon
        deadline = time.monotonic() + timeout_s
        while True:
            match = rx.search(read())
            if match:
                return match
            if not self.running:
                raise EmulationError(
                    f"QEMU exited before {pattern!r} appeared on {channel} ({self.qemu_stderr()})"
                )
            if time.monotonic() > deadline:
                raise EmulationError(
                    f"{pattern!r} did not appear on {channel} in {timeout_s:.0f} s"
                )
            time.sleep(0.05)

    # -- guest physical memory (the shared RAM file) -------------------------------------

    def ram(self) -> mmap.mmap:
        if self._ram is None:
            size = self.config.memory_mib << 20
            deadline = time.monotonic() + 10
            while not self.ram_path.exists() or self.ram_path.stat().st_size < size:
                if time.monotonic() > deadline or not self.running:
                    raise TransportError(f"guest RAM file {self.ram_path} did not appear")
                time.sleep(0.05)
            fd = os.open(self.ram_path, os.O_RDWR)
            try:
                self._ram = mmap.mmap(fd, size, mmap.MAP_SHARED)
            finally:
                os.close(fd)
        return self._ram


def _die_with_parent() -> Callable[[], None]:
    """What the child runs before exec: ask Linux for SIGKILL when the parent dies
    (PR_SET_PDEATHSIG).  prctl is looked up here, in the parent: no dlopen after fork."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return in_child


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
