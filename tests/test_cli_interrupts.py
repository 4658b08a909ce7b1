"""Ctrl-C anywhere: `codeisland: aborted` as the only stderr line, exit 130 (143 for SIGTERM),
outputs untouched, QEMU gone.  Real processes get real signals at several points of a run:
while modules import, inside the emulator (Unicorn hooks, which used to swallow the interrupt
and report a misleading error), while a profile is being recorded, and with a guest running.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from codeisland.paths import repo_root

CLI = [sys.executable, "-m", "codeisland"]
LONG_EMULATE = ["--cpus", "4", "--threads", "4"]


def _interrupt(args: list[str], after_s: float, sig: int = signal.SIGINT) -> tuple[int, str]:
    """Signal the CLI `after_s` seconds after it started loading Unicorn: the handlers are in
    place by then on a machine of any speed (they come before the CLI's first import)."""
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while "libunicorn" not in _maps(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline, "the CLI never loaded unicorn"
        time.sleep(0.01)
    time.sleep(after_s)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err.decode()


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


@pytest.mark.parametrize(
    ("args", "after_s"),
    [
        # runs long enough (9 s and 15 s on a quiet 2-core machine) that a signal at 3-4 s
        # lands inside the work on a fast machine too, not after it has finished
        (["emulate", "--workload", "lz", *LONG_EMULATE], 0.0),  # while imports run
        (["emulate", "--workload", "lz", *LONG_EMULATE], 3.0),  # inside the emulated run
        (["profile", "record", "--windows", "40", "-o", "{out}"], 0.3),
        (["profile", "record", "--windows", "40", "-o", "{out}"], 4.0),
    ],
)
def test_sigint_aborts_and_leaves_outputs_untouched(
    tmp_path: Path, args: list[str], after_s: float
) -> None:
    out = tmp_path / "profile.json"
    out.write_text("the previous profile")
    before = _digest(tmp_path)
    code, err = _interrupt([a.format(out=out) for a in args], after_s)
    assert code == 130, err
    assert err.splitlines() == ["codeisland: aborted"], err
    assert _digest(tmp_path) == before  # no temporary left, the old output intact


def test_sigterm_aborts_with_143(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    code, err = _interrupt(["profile", "record", "--windows", "6", "-o", str(out)], 2.0,
                           signal.SIGTERM)  # fmt: skip
    assert code == 143 and err.splitlines() == ["codeisland: aborted"], err
    assert list(tmp_path.iterdir()) == []


IMPORT_SCRIPT = """
import os, signal, time
from codeisland import interrupts
interrupts.install()
try:
    import sends_sigint_then_imports_lief
    print("imported", flush=True)
    time.sleep(10)
    print("not interrupted", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_an_interrupt_during_an_import_is_held_until_it_is_done(tmp_path: Path) -> None:
    # lief's initialisation swallowed a KeyboardInterrupt raised inside it (the run went on
    # and exited 0); raising inside any import leaves a half-initialised module.  The
    # interrupt is held until the import completes, then raised.
    (tmp_path / "sends_sigint_then_imports_lief.py").write_text(
        textwrap.dedent("""
            import os, signal
            os.kill(os.getpid(), signal.SIGINT)
            import lief
            assert lief.PE is not None
        """)
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", IMPORT_SCRIPT], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip
    assert proc.stdout.splitlines() == ["imported", "interrupted"], proc.stderr


def _qemu_ready() -> bool:
    import shutil

    return shutil.which("qemu-system-x86_64") is not None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_qemu_does_not_outlive_the_cli(tmp_path: Path, sig: int) -> None:
    assert _qemu_ready(), "qemu-system-x86 is part of the bootstrap"
    assert (repo_root() / "smm" / "build" / "CodeIslandSmm.efi").is_file(), "make build"
    work = tmp_path / "w"
    proc = subprocess.Popen(
        [*CLI, "qemu", "run", "--no-app", "--timeout", "120", "--workdir", str(work)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while not (work / "machine.json").is_file():
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
        time.sleep(0.2)
    time.sleep(1.0)
    pid = json.loads((work / "machine.json").read_text())["pid"]
    assert _alive(pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert err.decode().splitlines()[-1] == "codeisland: aborted"
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid), f"QEMU {pid} still runs after the CLI got {signal.Signals(sig).name}"


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
