"""scripts/native_bench.py end to end on its quick input: every configuration runs (the program
as built, under the native host, BOLT's instrumented profile and both layouts), every run prints
what the first printed, and the table and the PNG come out; with the front-end model, its
prediction for the same runs is printed beside the measured saving.  No figure is asserted:
timings on a shared machine are for the benchmark's report, not for a test."""

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
           "--out", str(tmp_path), "--no-model"]  # fmt: skip
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


def test_quick_benchmark_with_the_model(tmp_path: Path) -> None:
    """minigzip's quick input is short enough to replay every binary under qemu-x86_64 (the
    islands program runs billions of blocks)."""
    script = repo_root() / "scripts" / "native_bench.py"
    cmd = [sys.executable, str(script), "--program", "minigzip", "--quick", "--runs", "1",
           "--out", str(tmp_path), "--model-sample", "1"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "front-end model vs measured" in r.stdout, r.stdout
    for config in ("predictive", "reactive", "bolt-input", "bolt-hfsort", "bolt-hfsort+blocks"):
        assert f"\n{config} " in r.stdout.split("front-end model vs measured")[1], r.stdout
    (data,) = json.loads((tmp_path / "native-bench.json").read_text())
    model = data["model"]
    assert set(model["binaries"]) == {"base", "bolt-input", "bolt-hfsort", "bolt-hfsort+blocks"}
    base = model["binaries"]["base"]
    assert base["counted"] == base["blocks_total"] > 1_000_000  # every block modeled
    assert len(model["native_layouts"]) == 2  # one per native run
    for c in ("predictive", "reactive"):
        assert len(data["results"][c]["predicted_s"]) == len(data["results"][c]["in_copies_pct"])
        assert data["results"][c]["predicted_s"]


def test_bad_configuration_is_one_line() -> None:
    script = repo_root() / "scripts" / "native_bench.py"
    r = subprocess.run([sys.executable, str(script), "--configs", "predictive"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "including base" in r.stderr and "Traceback" not in r.stderr
