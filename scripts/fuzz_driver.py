#!/usr/bin/env python3
"""Long run of the plan-mutation fuzzer against the real driver binary in the emulator
(codeisland.emulator.plan_fuzz): prints cases/s and findings as it goes, a summary at the end,
and exits 1 if anything was found.  Replay a finding with --seed S --first CASE --cases 1.

    .venv/bin/python scripts/fuzz_driver.py --cases 10000 --seed 1 [--root] [--seconds S]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from codeisland.emulator.plan_fuzz import FuzzReport, PlanFuzzer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--first", type=int, default=0, help="number of the first case")
    ap.add_argument("--root", action="store_true", help="root SMI handler path (no SwDispatch2)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--driver", type=Path, help="another driver binary (default: the build's)")
    ap.add_argument("--seconds", type=float, help="stop after this long (the summary still prints)")
    ap.add_argument("--every", type=float, default=30.0, help="seconds between progress lines")
    ap.add_argument("--json", type=Path, help="write the summary here")
    args = ap.parse_args()
    if args.cases < 1 or args.cpus < 1:
        ap.error("--cases and --cpus must be positive")
    start = time.monotonic()
    fuzzer = PlanFuzzer(args.seed, sw_dispatch=not args.root, cpus=args.cpus, driver=args.driver)
    booted = time.monotonic()
    cpu0 = time.process_time()  # a shared machine: the rate per CPU second is the steadier one
    last = [booted, 0]

    stop: list[int] = []  # SIGTERM/SIGINT: finish the case, then print the summary
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.append(signum))

    def progress(r: FuzzReport) -> bool:
        now = time.monotonic()
        done = (
            r.cases == args.cases
            or bool(stop)
            or (args.seconds is not None and now - booted >= args.seconds)
        )
        if now - last[0] >= args.every or done:
            rate = r.cases / (now - booted)
            cpu_rate = r.cases / max(time.process_time() - cpu0, 1e-9)
            print(
                f"{r.cases} cases, {rate:.2f} cases/s ({cpu_rate:.1f} per CPU s), "
                f"{r.accepted} accepted, "
                f"{len(r.findings)} findings, {r.reboots} reboots",
                file=sys.stderr,
                flush=True,
            )
            for f in r.findings[last[1] :]:
                print(f"FINDING {f}", file=sys.stderr, flush=True)
            last[0], last[1] = now, len(r.findings)
        return not done

    report = fuzzer.run(args.cases, args.first, progress)
    seconds = time.monotonic() - booted
    cpu = time.process_time() - cpu0
    summary = {
        "seed": args.seed, "first": args.first, "cases": report.cases,
        "path": "root" if args.root else "swdispatch2", "cpus": args.cpus,
        "seconds": round(seconds, 1), "boot_seconds": round(booted - start, 1),
        "cases_per_second": round(report.cases / seconds, 3), "cpu_seconds": round(cpu, 1),
        "cases_per_cpu_second": round(report.cases / max(cpu, 1e-9), 2),
        "accepted": report.accepted,
        "reboots": report.reboots, "statuses": dict(report.statuses.most_common()),
        "findings": [str(f) for f in report.findings],
        "stopped_by_signal": bool(stop),
    }  # fmt: skip
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
