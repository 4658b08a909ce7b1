"""The relocation layer on its own: the never-move list from the image, live placement around
the driver's address map, the no-progress guard and the retry policy (a scripted mailbox)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from codeisland.analysis import analyze
from codeisland.errors import EmulationError, PlanError
from codeisland.plan import layout as L
from codeisland.relocation import Relocator, RetryPolicy, never_move, occupied
from codeisland.relocation.placement import plan_ranked, region_platform
from smmemu.workload import workload_path

BASE = 0x10000000


def _entry(orig: int, cur: int, size: int, flags: int) -> L.MapEntry:
    e = L.MapEntry()
    e.orig, e.cur, e.size, e.flags = orig, cur, size, flags
    return e


def test_never_move_is_the_entry_point_and_the_runtime_unit() -> None:
    imap = analyze(workload_path("lz"), load_base=BASE)
    keep = never_move(imap)
    assert {"ci_start", "ci_line", "ci_fail"} <= keep
    assert imap.island_at(imap.image.entry + imap.bias).name in keep  # type: ignore[operator, union-attr]
    assert not keep & {"lz_compress", "match_len", "gen_text", "fnv1a", "workload_thread"}
    runtime = {s.name for s in imap.image.symbols if s.unit == "runtime.c"}
    assert runtime and runtime <= keep


def test_occupied_counts_resident_and_retired_copies_only() -> None:
    entries = [
        _entry(0x1000, 0x9000, 0x40, L.MAP_ACTIVE),
        _entry(0x2000, 0x9100, 0x40, L.MAP_RETIRED),
        _entry(0x3000, 0x9200, 0x40, L.MAP_ROLLED_BACK),
    ]
    assert occupied(entries) == [(0x9000, 0x9040), (0x9100, 0x9140)]


def test_live_place_fills_gaps_around_the_copies_the_driver_holds() -> None:
    imap = analyze(workload_path("lz"), load_base=BASE)
    hot = BASE + 0x400000
    a, b = imap["match_len"], imap["fnv1a"]
    free = region_platform(hot, 0x10000)
    fresh = plan_ranked(imap, ["match_len", "fnv1a"], free, arena_base=BASE, plan_id=1)
    assert [p.dst for p in fresh.placed] == [hot, hot + (a.size + 63) // 64 * 64]
    # a resident copy at the start and a retired one right after it: both are skipped
    taken = [(hot, hot + 0x40), (hot + 0x40, hot + 0x80)]
    live = plan_ranked(imap, ["match_len"], free, arena_base=BASE, plan_id=2, taken=taken)
    assert live.placed[0].dst == hot + 0x80
    # a gap between two copies that is large enough is used
    gap = [(hot, hot + 0x40), (hot + 0x40 + b.size + 64, hot + 0x1000)]
    gapped = plan_ranked(imap, ["fnv1a"], free, arena_base=BASE, plan_id=3, taken=gap)
    assert gapped.placed[0].dst == hot + 0x40
    full = [(hot, hot + 0x10000)]
    with pytest.raises(PlanError):
        plan_ranked(imap, ["match_len"], free, arena_base=BASE, plan_id=4, taken=full)


@dataclass
class _Transport:
    def last_smi_measure(self) -> tuple[int, int] | None:
        return None


@dataclass
class _Reply:
    result: L.Result


@dataclass
class _Mailbox:
    """A scripted driver: STAGE answers from `stages`, COMMIT from `commits`."""

    stages: list[tuple[int, int]]  # (state, chunks_done)
    commits: list[int] = field(default_factory=list)  # contexts translated per COMMIT
    log: list[str] = field(default_factory=list)
    transport: _Transport = field(default_factory=_Transport)
    _at: int = 0

    def sample_head(self) -> int:
        return 0

    def set_stage_budget(self, budget: int) -> None:
        self.log.append(f"budget {budget}")

    def _result(self, **values: int) -> _Reply:
        r = L.Result()
        for k, v in values.items():
            setattr(r, k, v)
        return _Reply(r)

    def stage(self, plan: bytes = b"") -> _Reply:
        self.log.append(f"STAGE {plan.decode()}" if plan else "STAGE")
        if plan:
            self._at = 0
        state, done = self.stages[self._at]
        self._at += 1
        return self._result(state=state, chunks_done=done, chunks_total=4, smi=len(self.log))

    def commit(self, plan: bytes = b"") -> _Reply:
        self.log.append("COMMIT")
        return self._result(state=L.STATE_COMMITTED, contexts_translated=self.commits.pop(0))

    def rollback(self, generation: int = 0) -> _Reply:
        self.log.append(f"ROLLBACK {generation}")
        return self._result(state=L.STATE_ROLLED_BACK)


def test_stage_continues_until_staged_and_reports_every_smi() -> None:
    box = _Mailbox([(L.STATE_STAGING, 1), (L.STATE_STAGING, 3), (L.STATE_STAGED, 4)], [1])
    r = Relocator(box, stage_budget=4096)  # type: ignore[arg-type]
    out = r.apply(b"plan")
    assert out.stage.smis == 3 and out.attempts == 1
    assert box.log == ["budget 4096", "STAGE plan", "STAGE", "STAGE", "COMMIT"]
    assert [s.command for s in r.smis] == ["STAGE", "STAGE", "STAGE", "COMMIT"]
    assert all(s.handler_instructions is None for s in r.smis)


def test_a_stage_that_makes_no_progress_is_an_error() -> None:
    box = _Mailbox([(L.STATE_STAGING, 1), (L.STATE_STAGING, 1)])
    with pytest.raises(EmulationError, match="no progress"):
        Relocator(box).stage(b"plan")  # type: ignore[arg-type]


def test_stage_into_an_unexpected_state_is_an_error() -> None:
    box = _Mailbox([(L.STATE_EMPTY, 0)])
    with pytest.raises(EmulationError, match="state"):
        Relocator(box).stage(b"plan")  # type: ignore[arg-type]


def test_retry_rolls_back_with_the_guest_quiesced_then_commits_again() -> None:
    box = _Mailbox([(L.STATE_STAGED, 4)], commits=[0, 0, 2])
    policy = RetryPolicy(
        attempts=5,
        accept=lambda res: res.contexts_translated > 0,
        quiesce=lambda: box.log.append("pause"),
        resume=lambda: box.log.append("resume"),
    )
    out = Relocator(box).apply(b"plan", policy)  # type: ignore[arg-type]
    assert out.attempts == 3 and out.result.contexts_translated == 2
    one = ["STAGE plan", "COMMIT", "pause", "ROLLBACK 0", "resume"]
    assert box.log == [*one, *one, "STAGE plan", "COMMIT"]


def test_retry_gives_up_after_its_attempts_with_the_last_commit() -> None:
    box = _Mailbox([(L.STATE_STAGED, 4)], commits=[0, 0])
    policy = RetryPolicy(attempts=2, accept=lambda res: res.contexts_translated > 0)
    out = Relocator(box).apply(b"plan", policy)  # type: ignore[arg-type]
    assert out.attempts == 2 and out.result.contexts_translated == 0
    assert box.log.count("COMMIT") == 2 and box.log.count("ROLLBACK 0") == 1


def test_retry_stages_the_hosts_new_plan_for_each_later_attempt() -> None:
    box = _Mailbox([(L.STATE_STAGED, 4)], commits=[0, 0, 1])
    asked: list[int] = []

    def replan(attempt: int) -> bytes:
        asked.append(attempt)
        return f"plan{attempt}".encode()

    policy = RetryPolicy(attempts=4, accept=lambda res: res.contexts_translated > 0, replan=replan)
    out = Relocator(box).apply(b"plan1", policy)  # type: ignore[arg-type]
    assert out.attempts == 3 and asked == [2, 3]
    stages = [e for e in box.log if e.startswith("STAGE")]
    assert stages == ["STAGE plan1", "STAGE plan2", "STAGE plan3"]
