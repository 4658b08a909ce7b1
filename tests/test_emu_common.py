"""Shared helpers of the tests/test_emu_*.py files (no tests here).

Islands come from codeisland.analysis and plans from codeisland.planning, as in the CLI.
LEAF_ISLANDS are functions without fix-ups; MIXED_ISLANDS have rel32 calls/jumps out of the
island or RIP-relative operands, so the differential tests cover fix-ups too.
"""

from __future__ import annotations

import subprocess
from functools import cache

from codeisland.analysis import analyze
from codeisland.emulator.differential import Baseline, EmulateConfig, run_baseline
from codeisland.paths import driver_binary, repo_root
from codeisland.relocation.placement import plan_ranked, region_platform
from smmemu.workload import workload_path

LEAF_ISLANDS = {
    "graphsort": ("sift_down", "bfs", "insertion_runs", "gen_graph", "gen_data"),
    "hashtab": ("mix",),
    "lz": ("fnv1a", "match_len"),
    "bytecode": ("native_hash_loop", "native_fib"),
}
MIXED_ISLANDS = {
    "graphsort": ("merge_sort", "components", "heap_sort", "checksum_sorted"),
    "hashtab": ("run_phase", "insert", "probe", "rehash", "lookup"),
    "lz": ("lz_compress", "lz_decompress", "gen_text"),
    "bytecode": ("vm_run", "emit", "build_fib"),
}


@cache
def ensure_built() -> None:
    """Bring the driver and the workloads up to date (once per test run; make does nothing when
    they are): tests must not run a driver binary built from older sources than the tree's."""
    for part in ("smm", "emulation"):
        subprocess.run(["make", "-s", "-C", str(repo_root() / part)], check=True)
    workload_path("graphsort")
    assert driver_binary().is_file()


def plan_for(session, image, names, hot=None, plan_id=5, stack_slots=0):  # type: ignore[no-untyped-def]
    """Analyse the workload where the guest placed it and plan `names`, packed in that order,
    into `hot` = (base, size) (default: the arena's hot area) through the relocation layer."""
    base = session.arena[0]
    imap = analyze(image.path, load_base=session.region("code")[0])
    area = hot or session.region("hot")
    plan = plan_ranked(
        imap, list(names), region_platform(*area), arena_base=base, plan_id=plan_id,
        stack_slots=stack_slots, read_bytes=session.machine.read,
    )  # fmt: skip
    return imap, plan


@cache
def baseline(workload: str, threads: int) -> Baseline:
    ensure_built()
    return run_baseline(EmulateConfig(workload=workload, threads=threads, cpus=threads))
