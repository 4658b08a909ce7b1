"""The closed loop's target on smmemu reclaims retired copies: its hot area holds one island; a
keep-copies rollback retires that copy, and the next commit of the island gets the space back
through RECLAIM (the copy freed, the new one in the same place) -- at the window the schedule
says, or (schedule off) when the plan finds no room."""

from __future__ import annotations

import pytest

from codeisland.frontend.fetchtrace import library_path
from codeisland.paths import driver_binary, emulation_build_dir
from codeisland.plan import layout as L

pytestmark = pytest.mark.skipif(
    not (
        library_path().is_file()
        and driver_binary().is_file()
        and (emulation_build_dir() / "workloads" / "phase_daily.elf").is_file()
    ),
    reason="driver, workloads or native library not built",
)


@pytest.mark.parametrize("every", [0, 1], ids=["on-plan-error", "scheduled"])
def test_commit_gets_the_room_of_the_retired_copy_back(every: int) -> None:
    from codeisland.loop.emulated import EmulatedTarget

    probe = EmulatedTarget("phase_daily", window_instructions=100_000, sample_every=10_000)
    k, isl = max(enumerate(probe.islands), key=lambda p: p[1].size if p[1].name.startswith(
        "worker_") else 0)  # fmt: skip
    m = EmulatedTarget(
        "phase_daily", window_instructions=100_000, sample_every=10_000,
        hot_capacity=isl.size + isl.size // 2, reclaim_every=every,
    )  # fmt: skip
    m.run_window()
    first = m.commit([k])
    assert first.generation and first.islands == [k]
    m.run_window()
    m.rollback(first.generation)
    retired = [e for e in m.address_map() if e.flags & L.MAP_RETIRED]
    assert len(retired) == 1
    m.run_window()  # scheduled: RECLAIM at its start
    assert m.retired_bytes() == (0 if every else int(retired[0].size))
    second = m.commit([k])  # schedule off: no room beside the retired copy, RECLAIM, plan again
    assert second.generation and second.islands == [k]
    assert [s.command for s in m.rel.smis].count("RECLAIM") == 1
    assert m.describe()["reclaims_that_freed"] == 1
    entries = {int(e.generation): e for e in m.address_map()}
    assert entries[first.generation].flags == L.MAP_ROLLED_BACK  # freed, no longer retired
    assert int(entries[second.generation].cur) == int(retired[0].cur)
