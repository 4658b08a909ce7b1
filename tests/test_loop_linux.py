"""The Linux loop's target (loop/linux.py) without a VM: a scripted relocator stands for the
driver behind QEMU's mailbox, the islands are a compiled workload's.  What is checked: only the
process's samples (its CR3, CPL 3) are observations, a sample in a copy counts for its island,
commits and rollbacks go through the relocator and show in the generations, the first refused
plan is raised with its spans checked, a refusal later is a refused result, a program that
ended ends the windows; and the closed loop runs on it (the QEMU run: test_linux_process.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from test_analysis_support import build_elf

from codeisland.analysis import IslandMap, analyze
from codeisland.errors import DriverRejected
from codeisland.frontend.params import FrontendParams
from codeisland.loop.controller import ClosedLoop
from codeisland.loop.linux import EXITED, LinuxTarget, ProgramEnded
from codeisland.plan import layout as L
from codeisland.predict.policies import make_policy
from codeisland.predict.priority import CostModel
from codeisland.relocation import Relocator, SmiReport, StageOutcome, movable

CR3 = 0x1234000
ZONE = 0x7000_0000
SMALL = FrontendParams(l1i_size=1024, l1i_ways=2, itlb4k_entries=2, itlb4k_ways=2)


@pytest.fixture(scope="module")
def imap(tmp_path_factory: pytest.TempPathFactory) -> IslandMap:
    return analyze(build_elf(tmp_path_factory.mktemp("elf"))).allowing_indirect_jumps()


def sample(rip: int, cr3: int = CR3, cpl: int = 3) -> L.Sample:
    s = L.Sample()
    s.rip, s.cr3, s.cpl, s.cpu = rip, cr3, cpl, 0
    return s


@dataclass
class FakePlan:
    placed: list[Any]
    rejected: dict[str, str] = field(default_factory=dict)
    merged: list[tuple[str, ...]] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return b"plan"

    def written_spans(self) -> list[tuple[int, int]]:
        return [(p.dst, p.size) for p in self.placed]


@dataclass
class Placed:
    name: str
    src: int
    dst: int
    size: int
    members: tuple[str, ...]
    redirect: str = "call sites (1)"
    island: Any = None


class FakeRelocator:
    """The driver's answers: samples from a script, commits into an address map."""

    def __init__(self, rips: list[int], refuse: int | None = None) -> None:
        self.rips = rips
        self.refuse = refuse  # status of every commit, when set
        self.smis: list[SmiReport] = []
        self.map: list[L.MapEntry] = []
        self.generation = 0
        self.memory: dict[int, bytes] = {}
        self.contexts: list[int] = []  # contexts_translated of the next commits (then 1)

    def _smi(self, command: str, written: int = 0) -> None:
        self.smis.append(SmiReport(len(self.smis), command, "OK", None, written, 0))

    def sample(self) -> list[L.Sample]:
        self._smi("SAMPLE")
        return [sample(r) for r in self.rips] + [sample(0xFFFF_FFFF_8100_0000, cpl=0)]

    def since(self, mark: int) -> list[SmiReport]:
        return self.smis[mark:]

    apply = Relocator.apply  # the layer's own retry logic over this fake's stage/commit
    sample_until = Relocator.sample_until  # and its wait over this fake's samples

    def stage(self, plan: bytes) -> StageOutcome:
        self._smi("STAGE")
        if self.refuse is not None:
            raise DriverRejected(self.refuse, "refused")
        return StageOutcome(1, 0, 0, 1)

    def commit(self, plan: bytes = b"") -> L.Result:
        self._smi("COMMIT", 100)
        self.generation += 1
        for p in self.pending.placed:
            e = L.MapEntry()
            e.orig, e.cur, e.size, e.generation, e.flags = (
                p.src, p.dst, p.size, self.generation, L.MAP_ACTIVE,
            )  # fmt: skip
            self.map.append(e)
        r = L.Result()
        r.generation, r.callsites_patched = self.generation, 1
        r.contexts_translated = self.contexts.pop(0) if self.contexts else 1
        return r

    def rollback(self, generation: int = 0) -> L.Result:
        self._smi("ROLLBACK")
        for e in self.map:
            if e.generation >= generation and e.flags & L.MAP_ACTIVE:
                e.flags = L.MAP_RETIRED
        r = L.Result()
        r.bytes_restored = 5
        return r

    def address_map(self) -> list[L.MapEntry]:
        self._smi("STATS")
        return list(self.map)


