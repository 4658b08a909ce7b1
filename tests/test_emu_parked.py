"""Hazards refused at plan time: a thread parked (on no CPU during the commit SMI) inside the
first bytes of an island whose entry is not preemption-safe.

graphsort is built two ways a third-party program would be: by gcc with
-fpatchable-function-entry=5 (five one-byte NOPs, not one 5-byte NOP) and by clang at plain -O2
(no patchable entry).  The schedule is forced: one CPU, two threads, thread 0 stopped at the
second instruction of sift_down and then descheduled, so the handler cannot see it.  The planner
re-points sift_down's direct call sites instead of writing an entry jump over bytes thread 0
will resume in, and the run matches the unrelocated one byte for byte.  The same commit with an
entry jump (what `parked_threads=False` allows) shows the hazard is real.
"""

from __future__ import annotations

import pytest
from test_emu_common import baseline, ensure_built, plan_for

from codeisland.analysis import analyze
from codeisland.emulator.session import boot
from codeisland.errors import CodeIslandError
from codeisland.paths import repo_root
from codeisland.plan import layout as L
from codeisland.planning import build_plan
from codeisland.planning.redirect import CALL_SITES, redirect
from smmemu.workload import build_port, load_workload

ISLAND = "sift_down"
BUILDS = {
    "gcc": ("CC=gcc", []),
    "plain-O2": ("", ["-fpatchable-function-entry=0"]),
}


def _build(variant: str) -> str:
    ensure_built()
    cc, flags = BUILDS[variant]
    src = repo_root() / "emulation" / "workloads" / "graphsort.c"
    return str(build_port(f"graphsort-{variant}", [src], flags, make_vars=[cc] if cc else []))


def _parked_commit(path: str, entry_jump: bool):  # type: ignore[no-untyped-def]
    """Thread 0 parked at sift_down's second instruction, then the commit; returns the guest,
    the plan and the island."""
    image = load_workload(path)
    s = boot(cpus=1)
    guest = s.guest(image, threads=2)
    imap = analyze(image.path, load_base=s.region("code")[0])
    isl = imap[ISLAND]
    parked_at = isl.start + isl.entry_insn_len
    thread = guest.threads[0]
    assert guest.run_until(thread, parked_at)
    guest._assign()  # round-robin: thread 0 leaves the only CPU, thread 1 takes it
    assert thread.cpu is None and guest.m.cpus[0].thread is guest.threads[1]
    if entry_jump:
        plan = build_plan(imap, [(isl, s.region("hot")[0])], parked_threads=False,
                          read_bytes=s.machine.read)  # fmt: skip
    else:
        plan = plan_for(s, image, [ISLAND], plan_id=7)[1].plan
    assert s.client.commit(plan.to_bytes()).ok
    assert thread.rip == parked_at  # invisible to the handler: not translated
    return guest, plan, isl


@pytest.mark.parametrize("variant", sorted(BUILDS))
def test_parked_thread_inside_the_entry_is_safe(variant: str) -> None:
    path = _build(variant)
    imap = analyze(path)
    isl = imap[ISLAND]
    assert isl.relocatable and not isl.entry_preemption_safe
    if variant == "gcc":
        assert isl.entry_nops == 5 and "one-byte NOPs" in (isl.entry_hazard or "")
    how = redirect(imap, isl)
    assert how.method == CALL_SITES and how.callsites >= 1

    guest, plan, _ = _parked_commit(path, entry_jump=False)
    assert plan.islands[0].flags & L.ISLAND_ENTRY_MASK == L.ISLAND_ENTRY_NONE
    assert len(plan.callsites) == how.callsites
    guest.run()
    expected = baseline(path, 2)
    assert guest.outputs() == expected.outputs
    assert [t.exit_code for t in guest.threads] == [0, 0]


@pytest.mark.parametrize("variant", sorted(BUILDS))
def test_the_entry_jump_would_have_hit_the_parked_thread(variant: str) -> None:
    guest, plan, isl = _parked_commit(_build(variant), entry_jump=True)
    assert plan.islands[0].flags & L.ISLAND_ENTRY_MASK == L.ISLAND_ENTRY_REL32
    expected = baseline(_build(variant), 2)
    try:
        guest.run(instructions=20_000_000)
    except CodeIslandError:
        return  # the parked thread resumed inside the jump's rel32 and faulted
    ok = guest.outputs() == expected.outputs and all(t.exit_code == 0 for t in guest.threads)
    assert not ok, f"thread resumed inside the entry patch of {isl.name} and still matched"


def test_gcc_with_fentry_is_entry_jump_safe() -> None:
    """gcc -pg -mfentry: the first instruction is one 6-byte call to the libc's __fentry__, so
    the entry jump replaces exactly one instruction (PORTING.md)."""
    ensure_built()
    src = repo_root() / "emulation" / "workloads" / "graphsort.c"
    flags = ["-pg", "-mfentry", "-fpatchable-function-entry=0"]
    path = build_port("graphsort-gcc-fentry", [src], flags, make_vars=["CC=gcc"])
    imap = analyze(path)
    isl = imap[ISLAND]
    assert isl.entry_insn_len == 6 and isl.entry_preemption_safe
    assert redirect(imap, isl).method == "entry jump"
    guest, plan, _ = _parked_commit(str(path), entry_jump=False)
    assert plan.islands[0].flags & L.ISLAND_ENTRY_MASK == L.ISLAND_ENTRY_REL32
    guest.run()
    assert guest.outputs() == baseline(str(path), 2).outputs
