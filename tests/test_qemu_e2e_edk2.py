"""Real SMIs on the EDK2-built OVMF (`codeisland firmware build`): the driver EDK2 compiled, in
the DXEFV EDK2 assembled, relocates, translates contexts and rolls back.

This is the test a wrong calling convention in the EDK2 glue fails (the image boots and the
driver logs its lines either way; only SMIs that run the engine and answer show it works).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from edk2_common import edk2_firmware

from codeisland.firmware.build import FirmwareBuild


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from codeisland.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def e2e(fw: FirmwareBuild, work: Path) -> dict[str, Any]:
    r = cli("qemu", "e2e", "--json", "--workdir", str(work),
            "--firmware", str(fw.code), "--vars", str(fw.vars))  # fmt: skip
    assert r.stdout, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    data["_exit"] = r.returncode
    return data


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return e2e(edk2_firmware("stock"), tmp_path_factory.mktemp("e2e-edk2"))


@pytest.fixture(scope="module")
def unrestricted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return e2e(edk2_firmware("unrestricted"), tmp_path_factory.mktemp("e2e-edk2-unr"))


def test_edk2_built_image_relocates_through_real_smis(stock: dict[str, Any]) -> None:
    assert stock["ok"] is True and stock["_exit"] == 0
    assert stock["image"] == str(edk2_firmware("stock").code)  # booted as built, not injected
    assert stock["relocations"] == 2 and stock["dest_bytes_match"] is True
    assert stock["fixups_applied"] == 2
    assert stock["contexts_translated"] >= 1 and stock["cpus_in_smm"] == 1
    assert stock["samples_total"] >= 8 and stock["samples_in_copies"] >= 1
    assert stock["checksums_ok"] is True and stock["rounds_after_commit"] >= 4
    assert stock["rolled_back"] is True


@pytest.fixture(scope="module")
def x64(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return e2e(edk2_firmware("stock", "X64"), tmp_path_factory.mktemp("e2e-edk2-x64"))


def test_ovmfpkgx64_image_relocates_through_real_smis(x64: dict[str, Any]) -> None:
    """OvmfPkgX64 (X64 PEI) with the driver in its DSC/FDF: boots with S3 off (the e2e's QEMU
    turns it off for an X64 SEC core), and the same checks hold as on Debian's platform."""
    assert x64["ok"] is True and x64["_exit"] == 0
    assert x64["image"] == str(edk2_firmware("stock", "X64").code)
    assert x64["relocations"] == 2 and x64["fixups_applied"] == 2
    assert x64["contexts_translated"] >= 1 and x64["samples_in_copies"] >= 1
    assert x64["checksums_ok"] is True and x64["rolled_back"] is True
    assert x64["bad_plan_status"] == "TOUCHES_SMRAM" and x64["firmware_mode"] == "restricted"
    assert "codeisland: smm memory access=restricted" in x64["driver_log"]


def test_edk2_built_image_refuses_smram_and_reports_its_mode(stock: dict[str, Any]) -> None:
    assert stock["bad_plan_rejected"] is True and stock["bad_plan_status"] == "TOUCHES_SMRAM"
    assert stock["firmware_mode"] == "restricted"
    assert "codeisland: smm memory access=restricted" in stock["driver_log"]
    assert "codeisland: sw-smi path=root" in stock["driver_log"]


def test_unrestricted_test_board_still_follows_the_engine_rules(
    unrestricted: dict[str, Any],
) -> None:
    """PcdCpuSmmRestrictedMemoryAccess FALSE changes what SMM may touch, not what the engine
    accepts: SMRAM still refused with nothing written, the arena plan still works."""
    assert unrestricted["firmware_mode"] == "unrestricted"
    assert (
        "codeisland: smm memory access=UNRESTRICTED (test-board firmware)"
        in (unrestricted["driver_log"])
    )
    assert unrestricted["bad_plan_rejected"] is True
    assert unrestricted["bad_plan_status"] == "TOUCHES_SMRAM"
    assert unrestricted["ok"] is True and unrestricted["rolled_back"] is True


def test_doctor_reports_the_mode_from_the_drivers_evidence() -> None:
    verdicts = {}
    for variant in ("stock", "unrestricted"):
        fw = edk2_firmware(variant)
        r = cli("doctor", "--boot", "--json", "--firmware", str(fw.code), "--vars", str(fw.vars))
        assert r.returncode == 0, r.stderr
        checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
        verdicts[variant] = checks["restricted memory"]
    assert verdicts["stock"]["verdict"] == "ok"
    assert verdicts["stock"]["detail"].startswith("restricted (the platform build")
    assert verdicts["unrestricted"]["verdict"] == "warn"
    assert verdicts["unrestricted"]["detail"].startswith("UNRESTRICTED: test-board firmware")
    assert "production" in verdicts["unrestricted"]["advice"]
