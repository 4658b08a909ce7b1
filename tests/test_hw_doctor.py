"""`codeisland doctor --boot`: every check through chipsec against OVMF + our driver in QEMU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from codeisland.plan import layout as L

OVMF = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
pytestmark = pytest.mark.skipif(not OVMF.is_file(), reason="Debian's ovmf package is not installed")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from codeisland.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_doctor_against_qemu() -> None:
    subprocess.run(
        ["make", "-s", "-C", str(Path(__file__).resolve().parents[1] / "smm")], check=True
    )
    r = cli("doctor", "--boot", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    verdicts = {c["name"]: c["verdict"] for c in data["checks"]}
    assert verdicts == {
        "smm present": "ok",
        "smm locked": "ok",
        "smrr": "unknown",  # QEMU has no SMRR and its monitor reads no MSR: said, not guessed
        "driver found": "ok",
        "driver query": "ok",
        "sw smi delivery": "ok",
        "restricted memory": "warn",  # an injected driver cannot know the platform's mode
        "target": "unknown",  # the shell runs: nothing of ours in the arena
        "virtualization": "ok",  # QEMU's default CPU model exposes SVM
    }
    details = {c["name"]: c["detail"] for c in data["checks"]}
    versions = f"engine v{L.ENGINE_VERSION}, plan v{L.PLAN_VERSION}"
    assert versions in details["driver query"] and "locked" in details["driver query"]
    assert "SMI 0xc1 on 0xB2 answered" in details["sw smi delivery"]
    assert "QEMU does not implement SMRR" in details["smrr"]
    assert details["restricted memory"].startswith("unknown: the driver was not built inside")
    assert data["ready"] is True and data["helper"] == "QemuHelper"


def test_doctor_needs_exactly_one_target() -> None:
    r = cli("doctor")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "codeisland: error: choose exactly one of --qemu DIR, --boot, --helper NAME"
    ]
    r = cli("doctor", "--qemu", "/nonexistent")
    assert r.returncode == 2 and "no running codeisland QEMU guest" in r.stderr
