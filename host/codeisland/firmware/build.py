"""`codeisland firmware build`: OVMF from Debian's edk2 source with CodeIslandPkg built in.

    fetch (cached) -> BaseTools (once) -> workspace with the README's DSC/FDF edits -> EDK2's
    `build` with Debian's flags (+ the variant's PCDs) -> CODE and VARS images (+ the driver PE)

A stamp over every input (source version, flags, PCDs, patched DSC/FDF, the package's files and
the sources its INF lists) makes a rebuild with nothing changed a copy of the outputs.

Variants:
- stock: Debian's image with the driver, nothing else changed.
- unrestricted: PcdCpuSmmRestrictedMemoryAccess FALSE, a test board's firmware: SMM may touch
  any non-SMRAM memory after lock.  Every file it writes starts with INSECURE-TEST-BOARD.

Platforms: Ia32X64 (OvmfPkgIa32X64.dsc, what Debian's OVMF_CODE_4M.secboot.fd is built from)
and X64 (OvmfPkgX64.dsc, X64 PEI; with SMM its PlatformPei stops while S3 is on, so it boots
only with S3 off: QEMU's `-global ICH9-LPC.disable_s3=1`, which codeisland's QEMU runs add when
the image's SEC core is X64).  Each platform and variant has a workspace of its own.

Concurrency: one EDK2 build at a time per machine (they take every core), and a workspace lock:
a build holds it exclusively, an up-to-date check and the copy of its outputs hold it shared,
so no run ever copies an image another run is rewriting.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BuildFailed, InputError
from ..paths import cache_dir, repo_root
from . import build_platform as P
from . import build_source as S

RESTRICTED_PCD = "gUefiCpuPkgTokenSpaceGuid.PcdCpuSmmRestrictedMemoryAccess"
STAMP = ".codeisland-stamp.json"
TARGET = "RELEASE"
S3_OFF_QEMU = "-global ICH9-LPC.disable_s3=1"


@dataclass(frozen=True)
class Platform:
    name: str  # as the CLI spells it
    dsc: str
    archs: tuple[str, ...]
    output_directory: str  # the DSC's OUTPUT_DIRECTORY (checked when building)
    tag: str  # in workspace, output directory and file names ("" for Debian's own)
    boot_note: str = ""


PLATFORMS = {
    "Ia32X64": Platform("Ia32X64", S.DEBIAN_SECBOOT_DSC, ("IA32", "X64"), "Build/Ovmf3264", ""),
    "X64": Platform(
        "X64",
        "OvmfPkg/OvmfPkgX64.dsc",
        ("X64",),
        "Build/OvmfX64",
        "x64",
        f"boots only with S3 off ({S3_OFF_QEMU}): X64 PEI + SMM has no S3 resume and "
        "PlatformPei stops silently while S3 is on",
    ),
}
DEFAULT_PLATFORM = "Ia32X64"


@dataclass(frozen=True)
class Variant:
    name: str
    pcds: dict[str, str]
    prefix: str  # of every file written
    summary: str


VARIANTS = {
    "stock": Variant("stock", {}, "", "Debian's 4M secure-boot SMM flags + the driver"),
    "unrestricted": Variant(
        "unrestricted",
        {RESTRICTED_PCD: "FALSE"},
        "INSECURE-TEST-BOARD.",
        "TEST BOARD ONLY: PcdCpuSmmRestrictedMemoryAccess=FALSE (SMM may touch any non-SMRAM "
        "memory after lock); never flash it on a production machine",
    ),
}
OUTPUT_NAMES = {  # EDK2's output (relative to Build/<platform>/<target>_<toolchain>) -> ours
    "FV/OVMF_CODE.fd": "OVMF_CODE_4M.secboot.codeisland.fd",
    "FV/OVMF_VARS.fd": "OVMF_VARS_4M.codeisland.fd",
    "X64/CodeIslandSmm.efi": "CodeIslandSmm.efi",
}


def output_name(variant: Variant, platform: Platform, name: str) -> str:
    """e.g. INSECURE-TEST-BOARD.OVMF_X64_CODE_4M.secboot.codeisland.fd"""
    if platform.tag and name.startswith("OVMF_"):
        name = f"OVMF_{platform.tag.upper()}_{name[len('OVMF_') :]}"
    return variant.prefix + name


@dataclass
class FirmwareBuild:
    variant: str
    platform: str
    summary: str
    source: str
    dsc: str
    toolchain: str
    flags: list[str]
    pcds: dict[str, str]
    restricted_memory_access: bool  # as the build compiled PiSmmCpuDxeSmm (its AutoGen.h)
    up_to_date: bool
    seconds: float
    build_seconds: float
    outputs: dict[str, str] = field(default_factory=dict)  # role -> path
    sizes: dict[str, int] = field(default_factory=dict)
    log: str = ""
    boot_note: str = ""

    @property
    def code(self) -> Path:
        return Path(self.outputs["code"])

    @property
    def vars(self) -> Path:
        return Path(self.outputs["vars"])

    @property
    def driver(self) -> Path:
        return Path(self.outputs["driver"])

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __str__(self) -> str:
        how = (
            "up to date (nothing changed)"
            if self.up_to_date
            else f"built in {self.build_seconds:.0f} s"
        )
        pcds = " ".join(f"--pcd {k}={v}" for k, v in self.pcds.items())
        lines = [
            f"variant {self.variant} ({self.platform}): {self.summary}",
            f"edk2 {self.source}, {self.dsc}, {self.toolchain} {TARGET}, {' '.join(self.flags)}",
            f"PcdCpuSmmRestrictedMemoryAccess = {self.restricted_memory_access} {pcds}".rstrip(),
            f"{how}; total {self.seconds:.1f} s; log {self.log}",
        ]
        if self.boot_note:
            lines.append(f"note: this image {self.boot_note}")
        lines += [
            f"  {role:6} {path} ({self.sizes[role]} bytes)" for role, path in self.outputs.items()
        ]
        return "\n".join(lines)


def default_output(variant: str, platform: str = DEFAULT_PLATFORM) -> Path:
    return repo_root() / "build" / "firmware" / _tagged(PLATFORMS[platform], variant)


def _tagged(platform: Platform, name: str) -> str:
    return f"{platform.tag}-{name}" if platform.tag else name


def package_dir() -> Path:
    return repo_root() / "edk2-pkg"


# -- inputs and the stamp -----------------------------------------------------------------------


def package_files(pkg: Path) -> Iterator[Path]:
    """Every file the package build reads: DEC/DSC/INF, the INF's sources, the DEC's includes."""
    from edk2toollib.uefi.edk2.parsers.dec_parser import DecParser
    from edk2toollib.uefi.edk2.parsers.inf_parser import InfParser

    root = pkg / "CodeIslandPkg"
    yield from sorted(root.glob("*.d[es]c"))
    inf_path = root / "CodeIslandSmm.inf"
    yield inf_path
    inf = InfParser()
    inf.ParseFile(str(inf_path))
    yield from (root / s for s in sorted(inf.Sources))
    dec = DecParser()
    dec.ParseFile(str(root / "CodeIslandPkg.dec"))
    for inc in dec.IncludePaths:
        yield from sorted(p for p in (root / str(inc)).rglob("*") if p.is_file())


def input_digest(pb: P.PlatformBuild, extra: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"cmd": pb.command(), "source": str(pb.source.root), **extra}).encode())
    h.update(json.dumps(pb.source.version).encode())
    if pb.platform:  # the patched DSC/FDF (the package's own DSC is among package_files)
        for text in P.patched_files(pb).values():
            h.update(text.encode())
    for f in package_files(pb.package_dir):
        h.update(str(f.relative_to(pb.package_dir)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _stamp_matches(ws: Path, digest: str, outputs: list[Path]) -> bool:
    try:
        stamp = json.loads((ws / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("digest") == digest and all(p.is_file() for p in outputs)


def _write_stamp(ws: Path, digest: str) -> None:
    (ws / STAMP).write_text(json.dumps({"digest": digest, "time": time.time()}))


def fresh_module(out_dir: Path) -> None:
    """Drop our module's objects before a build: EDK2's makefiles depend on source mtimes, not
    on flags, so a changed [BuildOptions] (or sources older than the objects, e.g. another
    checkout's) would otherwise link stale objects.  The module alone recompiles in seconds."""
    shutil.rmtree(out_dir / "X64" / "CodeIslandPkg", ignore_errors=True)


def restricted_in_build(out_dir: Path) -> bool:
    """The value PiSmmCpuDxeSmm was compiled with, from its generated AutoGen.h."""
    autogen = out_dir / "X64/UefiCpuPkg/PiSmmCpuDxeSmm/PiSmmCpuDxeSmm/DEBUG/AutoGen.h"
    try:
        text = autogen.read_text(errors="replace")
    except OSError as exc:
        raise BuildFailed(f"the build left no PiSmmCpuDxeSmm AutoGen.h ({exc})") from exc
    # e.g. "#define _PCD_VALUE_PcdCpuSmmRestrictedMemoryAccess  1U" (or ((BOOLEAN)1U), TRUE)
    m = re.search(
        r"#define _PCD_VALUE_PcdCpuSmmRestrictedMemoryAccess\s+\(*(?:BOOLEAN\))?\s*(\w+)", text
    )
    if not m:
        raise BuildFailed(f"{autogen} does not fix PcdCpuSmmRestrictedMemoryAccess")
    return m.group(1).rstrip("uU").upper() not in ("0", "FALSE")


def _copy_if_changed(src: Path, dst: Path) -> None:
    if dst.is_file() and dst.read_bytes() == src.read_bytes():
        return
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)  # a reader never sees half an image


