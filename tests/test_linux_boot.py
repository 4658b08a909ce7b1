"""A Linux guest under the injected OVMF, booted for real (q35, smm=on, TCG): doctor from
another process finds the mailbox by scanning memory and says ready; an SMI the machine cannot
answer, and a firmware without our driver, each end in one error naming the cause."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from codeisland.errors import EmulationError, TransportError
from codeisland.hw.discovery import MEMORY_SCAN
from codeisland.paths import repo_root
from codeisland.qemu import session
from codeisland.qemu.linux import agent, guest
from codeisland.qemu.machine import QemuVm
from codeisland.transport.mailbox import MailboxClient

OVMF = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
CLI = [sys.executable, "-c", "from codeisland.cli import main; main()"]


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    for part in ("smm", "smm/app", "guest/linux"):
        subprocess.run(["make", "-s", "-C", str(repo_root() / part)], check=True)


def test_doctor_is_ready_with_a_linux_guest_then_an_unanswered_smi(tmp_path: Path) -> None:
    image = session.prepare_image(tmp_path)
    config = guest.machine_config(image, tmp_path / "vm", guest.LinuxSettings(threads=2))
    with QemuVm(config) as m:
        up = guest.wait_booted(m)
        assert up.threads == 2 and up.blob_va > 0x10000000  # a user address, not the arena's
        doc = subprocess.run(
            [*CLI, "doctor", "--qemu", str(tmp_path / "vm"), "--json"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert doc.returncode == 0, doc.stderr
        data = json.loads(doc.stdout)
        checks = {c["name"]: c for c in data["checks"]}
        assert data["ready"] is True
        assert "found by memory scan" in checks["driver found"]["detail"]
        assert "SetVirtualAddressMap" in checks["driver found"]["detail"]
        # the arena at a virtual address on restricted firmware: which firmware would walk it
        assert checks["target"]["verdict"] == "warn"
        assert "Linux guest agent" in checks["target"]["detail"]
        assert "--variant unrestricted" in checks["target"]["advice"]
        prof = subprocess.run(
            [*CLI, "profile", "record", "--source", "qemu", "--qemu", str(tmp_path / "vm"),
             "--windows", "2", "--samples", "8", "-o", str(tmp_path / "p.json"), "--json"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert prof.returncode == 0, prof.stderr
        summary = json.loads(prof.stdout)
        assert summary["source"]["kind"] == "qemu-linux" and summary["windows"] == 2
        assert summary["samples"] > 0  # the workload's own samples, by CR3 and CPL
        assert summary["hottest"][0]["name"] in ("hot_loop", "mix")
        with session.transport_for(m) as t:
            d = t.discover()
            assert d.method == MEMORY_SCAN
            ctl = agent.Agent(t, int(d.config.arena_base)).control()
            assert ctl.mapping == agent.MAP_ANYWHERE and ctl.arena_va != ctl.arena_phys
            assert ctl.mailbox_phys == d.mailbox  # the agent and the host found the same page
            assert ctl.blob_va == up.blob_va and ctl.bad_rounds == 0
            assert m.qmp is not None
            m.qmp.execute("stop")  # every vCPU stops: the SMI is raised and never handled
            with pytest.raises(TransportError, match=r"did not answer command 1 within 2 s"):
                MailboxClient(t, timeout_s=2).query()
    assert not m.running  # the context shut QEMU down


def test_firmware_without_the_driver_names_the_missing_mailbox(tmp_path: Path) -> None:
    r = subprocess.run(
        [*CLI, "qemu", "run", "--guest", "linux", "--image", str(OVMF),
         "--workdir", str(tmp_path), "--timeout", "150"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert r.returncode == EmulationError.exit_code, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "codeisland: error: the guest agent failed: no codeisland mailbox in the"
    )
    pid = json.loads((tmp_path / "machine.json").read_text())["pid"]
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
