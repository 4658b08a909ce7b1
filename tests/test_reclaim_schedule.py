"""The hosts' RECLAIM policy (relocation.reclaim): when a RECLAIM SMI is due after a rollback
that retired copies, and how its answer is read and described."""

from __future__ import annotations

from codeisland.plan import layout as L
from codeisland.relocation import ReclaimReport, ReclaimSchedule
from codeisland.relocation.reclaim import describe


def _entry(verdict: int, where: int = 0) -> L.ReclaimEntry:
    e = L.ReclaimEntry()
    e.cur, e.size, e.generation, e.verdict, e.where = 0x3400000, 0x70, 2, verdict, where
    return e


def _due_at(schedule: ReclaimSchedule, boundaries: int, kept: bool) -> list[int]:
    out = []
    for b in range(1, boundaries + 1):
        if schedule.due():
            out.append(b)
            schedule.answered(ReclaimReport([_entry(L.RECLAIM_KEPT_MEMORY if kept else 1)]))
    return out


def test_due_at_every_then_doubling_while_copies_are_kept() -> None:
    s = ReclaimSchedule(every=4)
    assert _due_at(s, 10, kept=True) == []  # nothing retired yet: never due
    s.retired()
    assert _due_at(s, 60, kept=True) == [4, 12, 28, 60]
    s.retired()  # another rollback starts over
    assert _due_at(s, 20, kept=False) == [4]  # all freed: no more RECLAIMs


def test_interval_is_capped_and_zero_means_never() -> None:
    s = ReclaimSchedule(every=1)
    s.retired()
    assert _due_at(s, 400, kept=True) == [1, 3, 7, 15, 31, 63, 127, 191, 255, 319, 383]  # cap 64
    off = ReclaimSchedule(every=0)
    off.retired()
    assert _due_at(off, 100, kept=True) == []


def test_report_and_descriptions() -> None:
    r = ReclaimReport([_entry(L.RECLAIM_FREED), _entry(L.RECLAIM_KEPT_REGISTER, 1 << 32 | 46),
                       _entry(L.RECLAIM_KEPT_MEMORY, 0x3C0FF80),
                       _entry(L.RECLAIM_KEPT_PINNED, 3)], bytes_freed=0x70)  # fmt: skip
    assert len(r.freed) == 1 and len(r.kept) == 3
    d = r.to_dict()
    assert d["freed"] == 1 and d["kept"] == 3 and d["bytes_freed"] == 0x70
    assert d["copies"][0] == "copy 0x3400000+0x70 of generation 2: freed"
    assert "CPU 1, register 46" in describe(r.kept[0])
    assert "word at 0x3c0ff80" in describe(r.kept[1])
    assert "generation 3" in describe(r.kept[2])