# -- the command --------------------------------------------------------------------------------


def prepare_source(progress: P.Progress, cache: Path | None = None) -> S.Edk2Source:
    cache = cache or cache_dir()
    S.check_tools()
    if S.find_source(cache) is None:
        progress("fetching Debian's edk2 source (apt-get source edk2)")
    source = S.fetch_source(cache)
    if S.ensure_basetools(source, cache / "edk2" / "basetools.log"):
        progress("built BaseTools")
    return source


def build_firmware(
    variant: str = "stock",
    output: Path | None = None,
    progress: P.Progress = P.stderr_progress,
    cache: Path | None = None,
    platform: str = DEFAULT_PLATFORM,
) -> FirmwareBuild:
    if variant not in VARIANTS:
        raise InputError(f"unknown variant {variant!r} (one of {', '.join(VARIANTS)})")
    if platform not in PLATFORMS:
        raise InputError(f"unknown platform {platform!r} (one of {', '.join(PLATFORMS)})")
    v, plat = VARIANTS[variant], PLATFORMS[platform]
    t0 = time.monotonic()
    cache = cache or cache_dir()
    source = prepare_source(progress, cache)
    pb = P.PlatformBuild(
        source=source,
        workspace=cache / "edk2" / "ws" / _tagged(plat, variant),
        package_dir=package_dir(),
        dsc=plat.dsc,
        archs=plat.archs,
        toolchain=S.debian_toolchain(source),
        target=TARGET,
        flags=S.debian_build_flags(source),
        pcds=dict(v.pcds),
    )
    out_dir = pb.workspace / plat.output_directory / f"{TARGET}_{pb.toolchain}"
    built = {out_dir / rel: name for rel, name in OUTPUT_NAMES.items()}
    digest = input_digest(pb, {"variant": variant})
    output = output or default_output(variant, platform)

    def report(up_to_date: bool, build_seconds: float) -> FirmwareBuild:
        return _report(pb, v, plat, out_dir, built, output, up_to_date, build_seconds, t0)

    with P.workspace_lock(pb.workspace, shared=True):  # never waits for other workspaces
        if _stamp_matches(pb.workspace, digest, list(built)):
            return report(True, 0.0)
    with P.one_build_at_a_time(cache / "edk2", progress), P.workspace_lock(pb.workspace):
        if _stamp_matches(pb.workspace, digest, list(built)):  # built while we waited
            return report(True, 0.0)
        P.prepare_workspace(pb)
        P.check_platform(pb)
        if pb.output_dir() != out_dir:
            raise BuildFailed(f"{pb.dsc} builds into {pb.output_dir()}, not {out_dir}")
        progress(f"EDK2 build of {pb.dsc} ({variant}); log {pb.log}")
        (pb.workspace / STAMP).unlink(missing_ok=True)
        fresh_module(out_dir)
        build_seconds = P.run_build(pb, progress)
        _write_stamp(pb.workspace, digest)
        return report(False, build_seconds)


