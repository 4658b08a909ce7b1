"""OVMF with CodeIslandPkg in its DSC and FDF, built by EDK2 in a workspace outside the repo.

The platform edits are exactly the ones edk2-pkg/README.md tells a user to make (the driver's
INF after PiSmmCpuDxeSmm in the DSC's X64 components and in the FDF's DXEFV, both inside
`!if $(SMM_REQUIRE) == TRUE`), applied to copies so the cached source stays pristine:

    <cache>/edk2/ws/<variant>/             WORKSPACE (first in PACKAGES_PATH)
        Conf/                              target.txt, tools_def.txt, build_rule.txt (templates)
        OvmfPkg/                           a copy of the platform package (8 MB: its DSC and FDF
                                           !include files beside them), DSC and FDF patched
        Build/Ovmf3264/RELEASE_GCC5/       EDK2's output (FV/OVMF_CODE.fd, FV/OVMF_VARS.fd)
        build.log

edk2-pytool-library parses the patched files with Debian's defines and confirms the driver is
a component of the build and a file of DXEFV before `build` runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BuildFailed, InputError, ToolMissing
from .build_source import Edk2Source, check_build_python, first_error, host_python

DRIVER_INF = "CodeIslandPkg/CodeIslandSmm.inf"
ANCHOR_INF = "UefiCpuPkg/PiSmmCpuDxeSmm/PiSmmCpuDxeSmm.inf"  # the SMM CPU driver we go after
DXE_FV = "DXEFV"
CONF_FILES = ("target", "tools_def", "build_rule")


@dataclass
class PlatformBuild:
    """One `build` invocation of an OVMF platform DSC with CodeIslandPkg added."""

    source: Edk2Source
    workspace: Path
    package_dir: Path  # the directory holding CodeIslandPkg (edk2-pkg/)
    dsc: str  # e.g. OvmfPkg/OvmfPkgIa32X64.dsc, relative to the source tree
    archs: tuple[str, ...]
    toolchain: str
    target: str
    flags: list[str]  # Debian's -D flags
    pcds: dict[str, str] = field(default_factory=dict)  # TokenSpace.Name -> value
    platform: bool = True  # a platform of the source tree (patched copy) or CodeIslandPkg.dsc

    @property
    def fdf(self) -> str:
        return self.dsc[: -len(".dsc")] + ".fdf"

    @property
    def log(self) -> Path:
        return self.workspace / "build.log"

    def command(self) -> list[str]:
        cmd = ["build", "-p", self.dsc, "-t", self.toolchain, "-b", self.target]
        for arch in self.archs:
            cmd += ["-a", arch]
        cmd += ["-n", str(os.cpu_count() or 1), *self.flags]
        for name, value in self.pcds.items():
            cmd += ["--pcd", f"{name}={value}"]
        return cmd

    def dsc_path(self) -> Path:
        return (self.workspace if self.platform else self.package_dir) / self.dsc

    def environment(self) -> dict[str, str]:
        tools = self.source.basetools
        clang = {"CLANG_BIN": clang_bin()} if self.toolchain == "CLANGPDB" else {}
        return {
            **clang,
            **os.environ,
            "WORKSPACE": str(self.workspace),
            "EDK_TOOLS_PATH": str(tools),
            "CONF_PATH": str(self.workspace / "Conf"),
            "PACKAGES_PATH": os.pathsep.join(
                [str(self.workspace), str(self.source.root), str(self.package_dir)]
            ),
            "PYTHON_COMMAND": host_python(),
            # as edksetup.sh sets it: BaseTools' arch order comes from a set of names, and the
            # first arch parsed is the one --pcd is checked against; a random seed made an
            # IA32-first run fail ("PcdCpuSmmRestrictedMemoryAccess is not found in the DEC
            # file": UefiCpuPkg.dec declares it for X64 only) about half of the time
            "PYTHONHASHSEED": "1",
            "PATH": os.pathsep.join([str(tools / "BinWrappers" / "PosixLike"), "/usr/bin", "/bin"]),
        }

    def output_dir(self) -> Path:
        """OUTPUT_DIRECTORY of the DSC + <target>_<toolchain> (e.g. Build/Ovmf3264/RELEASE_GCC5)."""
        text = self.dsc_path().read_text(errors="replace")
        m = re.search(r"^\s*OUTPUT_DIRECTORY\s*=\s*(\S+)", text, re.M)
        if not m:
            raise InputError(f"{self.dsc} has no OUTPUT_DIRECTORY")
        return self.workspace / m.group(1) / f"{self.target}_{self.toolchain}"


# -- the README's platform edits ----------------------------------------------------------------


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def add_to_dsc(text: str) -> str:
    """README step 2: the driver's INF after PiSmmCpuDxeSmm's component block (X64 components,
    SMM_REQUIRE); idempotent."""
    if DRIVER_INF in text:
        return text
    nl = _newline(text)
    lines = text.split(nl)
    at = next((i for i, ln in enumerate(lines) if ln.strip().startswith(ANCHOR_INF)), None)
    if at is None:
        raise InputError(f"the DSC has no {ANCHOR_INF} component to add the driver after")
    if lines[at].rstrip().endswith("{"):  # a block of overrides: after its closing brace
        at = next((i for i in range(at + 1, len(lines)) if lines[i].strip() == "}"), None)
        if at is None:
            raise InputError(f"the DSC's {ANCHOR_INF} block is not closed")
    lines.insert(at + 1, f"  {DRIVER_INF}")
    return nl.join(lines)


def add_to_fdf(text: str) -> str:
    """README step 3: `INF CodeIslandPkg/CodeIslandSmm.inf` after PiSmmCpuDxeSmm in DXEFV."""
    if DRIVER_INF in text:
        return text
    nl = _newline(text)
    lines = text.split(nl)
    at = next(
        (i for i, ln in enumerate(lines) if re.match(rf"\s*INF\s+{re.escape(ANCHOR_INF)}\s*$", ln)),
        None,
    )
    if at is None:
        raise InputError(f"the FDF has no `INF {ANCHOR_INF}` line to add the driver after")
    lines.insert(at + 1, f"INF  {DRIVER_INF}")
    return nl.join(lines)


def _write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_bytes() == text.encode():
        return  # keep the mtime: EDK2 then reuses its AutoGen
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(text.encode())
    tmp.replace(path)


def clang_bin() -> str:
    """CLANGPDB's CLANG_BIN: the directory of clang, lld-link and llvm-lib (Debian: llvm-14)."""
    clang = shutil.which("clang")
    if clang is None:
        raise ToolMissing("clang is not installed (apt-get install clang lld llvm)")
    bin_dir = Path(clang).resolve().parent
    for tool, package in (("lld-link", "lld"), ("llvm-lib", "llvm")):
        if not (bin_dir / tool).exists():
            raise ToolMissing(f"{bin_dir / tool} is missing (apt-get install {package})")
    return f"{bin_dir}/"


