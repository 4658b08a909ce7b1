"""End to end: the planner's passes (profile + emulated.toml) produce a plan that the real SMM
driver, run in the emulated machine, stages and commits; the guest's output is unchanged and
the address map lists every placed island."""

from __future__ import annotations

import pytest
from test_emu_common import baseline, ensure_built

from codeisland.analysis import analyze
from codeisland.emulator.session import boot
from codeisland.plan import layout as L
from codeisland.planning.passes import Options
from codeisland.planning.planner import run_passes
from codeisland.planning.platform import load_platform
from smmemu.workload import load_workload


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    ensure_built()


@pytest.mark.parametrize("workload", ["graphsort", "lz"])
def test_planner_output_runs_in_the_driver(workload: str) -> None:
    image = load_workload(workload)
    s = boot(cpus=2)
    guest = s.guest(image, threads=2)
    arena = s.arena[0]
    imap = analyze(image.path, load_base=s.region("code")[0])
    # a synthetic profile: every relocatable island ran, the first ones more often
    counts = {
        isl.name: [float(len(imap) - n), 1.0] for n, isl in enumerate(imap) if isl.relocatable
    }
    result = run_passes(
        imap, load_platform("emulated"), counts, Options(arena_base=arena, plan_id=21)
    )
    placed = result.ctx.candidates
    assert sum(len(c.island.members) for c in placed) >= 5
    hot = load_platform("emulated").region("hot")
    assert all(c.environment == "hot" for c in placed)
    assert all(hot.start(arena) <= (c.dst or 0) < hot.start(arena) + hot.size for c in placed)
    guest.step(30_000)
    # through the relocation layer: a plan larger than one SMI's budget is staged over several
    done = s.relocator.apply(result.plan.to_bytes())
    assert done.result.status == L.Status.OK, done.result.status
    assert done.stage.fixups_applied + done.result.fixups_applied == len(result.plan.fixups) > 0
    assert done.result.callsites_patched == len(result.plan.callsites)
    stats = s.client.stats()
    assert sorted((m.orig, m.cur) for m in stats.map_entries) == sorted(
        (c.island.start, c.dst) for c in placed
    )
    assert all(m.flags == L.MAP_ACTIVE for m in stats.map_entries)
    for c in placed:  # entry patched with a jump to the copy
        assert s.machine.read(c.island.start, 1) == b"\xe9"
    guest.run()
    assert guest.outputs() == baseline(workload, 2).outputs