def _report(
    pb: P.PlatformBuild,
    v: Variant,
    plat: Platform,
    out_dir: Path,
    built: dict[Path, str],
    output: Path,
    up_to_date: bool,
    build_seconds: float,
    t0: float,
) -> FirmwareBuild:
    """Check what the build compiled and copy its outputs (the caller holds the workspace)."""
    restricted = restricted_in_build(out_dir)
    if restricted != (RESTRICTED_PCD not in v.pcds):
        raise BuildFailed(f"PiSmmCpuDxeSmm was built with restricted access {restricted}")
    output.mkdir(parents=True, exist_ok=True)
    report = FirmwareBuild(
        variant=v.name,
        platform=plat.name,
        summary=v.summary,
        source=pb.source.version,
        dsc=pb.dsc,
        toolchain=pb.toolchain,
        flags=pb.flags,
        pcds=dict(v.pcds),
        restricted_memory_access=restricted,
        up_to_date=up_to_date,
        seconds=0.0,
        build_seconds=build_seconds,
        log=str(pb.log),
        boot_note=plat.boot_note,
    )
    for (src, name), role in zip(built.items(), ("code", "vars", "driver"), strict=True):
        dst = output / output_name(v, plat, name)
        _copy_if_changed(src, dst)
        report.outputs[role] = str(dst)
        report.sizes[role] = dst.stat().st_size
    report.seconds = time.monotonic() - t0
    return report


