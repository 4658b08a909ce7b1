"""scripts/native_bench.py end to end on its quick input: every configuration runs (the program
as built, under the native host, BOLT's instrumented profile and both layouts), every run prints
what the first printed, and the table and the PNG come out.  No figure is asserted: timings on a
shared machine are for the benchmark's report, not for a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from codeisland.native import bench
from codeisland.paths import repo_root


def test_quick_benchmark_runs_every_configuration(tmp_path: Path) -> None:
    script = repo_root() / "scripts" / "native_bench.py"
    cmd = [sys.executable, str(script), "--program", "islands", "--quick", "--runs", "1",
           "--out", str(tmp_path)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    for config in bench.CONFIGS:
        assert f"\n{config} " in r.stdout, r.stdout
    assert (tmp_path / "native-islands.png").stat().st_size > 10_000
    (data,) = json.loads((tmp_path / "native-bench.json").read_text())
    results = data["results"]
    assert set(results) == set(bench.CONFIGS)
    assert all(len(results[c]["wall"]) == 1 and results[c]["cpu"][0] > 0 for c in bench.CONFIGS)
    assert results["predictive"]["relocations"][0] > 0
    assert results["agent"]["relocations"] == [0]


def test_bad_configuration_is_one_line() -> None:
    script = repo_root() / "scripts" / "native_bench.py"
    r = subprocess.run([sys.executable, str(script), "--configs", "predictive"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "including base" in r.stderr and "Traceback" not in r.stderr
