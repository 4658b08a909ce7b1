"""Start a program with the agent preloaded, and what the kernel gave it.

A program the agent cannot enter is refused before it starts, with one line: missing, not an
x86-64 ELF executable, or statically linked (no PT_INTERP: the dynamic loader, which honours
LD_PRELOAD, never runs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import BuildMissing, InputError, TransportError, UsageError
from ..paths import repo_root
from ..plan import layout as L
from .transport import ProcessTransport, maps

AGENT = Path("smm/build/native/libcodeisland-agent.so")
READY_TIMEOUT_S = 10.0


def agent_library() -> Path:
    path = repo_root() / AGENT
    if not path.is_file():
        raise BuildMissing(f"the native agent ({AGENT})")
    return path


def check_program(name: str) -> Path:
    """The program `name` names (a path, or a command on PATH), if the agent can enter it."""
    found = name if "/" in name else shutil.which(name)
    if found is None or not Path(found).is_file():
        raise UsageError(f"{name}: no such program")
    path = Path(found).resolve()
    try:
        with path.open("rb") as f:
            elf = ELFFile(f)
            machine, kind = elf.header.e_machine, elf.header.e_type
            dynamic = any(seg.header.p_type == "PT_INTERP" for seg in elf.iter_segments())
    except (ELFError, OSError) as exc:
        raise InputError(f"{name}: not an x86-64 ELF program ({exc})") from None
    if machine != "EM_X86_64" or kind not in ("ET_EXEC", "ET_DYN"):
        raise InputError(f"{name}: not an x86-64 ELF program ({machine}, {kind})")
    if not dynamic:
        raise InputError(
            f"{name}: statically linked: LD_PRELOAD cannot load the agent into it "
            "(no dynamic loader)"
        )
    return path


@dataclass
class ArenaPages:
    """The page size the kernel backs the arena with, from /proc/PID/smaps (evidence)."""

    size_kib: int
    huge_kib: int  # bytes in 2 MiB pages (hugetlb or THP)
    how: str  # "hugetlb", "THP" or "none"

    def __str__(self) -> str:
        if self.how == "none":
            return (
                f"4 KiB pages: the kernel gave no 2 MiB page (vm.nr_hugepages={_nr_hugepages()}, "
                f"THP {_thp_mode()})"
            )
        return f"2 MiB pages ({self.how}): {self.huge_kib} of {self.size_kib} KiB"


def _nr_hugepages() -> str:
    try:
        return Path("/proc/sys/vm/nr_hugepages").read_text().strip()
    except OSError:
        return "?"


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unavailable"
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else text.strip()


def arena_pages(pid: int, base: int) -> ArenaPages:
    fields: dict[str, int] = {}
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                if inside:
                    break
                inside = int(head.split("-")[0], 16) == base
            elif inside and head.endswith(":"):
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    fields[head[:-1]] = int(parts[1])
    size = fields.get("Size", 0)
    if fields.get("KernelPageSize", 4) >= 2048:
        return ArenaPages(size, size, "hugetlb")
    thp = fields.get("AnonHugePages", 0)
    return ArenaPages(size, thp, "THP" if thp else "none")


class NativeProcess:
    """A program running with the agent; its transport once the agent has answered."""

    def __init__(
        self,
        argv: list[str],
        *,
        sample_hz: int = 1000,
        arena_mib: int = 8,
        stdout: IO[bytes] | int | None = None,
        stderr: IO[bytes] | int | None = None,
        stdin: IO[bytes] | int | None = None,
    ) -> None:
        self.program = check_program(argv[0])
        env = dict(os.environ)
        preload = env.get("LD_PRELOAD", "")
        env["LD_PRELOAD"] = f"{agent_library()}{':' + preload if preload else ''}"
        env["CODEISLAND_NATIVE"] = "1"
        env["CODEISLAND_SAMPLE_HZ"] = str(sample_hz)
        env["CODEISLAND_ARENA_MIB"] = str(arena_mib)
        self.t0 = time.monotonic()
        try:
            self.popen = subprocess.Popen(
                [str(self.program), *argv[1:]], env=env, stdout=stdout, stderr=stderr, stdin=stdin
            )
        except OSError as exc:
            raise UsageError(f"{argv[0]}: cannot start: {exc.strerror}") from None
        self.pid = self.popen.pid
        self.transport: ProcessTransport | None = None
        self.seconds = 0.0
        # the exit is timed by a thread waiting for it, not by whoever polls next
        self.exited = threading.Event()
        self._waiter = threading.Thread(target=self._reap, daemon=True)
        self._waiter.start()

    def _reap(self) -> None:
        self.popen.wait()
        self.seconds = time.monotonic() - self.t0
        self.exited.set()

    def alive(self) -> bool:
        return not self.exited.is_set()

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> ProcessTransport:
        """The transport, once the agent's mailbox carries its signature."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise TransportError(
                    f"{self.program.name} exited (status {self.popen.returncode}) before the "
                    "agent answered"
                )
            try:
                t = ProcessTransport(self.pid, self.alive)
                base = t.locate_mailbox()
                sig = int.from_bytes(t.read_phys(base, 8), "little")
            except TransportError:
                time.sleep(0.002)
                continue
            if sig == L.MAILBOX_SIGNATURE:
                self.transport = t
                return t
            t.close()
            time.sleep(0.002)
        raise TransportError(
            f"the agent did not answer within {timeout_s:.0f} s in {self.program.name}"
        )

    def load_base(self) -> int:
        """Where the executable's first mapping starts (its image base)."""
        starts = [lo for lo, _hi, _p, path in maps(self.pid) if path == str(self.program)]
        if not starts:
            raise TransportError(f"{self.program} is not mapped in process {self.pid}")
        return min(starts)

    def wait(self) -> int:
        """The exit status; `seconds` is then the time from start to exit."""
        self._waiter.join()
        return int(self.popen.returncode)

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
        self._waiter.join()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
