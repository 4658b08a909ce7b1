"""Short run of the plan-mutation fuzzer against the real driver in the emulator, on both SW SMI
paths (SwDispatch2 child and root handler): mutated plans, re-sealed so they reach the
validator, sent as STAGE/COMMIT (some while another plan is pending mid-stage); every refused
one must leave memory (SMRAM included), registers and engine state as they were, every accepted
one must write only inside its regions and roll back exactly.  And the check itself: a byte or
a register changed behind the driver's back is seen.  The long run is scripts/fuzz_driver.py."""

from __future__ import annotations

import itertools
import re

import pytest
from test_emu_common import ensure_built

from codeisland.emulator.plan_fuzz import AUDIT_EVERY, PAGE, PlanFuzzer
from smmemu import smram
from smmemu.machine import Machine, SmiRecord
from smmemu.memory import POOL_BASE

CASES = 150  # per path; ~10 s each on an idle 2-core machine


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    ensure_built()


@pytest.mark.parametrize("sw_dispatch", [True, False], ids=["swdispatch2", "root"])
def test_mutated_plans_change_nothing_when_refused_and_roll_back_exactly(
    sw_dispatch: bool,
) -> None:
    fuzzer = PlanFuzzer(seed=16, sw_dispatch=sw_dispatch)
    report = fuzzer.run(CASES)
    assert report.cases == CASES
    assert not report.findings, "\n".join(str(f) for f in report.findings)
    # the mutations reach deep: past the digest into the tables (many statuses), through the
    # stage (some accepted) and to commit-time refusals (a thread's stack outside the regions)
    refused = {s for s in report.statuses if s != "ok"}
    assert report.accepted > 0 and len(refused) >= 8
    assert report.reboots == 0  # every case started from the snapshot, none from a new boot


# Each SMI, after the driver's handlers: one byte of memory nobody owns, or a saved register,
# changed (a counter, so every SMI changes it again).
TAMPER = {
    "conventional": r"memory (changed|differs) at 0x111000\+0x1|wrote 0x111000\+0x1 outside",
    "smram": r"SMRAM changed at 0x84ffff8\+0x1",
    "driver-image": r"SMRAM changed at 0x81ffff8\+0x1",
    "register": r"CPU 1 registers changed|registers differ",
}


@pytest.mark.parametrize("where", sorted(TAMPER))
def test_the_fuzzer_sees_a_change_anywhere(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fuzzer = PlanFuzzer(seed=16)
    counter = itertools.count(1)
    dispatch = Machine._dispatch

    def tampering(self: Machine, record: SmiRecord) -> None:
        dispatch(self, record)
        n = next(counter)
        if where == "conventional":  # the bottom of the page pool: never allocated
            self.write(POOL_BASE + PAGE, bytes([n & 0xFF]))
        elif where == "smram":  # SMM pool above the driver's plan slots and undo pool
            self.write(smram.POOL_END - 8, bytes([n & 0xFF]))
        elif where == "driver-image":  # the image area past the driver's last section
            self.write(smram.IMAGE_END - 8, bytes([n & 0xFF]))
        else:
            self.cpus[1].map.write("rbx", n)

    monkeypatch.setattr(Machine, "_dispatch", tampering)
    report = fuzzer.run(3)
    assert report.reboots == 0  # a finding is undone by the snapshot, not a new boot
    assert report.findings and all(re.search(TAMPER[where], f.kind) for f in report.findings), (
        "\n".join(str(f) for f in report.findings)
    )
    # an accepted plan may write SMRAM (its engine state): only refused ones must not
    assert len(report.findings) >= (3 if where == "conventional" or where == "register"
                                    else 3 - report.accepted)  # fmt: skip


def test_a_write_the_tracker_cannot_see_is_found_by_the_audit_case(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Outside SMRAM only the pages the write tracker saw are compared; a write behind its back
    (straight into the board's RAM, like DMA) is seen by the next case that compares every
    mapped byte (every AUDIT_EVERY-th)."""
    fuzzer = PlanFuzzer(seed=16)
    counter = itertools.count(1)
    dispatch = Machine._dispatch

    def dma(self: Machine, record: SmiRecord) -> None:
        dispatch(self, record)
        self.memory.ram[POOL_BASE][PAGE] = next(counter) & 0xFF

    monkeypatch.setattr(Machine, "_dispatch", dma)
    report = fuzzer.run(3, first=AUDIT_EVERY - 1)
    assert [f.case for f in report.findings] == [AUDIT_EVERY], "\n".join(map(str, report.findings))
    found = report.findings[0].kind
    assert re.search(r"memory (changed|differs) at 0x111000\+0x1|wrote 0x111000", found)