def target(imap: IslandMap, rel: FakeRelocator, alive: list[bool] | None = None) -> LinuxTarget:
    def plan(names: list[str], plan_id: int, taken: Any, prio: Any, counts: Any) -> FakePlan:
        at = ZONE + sum(int(e.size) + 64 for e in rel.map)
        placed = []
        for n in names:
            isl = imap[n]
            placed.append(Placed(n, isl.start, at, isl.size, (n,)))
            at += (isl.size + 63) // 64 * 64
        rel.pending = FakePlan(placed)  # type: ignore[attr-defined]
        return rel.pending  # type: ignore[attr-defined]

    flag = alive if alive is not None else [True]
    return LinuxTarget(
        rel, imap, CR3, (ZONE, 2 << 20, True), plan, lambda: flag[0],  # type: ignore[arg-type]
        read=lambda a, n: rel.memory.get(a, bytes(n)), params=SMALL, window_samples=4,
        pause_s=0,
    )  # fmt: skip


def test_window_counts_the_process_samples_and_models_their_islands(imap: IslandMap) -> None:
    middle = imap["middle"]
    rel = FakeRelocator([middle.start + 4, 0x7FFF_0000_1000])  # an island; libc
    t = target(imap, rel)
    obs = t.run_window()
    k = next(i for i, isl in enumerate(t.islands) if isl.name == "middle")
    assert len(obs.rips) == 8  # 4 SAMPLEs x 2 of the process; the kernel's are not its
    assert t.tally.to_dict() == {"process": 8, "in_islands": 4, "kernel": 4, "other": 0}
    assert obs.exact[k] > 0 and obs.exact.sum() == obs.exact[k]  # modeled blocks of middle
    assert obs.frontend["cycles"] > 0


def test_commit_rollback_and_a_sample_in_the_copy(imap: IslandMap) -> None:
    rel = FakeRelocator([imap["middle"].start])
    t = target(imap, rel)
    k = next(i for i, isl in enumerate(t.islands) if isl.name == "middle")
    r = t.commit([k])
    assert r.refused is None and r.islands == [k] and r.bytes_staged == 100
    assert t.generations() == [(1, [k])]
    copy = int(t.address_map()[0].cur)
    assert t._range_of(copy + 3) == (copy, copy + t.islands[k].size, k)
    assert t.commits[0]["islands"] == ["middle"]
    back = t.rollback(1)
    assert back.islands == [k] and back.bytes_restored == 5 and t.generations() == []
    assert t.retired_bytes() == t.islands[k].size  # keep-copies: the copy's room stays taken
    assert t.reclaim_price() == float("inf")  # the engine keeps virtual copies: never pays


def test_a_commit_that_found_no_thread_inside_is_placed_again(imap: IslandMap) -> None:
    rel = FakeRelocator([imap["middle"].start])
    rel.contexts = [0, 0]  # the first two commits find the CPU elsewhere
    t = target(imap, rel)
    k = next(i for i, isl in enumerate(t.islands) if isl.name == "middle")
    r = t.commit([k])
    assert t.commits[0]["attempts"] == 3 and t.commits[0]["contexts_translated"] == 1
    assert [s.command for s in rel.smis].count("ROLLBACK") == 2
    assert r.islands == [k] and t.generations() == [(3, [k])]
    copies = [int(e.cur) for e in t.address_map()]
    assert len(set(copies)) == 3  # each attempt placed beside the retired copies
    assert t.retired_bytes() == 2 * t.islands[k].size


def test_first_refusal_is_raised_with_its_spans_checked_later_ones_are_results(
    imap: IslandMap,
) -> None:
    rel = FakeRelocator([], refuse=int(L.Status.WALK_TABLE_OUTSIDE))
    t = target(imap, rel)
    with pytest.raises(DriverRejected):
        t.commit([0])
    assert t.first_refusal is not None and t.first_refusal_untouched
    assert t.commit([1]).refused == "WALK_TABLE_OUTSIDE"


def test_a_program_that_ended_ends_the_windows(imap: IslandMap) -> None:
    alive = [True]
    t = target(imap, FakeRelocator([imap["leaf"].start]), alive)
    t.run_window()
    alive[0] = False
    with pytest.raises(ProgramEnded):
        t.run_window()
    sent = len(t.rel.smis)
    assert t.rollback(1).refused == t.commit([0]).refused == EXITED
    assert len(t.rel.smis) == sent  # nothing sent after the exit


def test_a_program_that_ends_mid_window_ends_it_early(imap: IslandMap) -> None:
    alive = [True]
    rel = FakeRelocator([imap["leaf"].start])
    t = target(imap, rel, alive)
    t.window_samples = 40
    calls = {"n": 0}

    def still() -> bool:
        calls["n"] += 1
        return calls["n"] < 3  # alive at the window's start and at its first check

    t.alive = still
    obs = t.run_window()
    assert len(obs.rips) == 16  # two checks passed: 16 SAMPLEs, not 40
    with pytest.raises(ProgramEnded):
        t.run_window()