def prepare_workspace(pb: PlatformBuild) -> None:
    """Conf from BaseTools' templates; for a platform, a copy of its package with the DSC and FDF
    patched."""
    pb.workspace.mkdir(parents=True, exist_ok=True)
    _write_conf(pb)
    if not pb.platform:
        return
    package = pb.dsc.split("/")[0]
    if not (pb.workspace / package / f"{package}.dec").is_file():  # mtimes kept
        shutil.copytree(
            pb.source.root / package, pb.workspace / package, symlinks=True, dirs_exist_ok=True
        )
    for rel, text in patched_files(pb).items():
        _write_if_changed(pb.workspace / rel, text)


def patched_files(pb: PlatformBuild) -> dict[str, str]:
    """The platform's DSC and FDF with the README's edits (relative path -> text)."""
    out = {}
    for rel, patch in ((pb.dsc, add_to_dsc), (pb.fdf, add_to_fdf)):
        original = (pb.source.root / rel).read_bytes().decode("utf-8", errors="replace")
        out[rel] = patch(original)
    return out


def _write_conf(pb: PlatformBuild) -> None:
    conf = pb.workspace / "Conf"
    conf.mkdir(parents=True, exist_ok=True)
    for name in CONF_FILES:
        template = pb.source.basetools / "Conf" / f"{name}.template"
        _write_if_changed(conf / f"{name}.txt", template.read_text(errors="replace"))


def _defines(flags: list[str]) -> dict[str, str]:
    out = {}
    for flag in flags:
        if flag.startswith("-D"):
            name, _, value = flag[2:].partition("=")
            out[name] = value or "TRUE"
    return out


