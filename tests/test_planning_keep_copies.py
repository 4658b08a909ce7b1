"""PLAN_KEEP_COPIES from the host side: build_plan and `plan build --keep-copies` set it,
`plan show` reports it, and samples in retired copies count for their original island."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from test_analysis_support import build_elf

from codeisland.analysis import analyze
from codeisland.cli import cli
from codeisland.plan import layout as L
from codeisland.plan.document import Plan
from codeisland.planning import build_plan
from codeisland.profile.attribution import translate


def _first_relocatable(elf: Path) -> str:
    return next(i.name for i in analyze(elf).islands if i.relocatable)


def test_build_plan_keeps_copies_unless_told_not_to(tmp_path: Path) -> None:
    elf = build_elf(tmp_path)
    imap = analyze(elf)
    name = _first_relocatable(elf)
    dst = imap.islands[-1].end + 0x10000
    move = [(name, dst)]
    plain = Plan.from_bytes(
        build_plan(imap, move, keep_copies=False, parked_threads=False).to_bytes()
    )
    kept = Plan.from_bytes(build_plan(imap, move, parked_threads=False).to_bytes())
    assert not plain.keep_copies and plain.flags == 0
    assert kept.keep_copies and kept.flags == L.PLAN_KEEP_COPIES


def test_cli_plan_build_and_show_carry_the_flag(tmp_path: Path) -> None:
    elf = build_elf(tmp_path)
    name = _first_relocatable(elf)
    out = tmp_path / "p.plan"
    runner = CliRunner()
    args = ["plan", "build", str(elf), "--island", name, "-o", str(out), "--keep-copies"]
    built = runner.invoke(cli, args)
    assert built.exit_code == 0, built.output
    shown = runner.invoke(cli, ["plan", "show", str(out), "--json"])
    assert json.loads(shown.output)["keep_copies"] is True
    text = runner.invoke(cli, ["plan", "show", str(out)]).output
    assert "copies stay in place" in text


def _entry(orig: int, cur: int, size: int, flags: int) -> L.MapEntry:
    return L.MapEntry(orig=orig, cur=cur, size=size, flags=flags)


def test_samples_in_retired_copies_are_attributed_to_the_original() -> None:
    entries = [
        _entry(0x1000, 0x9000, 0x100, L.MAP_ROLLED_BACK | L.MAP_RETIRED),  # kept copy
        _entry(0x2000, 0xA000, 0x100, L.MAP_ROLLED_BACK),  # copy restored: bytes gone
        _entry(0x3000, 0xB000, 0x100, L.MAP_ACTIVE),
    ]
    rips = [0x9010, 0xA010, 0xB010, 0x4000]
    assert list(translate(rips, entries)) == [0x1010, 0xA010, 0x3010, 0x4000]
    assert translate([], entries).dtype == np.uint64
