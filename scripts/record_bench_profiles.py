#!/usr/bin/env python3
"""Record the benchmark's stored profiles (host/codeisland/data/profiles/): each third-party
port of codeisland.emulator.ports (zlib, bzip2 from Debian's source packages) is built and run
in the emulator with the real driver for a week of one-hour windows, and saved in the versioned
profile format.  `codeisland bench` replays them as its recorded workloads.  About 3-4 minutes
per program on a busy 2-core machine.

    .venv/bin/python scripts/record_bench_profiles.py                # both programs
    .venv/bin/python scripts/record_bench_profiles.py --program zlib --windows 24 --out /tmp
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codeisland.emulator.ports import PORTS, RECORD_WINDOWS, record
from codeisland.errors import CodeIslandError
from codeisland.loop.recorded import PROFILES, PROGRAMS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--program", action="append", choices=sorted(PORTS))
    ap.add_argument("--windows", type=int, default=RECORD_WINDOWS)
    ap.add_argument("--out", type=Path, default=PROFILES, help="directory (default: the stored)")
    args = ap.parse_args()
    try:
        for program in args.program or sorted(PORTS):
            profile = record(program, args.windows)
            path = args.out / PROGRAMS[program][0]
            profile.save(path)
            print(f"{path}: {len(profile.windows)} windows, {len(profile.islands)} islands, "
                  f"{profile.source['package']}")  # fmt: skip
    except CodeIslandError as exc:
        print(f"record_bench_profiles: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
