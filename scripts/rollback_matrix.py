#!/usr/bin/env python3
"""The rollback matrix of issue 11: `codeisland emulate` runs that roll the generation back
after 1/2/3/10 SMIs, with 0/16/64 return-address slots, 8 islands, 1-4 CPUs and threads, over
the shipped workloads.  Prints one row per run and a summary; exits 1 when any run crashed or
diverged.  Copies are kept on rollback by default; --restore-copies shows the old behaviour.
Retired copies are reclaimed (RECLAIM SMIs, relocation.reclaim) unless --reclaim-every 0.

    .venv/bin/python scripts/rollback_matrix.py                  # graphsort, 60 runs
    .venv/bin/python scripts/rollback_matrix.py --workload lz --workload hashtab --json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import asdict

from tqdm import tqdm

from codeisland.emulator.differential import Baseline, EmulateConfig, run_baseline
from codeisland.emulator.rollback_matrix import (
    MACHINES,
    ROLLBACK_AFTER,
    STACK_SLOTS,
    Row,
    run_one,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", action="append", help="default: graphsort")
    ap.add_argument("--islands", type=int, default=8)
    ap.add_argument("--smi-every", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--restore-copies", action="store_true", help="the pre-issue-11 rollback")
    ap.add_argument("--reclaim-every", type=int, default=4, help="0: never reclaim")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    combos = list(itertools.product(args.workload or ["graphsort"], MACHINES, ROLLBACK_AFTER,
                                    STACK_SLOTS))  # fmt: skip
    rows: list[Row] = []
    baselines: dict[tuple[str, int, int], Baseline] = {}
    for workload, (cpus, threads), after, slots in tqdm(combos, desc="matrix", file=sys.stderr):
        cfg = EmulateConfig(
            workload=workload, cpus=cpus, threads=threads, smi_every=args.smi_every,
            seed=args.seed, islands=args.islands, rollback_after=after, stack_slots=slots,
            keep_copies=not args.restore_copies, reclaim_every=args.reclaim_every, control=False,
        )  # fmt: skip
        key = (workload, cpus, threads)
        if key not in baselines:
            baselines[key] = run_baseline(cfg)
        rows.append(run_one(cfg, baselines[key]))
    bad = [r for r in rows if r.verdict != "IDENTICAL"]
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows], "failed": len(bad)}, indent=2))
    else:
        print(f"{'workload':<10} {'cpus':>4} {'thr':>3} {'rb':>3} {'slots':>5} {'isl':>3} "
              f"{'moved':>5} {'verdict':<9} {'s':>5} {'rcl':>3} {'freed':>5} {'kept':>4}  "
              "detail")  # fmt: skip
        for r in rows:
            print(f"{r.workload:<10} {r.cpus:>4} {r.threads:>3} {r.rollback_after:>3} "
                  f"{r.stack_slots:>5} {r.islands:>3} {r.moved:>5} {r.verdict:<9} "
                  f"{r.seconds:>5} {r.reclaims:>3} {r.freed:>5} {r.kept:>4}  "
                  f"{r.detail}")  # fmt: skip
        crashes = sum(r.verdict == "CRASH" for r in rows)
        print(
            f"\n{len(rows)} runs: {len(rows) - len(bad)} identical, "
            f"{len(bad) - crashes} different, {crashes} crashed "
            f"(copies {'restored' if args.restore_copies else 'kept'} on rollback); "
            f"RECLAIM every {args.reclaim_every}: {sum(r.reclaims for r in rows)} SMIs freed "
            f"{sum(r.freed for r in rows)} retired copies, {sum(r.kept for r in rows)} still kept"
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
