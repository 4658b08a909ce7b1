"""`codeisland qemu e2e --guest linux`: a process of a running Linux relocated from outside the VM
(boot, discovery by memory scan, bad plan, stage, commit with threads in the islands, samples
attributed to the process, keep-copies rollback, checksums), in two boots:

- 1 vCPU on Debian's OVMF (the driver injected, SMM restricted memory access): the arena at
  virtual == physical, PHYSICAL islands; the same islands as a USER plan of the process's CR3
  are refused (WALK_TABLE_OUTSIDE: the page tables are ordinary RAM) with nothing written.
- 2 vCPUs on the test-board OVMF (`codeisland firmware build --variant unrestricted`, the
  driver built in): the arena where the kernel maps it (ASLR, virtual != physical), USER
  islands, the engine walking the process's page tables; the plan is larger than one SMI's
  budget, so it is staged over several SMIs while Linux runs, then committed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from edk2_common import edk2_firmware

from codeisland.firmware.build import default_output
from codeisland.plan import layout as L
from codeisland.qemu.linux import walks

CLI = [sys.executable, "-c", "from codeisland.cli import main; main()"]
KEYS = {"booted", "bad_plan_rejected", "relocations", "contexts_translated", "checksums_ok"}
STAGE_BUDGET = 4096  # qemu/linux/e2e.py's per-SMI budget (the engine's minimum)


def _e2e(tmp_path: Path, *args: str) -> dict[str, object]:
    r = subprocess.run(
        [*CLI, "qemu", "e2e", "--guest", "linux", "--workdir", str(tmp_path), "--json", *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, (r.stderr[-2000:], r.stdout[-3000:])
    d: dict[str, object] = json.loads(r.stdout)
    _common_checks(d)
    return d


def _common_checks(d: dict[str, object]) -> None:
    assert KEYS | {"address_space", "samples_attributed"} <= d.keys()
    assert d["ok"] is True and d["booted"] is True and d["bad_plan_rejected"] is True
    assert d["relocations"] > 0 and d["contexts_translated"] > 0 and d["checksums_ok"] is True
    assert d["samples_attributed"] > 0
    assert d["rolled_back"] is True and d["dest_bytes_match"] is True
    assert all(n > 0 for n in d["thread_rounds_after_commit"])  # every thread ran on
    assert d["stage_smis"] >= 1 and d["bytes_written"] > 0
    assert d["threads"] == d["cpus_in_smm"] + 1  # one thread more than CPUs: one is parked


def test_linux_e2e_identity_on_debians_ovmf(tmp_path: Path) -> None:
    d = _e2e(tmp_path, "--cpus", "1", "--workload", "own")
    assert d["bad_plan_status"] in ("TOUCHES_SMRAM", "DST_NOT_REGISTERED")
    assert d["address_space"].startswith("physical (identity")
    assert d["mapping"] == "virtual == physical" and d["cpus_in_smm"] == 1
    assert d["firmware_mode"] == "unknown" and d["walks"] == "restricted"  # injected driver
    assert d["virtual_plan_status"] == "WALK_TABLE_OUTSIDE"
    assert d["virtual_plan_refused"] is True  # ... and the counters and bytes unchanged


def test_linux_e2e_at_virtual_addresses_on_the_test_board_image(tmp_path: Path) -> None:
    fw = edk2_firmware("unrestricted")
    d = _e2e(tmp_path, "--cpus", "2", "--workload", "graphsort", "--virtual",
             "--firmware", str(fw.code), "--vars", str(fw.vars))  # fmt: skip
    assert d["image"] == str(fw.code)  # booted as built, not injected
    assert d["firmware_mode"] == "unrestricted" and d["walks"] == "unrestricted"
    assert d["mapping"] == "ASLR" and d["arena_va"] != d["arena_phys"]
    assert str(d["address_space"]).startswith("user cr3=")
    assert d["virtual_plan_status"] == ""  # nothing to refuse: the run's plans are USER plans
    assert d["bad_plan_status"] == "TOUCHES_SMRAM" and d["cpus_in_smm"] == 2
    lo, hi = d["arena_va"], d["arena_va"] + (16 << 20)
    assert all(lo <= i["src"] < hi and lo <= i["dst"] < hi for i in d["islands"])  # VAs
    # a plan larger than one SMI's budget, staged over several SMIs while Linux runs
    assert d["bytes_written"] > STAGE_BUDGET and d["stage_smis"] >= 2
    assert len(d["stage_smi_bytes"]) == d["stage_smis"]
    assert sum(d["stage_smi_bytes"]) == d["bytes_written"]
    assert d["samples_in_copies"] + d["samples_at_entries"] > 0  # RIPs at the copies' VAs


def test_refusal_names_the_firmware_that_walks() -> None:
    """The one line a --virtual run on restricted firmware ends with names the build command
    and the images it writes."""
    code, vars_ = walks.unrestricted_images()
    assert Path(code).parent == default_output("unrestricted")
    assert Path(code).name.startswith("INSECURE-TEST-BOARD.") and "CODE" in Path(code).name
    walk = L.Status.WALK_TABLE_OUTSIDE
    msg = walks.refusal_message(walk, "unknown", untouched=True)
    assert msg.startswith("the engine refused the process's page walk with WALK_TABLE_OUTSIDE")
    assert "nothing written" in msg and "--variant unrestricted" in msg
    assert f"--firmware {code} --vars {vars_}" in msg
    assert "an engine bug" in walks.refusal_message(walk, "restricted", untouched=False)


@pytest.mark.parametrize(
    ("log", "unrestricted"),
    [(["codeisland: page walks=unrestricted", "codeisland: mailbox=0x1"], True),
     (["codeisland: mailbox=0x1"], False)],
)  # fmt: skip
def test_walk_policy_from_the_driver_log(log: list[str], unrestricted: bool) -> None:
    assert walks.walks_unrestricted(log) is unrestricted
