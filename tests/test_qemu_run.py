"""`codeisland qemu run` in one process, `codeisland doctor --qemu WORKDIR` in another: the
two-terminal flow a user follows, through machine.json and the chipsec helper."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

OVMF = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from codeisland.cli import main; main()"]
pytestmark = pytest.mark.skipif(not OVMF.is_file(), reason="Debian's ovmf package is not installed")


def _wait_for(path: Path, text: str, proc: subprocess.Popen[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and text in path.read_text(errors="replace")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{text!r} not in {path}"
        time.sleep(0.2)


def test_run_then_doctor_from_another_process(tmp_path: Path) -> None:
    subprocess.run(["make", "-s", "-C", str(ROOT / "smm")], check=True)
    run = subprocess.Popen(
        [*CLI, "qemu", "run", "--no-app", "--workdir", str(tmp_path), "--timeout", "120", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(tmp_path / "serial.log", "startup.nsh", run, 90)  # final boot reached the shell
        desc = json.loads((tmp_path / "machine.json").read_text())
        assert desc["memory_mib"] == 512 and Path(desc["ram"]).exists()
        doc = subprocess.run(
            [*CLI, "doctor", "--qemu", str(tmp_path), "--json"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert doc.returncode == 0, doc.stderr
        verdicts = {c["name"]: c["verdict"] for c in json.loads(doc.stdout)["checks"]}
        assert verdicts["driver found"] == verdicts["sw smi delivery"] == "ok"
        assert verdicts["smm locked"] == "ok"
    finally:
        run.send_signal(signal.SIGINT)  # the runner stops QEMU on its way out
        _out, err = run.communicate(timeout=30)
    assert run.returncode == 130, err
    assert "codeisland: aborted" in err or "codeisland: interrupted" in err
    time.sleep(0.5)
    pid = json.loads((tmp_path / "machine.json").read_text())["pid"]
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
