"""Guest workload images: the PIC ELF blobs of emulation/workloads (ABI in workload.h).

Only what loading needs is read here (segments, entry, function symbols for choosing islands);
the analysis of their code belongs to codeisland.analysis.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from codeisland.errors import InputError, ToolMissing
from codeisland.formats import open_image
from codeisland.paths import emulation_build_dir, repo_root

DEFAULT_WORKLOAD = "bytecode"


@dataclass(frozen=True)
class Function:
    name: str
    offset: int  # from the image base (the link address is 0)
    size: int


@dataclass(frozen=True)
class Segment:
    offset: int
    data: bytes
    memsize: int


@dataclass(frozen=True)
class WorkloadImage:
    name: str
    path: Path
    entry: int
    segments: tuple[Segment, ...]
    functions: dict[str, Function]
    # R_X86_64_RELATIVE relocations, (site, addend) from the image base: the loader writes
    # base + addend at base + site (absolute pointers in data)
    relocations: tuple[tuple[int, int], ...] = ()

    @property
    def size(self) -> int:
        return max(s.offset + s.memsize for s in self.segments)

    def function_at(self, offset: int) -> Function | None:
        for f in self.functions.values():
            if f.offset <= offset < f.offset + f.size:
                return f
        return None


def workload_dir() -> Path:
    return emulation_build_dir() / "workloads"


def available() -> list[str]:
    src = repo_root() / "emulation" / "workloads"
    return sorted(p.stem for p in src.glob("*.c") if p.stem != "runtime")


def workload_path(name: str) -> Path:
    """Path of a built workload; builds the workloads with make when it is missing."""
    candidate = Path(name)
    if candidate.suffix == ".elf" or "/" in name:
        return candidate
    if name not in available():
        raise InputError(f"unknown workload {name!r}; available: {', '.join(available())}")
    path = workload_dir() / f"{name}.elf"
    if not path.is_file():
        if shutil.which("make") is None or shutil.which("clang") is None:
            raise ToolMissing("building the workloads needs make and clang")
        proc = subprocess.run(
            ["make", "-s", "-C", str(repo_root() / "emulation")], capture_output=True, text=True
        )
        if proc.returncode != 0 or not path.is_file():
            raise InputError(f"`make -C emulation` failed: {proc.stderr.strip()[-400:]}")
    return path


def build_port(
    name: str,
    sources: list[Path],
    cflags: list[str] | None = None,
    make_vars: list[str] | None = None,
) -> Path:
    """Build a ported C program (workloads/PORTING.md) with the workloads' flags, runtime and
    libc into emulation/build/ports/<name>.elf; returns its path.  make_vars are extra
    VAR=value arguments of make (CC=gcc)."""
    if shutil.which("make") is None or shutil.which("clang") is None:
        raise ToolMissing("building a port needs make and clang")
    srcs = " ".join(str(Path(s).resolve()) for s in sources)
    args = ["make", "-s", "-C", str(repo_root() / "emulation"), "port", f"NAME={name}"]
    args += [f"SRCS={srcs}", f"PORT_CFLAGS={' '.join(cflags or [])}", *(make_vars or [])]
    proc = subprocess.run(args, capture_output=True, text=True)
    path = emulation_build_dir() / "ports" / f"{name}.elf"
    if proc.returncode != 0 or not path.is_file():
        raise InputError(f"building port {name} failed: {proc.stdout[-300:]}{proc.stderr[-600:]}")
    return path


def load_workload(name: str) -> WorkloadImage:
    path = workload_path(name)
    try:
        with path.open("rb") as fh:
            elf = ELFFile(fh)
            if elf["e_machine"] != "EM_X86_64" or elf["e_type"] != "ET_DYN":
                raise InputError(f"{path}: not a position-independent x86-64 workload")
            segments = tuple(
                Segment(int(s["p_vaddr"]), s.data(), int(s["p_memsz"]))
                for s in elf.iter_segments()
                if s["p_type"] == "PT_LOAD"
            )
            functions: dict[str, Function] = {}
            symtab = elf.get_section_by_name(".symtab")
            if symtab is not None:
                for sym in symtab.iter_symbols():
                    if sym["st_info"]["type"] == "STT_FUNC" and sym["st_size"] > 0:
                        functions[sym.name] = Function(
                            sym.name, int(sym["st_value"]), int(sym["st_size"])
                        )
            entry = int(elf["e_entry"])
    except (ELFError, OSError) as exc:
        raise InputError(f"{path}: {exc}") from exc
    if not segments:
        raise InputError(f"{path}: no loadable segments")
    relocations = tuple(open_image(path).loader_relocations())
    return WorkloadImage(path.stem, path, entry, segments, functions, relocations)
