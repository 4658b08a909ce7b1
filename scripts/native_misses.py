#!/usr/bin/env python3
"""Where a Linux program misses, per function, under the front-end model: the binary as built
replayed under qemu-x86_64 (codeisland.native.calibrate.miss_ranking), its islands ranked by
modeled L1i/iTLB miss cycles, and how callers would reach each one's copy (planning.redirect).
A look at what a layout could save before measuring one.

    .venv/bin/python scripts/native_misses.py [--top 15] [--sample 4] -- PROGRAM ARGS...
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from codeisland.analysis import analyze
from codeisland.errors import CodeIslandError
from codeisland.native import calibrate
from codeisland.native.process import check_program
from codeisland.planning.redirect import redirect


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=15, help="islands to print")
    ap.add_argument("--sample", type=int, default=4, help="model 1 in K windows of 2^20 blocks")
    ap.add_argument("argv", nargs="+", metavar="PROGRAM ARGS")
    args = ap.parse_args()
    try:
        exe = check_program(args.argv[0])
        imap = analyze(exe).allowing_indirect_jumps()
        islands = sorted(imap, key=lambda i: i.start)
        with tempfile.TemporaryDirectory() as work:
            rows = calibrate.miss_ranking(
                [str(exe), *args.argv[1:]], [(i.start, i.size) for i in islands], Path(work),
                max(args.sample, 1),
            )  # fmt: skip
    except CodeIslandError as exc:
        print(f"native_misses: error: {exc}", file=sys.stderr)
        return exc.exit_code
    by_start = {i.start: i for i in islands}
    misses = sum(r["l1i_misses"] for r in rows) or 1
    blocks = sum(r["blocks"] for r in rows) or 1
    print(f"{exe}: {len(rows)} islands ran; modeled L1i misses {misses}, blocks {blocks}")
    head = f"{'island':32} {'blocks':>7} {'L1i misses':>11} {'iTLB':>7}"
    print(f"{head}  how callers would reach a copy")
    for r in rows[: args.top]:
        isl = by_start[r["offset"]]
        how = redirect(imap, isl).describe() if isl.relocatable else f"not moved: {isl.reason}"
        print(f"{isl.name[:32]:32} {100 * r['blocks'] / blocks:6.2f}% "
              f"{100 * r['l1i_misses'] / misses:10.1f}% {r['itlb_misses']:7d}  {how}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
