"""RECLAIM on the emulated board, through the real driver: a retired copy that a thread can
still reach stays valid code, one nothing refers to is freed (int3, range reusable by the
planner), and a thread parked on no CPU is seen through the context its "OS" saved in guest
memory (smmemu.guest: the context area at the base of its stack slot).

graphsort, 1 CPU, 2 threads; heap_sort and merge_sort are moved with KEEP_COPIES and rolled
back with no return-address window (stack_slots 0), so only the scan can prove anything.
"""

from __future__ import annotations

import pytest
from test_emu_common import baseline, ensure_built, plan_for

from codeisland.emulator.session import boot
from codeisland.errors import EmulationError
from codeisland.plan import layout as L
from codeisland.relocation import occupied
from codeisland.relocation.placement import plan_ranked, region_platform
from smmemu.guest import SPILLED
from smmemu.workload import load_workload

CALLER, OTHER = "heap_sort", "merge_sort"


def _moved(spill: bool = True):  # type: ignore[no-untyped-def]
    """Boot, move CALLER and OTHER before any thread runs; returns session, guest, the
    analysis and the plan."""
    ensure_built()
    image = load_workload("graphsort")
    s = boot(cpus=1)
    guest = s.guest(image, threads=2)
    if not spill:
        guest._spill_contexts = lambda: None  # type: ignore[method-assign]
    imap, plan = plan_for(s, image, [CALLER, OTHER], plan_id=3)
    assert plan.plan.keep_copies
    s.relocator.apply(plan.to_bytes())
    return s, guest, imap, plan


def _copy(plan, name):  # type: ignore[no-untyped-def]
    return next(p for p in plan.placed if p.name == name)


def _entry(s, cur: int) -> L.MapEntry:  # type: ignore[no-untyped-def]
    return next(e for e in s.relocator.address_map() if int(e.cur) == cur)


def test_deep_return_address_keeps_the_copy_the_other_is_freed_and_reused() -> None:
    s, guest, imap, plan = _moved()
    caller, other = _copy(plan, CALLER), _copy(plan, OTHER)
    t0 = guest.threads[0]
    sift_down = guest.address("sift_down")
    assert guest.run_until(t0, caller.dst)  # entered the copy through the entry jump
    assert guest.run_until(t0, sift_down)  # called from it: a return address into the copy
    guest._assign()  # thread 0 parked in sift_down, thread 1 on the CPU
    assert t0.cpu is None
    s.relocator.rollback(0)
    assert t0.rip == sift_down  # not in a copy: nothing to translate

    report = s.relocator.reclaim()
    verdicts = {int(e.cur): e for e in report.entries}
    kept, freed = verdicts[caller.dst], verdicts[other.dst]
    assert kept.verdict == L.RECLAIM_KEPT_MEMORY
    assert t0.stack_base <= int(kept.where) < t0.stack_top  # a slot of thread 0's stack
    assert int.from_bytes(guest.m.read(int(kept.where), 8), "little") - caller.dst < caller.size
    assert freed.verdict == L.RECLAIM_FREED
    assert report.bytes_freed == other.size
    assert guest.m.read(other.dst, other.size) == b"\xcc" * other.size
    assert guest.m.read(caller.dst, 16) != b"\xcc" * 16  # still the copy
    assert _entry(s, caller.dst).flags == L.MAP_ROLLED_BACK | L.MAP_RETIRED
    assert _entry(s, other.dst).flags == L.MAP_ROLLED_BACK

    # the planner places OTHER again where its freed copy was, around the kept one
    taken = occupied(s.relocator.address_map())
    assert (caller.dst, caller.dst + caller.size) in taken
    assert all(not (lo <= other.dst < hi) for lo, hi in taken)
    again = plan_ranked(
        imap, [OTHER], region_platform(*s.region("hot")), arena_base=s.arena[0], plan_id=4,
        taken=taken, read_bytes=s.machine.read,
    )  # fmt: skip
    assert _copy(again, OTHER).dst == other.dst
    s.relocator.apply(again.to_bytes())

    guest.run()  # thread 0 returns into the kept copy of heap_sort
    assert guest.outputs() == baseline("graphsort", 2).outputs
    # every thread has exited and its stack is freed: nothing refers to the copy any more
    s.relocator.rollback(0)
    final = s.relocator.reclaim()
    assert {int(e.cur): int(e.verdict) for e in final.entries} == {
        caller.dst: L.RECLAIM_FREED,
        other.dst: L.RECLAIM_FREED,
    }
    assert guest.m.read(caller.dst, caller.size) == b"\xcc" * caller.size


@pytest.mark.parametrize("spill", [True, False], ids=["saved-context", "no-saved-context"])
def test_parked_thread_running_in_a_retired_copy(spill: bool) -> None:
    """Thread 0 is descheduled with its RIP inside the copy: no CPU holds it at the rollback
    or the RECLAIM.  Its saved context (in guest memory) keeps the copy, and the run matches
    the baseline.  Without the saved context the scan cannot see it: the copy is freed and
    the thread resumes on int3 -- the hazard the context area exists for."""
    s, guest, _, plan = _moved(spill)
    caller = _copy(plan, CALLER)
    t0 = guest.threads[0]
    assert guest.run_until(t0, caller.dst)
    guest._assign()
    assert t0.cpu is None and caller.dst <= t0.rip < caller.dst + caller.size
    s.relocator.rollback(0)
    report = s.relocator.reclaim()
    entry = next(e for e in report.entries if int(e.cur) == caller.dst)
    if spill:
        assert entry.verdict == L.RECLAIM_KEPT_MEMORY
        assert int(entry.where) == t0.stack_base + 8 * SPILLED.index("rip")
        guest.run()
        assert guest.outputs() == baseline("graphsort", 2).outputs
    else:
        assert entry.verdict == L.RECLAIM_FREED
        with pytest.raises(EmulationError):
            guest.run()
