"""Boot a Linux guest under the injected OVMF and tell, from the serial log, how far it got.

    kernel     $CODEISLAND_LINUX_CACHE/vmlinuz (Debian's, fetched by scripts/bootstrap.sh's
               fetch_linux_guest; default cache /var/cache/codeisland/linux)
    initramfs  built from busybox-static and guest/build/linux/agent[-WORKLOAD] (initramfs.py)
    machine    q35, smm=on, TCG, the injected OVMF_CODE + a copy of VARS (machine.py), -kernel

The boot passes through OVMF (which resets once on first boot, so no -no-reboot), the EFI stub,
the kernel, /init and the agent; each stage has a line on the serial port, and each way of not
getting there has its own cause (linux_boot_failure).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import EmulationError, InputError, ToolMissing
from ...paths import repo_root
from ..machine import QemuVm, VmConfig
from . import initramfs

DEFAULT_CACHE = Path("/var/cache/codeisland/linux")
MIN_MEMORY_MIB = 192  # measured: 128 and 160 MiB end in a #UD inside the EFI stub
DEFAULT_MEMORY_MIB = 256
OWN_WORKLOAD = "own"
# no display adapter: OVMF and Linux skip the framebuffer console (the serial port is the
# console); measured ~1 s less QEMU CPU per boot under TCG
NO_DISPLAY = ("-vga", "none")
# all vCPUs on one host thread: OVMF's SMM rendezvous and AP loops spin, and with a thread per
# vCPU the spinning one burns a core of its own.  Measured to the agent's ready line, 2 vCPUs,
# 192 MiB: 28.2 s of QEMU CPU multi-threaded, 17.1 s single (134 s vs 76 s wall at load 14)
SINGLE_THREAD_TCG = "tcg,thread=single"
BOOT_TIMEOUT_S = 300.0  # TCG: userspace after 11-16 s (1 vCPU), 18-21 s (2); minutes under load

KERNEL_LINE = re.compile(r"EFI stub: |Linux version ")
USERSPACE_LINE = re.compile(r"codeisland-init: userspace up")
READY_LINE = re.compile(
    r"codeisland-agent: ready workload (\S+) blob (0x[0-9a-f]+) entry (0x[0-9a-f]+) threads (\d+)"
)
ARENA_LINE = re.compile(
    r"codeisland-agent: mailbox phys (0x[0-9a-f]+) arena phys (0x[0-9a-f]+) va (0x[0-9a-f]+)"
)
DONE_LINE = re.compile(r"codeisland-agent: done rounds (\d+) bad (\d+)")
ROUND_LINE = re.compile(r"codeisland-agent: thread (\d+) round (\d+) sum (0x[0-9a-f]+)")
_AGENT_ERROR = re.compile(r"codeisland-agent: error: (.*)")
_AGENT_EXIT = re.compile(r"codeisland-init: agent exited with ([1-9]\d*)")
_PANIC = re.compile(r"Kernel panic - not syncing: (.*)")
_FIRMWARE_EXCEPTION = re.compile(r"X64 Exception Type - ([0-9A-Fa-f]+\([^)]*\))")


def cache_dir() -> Path:
    return Path(os.environ.get("CODEISLAND_LINUX_CACHE", str(DEFAULT_CACHE)))


def kernel_image() -> Path:
    path = cache_dir() / "vmlinuz"
    if not path.is_file():
        raise ToolMissing(
            f"the Linux guest's kernel {path} is missing: run scripts/bootstrap.sh "
            "(fetch_linux_guest downloads Debian's linux-image package and extracts vmlinuz)"
        )
    return path


def busybox() -> Path:
    path = cache_dir() / "busybox"
    if not path.is_file():
        raise ToolMissing(f"{path} is missing: run scripts/bootstrap.sh (fetch_linux_guest)")
    return path


def agent_binary(workload: str = OWN_WORKLOAD) -> Path:
    name = "agent" if workload == OWN_WORKLOAD else f"agent-{workload}"
    return repo_root() / "guest" / "build" / "linux" / name


@dataclass
class LinuxSettings:
    """What the guest is asked to do (passed on the kernel command line)."""

    threads: int = 2
    identity: bool = False  # map the arena at virtual == physical (the engine's v1 view)
    max_seconds: int = 600  # the agent powers off if the host never says FINISH
    workload: str = OWN_WORKLOAD

    def append(self) -> str:
        return " ".join(
            [
                "console=ttyS0,115200",
                "panic=0",  # stay halted: the host reads the panic line and stops QEMU
                "loglevel=4",  # warnings and worse: the serial log says how far the kernel got
                f"codeisland.threads={self.threads}",
                f"codeisland.identity={int(self.identity)}",
                f"codeisland.max_seconds={self.max_seconds}",
            ]
        )


def check_settings(settings: LinuxSettings, memory_mib: int, kernel: Path | None) -> Path:
    """Refuse what cannot boot before anything is built or started; the agent binary."""
    if memory_mib < MIN_MEMORY_MIB:
        raise InputError(
            f"a Linux guest needs at least {MIN_MEMORY_MIB} MiB of RAM (got {memory_mib}): "
            "with 128 or 160 MiB the kernel's EFI stub stops on an invalid opcode"
        )
    if kernel is not None and not kernel.is_file():
        raise InputError(f"kernel {kernel} does not exist")
    if kernel is None:
        kernel_image()
    busybox()
    agent = agent_binary(settings.workload)
    if not agent.is_file():
        hint = "" if settings.workload == OWN_WORKLOAD else f" WORKLOAD={settings.workload}"
        raise ToolMissing(f"{agent} is missing: build it with `make -C guest/linux{hint}`")
    return agent


def machine_config(
    image: Path,
    workdir: Path,
    settings: LinuxSettings,
    memory_mib: int = DEFAULT_MEMORY_MIB,
    cpus: int = 1,
    kernel: Path | None = None,
) -> VmConfig:
    """The QemuVm for a Linux guest: the injected image, the kernel, a fresh initramfs."""
    agent = check_settings(settings, memory_mib, kernel)
    initrd = initramfs.build(agent, busybox(), workdir / "initramfs")
    return VmConfig(
        image=image,
        workdir=workdir,
        memory_mib=memory_mib,
        cpus=cpus,
        kernel=kernel or kernel_image(),
        initrd=initrd,
        append=settings.append(),
        extra_args=list(NO_DISPLAY),
        accel=SINGLE_THREAD_TCG if cpus > 1 else "tcg",
    )


def linux_boot_failure(serial: str, memory_mib: int) -> str | None:
    """The cause, when the serial log shows that the guest will not get to the agent."""
    if m := _AGENT_ERROR.search(serial):
        return f"the guest agent failed: {m.group(1).strip()}"
    if m := _AGENT_EXIT.search(serial):
        code = int(m.group(1))
        how = f"signal {code - 128}" if code > 128 else f"status {code}"
        return f"the guest agent ended early ({how}) and the guest powered off"
    if m := _PANIC.search(serial):
        return f"the Linux kernel panicked: {m.group(1).strip()}"
    if m := _FIRMWARE_EXCEPTION.search(serial):
        low = (
            f" with {memory_mib} MiB of guest RAM (a Linux guest needs >= {MIN_MEMORY_MIB} MiB)"
            if memory_mib < MIN_MEMORY_MIB
            else ""
        )
        return f"the guest crashed before Linux ran: CPU exception {m.group(1)}{low}"
    return None


def check_running(m: QemuVm) -> None:
    """EmulationError naming the cause when the guest has stopped or is stopping."""
    cause = linux_boot_failure(m.serial(), m.config.memory_mib)
    if cause is not None:
        raise EmulationError(cause)
    if not m.running:
        raise EmulationError(f"the Linux guest powered off ({m.qemu_stderr() or 'no error'})")


@dataclass
class Booted:
    agent_line: str
    workload: str
    blob_va: int
    threads: int
    seconds: float  # wall time from QEMU's start to the agent's ready line


def wait_booted(m: QemuVm, timeout_s: float = BOOT_TIMEOUT_S) -> Booted:
    """Wait for the agent's ready line; EmulationError naming the cause otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        serial = m.serial()
        if ready := READY_LINE.search(serial):
            return Booted(
                ready.group(0),
                ready.group(1),
                int(ready.group(2), 16),
                int(ready.group(4)),
                time.monotonic() - m.started_at,
            )
        if cause := linux_boot_failure(serial, m.config.memory_mib):
            raise EmulationError(cause)
        if not m.running:
            raise EmulationError(f"QEMU exited before the Linux guest was up ({m.qemu_stderr()})")
        if time.monotonic() > deadline:
            raise EmulationError(f"the Linux guest {_how_far(serial)} in {timeout_s:.0f} s")
        time.sleep(0.1)


def _how_far(serial: str) -> str:
    if USERSPACE_LINE.search(serial):
        return "reached userspace but the agent did not report ready"
    if KERNEL_LINE.search(serial):
        return "started the kernel but did not reach userspace"
    return "never started the kernel (no EFI stub line on the serial port)"
