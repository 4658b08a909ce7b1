"""An unmodified Debian program's own code relocated through real SMIs in a Linux guest
(`codeisland qemu process`): Debian's /usr/bin/gzip (PIE, dynamically linked, no patchable
entries) under our LD_PRELOAD landing zone, USER islands of its CR3, on the test-board firmware
(restricted memory access off); on Debian's OVMF with the driver injected (restricted) the same
plan is refused with nothing written.  Either way the output equals the unrelocated run's.

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
from codeisland.qemu.linux import guest

GZIP = ["--exec", "/usr/bin/gzip", "--arg", "-9n", "--input", "seq 1 600000"]


def process(work: Path, *extra: str) -> dict[str, Any]:
    try:
        guest.kernel_image()
        guest.busybox()
    except ToolMissing as exc:  # its message names the bootstrap step
        pytest.skip(str(exc))
    r = subprocess.run(
        [sys.executable, "-c", "from codeisland.cli import main; main()", "qemu", "process",
         "--json", "--workdir", str(work), *GZIP, *extra],
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
    handler = [s for s in d["smis"] if s["command"] in ("STAGE", "COMMIT")]
    assert handler and all(s["status"] == "OK" for s in handler)


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
