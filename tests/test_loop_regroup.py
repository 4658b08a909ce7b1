"""Merges and splits inside the closed loop: the real driver, the planner's Merge/Split passes,
and a constructed profile -- two address-adjacent islands (hashtab's insert and lookup) run in
the same windows, are committed as one merged island, then diverge and are split again."""

from __future__ import annotations

import numpy as np
import pytest

from codeisland.frontend.fetchtrace import library_path
from codeisland.frontend.params import FrontendParams
from codeisland.loop.controller import PLAN_HISTORY, ClosedLoop
from codeisland.loop.target import Observation
from codeisland.paths import driver_binary, emulation_build_dir
from codeisland.plan import layout as L
from codeisland.predict import CostModel, make_policy

pytestmark = pytest.mark.skipif(
    not (
        library_path().is_file()
        and driver_binary().is_file()
        and (emulation_build_dir() / "workloads" / "hashtab.elf").is_file()
    ),
    reason="driver, workloads or native library not built",
)

SAMPLES = 100  # per busy island and window in the constructed profile


def _machine():  # type: ignore[no-untyped-def]
    from codeisland.loop.emulated import EmulatedTarget

    return EmulatedTarget("hashtab", cpus=1, threads=1, window_instructions=50_000)


def test_machine_commits_coactive_neighbours_as_one_island_and_finds_the_split() -> None:
    m = _machine()
    pos = {i.name: k for k, i in enumerate(m.islands)}
    a, b = pos["insert"], pos["lookup"]
    assert 0 <= m.islands[b].start - (m.islands[a].start + m.islands[a].size) <= 64
    m.run_window()
    together = np.zeros((4, len(m.islands)))
    together[:, a], together[:, b] = [10, 12, 9, 11], [9, 12, 10, 10]
    r = m.commit([a, b], together)
    assert r.generation == 1 and r.merged == [[a, b]] and sorted(r.islands) == [a, b]
    (entry,) = m.address_map()  # one copy for both: the driver moved one island
    assert entry.orig == m.islands[a].start
    assert entry.size == m.islands[b].start + m.islands[b].size - m.islands[a].start
    assert m.generations() == [(1, [a, b])]
    obs = m.run_window()  # both run in the merged copy and count for their originals
    assert obs.exact[a] > 0 and obs.exact[b] > 0
    assert m.conflicts(together) == []
    apart = together.copy()
    apart[:, b] = [1, 0, 0, 1]  # 42 vs 2 samples: more than split_ratio (8x) apart
    assert m.conflicts(apart) == [(1, [a, b])]
    # neighbours that never run in the same window are not merged
    m.rollback(1)
    r = m.commit([a, b], _alternate(len(m.islands), a, b))
    active = [e for e in m.address_map() if e.flags & L.MAP_ACTIVE]
    assert r.merged == [] and sorted(r.islands) == [a, b] and len(active) == 2
    assert m.conflicts(apart) == []  # nothing merged, nothing to split


def _alternate(n: int, a: int, b: int) -> np.ndarray:
    counts = np.zeros((4, n))
    counts[0::2, a] = 10
    counts[1::2, b] = 10
    return counts


class _Scripted:
    """Wraps the emulated machine: the guest, the driver and the planner are real; the
    observation's samples and front-end counters follow a constructed profile, so the test
    decides when the two islands are co-active and when they diverge."""

    def __init__(self, script: list[dict[int, int]]) -> None:
        self.m = _machine()
        self.script = script
        for name in ("islands", "fixups", "hot_capacity", "max_generations"):
            setattr(self, name, getattr(self.m, name))

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.m, name)

    def run_window(self) -> Observation:
        obs = self.m.run_window()
        busy = self.script[obs.index]
        resident = {i for _, members in self.m.generations() for i in members}
        n = len(self.islands)
        exact, cycles, itlb = np.zeros(n), np.zeros(n), np.zeros(n)
        rips = []
        for i, samples in busy.items():
            rips += [self.islands[i].start] * samples
            exact[i] = 10.0 * samples
            # at the origin 10 cycles and one iTLB miss per block; 10 cycles once moved
            miss = 0 if i in resident else FrontendParams().itlb4k_miss_cycles
            cycles[i] = exact[i] * (10 + miss)
            itlb[i] = 0 if i in resident else exact[i]
        obs.rips = np.array(rips, dtype=np.uint64)
        obs.exact, obs.island_cycles, obs.island_itlb_misses = exact, cycles, itlb
        obs.island_l1i_misses = np.zeros(n)
        return obs


def test_closed_loop_merges_coactive_neighbours_and_splits_them_when_they_diverge() -> None:
    probe = _machine()
    pos = {i.name: k for k, i in enumerate(probe.islands)}
    a, b = pos["insert"], pos["lookup"]
    together = [{a: SAMPLES, b: SAMPLES}] * 3
    apart = [{a: SAMPLES}] * (PLAN_HISTORY + 3)  # lookup stops running
    machine = _Scripted(together + apart)
    p = FrontendParams()
    loop = ClosedLoop(machine, make_policy("reactive", len(machine.islands)),  # type: ignore[arg-type]
                      CostModel.from_params(p, 16384, 4), params=p)  # fmt: skip
    loop.run(len(together + apart))
    kinds = [(e["window"], e["kind"], sorted(e["islands"])) for e in loop.stats.events]
    assert kinds[0] == (0, "commit", [a, b]) and kinds[1] == (0, "merge", [a, b])
    split_at = len(together) + PLAN_HISTORY - 1  # the history no longer holds lookup's runs
    assert (split_at, "rollback", [a, b]) in kinds and (split_at, "split", [a, b]) in kinds
    assert (split_at, "commit", [a]) in kinds  # insert alone: lookup is no longer wanted
    assert [k for k in kinds if k[1] in ("merge", "split")] == [
        (0, "merge", [a, b]), (split_at, "split", [a, b]),
    ]  # fmt: skip
    assert loop.stats.merges == 1 and loop.stats.splits == 1
    (entry,) = [e for e in machine.address_map() if e.flags & L.MAP_ACTIVE]
    assert entry.orig == machine.islands[a].start and entry.size == machine.islands[a].size
