"""BOLT as the comparison a user would pick instead: an offline layout from an instrumented
profile of the same input (Debian's bolt-15: `llvm-bolt -instrument`, no perf needed).

    llvm-bolt-15 IN -instrument -instrumentation-file=P.fdata -o IN.inst   (run it once: P.fdata)
    llvm-bolt-15 IN -data=P.fdata -reorder-functions=hfsort -o IN.hfsort
    llvm-bolt-15 IN -data=P.fdata -reorder-functions=hfsort -reorder-blocks=ext-tsp
                  -split-functions -split-all-cold -o IN.hfsort-blocks

Debian installs BOLT's instrumentation runtime as /usr/lib/llvm-15/lib/libbolt_rt_instr.a while
llvm-bolt-15 looks for /usr/lib/libbolt_rt_instr.a; -runtime-instrumentation-lib (taken relative
to /usr/lib) names it.  BOLT 15 has no cdsort (newer BOLT); hfsort is its call-graph ordering.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import ToolMissing

BOLT = "llvm-bolt-15"
RUNTIME = "llvm-15/lib/libbolt_rt_instr.a"  # relative to /usr/lib, where llvm-bolt-15 looks
LAYOUTS: dict[str, list[str]] = {
    "bolt-hfsort": ["-reorder-functions=hfsort"],
    "bolt-hfsort+blocks": [
        "-reorder-functions=hfsort", "-reorder-blocks=ext-tsp", "-split-functions",
        "-split-all-cold",
    ],
}  # fmt: skip


def _bolt(args: list[str], what: str) -> None:
    if shutil.which(BOLT) is None:
        raise ToolMissing(f"{BOLT} is not installed (Debian package bolt-15)")
    r = subprocess.run([BOLT, *args], capture_output=True, text=True)
    if r.returncode != 0:
        errors = [ln for ln in (r.stderr + r.stdout).splitlines() if "ERROR" in ln]
        raise ToolMissing(f"{what} failed: {(errors or (r.stderr or r.stdout).splitlines())[-1]}")


def instrumented_profile(binary: Path, argv: list[str], out_dir: Path) -> Path:
    """Run `argv` (argv[0] replaced by the instrumented binary) once; its profile."""
    inst = out_dir / f"{binary.name}.inst"
    fdata = out_dir / f"{binary.name}.fdata"
    fdata.unlink(missing_ok=True)
    _bolt(
        [str(binary), "-instrument", f"-runtime-instrumentation-lib={RUNTIME}",
         f"-instrumentation-file={fdata}", "-o", str(inst)],
        "llvm-bolt -instrument",
    )  # fmt: skip
    r = subprocess.run([str(inst), *argv[1:]], capture_output=True)
    if r.returncode != 0 or not fdata.is_file():
        raise ToolMissing(
            f"the BOLT-instrumented {binary.name} failed (exit {r.returncode}) or wrote no profile"
        )
    return fdata


def optimised(binary: Path, fdata: Path, layout: str, out_dir: Path) -> Path:
    out = out_dir / f"{binary.name}.{layout}"
    _bolt([str(binary), f"-data={fdata}", *LAYOUTS[layout], "-o", str(out)], f"llvm-bolt {layout}")
    return out
