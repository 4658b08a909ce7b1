"""Commands that compare or check exit non-zero when the check fails, with and without --json.

The failure is the command's own report type with a failing verdict, returned by the library
call the command makes (no guest needs to diverge, no board needs to be unready): what is under
test is the path from that verdict to the process's exit status.  The entry used to drop it
(`cli.main(standalone_mode=False)` *returns* an Exit's code) so `emulate` exited 0 on
DIFFERENT; the subprocess case goes through the real console-script entry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import click
import pytest
from cli_entry import invoke

from codeisland.analysis.verify import Mismatch, VerifyReport
from codeisland.doctor import FAIL, OK, Check, DoctorReport
from codeisland.emulator.differential import EmulateConfig, EmulateReport
from codeisland.qemu.e2e import E2eReport


def diverged(cfg: EmulateConfig, **_: Any) -> EmulateReport:
    return EmulateReport(
        config=cfg, identical=False, relocations=1, contexts_translated=1, bytes_written=64,
        smm_instructions_max=100, guest_instructions=1000, baseline_instructions=1000,
        divergent_threads=[0],
    )  # fmt: skip


def _check(args: list[str], as_json: bool, code: int = 1) -> dict[str, Any] | None:
    result = invoke([*args, *(["--json"] if as_json else [])])
    assert result.exit_code == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("codeisland: error: "), result.stderr
    if as_json:  # the report is still printed, as JSON, before the verdict
        doc: dict[str, Any] = json.loads(result.stdout)
        return doc
    assert result.stdout.strip()
    return None


@pytest.mark.parametrize("as_json", [False, True])
def test_emulate_exits_1_when_outputs_differ(
    monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    import codeisland.emulator.differential as differential

    monkeypatch.setattr(differential, "run_emulation", diverged)
    doc = _check(["emulate", "--workload", "lz"], as_json)
    assert doc is None or doc["identical"] is False


@pytest.mark.parametrize("as_json", [False, True])
def test_verify_exits_1_on_a_mismatch(monkeypatch: pytest.MonkeyPatch, as_json: bool) -> None:
    import codeisland.cli.verify as verify_cli

    def mismatched(imap: Any, **_: Any) -> VerifyReport:
        report = VerifyReport(path="lz.elf", format="elf64", islands=1)
        report.mismatches.append(Mismatch("fnv1a", 0x10, "call target", 0x1D60, 0x1D70))
        return report

    monkeypatch.setattr(verify_cli, "verify", mismatched)
    from codeisland.paths import emulation_build_dir

    elf = str(emulation_build_dir() / "workloads" / "lz.elf")
    doc = _check(["verify", elf], as_json)
    assert doc is None or doc["mismatches"]


@pytest.mark.parametrize("as_json", [False, True])
def test_qemu_e2e_exits_1_when_a_check_fails(
    monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    import codeisland.qemu.e2e as e2e

    monkeypatch.setattr(e2e, "run_e2e", lambda *a, **k: E2eReport(booted=True))
    doc = _check(["qemu", "e2e", "--no-build"], as_json)
    assert doc is None or doc["ok"] is False


class _NoTransport:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.cs = None

    def __enter__(self) -> _NoTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize("as_json", [False, True])
def test_doctor_exits_1_when_not_ready(monkeypatch: pytest.MonkeyPatch, as_json: bool) -> None:
    import codeisland.doctor as doctor
    import codeisland.hw.transport as transport

    def unready(self: Any) -> DoctorReport:
        return DoctorReport(
            "FakeHelper",
            [Check("smm present", OK, "yes"), Check("smm locked", FAIL, "D_LCK clear", "lock")],
        )

    monkeypatch.setattr(transport, "ChipsecTransport", _NoTransport)
    monkeypatch.setattr(doctor.Doctor, "run", unready)
    doc = _check(["doctor", "--helper", "fakehelper"], as_json)
    assert doc is None or doc["ready"] is False


def test_a_ready_doctor_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    import codeisland.doctor as doctor
    import codeisland.hw.transport as transport

    monkeypatch.setattr(transport, "ChipsecTransport", _NoTransport)
    monkeypatch.setattr(doctor.Doctor, "run", lambda self: DoctorReport("H", [Check("a", OK, "")]))
    assert invoke(["doctor", "--helper", "h", "--json"]).exit_code == 0


def test_an_exit_a_command_raises_is_the_status(monkeypatch: pytest.MonkeyPatch) -> None:
    # the entry itself: click returns (does not raise) an Exit's code without standalone mode
    from codeisland.cli import LazyGroup

    @click.command("exits")
    def exits() -> None:
        raise click.exceptions.Exit(3)

    monkeypatch.setattr(LazyGroup, "get_command", lambda self, ctx, name: exits)
    assert invoke(["exits"]).exit_code == 3


SCRIPT = """
import codeisland.emulator.differential as d
from test_cli_exitcodes import diverged
d.run_emulation = diverged
from codeisland.cli import main
main()
"""


@pytest.mark.parametrize("as_json", [False, True])
def test_console_script_emulate_exits_1_when_outputs_differ(as_json: bool) -> None:
    from pathlib import Path

    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, "emulate", "--workload", "lz",
         *(["--json"] if as_json else [])],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert "not identical" in proc.stderr
