"""The closed loop's target on smmemu reclaims retired copies: its hot area holds one island; a
keep-copies rollback retires that copy, and the next commit of the island gets the space back
through RECLAIM (the copy freed, the new one in the same place) -- when the loop asks for it, or
when the plan finds no room and its priorities pay the RECLAIM's price; never otherwise.  Every
RECLAIM SMI is charged."""

from __future__ import annotations

from typing import Any

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


def _one_island_machine() -> tuple[Any, int]:
    from codeisland.loop.emulated import EmulatedTarget

    probe = EmulatedTarget("phase_daily", window_instructions=100_000, sample_every=10_000)
    k, isl = max(enumerate(probe.islands), key=lambda p: p[1].size if p[1].name.startswith(
        "worker_") else 0)  # fmt: skip
    m = EmulatedTarget(
        "phase_daily", window_instructions=100_000, sample_every=10_000,
        hot_capacity=isl.size + isl.size // 2,
    )  # fmt: skip
    return m, k


@pytest.mark.parametrize("asked", [False, True], ids=["on-plan-error", "loop-asks"])
def test_commit_gets_the_room_of_the_retired_copy_back(asked: bool) -> None:
    m, k = _one_island_machine()
    m.run_window()
    first = m.commit([k])
    assert first.generation and first.islands == [k]
    m.run_window()
    m.rollback(first.generation)
    retired = [e for e in m.address_map() if e.flags & L.MAP_RETIRED]
    assert len(retired) == 1
    m.run_window()  # no RECLAIM of its own at a window
    assert m.retired_bytes() == int(retired[0].size)
    estimate = m.reclaim_price()  # before any RECLAIM: the scan of the whole arena
    assert estimate > 1_000_000
    if asked:
        r = m.reclaim()
        assert (r.reclaims, r.smis, r.bytes_freed) == (1, 1, int(retired[0].size))
        assert r.cycles > 1_000_000 and r.handler_insns_max > 1_000_000  # the 16 MiB scan
        assert m.retired_bytes() == 0
    second = m.commit([k])  # no priorities: the plan error RECLAIMs (unless done), plans again
    assert second.generation and second.islands == [k]
    assert second.reclaims == (0 if asked else 1)
    assert (second.cycles > 1_000_000) == (not asked)  # the RECLAIM charged to the commit
    assert [s.command for s in m.rel.smis].count("RECLAIM") == 1
    assert m.describe()["reclaims_that_freed"] == 1
    assert m.reclaim_price() == pytest.approx(estimate, rel=0.2)  # now the measured one
    entries = {int(e.generation): e for e in m.address_map()}
    assert entries[first.generation].flags == L.MAP_ROLLED_BACK  # freed, no longer retired
    assert int(entries[second.generation].cur) == int(retired[0].cur)


def test_a_plan_whose_priorities_do_not_pay_the_reclaim_is_refused() -> None:
    import numpy as np

    m, k = _one_island_machine()
    m.run_window()
    first = m.commit([k])
    m.run_window()
    m.rollback(first.generation)
    priorities = np.zeros(len(m.islands))
    priorities[k] = m.reclaim_price() / 2
    r = m.commit([k], priorities=priorities)
    assert r.generation == 0 and r.refused and "room" in r.refused
    assert [s.command for s in m.rel.smis].count("RECLAIM") == 0
    assert m.retired_bytes() > 0