# -- the package alone (both toolchains) --------------------------------------------------------

PACKAGE_DSC = "CodeIslandPkg/CodeIslandPkg.dsc"
TOOLCHAINS = ("GCC5", "CLANGPDB")


@dataclass
class DriverBuild:
    toolchain: str
    driver: str
    size: int
    up_to_date: bool
    seconds: float
    log: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __str__(self) -> str:
        how = "up to date" if self.up_to_date else "built"
        return f"{self.toolchain}: {self.driver} ({self.size} bytes), {how} in {self.seconds:.1f} s"


def default_driver_output(toolchain: str) -> Path:
    return repo_root() / "build" / "edk2" / f"CodeIslandSmm.{toolchain}.efi"


def build_driver(
    toolchain: str = "GCC5",
    output: Path | None = None,
    progress: P.Progress = P.stderr_progress,
    cache: Path | None = None,
) -> DriverBuild:
    """CodeIslandSmm.efi from CodeIslandPkg.dsc alone (no platform), with EDK2's own flags."""
    if toolchain not in TOOLCHAINS:
        raise InputError(f"unknown toolchain {toolchain!r} (one of {', '.join(TOOLCHAINS)})")
    t0 = time.monotonic()
    cache = cache or cache_dir()
    source = prepare_source(progress, cache)
    pb = P.PlatformBuild(
        source=source,
        workspace=cache / "edk2" / "ws" / "package",
        package_dir=package_dir(),
        dsc=PACKAGE_DSC,
        archs=("X64",),
        toolchain=toolchain,
        target=TARGET,
        flags=[],
        platform=False,
    )
    built = pb.output_dir() / "X64" / "CodeIslandSmm.efi"
    digest = input_digest(pb, {"toolchain": toolchain})
    stamp_dir = pb.workspace / toolchain
    output = output or default_driver_output(toolchain)
    output.parent.mkdir(parents=True, exist_ok=True)
    with P.workspace_lock(pb.workspace, shared=True):
        up_to_date = _stamp_matches(stamp_dir, digest, [built])
        if up_to_date:
            _copy_if_changed(built, output)
    if not up_to_date:
        with P.one_build_at_a_time(cache / "edk2", progress), P.workspace_lock(pb.workspace):
            up_to_date = _stamp_matches(stamp_dir, digest, [built])
            if not up_to_date:
                stamp_dir.mkdir(parents=True, exist_ok=True)
                P.prepare_workspace(pb)
                (stamp_dir / STAMP).unlink(missing_ok=True)
                fresh_module(pb.output_dir())
                P.run_build(pb, progress, log=stamp_dir / "build.log")
                _write_stamp(stamp_dir, digest)
            _copy_if_changed(built, output)
    return DriverBuild(
        toolchain=toolchain,
        driver=str(output),
        size=output.stat().st_size,
        up_to_date=up_to_date,
        seconds=time.monotonic() - t0,
        log=str(stamp_dir / "build.log"),
    )