def check_platform(pb: PlatformBuild) -> None:
    """Parse the patched DSC/FDF as EDK2 will (Debian's defines): the driver must be built and
    placed in DXEFV, else the image would silently lack it."""
    from edk2toollib.uefi.edk2.parsers.dsc_parser import DscParser
    from edk2toollib.uefi.edk2.parsers.fdf_parser import FdfParser

    # the FDF's own directory too: its !include lines name files beside it, which EDK2 finds
    # there and edk2-pytool-library only through the search path
    platform_dir = str((pb.workspace / pb.fdf).parent)
    paths = [platform_dir, str(pb.source.root), str(pb.package_dir)]
    defines = {**_defines(pb.flags), "TARGET": pb.target, "TOOL_CHAIN_TAG": pb.toolchain}
    dsc = DscParser().SetBaseAbsPath(str(pb.workspace)).SetPackagePaths(paths)
    dsc.SetInputVars(dict(defines))
    dsc.SetNoFailMode()
    dsc.ParseFile(pb.dsc)
    if DRIVER_INF not in dsc.GetMods():
        raise InputError(f"{pb.dsc} with Debian's flags does not build {DRIVER_INF}")
    fdf = FdfParser().SetBaseAbsPath(str(pb.workspace)).SetPackagePaths(paths)
    fdf.SetInputVars(dict(defines))
    fdf.ParseFile(pb.fdf)
    if DRIVER_INF not in fdf.FVs.get(DXE_FV, {}).get("Infs", []):
        raise InputError(f"{pb.fdf} with Debian's flags does not put {DRIVER_INF} in {DXE_FV}")


# -- running EDK2's build -----------------------------------------------------------------------

Progress = Callable[[str], None]
REPORT_EVERY_S = 10.0
COMPILE_LINE = re.compile(r'^"?\S*(gcc|clang|nasm|iasl)"? ')


class BuildMonitor:
    """Turns EDK2's output into a progress line every few seconds: modules seen by AutoGen,
    files compiled, and the GenFds phase once it starts."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.t0 = time.monotonic()
        self.last = 0.0
        self.modules = 0
        self.compiled = 0
        self.phase = "autogen+make"

    def line(self, text: str) -> None:
        if text.startswith("Building ... "):
            self.modules += 1
        elif COMPILE_LINE.match(text):
            self.compiled += 1
        elif text.startswith("GenFds") and self.phase != "GenFds":
            self.phase = "GenFds"
            self.report()
        if time.monotonic() - self.last >= REPORT_EVERY_S:
            self.report()

    def report(self) -> None:
        self.last = time.monotonic()
        self.progress(
            f"{self.phase}: {self.modules} modules, {self.compiled} files compiled "
            f"({self.last - self.t0:.0f} s)"
        )


@contextlib.contextmanager
def _flock(path: Path, mode: int, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(lock, mode)
        yield  # the lock goes with the file descriptor, however the block is left


def one_build_at_a_time(cache: Path, progress: Progress) -> contextlib.AbstractContextManager[None]:
    """EDK2 builds take every core for minutes: one at a time per machine (a lock file in the
    cache).  Take it before workspace_lock (one order everywhere: no deadlock)."""
    return _flock(
        cache / "build.lock",
        fcntl.LOCK_EX,
        lambda: progress("waiting for another EDK2 build to finish"),
    )


def workspace_lock(
    workspace: Path, shared: bool = False
) -> contextlib.AbstractContextManager[None]:
    """A build holds its workspace exclusively; reading its outputs (the stamp check and the
    copy) holds it shared, so a copy never sees an image a build is rewriting, and two builds
    never share a Build tree.  The lock file sits beside the workspace (deleting one is safe)."""
    path = workspace.with_name(workspace.name + ".lock")
    return _flock(path, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)


def run_build(pb: PlatformBuild, progress: Progress, log: Path | None = None) -> float:
    """Run `build`; its whole output goes to the log (default build.log in the workspace).
    Returns the seconds it took."""
    check_build_python()
    monitor = BuildMonitor(progress)
    log_path = log or pb.log
    with log_path.open("w") as out:
        out.write("$ " + " ".join(pb.command()) + "\n")
        try:
            proc = subprocess.Popen(
                pb.command(),
                cwd=pb.workspace,
                env=pb.environment(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
        except OSError as exc:
            raise ToolMissing(f"EDK2's build could not start ({exc})") from exc
        assert proc.stdout is not None
        for text in proc.stdout:
            out.write(text)
            monitor.line(text)
        code = proc.wait()
    if code != 0:
        raise BuildFailed(f"EDK2 build failed: {first_error(log_path)} (log: {log_path})")
    return time.monotonic() - monitor.t0


def stderr_progress(text: str) -> None:
    """One line per report on stderr (the build runs for minutes: a log-friendly format)."""
    sys.stderr.write(f"[firmware build] {text}\n")
    sys.stderr.flush()
