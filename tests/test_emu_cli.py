"""`codeisland emulate` end to end through the console script: JSON keys and values, the text
report, and one clear error line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

from test_emu_common import ensure_built

CMD = [sys.executable, "-c", "from codeisland.cli import main; main()", "emulate"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=240)


def test_emulate_json_reports_an_identical_relocated_run() -> None:
    ensure_built()
    args = "--workload graphsort --cpus 3 --threads 3 --smi-every 80000 --seed 4 --layout amd64"
    proc = _run(*args.split(), "--sw-smi", "root", "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    for key in ("workload", "identical", "relocations", "contexts_translated", "bytes_written",
                "smm_instructions_max", "guest_instructions"):  # fmt: skip
        assert key in d
    assert d["workload"] == "graphsort" and d["identical"] is True
    assert d["relocations"] == len(d["islands"]) == 3
    assert d["bytes_written"] == sum(i["size"] for i in d["islands"])
    assert d["contexts_translated"] >= 1 and d["smm_instructions_max"] > 0
    assert d["layout"] == "amd64" and d["sw_smi_path"] == "root handler"
    assert d["hot_functions"][0]["samples"] >= d["hot_functions"][-1]["samples"]


def test_emulate_text_report_and_bad_input() -> None:
    ensure_built()
    proc = _run("--workload", "hashtab", "--island", "mix", "--periodic")
    assert proc.returncode == 0, proc.stderr
    assert "mix " in proc.stdout and "outputs: IDENTICAL" in proc.stdout
    bad = _run("--workload", "nosuch")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("codeisland: error: unknown workload")
    assert "Traceback" not in bad.stderr


def test_emulate_phase_daily_reads_the_board_rtc_and_input_devices() -> None:
    # phase_daily reads CMOS 0x70/0x71 and port 0xEB: devices of every emulated board now
    ensure_built()
    proc = _run("--workload", "phase_daily", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads(proc.stdout)
    assert d["workload"] == "phase_daily" and d["identical"] is True and d["relocations"] >= 1
