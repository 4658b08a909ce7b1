"""Shared helpers of the tests/test_emu_*.py files (no tests here).

Islands for these tests are hand-made: functions of the workloads whose code has no rel32
branch or call leaving the function and no RIP-relative operand (checked by reading
`objdump -d` of the -O2 build), so their plans need no fix-ups.  A wrong pick would show up as
a divergence in the differential tests, never as a silent pass.  The emulate CLI takes its
islands from codeisland.analysis instead.
"""

from __future__ import annotations

import subprocess
from functools import cache

from codeisland.paths import driver_binary, repo_root
from smmemu.emulate import Baseline, EmulateConfig, run_baseline
from smmemu.plans import IslandSpec
from smmemu.workload import WorkloadImage, workload_path

LEAF_ISLANDS = {
    "graphsort": ("sift_down", "bfs", "insertion_runs", "gen_graph", "gen_data"),
    "hashtab": ("mix",),
    "lz": ("fnv1a", "match_len"),
    "bytecode": ("native_hash_loop", "native_fib"),
}


def ensure_built() -> None:
    """Build the driver and the workloads when missing (CI builds them before pytest)."""
    if not driver_binary().is_file():
        subprocess.run(["make", "-s", "-C", str(repo_root() / "smm")], check=True)
    workload_path("graphsort")
    assert driver_binary().is_file()


def leaf_source(image: WorkloadImage, base: int) -> dict[str, IslandSpec]:
    out = {}
    for name in LEAF_ISLANDS[image.name]:
        f = image.functions[name]
        out[name] = IslandSpec(name, base + f.offset, f.size)
    return out


def only(*names: str):  # type: ignore[no-untyped-def]
    """An island source restricted to `names`, in that order."""

    def source(image: WorkloadImage, base: int) -> dict[str, IslandSpec]:
        full = leaf_source(image, base)
        return {n: full[n] for n in names}

    return source


@cache
def baseline(workload: str, threads: int) -> Baseline:
    ensure_built()
    return run_baseline(EmulateConfig(workload=workload, threads=threads, cpus=threads))
