"""A CI-sized subset of the rollback matrix (scripts/rollback_matrix.py runs all of it):
rollback after 1/2/3/10 SMIs, 0/16/64 stack slots, 8 islands, 1-4 CPUs and threads, copies
kept (the default) and reclaimed by RECLAIM SMIs once unreachable (the default schedule).
Every run must be IDENTICAL; before issue 11 the first row crashed
(`guest thread 0 on CPU 0 faulted ...: Unhandled CPU exception`).  The last test is the
control: the same first row with every byte restored on rollback still faults, so the matrix
can tell."""

from __future__ import annotations

from functools import cache

import pytest
from test_emu_common import ensure_built

from codeisland.emulator.differential import Baseline, EmulateConfig, run_baseline
from codeisland.emulator.rollback_matrix import run_one

ROWS = [  # workload, cpus, threads, rollback_after, stack_slots, retired copies get freed
    ("graphsort", 2, 2, 1, 0, True),  # the crash: --rollback-after 1 --islands 8
    ("graphsort", 1, 2, 2, 16, False),
    ("lz", 4, 4, 3, 64, False),
    ("hashtab", 2, 4, 10, 0, False),
    ("graphsort", 1, 1, 1, 16, True),
]


@cache
def _baseline(workload: str, cpus: int, threads: int) -> Baseline:
    ensure_built()
    return run_baseline(EmulateConfig(workload=workload, cpus=cpus, threads=threads,
                                      smi_every=50_000))  # fmt: skip


def _cfg(workload: str, cpus: int, threads: int, after: int, slots: int, keep: bool = True):  # type: ignore[no-untyped-def]
    return EmulateConfig(
        workload=workload, cpus=cpus, threads=threads, smi_every=50_000, islands=8,
        rollback_after=after, stack_slots=slots, keep_copies=keep, control=False,
    )  # fmt: skip


@pytest.mark.parametrize(("workload", "cpus", "threads", "after", "slots", "frees"), ROWS)
def test_rollback_row_is_identical(
    workload: str, cpus: int, threads: int, after: int, slots: int, frees: bool
) -> None:
    row = run_one(_cfg(workload, cpus, threads, after, slots),
                  _baseline(workload, cpus, threads))  # fmt: skip
    assert row.verdict == "IDENTICAL", row
    assert row.moved >= 5
    if frees:  # the retired copies went back to the planner while the threads ran on
        assert row.reclaims >= 1 and row.freed >= 1, row


def test_restoring_every_byte_still_crashes_the_first_row() -> None:
    row = run_one(_cfg("graphsort", 2, 2, 1, 0, keep=False), _baseline("graphsort", 2, 2))
    assert row.verdict == "CRASH" and "faulted" in row.detail, row
