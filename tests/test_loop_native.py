"""The closed loop (loop/controller.py, keep-or-roll-back) on the native host.

The target (loop/native.py) without a process: a scripted relocator stands for the agent, whose
SIGPROF ring it reads (a window is the next window_samples samples, fewer when the program ends
or none come); on it the controller keeps a move whose copies the program runs and rolls back
one whose copies it never runs (the modeled test, deterministic on a scripted stream).  Then
`loop --guest native` on Debian's mawk running a hot awk loop: the same output as without the
agent, commits through the engine, the controller's modeled test deciding what stays; bad input
and a failing program in one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_entry import invoke
from test_analysis_support import build_elf
from test_loop_linux import SMALL, FakeRelocator, sample, target

from codeisland.analysis import IslandMap, analyze
from codeisland.loop.controller import ClosedLoop
from codeisland.loop.native import NativeTarget
from codeisland.loop.sampled import ProgramEnded
from codeisland.plan import layout as L
from codeisland.predict.policies import make_policy
from codeisland.predict.priority import CostModel
from codeisland.relocation import movable

MAWK = "/usr/bin/mawk"
# a hot loop over mawk's interpreter (its 12 KiB execute loop and the string builtins)
AWK = (
    'BEGIN{for(i=0;i<2000000;i++){s+=i*i%7; t=t substr("abcdef",i%5+1,1); if(length(t)>50)t=""};'
    " print s, t}"
)


@pytest.fixture(scope="module")
def imap(tmp_path_factory: pytest.TempPathFactory) -> IslandMap:
    return analyze(build_elf(tmp_path_factory.mktemp("elf"))).allowing_indirect_jumps()


class Ring:
    """The agent's sample ring as the mailbox client reads it: each read gets the next batch;
    `where` says where a sampled original runs now (the program's copies, or the original)."""

    def __init__(self, batches: list[list[int]], where: Callable[[int], int]) -> None:
        self.batches, self.where = batches, where
        self.head = 0

    def samples_since(self, head: int) -> tuple[list[L.Sample], int]:
        rips = self.batches.pop(0) if self.batches else []
        got = [sample(self.where(r), cr3=0) for r in rips]
        self.head += len(got)
        return got, self.head


class NativeRelocator(FakeRelocator):
    def __init__(self, batches: list[list[int]], runs_copies: bool = False) -> None:
        super().__init__([])
        self.client = Ring(batches, self.in_copy if runs_copies else lambda rip: rip)
        self.sample_head = 0

    def in_copy(self, rip: int) -> int:
        """Where the program runs `rip` now: in the active copy of its island, if any."""
        for e in self.map:
            if e.flags & L.MAP_ACTIVE and e.orig <= rip < e.orig + e.size:
                return int(e.cur) + rip - int(e.orig)
        return rip


def native(imap: IslandMap, rel: NativeRelocator, alive: Any = None, **kw: Any) -> NativeTarget:
    linux = target(imap, rel)  # the test planner of test_loop_linux (a FakePlan into ZONE)
    kw.setdefault("window_samples", 4)
    return NativeTarget(
        rel, imap, (0x7000_0000, 2 << 20, True), linux.plan,  # type: ignore[arg-type]
        alive or (lambda: True), params=SMALL, **kw,
    )  # fmt: skip


def test_a_window_is_the_rings_next_samples(imap: IslandMap) -> None:
    middle = imap["middle"].start
    rel = NativeRelocator([[middle + 4], [], [middle, 0x7FFF_0000_1000, middle + 8], [middle]])
    t = native(imap, rel)
    obs = t.run_window()
    k = next(i for i, isl in enumerate(t.islands) if isl.name == "middle")
    assert len(obs.rips) == 4  # read until 4 samples came (an empty read in between)
    assert t.tally.to_dict() == {"process": 4, "in_islands": 3, "kernel": 0, "other": 0}
    assert obs.exact[k] > 0 and obs.frontend["cycles"] > 0
    assert (
        rel.sample_head == 4
    )  # the Relocator's ring position: a wait's samples are not a window's
    assert [s.command for s in rel.smis] == []  # reading the ring is no SMI


def test_a_window_without_samples_ends_at_its_timeout(imap: IslandMap) -> None:
    t = native(imap, NativeRelocator([]), window_timeout_s=0.05)
    assert len(t.run_window().rips) == 0  # a program blocked in a system call takes none


def test_the_programs_exit_ends_the_window_and_the_windows(imap: IslandMap) -> None:
    calls = {"n": 0}

    def alive() -> bool:
        calls["n"] += 1
        return calls["n"] < 3  # alive at the window's start and its first read

    t = native(imap, NativeRelocator([[imap["leaf"].start]] * 10), alive)
    assert len(t.run_window().rips) == 2  # the read after the exit is the last
    with pytest.raises(ProgramEnded):
        t.run_window()


def test_commit_and_rollback_keep_copies_and_no_retry(imap: IslandMap) -> None:
    rel = NativeRelocator([])
    rel.contexts = [0]  # the commit finds no thread inside: kept (nothing was at risk)
    t = native(imap, rel)
    k = next(i for i, isl in enumerate(t.islands) if isl.name == "middle")
    r = t.commit([k])
    assert r.refused is None and t.commits[0]["attempts"] == 1 and t.generations() == [(1, [k])]
    assert [s.command for s in rel.smis].count("ROLLBACK") == 0
    assert t.rollback(1).islands == [k] and t.retired_bytes() == t.islands[k].size
    assert t.reclaim_price() == float("inf")  # no STACK region: a RECLAIM could not be safe


def _gzip_loop(runs_copies: bool) -> ClosedLoop:
    """The closed loop over three small islands of Debian's gzip on text pages 4 apart: they
    fit the SMALL model's 1 KiB L1i, but its 2-entry iTLB misses on them at their origin, and
    not in the copies' 2 MiB page; 12 samples in them per read, 64 a window."""
    gzip = analyze("/usr/bin/gzip", load_base=0x5555_0000_0000).allowing_indirect_jumps()
    one_a_page: dict[int, Any] = {}
    for i in movable(gzip):
        if 96 <= i.size <= 200:
            one_a_page.setdefault(i.start >> 12, i)
    picked = list(one_a_page.values())[::4][:4]
    rel = NativeRelocator([[i.start + 8 for i in picked] * 4] * 40, runs_copies)
    t = native(gzip, rel, window_samples=64)
    loop = ClosedLoop(t, make_policy("reactive", len(t.islands)),
                      CostModel.from_params(SMALL, 4096, 4), params=SMALL)  # fmt: skip
    loop.run(8)
    assert {"STAGE", "COMMIT", "STATS"} <= {s.command for s in rel.smis}
    assert len(picked) == 3 and np.array(loop.heat_log).sum() > 0
    return loop


def test_the_closed_loop_keeps_a_move_whose_copies_run() -> None:
    """The program runs the copies (the model's iTLB misses are gone): kept."""
    loop = _gzip_loop(runs_copies=True)
    assert loop.stats.relocations == 3 and loop.stats.rollbacks == 0
    assert [e["kind"] for e in loop.stats.events] == ["commit"]


def test_the_closed_loop_rolls_back_a_move_whose_copies_never_run() -> None:
    """The program stays in the originals (as a copy that escapes at once): the controller's
    modeled test finds no saving and rolls the generation back; after the cooldown (4 windows)
    the islands move again, and fall short again."""
    loop = _gzip_loop(runs_copies=False)
    assert loop.stats.shortfall_rollbacks == loop.stats.rollbacks == 2
    events = [(e["window"], e["kind"]) for e in loop.stats.events]
    assert events == [(0, "commit"), (1, "rollback"), (5, "commit"), (6, "rollback")]


# an 8 KiB L1i and an 8-entry iTLB: mawk's interpreter loop misses in the model, so moves pay
# (the shipped model finds none worth a move in a window's samples, and the loop rightly moves
# nothing)
SMALL_FRONTEND = Path(__file__).parent / "data" / "small-frontend.toml"


def test_loop_on_mawk_keeps_its_output_and_commits(tmp_path: Path) -> None:
    r = invoke(["loop", "--guest", "native", "--policy", "reactive", "--platform",
                str(SMALL_FRONTEND), "--window-samples", "20", "--out", str(tmp_path), "--json",
                "--exec", MAWK, "--", AWK])  # fmt: skip
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["ok"] and d["output_matches"] and d["output"] == d["reference"]
    assert d["output"]["size"] == len("3999997 abcdeabcdeabcdeabcdeabcdeabcdeabcde\n")
    assert d["ended_by"].startswith("program exit") and d["windows"] > 2
    assert d["commits"] and d["smi_counts"]["COMMIT"] >= len(d["commits"])
    assert d["host"]["bad_plan_rejected"] and d["host"]["dest_bytes_match"]
    kinds = [e["kind"] for e in d["events"]]
    # every rollback the report counts is one the events show (the model decides how many)
    assert kinds.count("rollback") >= d["loop"]["rollbacks"]
    assert d["loop"]["shortfall_rollbacks"] <= d["loop"]["rollbacks"]
    assert Path(d["plots"][0]).stat().st_size > 0


def _one_line(args: list[str], code: int, text: str) -> None:
    r = invoke(["loop", "--guest", "native", "--no-plots", *args])
    assert r.exit_code == code, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in r.output


def test_bad_input(tmp_path: Path) -> None:
    _one_line(["--exec", str(tmp_path / "missing")], 2, "no such program")
    (tmp_path / "text").write_text("not a program\n")
    _one_line(["--exec", str(tmp_path / "text")], 2, "not an x86-64 ELF")
    _one_line(["--cpus", "2", "--exec", MAWK, "--", "BEGIN{}"], 2, "only for --guest linux")
    _one_line(["--input", "exit 3", "--exec", MAWK, "--", "BEGIN{}"], 2, "exited with status 3")


def test_a_program_that_fails_fails_the_loop() -> None:
    """mawk exiting 2 after a while of work, in both runs: the same output, but not a correct
    run (the report, then one line); exiting before the agent answered: one line."""
    work = "BEGIN{for(i=0;i<1000000;i++)s+=i; exit 2}"
    r = invoke(["loop", "--guest", "native", "--no-plots", "--exec", MAWK, "--", work])
    assert r.exit_code == 1, r.output
    assert r.stderr.strip().splitlines() == [
        "codeisland: error: the loop on the native program failed (see the report)"
    ]
    assert "exit status 2" in r.stdout and r.stdout.rstrip().endswith("FAILED")
    _one_line(["--exec", MAWK, "--", "BEGIN{exit 2}"], 3, "exited (status 2) before the agent")


def test_a_program_that_ends_before_the_first_window() -> None:
    """sleep(1) waits in nanosleep, where the agent's signals are blocked: the start's requests
    are answered only as it exits, so the loop never gets a window; as `native run`, not a
    failure (its output is still compared)."""
    r = invoke(["loop", "--guest", "native", "--no-plots", "--json", "--exec", "/usr/bin/sleep",
                "--", "0.5"])  # fmt: skip
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["windows"] == 0 and d["ended_by"] == "program exit before the loop's first window"
    assert d["host"]["ended_in_request"] and d["output_matches"]
