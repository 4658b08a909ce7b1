"""verify: engine-exact relocation and re-decode, on our workload and on a large Debian ELF."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from test_analysis_support import build_elf

from codeisland.analysis import analyze
from codeisland.analysis.verify import verify
from codeisland.cli import main

QEMU = Path("/usr/bin/qemu-system-x86_64")


@pytest.fixture(scope="module")
def workload_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_elf(tmp_path_factory.mktemp("elf"))


def test_workload_verifies(workload_elf: Path) -> None:
    imap = analyze(workload_elf, load_base=0x10000000)
    report = verify(imap)
    assert report.ok
    assert report.islands == 4 and report.skipped == 1
    assert report.checked_instructions == sum(i.instructions for i in imap if i.relocatable)
    assert report.fixups_applied == sum(len(i.fixups) for i in imap if i.relocatable)


def test_missing_fixup_is_caught(workload_elf: Path) -> None:
    imap = analyze(workload_elf)
    top = imap["top"]
    broken = replace(top, fixups=top.fixups[1:])  # forget the first rip-relative fix-up
    imap.islands[imap.islands.index(top)] = broken
    report = verify(imap)
    assert not report.ok
    (miss,) = report.mismatches
    assert miss.island == "top" and miss.what == "rip-relative address"
    assert miss.expected == top.fixups[0].target


def test_wrong_pc_bias_is_rejected_like_the_engine(workload_elf: Path) -> None:
    imap = analyze(workload_elf)
    mid = imap["middle"]
    bad = mid.fixups[0]._replace(pc_bias=mid.fixups[0].pc_bias + 1)
    imap.islands[imap.islands.index(mid)] = replace(mid, fixups=(bad, *mid.fixups[1:]))
    report = verify(imap)
    assert report.errors == 1 and "engine would reject" in report.mismatches[0].what


def test_cli_json(workload_elf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["verify", str(workload_elf), "--json"])
    assert exited.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["mismatches"] == 0 and doc["islands"] == 4
    assert doc["checked_instructions"] > 50


@pytest.mark.skipif(not QEMU.exists(), reason="qemu-system-x86 is not installed")
def test_large_debian_elf_subset() -> None:
    imap = analyze(QEMU)
    d = imap.to_dict()
    assert d["islands"] > 10_000 and d["coverage"]["ratio"] > 0.9
    report = verify(imap, limit=400)
    assert report.ok, [str(m) for m in report.mismatches[:5]]
    assert report.islands == 400 and report.checked_instructions > 10_000
