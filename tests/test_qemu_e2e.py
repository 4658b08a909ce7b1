"""The end-to-end run on real firmware: OVMF + our driver under QEMU, driven through chipsec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from codeisland.qemu.e2e import MAX_COMMIT_ATTEMPTS

OVMF = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
pytestmark = pytest.mark.skipif(not OVMF.is_file(), reason="Debian's ovmf package is not installed")


def _e2e(work: Path, *extra: str) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-c", "from codeisland.cli import main; main()", "qemu", "e2e",
         "--json", "--workdir", str(work), *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.stdout, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    data["_exit"] = r.returncode
    return data


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _e2e(tmp_path_factory.mktemp("e2e"))


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _e2e(tmp_path_factory.mktemp("e2e-lz"), "--workload", "lz")


def test_required_keys_and_verdict(report: dict[str, Any]) -> None:
    for key in (
        "booted",
        "relocations",
        "contexts_translated",
        "checksums_ok",
        "bad_plan_rejected",
    ):
        assert key in report
    assert report["ok"] is True and report["_exit"] == 0


def test_driver_booted_through_the_root_handler_path(report: dict[str, Any]) -> None:
    assert report["booted"] is True
    assert "codeisland: sw-smi path=root" in report["driver_log"]
    assert any(line.startswith("codeisland: mailbox=") for line in report["driver_log"])


def test_smram_plan_rejected_with_nothing_written(report: dict[str, Any]) -> None:
    assert report["bad_plan_rejected"] is True
    assert report["bad_plan_status"] == "TOUCHES_SMRAM"


def test_islands_moved_and_run_in_their_copies(report: dict[str, Any]) -> None:
    assert report["relocations"] == 2
    assert [i["name"] for i in report["islands"]] == ["hot_loop", "mix"]
    for isl in report["islands"]:
        assert isl["dst"] != isl["src"]
    assert report["dest_bytes_match"] is True
    assert report["fixups_applied"] == 2  # hot_loop: lea data(%rip), call mix
    # SMIs taken after the commit find the CPU in the copies, or on an original entry's jump
    # (TCG ends a translation block at a call, so the SMI lands on the callee's first byte)
    assert report["samples_total"] >= 8
    assert report["samples_in_copies"] >= 1
    assert len(report["sample_rips"]) == report["samples_total"]
    moved = report["samples_in_copies"] + report["samples_at_entries"]
    assert moved * 2 > report["samples_total"]


def test_contexts_translated_wherever_the_smi_landed(report: dict[str, Any]) -> None:
    # TCG takes the SMI at the end of a translation block: no particular RIP is assumed, only
    # that a commit translated the interrupted thread (retried if it was outside the islands)
    assert report["contexts_translated"] >= 1
    assert report["cpus_in_smm"] == 1  # the default guest has one vCPU, and it entered SMM
    assert 1 <= report["commit_attempts"] <= MAX_COMMIT_ATTEMPTS


def test_checksums_stay_correct_and_rollback_restores(report: dict[str, Any]) -> None:
    assert report["checksums_ok"] is True
    assert report["rounds_after_commit"] >= 4
    assert report["rounds_total"] > report["rounds_after_commit"]
    assert report["rolled_back"] is True


def test_emulator_workload_runs_relocated_and_matches_the_emulator(emu: dict[str, Any]) -> None:
    """The same blob as smmemu (workload.h ABI) in the real firmware: every relocatable island
    moved, staged over more than one SMI, every round's output identical, and equal to the
    emulator's unrelocated run."""
    from codeisland.emulator.differential import EmulateConfig, run_baseline

    assert emu["ok"] is True and emu["_exit"] == 0
    assert emu["workload"] == "lz"
    names = {i["name"] for i in emu["islands"]}
    assert "workload_thread" in names and "ci_start" not in names
    assert emu["relocations"] == len(names) >= 10
    assert emu["stage_smis"] >= 2 and emu["bytes_written"] > 4096  # budget 4096 per SMI
    assert emu["bad_plan_rejected"] and emu["contexts_translated"] >= 1
    assert emu["checksums_ok"] and emu["rolled_back"]
    baseline = run_baseline(EmulateConfig(workload="lz", cpus=1, threads=1))
    assert baseline.exit_codes == [0]
    assert emu["round_output"].encode() == baseline.outputs[0]
