"""Bad command lines get one line on stderr (click's message, where to look for help), exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

CLI = [sys.executable, "-c", "from codeisland.cli import main; main()"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["emulate", "--no-such-option"],
            "codeisland emulate: error: No such option '--no-such-option'",
        ),
        (["emulate", "--wrkload", "lz"], "Did you mean '--workload'?"),
        (["emulate", "--cpus", "x"], "Invalid value for '--cpus'"),
        (["plan", "show"], "codeisland plan show: error: Missing argument 'PLAN'"),
        (["no-such-command"], "codeisland: error: No such command 'no-such-command'"),
    ],
)
def test_usage_error_is_one_line(args: list[str], expected: str) -> None:
    run = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert expected in lines[0]
    assert lines[0].endswith("--help'.")
