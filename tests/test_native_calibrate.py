"""The front-end model's replay of a native layout (codeisland.native.calibrate, qtrace.c) follows
the relocation's rules for which executions reach a copy: a program calls `hot` a known number
of times from one direct call site, and the model, fed under qemu-x86_64 with every block,
counts the blocks and fetches of each layout."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codeisland.analysis import analyze
from codeisland.native import calibrate
from codeisland.native.run import NativeReport
from codeisland.paths import repo_root

CALLS = 20000
PROGRAM = r"""
#include <stdlib.h>
__attribute__((noinline)) int hot(int x) {
  int s = 0;
  for (int k = 0; k < (x & 7); k++) s += k * x;
  return s;
}
int main(int argc, char **argv) {
  int n = atoi(argv[1]);
  volatile int sink = 0;
  for (int i = 0; i < n; i++) sink += hot(i);
  return sink == 42;
}
"""


# `hot` dispatches through a jump table: its copy runs up to the indirect jump, the cases run
# in the original (the table holds the original's addresses)
SWITCHING = PROGRAM.replace(
    "  for (int k = 0; k < (x & 7); k++) s += k * x;",
    "  switch (x & 7) { case 0: s = x * 3; break; case 1: s = x ^ 5; break;"
    " case 2: s = x + 7; break; case 3: s = x * x; break; case 4: s = x - 9; break;"
    " case 5: s = x << 2; break; case 6: s = x >> 1; break; default: s = ~x; }",
)


def _build(
    tmp_path_factory: pytest.TempPathFactory, name: str, text: str, cet: str = "none"
) -> Path:
    if shutil.which(calibrate.QEMU) is None:
        pytest.fail("qemu-x86_64 is missing: scripts/bootstrap.sh --tests installs qemu-user")
    out = tmp_path_factory.mktemp("calibrate") / name
    src = out.with_suffix(".c")
    src.write_text(text)
    cmd = ["gcc", "-O2", f"-fcf-protection={cet}", "-fPIE", "-pie", str(src), "-o", str(out)]
    subprocess.run(cmd, check=True)
    return out


@pytest.fixture(scope="module", params=["none", "full"])
def program(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """Without and with endbr64 (-fcf-protection): calls then target the marker before the
    island, and a re-pointed call enters the copy after it."""
    return _build(tmp_path_factory, f"calls-{request.param}", PROGRAM, request.param)


@pytest.fixture(scope="module")
def switching(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory, "switching", SWITCHING)


def _layout(program: Path, *, entry: bool, call_site: bool) -> calibrate.NativeLayout:
    imap = analyze(program).allowing_indirect_jumps()
    hot = imap["hot"]
    sites = [a for a, op in imap.callsites.get(hot.start, ()) if op == 0xE8]
    assert len(sites) == 1, sites  # main's one call
    calls = [[hot.start, sites[0] + 5]] if call_site else []
    return calibrate.NativeLayout(
        huge=True, at=[0.0], islands=[[[hot.start, hot.size, 0x1000, int(entry)]]], calls=[calls]
    )


def test_replay_follows_entry_jumps_and_call_sites(program: Path, tmp_path: Path) -> None:
    layouts = [
        _layout(program, entry=False, call_site=False),  # no way in: the copy never runs
        _layout(program, entry=False, call_site=True),  # main's call re-pointed
        _layout(program, entry=True, call_site=False),  # every call through the entry jump
    ]
    ref, unused, repointed, jumped = calibrate.model_binary(
        [str(program), str(CALLS)], layouts, tmp_path, sample=1
    )
    assert ref.totals["blocks"] > CALLS
    # a copy nothing reaches changes nothing
    assert unused.totals == ref.totals and unused.totals["in_copies"] == 0
    # re-pointed: the same blocks, now fetched in the 2 MiB page of the arena
    assert repointed.totals["blocks"] == ref.totals["blocks"]
    assert ref.totals["itlb2m_misses"] == 0 < repointed.totals["itlb2m_misses"]
    # through the entry jump: one more block (the jump) per call
    assert jumped.totals["blocks"] == ref.totals["blocks"] + CALLS
    assert jumped.totals["itlb2m_misses"] > 0
    assert repointed.totals["in_copies"] >= 2 * CALLS  # hot's blocks, every call


def test_replay_leaves_a_copy_at_its_jump_table(switching: Path, tmp_path: Path) -> None:
    imap = analyze(switching)
    assert imap["hot"].reason is not None and imap["hot"].indirect_jumps > 0
    ref, repointed = calibrate.model_binary(
        [str(switching), str(CALLS)], [_layout(switching, entry=False, call_site=True)],
        tmp_path, sample=1,
    )  # fmt: skip
    assert repointed.totals["blocks"] == ref.totals["blocks"]
    # per call: the range check and the dispatch (two blocks) in the copy, then the case and
    # the return in the original -- without the escape they would count as well
    assert CALLS <= repointed.totals["in_copies"] <= 2 * CALLS


def test_layout_of_a_native_report_is_relative_to_its_bases() -> None:
    report = NativeReport(load_base=0x5000_0000, arena_base=0x4F00_0000, arena_huge_kib=8192)
    report.samples_total = 200
    report.generations = [
        {"samples_before": 50, "islands": [[0x5000_1000, 64, 0x4F00_0040, 1]],
         "calls": [[0x5000_1000, 0x5000_2005]]},
    ]  # fmt: skip
    lay = calibrate.NativeLayout.of_report(report)
    assert lay.huge and lay.at == [0.25]
    assert lay.islands == [[[0x1000, 64, 0x40, 1]]] and lay.calls == [[[0x1000, 0x2005]]]
    text = calibrate.spec(Path("/bin/true"), [lay], 1000, calibrate.load_frontend_params())
    assert "gen 1 250\n" in text and "island 4096 64 64 1\n" in text and "call 4096 8197" in text


def test_miss_ranking_counts_each_island(program: Path, tmp_path: Path) -> None:
    imap = analyze(program)
    islands = [(i.start, i.size) for i in imap]
    rows = calibrate.miss_ranking([str(program), str(CALLS)], islands, tmp_path, sample=1)
    by_offset = {r["offset"]: r for r in rows}
    assert by_offset[imap["hot"].start]["blocks"] >= CALLS  # every call ran its blocks
    assert (
        all(r["blocks"] > 0 for r in rows) and {r["offset"] for r in rows} <= dict(islands).keys()
    )


def test_native_misses_script(program: Path) -> None:
    script = repo_root() / "scripts" / "native_misses.py"
    r = subprocess.run([sys.executable, str(script), "--sample", "1", "--", str(program), "100"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "\nmain " in r.stdout and "how callers would reach a copy" in r.stdout
    bad = subprocess.run([sys.executable, str(script), "--", "/nonexistent"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
