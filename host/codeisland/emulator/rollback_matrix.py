"""The rollback matrix of issue 11: differential runs that roll the generation back after
1/2/3/10 SMIs with 0/16/64 return-address slots, 8 islands, 1-4 CPUs and threads.  A row per run:
IDENTICAL, DIFFERENT or CRASH (the machine stopped: a guest fault), and what RECLAIM did with the
retired copies (freed, still kept at the end).  scripts/rollback_matrix.py
runs the whole matrix; tests/test_rollback_matrix.py a CI-sized subset."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..errors import CodeIslandError
from .differential import Baseline, EmulateConfig, run_emulation

ROLLBACK_AFTER = (1, 2, 3, 10)
STACK_SLOTS = (0, 16, 64)
MACHINES = ((1, 1), (1, 2), (2, 2), (2, 4), (4, 4))  # (cpus, threads)


@dataclass
class Row:
    workload: str
    cpus: int
    threads: int
    rollback_after: int
    stack_slots: int
    islands: int
    verdict: str  # IDENTICAL, DIFFERENT, CRASH
    moved: int
    seconds: float
    detail: str = ""
    reclaims: int = 0  # RECLAIM SMIs
    freed: int = 0  # retired copies they freed
    kept: int = 0  # retired copies the last one still kept


def run_one(cfg: EmulateConfig, baseline: Baseline) -> Row:
    """One differential run of the matrix; a stopped machine is a CRASH row, not an error."""
    start = time.monotonic()
    row = Row(cfg.workload, cfg.cpus, cfg.threads, cfg.rollback_after or 0, cfg.stack_slots,
              cfg.islands, "CRASH", 0, 0.0)  # fmt: skip
    try:
        report = run_emulation(cfg, baseline)
        row.verdict = "IDENTICAL" if report.identical else "DIFFERENT"
        row.moved = len({m["name"] for m in report.moved})
        row.reclaims = len(report.reclaims)
        row.freed = sum(len(r.freed) for r in report.reclaims)
        row.kept = len(report.reclaims[-1].kept) if report.reclaims else 0
        row.detail = "; ".join(e for e in report.events if "warning" in e or "hazard" in e)
    except CodeIslandError as exc:
        row.detail = str(exc).splitlines()[0][:160]
    row.seconds = round(time.monotonic() - start, 1)
    return row
