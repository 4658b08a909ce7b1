"""An unmodified program for the Linux guest: the host's binary, its shared libraries, our landing
zone, and an /init that runs it once and prints what it wrote.

    run = ProgramRun(Path("/usr/bin/gzip"), ("-9n",), input_cmd="seq 1 1000000")
    initrd = build_initramfs(run, busybox, landing, out_dir)
    run.reference(busybox, landing)      # the same pipeline on the host, unrelocated

The program keeps its own path; its ELF interpreter and every DT_NEEDED library (recursively)
are copied from the host's Debian packages to the same paths, so the guest runs exactly the
host's files.  stdin is `input_cmd` run by busybox's shell (the same busybox on both sides);
stdout goes to a file whose size and sha256 the guest prints on the serial console:

    codeisland-program: status 0 bytes 2196660 sha256 a514... seconds 31.2

The landing library (guest/linux/landing.c) is LD_PRELOADed and reports the program's text and
its landing zone on /dev/console, never on the program's own stdout or stderr.

Attached (`--pid`): the guest's /init starts the same pipeline itself, as the board's own
background job without anything of codeisland in it, and then runs guest/linux/attach.c on the
process the kernel command line's `codeisland.attach=PID|NAME` names (so one initramfs serves
every PID); the attacher prints the landing library's lines, or one `codeisland-attach: error:`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from ...errors import InputError, ToolMissing
from . import cpio
from .initramfs import APPLETS, base_members, pack

LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib")
LANDING_PATH = "lib/codeisland-landing.so"
ATTACH_PATH = "bin/codeisland-attach"
ATTACH_PARAM = "codeisland.attach"  # the kernel command line's word naming the process
PID_MAX = 4194304  # Linux's PID_MAX_LIMIT: no guest PID is larger
COMM_LEN = 15  # a process name as the kernel keeps it (comm, TASK_COMM_LEN - 1)
PROCESS_NAME = re.compile(rf"[A-Za-z0-9._+-]{{1,{COMM_LEN}}}")
RUN_APPLETS = (*APPLETS, "seq", "wc", "sha256sum", "cut", "yes", "head")
HUGE_PAGES = 4  # 2 MiB pages reserved for MAP_HUGETLB landing zones
LINGER_S = 5
START_LINE = re.compile(r"codeisland-program: start")
LANDING_LINE = re.compile(
    r"codeisland-landing: pid (\d+) exe (\S+) base (0x[0-9a-f]+) text (0x[0-9a-f]+)-(0x[0-9a-f]+)"
    r" private (\d) zone (0x[0-9a-f]+) size (0x[0-9a-f]+) page (2M|4K) via (\S+)"
    r" text_breaks (-?\d+) text_via (remap|fault)"
)
LANDING_ERROR = re.compile(r"codeisland-landing: pid \d+ (?:error|warning): (.*)")
LANDING_FAILED = re.compile(r"codeisland-landing: pid \d+ error: (.*)")
ATTACH_ERROR = re.compile(r"codeisland-attach: error: (.*)")

INIT = """#!/bin/sh
# codeisland Linux guest: run one unmodified program, then power off.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo {huge} > /proc/sys/vm/nr_hugepages
# Linux leaves transparent huge pages off below 512 MiB of RAM; the landing library asks for one
# (MADV_HUGEPAGE) to give the program's text adjacent frames
echo madvise > /sys/kernel/mm/transparent_hugepage/enabled
echo "codeisland-init: userspace up"
{start}
echo "codeisland-init: program exited with $?"
sleep {linger}  # the host's SMIs after the program's exit still find the guest up
poweroff -f
"""
START = "/run  # the pipeline under the landing library"
# --pid: the board runs its own job; codeisland attaches to a process afterwards
ATTACH_START = """/run &
job=$!
sleep 1  # the job runs a while before anybody attaches
for word in $(cat /proc/cmdline); do
  case $word in {param}=*) target=${{word#{param}=}} ;; esac
done
/{attach} "$target"  # its line (or error) first; it leaves a watcher for the exit line
wait $job"""

RUN = """#!/bin/sh
read t0 _ < /proc/uptime
echo "codeisland-program: start"
{pipeline} > /tmp/out
status=$?
read t1 _ < /proc/uptime
bytes=$(wc -c < /tmp/out)
sum=$(sha256sum < /tmp/out | cut -d' ' -f1)
echo "codeisland-program: status $status bytes $bytes sha256 $sum seconds $t0 $t1"
"""


def check_pid(value: str) -> str:
    """A process as the user names it in the guest: a PID (as the guest's ps shows it) or a
    program name (as pidof takes it, one process); checked before anything boots."""
    if value.isdigit():
        if not 1 <= int(value) <= PID_MAX:
            raise InputError(f"no guest process can have PID {value} (Linux PIDs are 1..{PID_MAX})")
        return str(int(value))
    if PROCESS_NAME.fullmatch(value) is None:
        raise InputError(
            f"--pid {value!r}: give a guest PID or a process name of at most {COMM_LEN} of "
            "A-Z a-z 0-9 . _ + - (the kernel's comm, as ps and pidof show it)"
        )
    return value


@dataclass(frozen=True)
class Output:
    status: int
    size: int
    sha256: str
    seconds: float | None = None  # the program's run time in the guest (TCG)


@dataclass(frozen=True)
class Landing:
    """The landing library's report: where the program's code and its landing zone are."""

    pid: int
    exe: str
    base: int  # load base (mapping at file offset 0)
    text: tuple[int, int]
    private: bool
    zone: int
    size: int
    huge: bool  # 2 MiB pages took effect
    via: str  # hugetlb | thp | none
    text_breaks: int  # physical discontinuities between text pages (-1: unknown)
    text_via: str  # remap (one huge page's adjacent frames) | fault (page by page)

    @classmethod
    def parse(cls, m: re.Match[str]) -> Landing:
        g = m.groups()
        return cls(int(g[0]), g[1], int(g[2], 16), (int(g[3], 16), int(g[4], 16)),
                   g[5] == "1", int(g[6], 16), int(g[7], 16), g[8] == "2M", g[9],
                   int(g[10]), g[11])  # fmt: skip


def exited(serial: str, pid: int) -> bool:
    """The program's process is gone: its landing library's destructor said so, or the run's
    output line is there (which /run prints only after the pipeline ended, a little later)."""
    return f"codeisland-landing: pid {pid} exit" in serial or parse_output(serial) is not None


def parse_output(serial: str) -> Output | None:
    m = re.search(
        r"codeisland-program: status (\d+) bytes (\d+) sha256 ([0-9a-f]{64}) "
        r"seconds ([0-9.]+) ([0-9.]+)",
        serial,
    )
    if m is None:
        return None
    return Output(int(m.group(1)), int(m.group(2)), m.group(3),
                  float(m.group(5)) - float(m.group(4)))  # fmt: skip


def _elf(path: Path) -> ELFFile:
    try:
        f = path.open("rb")
        elf = ELFFile(f)
    except (OSError, ELFError) as exc:
        raise InputError(f"{path} is not an ELF program the guest can run ({exc})") from exc
    if elf["e_machine"] != "EM_X86_64":
        raise InputError(f"{path} is {elf['e_machine']}, not an x86-64 program")
    return elf


def check_elf(path: Path) -> None:
    """An x86-64 ELF program (InputError otherwise)."""
    _elf(path).stream.close()


def _needs(path: Path) -> tuple[str | None, list[str]]:
    elf = _elf(path)
    interp = None
    for seg in elf.iter_segments():
        if seg["p_type"] == "PT_INTERP":
            interp = seg.get_interp_name()
    needed: list[str] = []
    for sec in elf.iter_sections():
        if isinstance(sec, DynamicSection):
            needed += [t.needed for t in sec.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
    elf.stream.close()
    return interp, needed


def _find_library(name: str) -> Path:
    for d in LIB_DIRS:
        p = Path(d) / name
        if p.is_file():
            return p
    raise InputError(f"shared library {name} is not on this host (looked in {', '.join(LIB_DIRS)})")


def runtime_files(exe: Path) -> dict[str, Path]:
    """Guest path -> host file: the program, its interpreter and all its libraries."""
    interp, needed = _needs(exe)
    if interp is None and not needed:
        raise InputError(f"{exe} is statically linked: the landing library needs a dynamic program")
    files: dict[str, Path] = {str(exe).lstrip("/"): exe}
    if interp is not None:
        files[interp.lstrip("/")] = Path(interp)
    todo = list(needed)
    while todo:
        name = todo.pop()
        lib = _find_library(name)
        guest = f"lib/x86_64-linux-gnu/{name}"
        if guest in files:
            continue
        files[guest] = lib
        todo += _needs(lib)[1]
    return files


@dataclass(frozen=True)
class ProgramRun:
    exe: Path
    args: tuple[str, ...] = ()
    input_cmd: str | None = None  # busybox sh pipeline whose stdout is the program's stdin
    attach: str | None = None  # the guest starts the pipeline; codeisland attaches to this process

    def pipeline(self, landing: str) -> str:
        prog = " ".join(shlex.quote(a) for a in (str(self.exe), *self.args))
        run = prog if self.attach else f"LD_PRELOAD={landing} {prog}"
        return f"{self.input_cmd} | {run}" if self.input_cmd else f"{run} < /dev/null"

    def check(self) -> None:
        if not self.exe.is_absolute():
            raise InputError(f"give the program's absolute path (got {self.exe})")
        if self.attach is not None:
            check_pid(self.attach)
        runtime_files(self.exe)

    def kernel_args(self) -> str:
        """What the guest's /init reads from the kernel command line (the process to attach)."""
        return f" {ATTACH_PARAM}={self.attach}" if self.attach else ""

    def reference(self, busybox: Path, landing: Path) -> Output:
        """The same pipeline on the host: the same program, libraries, busybox and input."""
        with tempfile.TemporaryDirectory(prefix="codeisland-ref-") as tmp:
            bin_dir = Path(tmp) / "bin"
            bin_dir.mkdir()
            for a in RUN_APPLETS:
                os.symlink(busybox, bin_dir / a)
            env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CODEISLAND_LANDING_LOG": os.devnull}
            out = Path(tmp) / "out"
            r = subprocess.run([str(busybox), "sh", "-c", f"{self.pipeline(str(landing))} > {out}"],
                               env=env, capture_output=True, timeout=600)  # fmt: skip
            data = out.read_bytes() if out.is_file() else b""
            return Output(r.returncode, len(data), hashlib.sha256(data).hexdigest())


def build_initramfs(
    run: ProgramRun, busybox: Path, landing: Path, out_dir: Path, attacher: Path | None = None
) -> Path:
    """The guest for this run: the program's files, and the landing library (or, attached, the
    attacher and the /init that starts the program by itself)."""
    helper, helper_path, make = (
        (attacher, ATTACH_PATH, "attach") if run.attach else (landing, LANDING_PATH, "landing")
    )
    if helper is None or not helper.is_file():
        raise ToolMissing(f"{helper} is missing: build it with `make -C guest/linux {make}`")
    ms = base_members(busybox, RUN_APPLETS)
    dirs: set[str] = {"bin", "dev", "proc", "sys", "tmp"}
    files = runtime_files(run.exe)
    for guest in sorted({*files, helper_path}):
        parts = guest.split("/")[:-1]
        for k in range(1, len(parts) + 1):
            d = "/".join(parts[:k])
            if d not in dirs:
                dirs.add(d)
                ms.append(cpio.directory(d))
    ms += [cpio.file(g, p.read_bytes(), 0o755) for g, p in sorted(files.items())]
    ms.append(cpio.file(helper_path, helper.read_bytes(), 0o755))
    start = ATTACH_START.format(param=ATTACH_PARAM, attach=ATTACH_PATH) if run.attach else START
    init = INIT.format(huge=HUGE_PAGES, linger=LINGER_S, start=start)
    ms.append(cpio.file("init", init.encode(), 0o755))
    ms.append(cpio.file("run", RUN.format(pipeline=run.pipeline("/" + LANDING_PATH)).encode(),
                        0o755))  # fmt: skip
    return pack(ms, out_dir)
