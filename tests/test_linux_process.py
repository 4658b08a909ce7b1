"""An unmodified Debian program's own code relocated through real SMIs in a Linux guest
(`codeisland qemu process`, and the closed loop `codeisland loop --guest linux`): Debian's
/usr/bin/gzip and /usr/bin/mawk (PIE, dynamically linked, no patchable entries; mawk's
interpreter loop has jump tables) under our LD_PRELOAD landing zone, USER islands of its CR3,
on the test-board firmware (restricted memory access off); on Debian's OVMF with the driver
injected (restricted) the same plan is refused with nothing written.  Either way the output
equals the unrelocated run's.  mawk on 1 vCPU and the loop on restricted firmware run `--pid`:
the guest starts mawk itself and codeisland attaches to it (guest/linux/attach.c, ptrace).

Each test boots a guest (~1-2 min under TCG); the unrestricted image comes from
`codeisland firmware build --variant unrestricted` (cached; bootstrap.sh --tests builds it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from edk2_common import edk2_firmware

from codeisland.errors import ToolMissing
from codeisland.paths import repo_root
from codeisland.qemu.linux import guest

ROOT = repo_root()

GZIP = ["--exec", "/usr/bin/gzip", "--arg", "-9n", "--input", "seq 1 1000000"]
ZPIPE = ROOT / "guest" / "build" / "linux" / "zpipe"
# Debian's mawk, an interpreter whose dispatch is a jump table: `qemu process` on 1 vCPU and
# `loop --guest linux` on 2 (with the small front-end model, under which its hot code misses;
# the default model predicts no gain for mawk and the loop rightly moves nothing)
MAWK_PROGRAM = (
    '{ s += $1 * 3; c[$1 % 97]++; w = sprintf("%x", $1); h[substr(w, 1, 2)]++; '
    "if (w ~ /a.c/) m++ } END { n = 0; for (k in h) n++; print s, n, m, c[5] }"
)
MAWK = ("--exec", "/usr/bin/mawk", "--input", "seq 1 400000", "--", MAWK_PROGRAM)
WALK_REFUSALS = ("PAGE_NOT_PRESENT", "MAPPING_CHANGED", "SUPERVISOR_PAGE", "PAGES_DISCONTIGUOUS")


def process(
    work: Path,
    *extra: str,
    program: tuple[str, ...] = tuple(GZIP),
    command: tuple[str, ...] = ("qemu", "process"),
) -> dict[str, Any]:
    try:
        guest.kernel_image()
        guest.busybox()
    except ToolMissing as exc:  # its message names the bootstrap step
        pytest.skip(str(exc))
    r = subprocess.run(
        [sys.executable, "-c", "from codeisland.cli import main; main()", *command,
         "--json", "--workdir", str(work), *extra, *program],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.stdout, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    data["_exit"], data["_stderr"] = r.returncode, r.stderr
    return data


@pytest.fixture(scope="module")
def unrestricted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    fw = edk2_firmware("unrestricted")
    work = tmp_path_factory.mktemp("process-unr")
    return process(work, "--firmware", str(fw.code), "--vars", str(fw.vars))


def test_gzip_own_text_relocated_on_the_test_board_firmware(unrestricted: dict[str, Any]) -> None:
    d = unrestricted
    assert d["_exit"] == 0 and d["ok"] is True and d["relocated"] is True, d["_stderr"]
    z = d["landing"]
    assert z["exe"] == "/usr/bin/gzip" and z["private"] is True
    assert (z["text_via"], z["text_breaks"]) == ("remap", 0)  # one physical range
    assert z["huge"] is True and z["via"] == "hugetlb"  # /init reserves 2 MiB pages
    assert d["text_matches_elf"] is True and d["cr3"] > 0
    assert d["planned"] and all(
        p["redirect"] == "entry jump" or p["redirect"].startswith("call sites")
        for p in d["planned"]
    )
    assert all(z["zone"] <= p["dst"] < z["zone"] + z["size"] for p in d["planned"])
    assert d["contexts_translated"] >= 1  # the CPU was inside a moved island at the commit
    assert d["copies_match"] is True and d["fixups_applied"] > 0
    assert d["rolled_back"] == "yes"
    assert d["output_matches"] is True and d["output"]["sha256"] == d["reference"]["sha256"]
    # the plan left pending when gzip exited: the engine re-walked the dead CR3 and refused
    ex = d["exit_pending"]
    assert ex["refused_untouched"] is True and ex["bytes_written"] == 0, ex
    assert all(r.split()[1] in WALK_REFUSALS for r in ex["refusals"]), ex


@pytest.fixture(scope="module")
def zpipe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    r = subprocess.run(["make", "-s", "-C", str(ROOT / "guest/linux"), "zpipe"],
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"zlib's zpipe not built: {r.stderr.strip()[-200:]}")
    fw = edk2_firmware("unrestricted")
    work = tmp_path_factory.mktemp("process-zpipe")
    return process(work, "--cpus", "2", "--firmware", str(fw.code), "--vars", str(fw.vars),
                   program=("--exec", str(ZPIPE), "--input", "seq 1 800000"))  # fmt: skip


def test_endbr64_pie_relocated_on_two_vcpus(zpipe: dict[str, Any]) -> None:
    """zlib's zpipe built with Debian's flags plus -fcf-protection: every function starts with
    endbr64, so no entry jump replaces one instruction; callers are re-pointed instead."""
    d = zpipe
    assert d["_exit"] == 0 and d["ok"] is True and d["relocated"] is True, d["_stderr"]
    assert d["cpus_in_smm"] == 2 and d["contexts_translated"] >= 1
    assert any(p["redirect"].startswith("call sites") for p in d["planned"])
    assert d["copies_match"] is True and d["rolled_back"] == "yes"
    assert d["output_matches"] is True


def test_mawk_attached_by_pid_and_its_interpreter_loop_relocated_on_one_vcpu(
    tmp_path: Path,
) -> None:
    """--pid: the guest's init starts Debian's mawk by itself (no landing library), codeisland
    attaches to it by name without restarting it; its interpreter loop dispatches through jump
    tables, it moves (the copy's indirect jumps land in the intact original) and the output
    stays the unrelocated one."""
    fw = edk2_firmware("unrestricted")
    d = process(tmp_path, "--firmware", str(fw.code), "--vars", str(fw.vars), "--pid", "mawk",
                program=("--exec", "/usr/bin/mawk", "--arg", MAWK_PROGRAM, "--input",
                         "seq 1 400000"))  # fmt: skip
    assert d["_exit"] == 0 and d["ok"] is True and d["relocated"] is True, d["_stderr"]
    assert d["attached"] == "mawk" and d["landing"]["exe"] == "/usr/bin/mawk"
    assert d["landing"]["private"] is True and d["text_matches_elf"] is True
    assert d["contexts_translated"] >= 1 and d["copies_match"] is True
    big = max(d["planned"], key=lambda p: p["size"])
    assert big["size"] > 8192 and big["redirect"].startswith("call sites")  # the dispatch loop
    assert d["rolled_back"] == "yes"
    assert d["exit_pending"]["refused_untouched"] is True  # the attacher's exit line was seen
    assert d["output_matches"] is True


def test_a_pid_that_does_not_exist_in_the_guest_is_one_line(tmp_path: Path) -> None:
    """Bad input: --pid names no guest process; nothing written, the guest's own job ran on."""
    d = subprocess.run(
        [sys.executable, "-c", "from codeisland.cli import main; main()", "qemu", "process",
         "--workdir", str(tmp_path), "--pid", "4000", "--exec", "/usr/bin/mawk", "--arg",
         MAWK_PROGRAM, "--input", "seq 1 20000"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    lines = d.stderr.strip().splitlines()
    assert d.returncode == 2 and len(lines) == 1, d.stderr
    assert "--pid 4000: no process 4000 in the guest" in lines[0]
    assert "nothing written" in lines[0] and "ran on unharmed" in lines[0]
    assert d.stdout == ""


def test_gzip_plan_refused_untouched_on_restricted_firmware(tmp_path: Path) -> None:
    d = process(tmp_path)  # Debian's OVMF + injected driver: SMM restricted memory access
    assert d["_exit"] == 4
    lines = d["_stderr"].strip().splitlines()
    assert len(lines) == 1 and "WALK_TABLE_OUTSIDE" in lines[0]
    assert "--variant unrestricted" in lines[0]
    assert d["refused"] == "WALK_TABLE_OUTSIDE" and d["refused_untouched"] is True
    assert d["bytes_written"] == 0 and d["contexts_translated"] == 0
    assert d["output_matches"] is True  # the program ran on unharmed
    assert d["ok"] is True and d["relocated"] is False


def test_a_program_that_ends_before_it_is_found_is_one_line(tmp_path: Path) -> None:
    """Bad input: the program is gone before the host sees it run (a PID that exits)."""
    d = subprocess.run(
        [sys.executable, "-c", "from codeisland.cli import main; main()", "qemu", "process",
         "--workdir", str(tmp_path), "--exec", "/usr/bin/gzip", "--input", "seq 1 10"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    lines = d.stderr.strip().splitlines()
    assert d.returncode == 5 and len(lines) == 1, d.stderr
    assert "the program ended (status 0) before a SAMPLE found it running" in lines[0]


SMALL_FRONTEND = ROOT / "tests" / "data" / "small-frontend.toml"


def loop(work: Path, *extra: str, program: tuple[str, ...]) -> dict[str, Any]:
    return process(work, *extra, "--platform", str(SMALL_FRONTEND), "--out", str(work / "plots"),
                   program=program, command=("loop", "--guest", "linux"))  # fmt: skip


def test_loop_on_mawk_on_two_vcpus(tmp_path: Path) -> None:
    fw = edk2_firmware("unrestricted")
    d = loop(tmp_path, "--cpus", "2", "--firmware", str(fw.code), "--vars", str(fw.vars),
             program=MAWK)  # fmt: skip
    assert d["_exit"] == 0 and d["ok"] is True, d["_stderr"]
    assert d["ended_by"] == "program exit" and d["windows"] >= 5
    assert d["samples"]["process"] > 0 and d["samples"]["in_islands"] > 0
    # (the loop's own counters start after the warm-up windows; the commits list has them all)
    assert d["commits"] and d["smi_counts"]["COMMIT"] >= len(d["commits"])
    assert [e for e in d["events"] if e["kind"] == "commit"]
    assert any(c["jump_tables"] for c in d["commits"])  # a function with a jump table moved
    assert all(c["bytes_written"] > 0 for c in d["commits"])
    assert d["output_matches"] is True and d["output"]["sha256"] == d["reference"]["sha256"]
    assert d["handler_instructions"] == "not measurable under QEMU"
    assert d["smi_round_trip_ms"]["COMMIT"] > 0  # measured on the host instead
    assert all(Path(p).is_file() for p in d["plots"]) and d["plots"]


def test_loop_refused_untouched_on_restricted_firmware(tmp_path: Path) -> None:
    """--pid on stock firmware: attached (the guest started mawk), the first plan refused."""
    d = loop(tmp_path, "--pid", "mawk", program=MAWK)  # Debian's OVMF + injected driver
    assert d["_exit"] == 4, (d["_stderr"], d["loop"], d["ended_by"])
    lines = d["_stderr"].strip().splitlines()
    assert len(lines) == 1 and "WALK_TABLE_OUTSIDE" in lines[0]
    assert d["attached"] == "mawk" and d["landing"]["exe"] == "/usr/bin/mawk"
    assert d["refused"] == "WALK_TABLE_OUTSIDE" and d["refused_untouched"] is True
    assert d["ended_by"] == "refused plan" and d["commits"] == []
    assert d["output_matches"] is True  # the program ran on unharmed
