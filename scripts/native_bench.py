#!/usr/bin/env python3
"""Measured wall time of real programs: unmodified, under codeisland's native host (agent only,
predictive, reactive) and BOLT's offline layouts (codeisland.native.bench); prints a table per
program and writes a PNG (and JSON), with the front-end model's predicted saving for the same
runs beside the measured one (codeisland.native.calibrate: the runs' layouts replayed under
qemu-x86_64).  A benchmark, not a test: figures, no pass/fail on them.

    .venv/bin/python scripts/native_bench.py [--program lua --program islands] [--runs 5]
        [--quick] [--out DIR] [--configs base,predictive,...] [--model-sample K | --no-model]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from codeisland.errors import CodeIslandError
from codeisland.native import bench, programs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--program", action="append", choices=sorted(programs.BUILDERS))
    ap.add_argument("--runs", type=int, default=5, help="repetitions of every configuration")
    ap.add_argument("--quick", action="store_true", help="small inputs, for a check that it runs")
    ap.add_argument("--out", type=Path, default=Path("native-bench"), help="PNG/JSON directory")
    ap.add_argument("--configs", default=",".join(bench.CONFIGS), help="comma-separated subset")
    ap.add_argument("--model-sample", type=int, default=8,
                    help="model 1 in K windows of 2^20 executed blocks (1: all)")  # fmt: skip
    ap.add_argument("--no-model", action="store_true", help="measure only, no model prediction")
    args = ap.parse_args()
    configs = tuple(c for c in args.configs.split(",") if c)
    unknown = [c for c in configs if c not in bench.CONFIGS]
    if args.model_sample < 1:
        ap.error("--model-sample must be >= 1")
    if args.runs < 1 or unknown or "base" not in configs:
        ap.error(f"--runs >= 1, configs from {', '.join(bench.CONFIGS)} including base")
    args.out.mkdir(parents=True, exist_ok=True)
    everything = []
    try:
        for name in args.program or ["lua"]:
            sample = 0 if args.no_model else args.model_sample
            report = bench.measure(programs.build(name, args.quick), args.runs, configs, sample)
            print(report, flush=True)
            png = bench.plot(report, args.out / f"native-{name}.png")
            print(f"plot: {png}")
            everything.append(report.to_dict())
    except CodeIslandError as exc:
        print(f"native_bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    (args.out / "native-bench.json").write_text(json.dumps(everything, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