def test_a_page_fault_while_planning_is_the_exit_only_when_the_program_is_gone(
    imap: IslandMap,
) -> None:
    from codeisland.hw.vaspace import PageFault

    alive = [False]
    t = target(imap, FakeRelocator([]), alive)

    def faulting(*_args: Any) -> Any:
        raise PageFault("0x1000 is not mapped")

    t.plan = faulting
    t.alive = lambda: alive.pop(0) if len(alive) > 1 else alive[0]
    alive[:] = [True, False]  # alive at the commit's start, gone when the fault is examined
    assert t.commit([0]).refused == EXITED
    alive[:] = [True]
    with pytest.raises(PageFault):
        t.commit([0])


def test_the_closed_loop_commits_on_it() -> None:
    # Debian's gzip: islands over 15 text pages, so a 2-entry iTLB misses in the model
    gzip = analyze("/usr/bin/gzip", load_base=0x5555_0000_0000).allowing_indirect_jumps()
    spread = [i for i in movable(gzip) if i.size >= 256][::4][:8]
    rel = FakeRelocator([i.start + 8 for i in spread] * 2)
    t = target(gzip, rel)
    loop = ClosedLoop(t, make_policy("reactive", len(t.islands)),
                      CostModel.from_params(SMALL, 4096, 4), params=SMALL)  # fmt: skip
    loop.run(4)
    assert loop.stats.relocations > 0 and t.commits
    assert {"SAMPLE", "STAGE", "COMMIT", "STATS"} <= {s.command for s in rel.smis}
    assert np.array(loop.heat_log).sum() > 0

    assert len({gzip[n].start >> 12 for c in t.commits for n in c["islands"]}) > 1


def test_jump_table_functions_are_in_the_loop(imap: IslandMap) -> None:
    t = target(imap, FakeRelocator([]))
    assert "chooser" in {i.name for i in t.islands}  # its switch is a jump table


def test_report_says_what_is_modeled_and_what_is_measured() -> None:
    from codeisland.bench.linux import LoopReport

    r = LoopReport("/usr/bin/mawk", [], policy="predictive", windows=3, output_matches=True,
                   ended_by="program exit", smi_counts={"SAMPLE": 120, "COMMIT": 1})  # fmt: skip
    text = str(r)
    assert "modeled: front-end cycles" in text and "not measurable under QEMU" in text
    assert text.endswith("OK") and r.to_dict()["handler_instructions"].startswith("not")
    refused = LoopReport("/usr/bin/mawk", [], refused="WALK_TABLE_OUTSIDE", output_matches=True)
    assert not refused.ok  # refused is OK only with nothing written
    refused.refused_untouched = True
    assert refused.ok and "nothing written: True" in str(refused)


def test_a_zone_too_small_rejects_the_island_with_the_reason() -> None:
    """A zone of 4 KiB pages is planned within one page: mawk's 12 KiB interpreter loop does not
    fit and is rejected with the planner's reason, the small island beside it still moves; a
    plan of only islands that do not fit is one PlanError (the loop counts it as refused)."""
    from codeisland.errors import PlanError
    from codeisland.qemu.linux.process import plan_in_zone
    from codeisland.qemu.linux.program import Landing

    base = 0x5555_0000_0000
    mawk = analyze("/usr/bin/mawk", load_base=base).allowing_indirect_jumps()
    big = max(movable(mawk), key=lambda i: i.size)
    small = next(i for i in movable(mawk) if 64 <= i.size <= 512 and mawk.callsites.get(i.start))
    zone = Landing(1, "/usr/bin/mawk", base, (base, base + 0x20000), True, base - (4 << 20),
                   2 << 20, False, "none", 0, "remap")  # fmt: skip

    class Space:
        read = staticmethod(mawk.read)

        @staticmethod
        def contiguous(_a: int, _n: int) -> bool:
            return True

    plan = plan_in_zone(mawk, Space(), zone, [big.name, small.name], 1, [],  # type: ignore[arg-type]
                        {big.name: 2.0, small.name: 1.0})  # fmt: skip
    assert [p.name for p in plan.placed] == [small.name]
    assert "room" in plan.rejected[big.name]
    with pytest.raises(PlanError, match="room"):
        plan_in_zone(mawk, Space(), zone, [big.name], 2, [], {big.name: 1.0})  # type: ignore[arg-type]


def test_timed_relocator_keeps_the_longest_round_trip_per_command() -> None:
    import time
    from types import SimpleNamespace

    from codeisland.bench.linux import TimedRelocator

    class Client:
        transport = SimpleNamespace(last_smi_measure=lambda: None)

        def sample_head(self) -> int:
            return 0

        def query(self) -> Any:
            time.sleep(0.02)
            return SimpleNamespace(result=L.Result())

    rel = TimedRelocator(Client())  # type: ignore[arg-type]
    rel.query()
    rel.query()
    assert [n for n, _ in rel.round_trips] == ["QUERY", "QUERY"]
    assert 15 <= rel.longest_ms()["QUERY"] < 1000 and rel.smis[0].command == "QUERY"
