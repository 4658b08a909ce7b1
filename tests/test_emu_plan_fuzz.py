"""Short run of the plan-mutation fuzzer against the real driver in the emulator, on both SW SMI
paths (SwDispatch2 child and root handler): mutated plans, re-sealed so they reach the
validator, sent as STAGE/COMMIT (some while another plan is pending mid-stage); every refused
one must leave memory (SMRAM included), registers and engine state as they were, every accepted
one must write only inside its regions and roll back exactly.  The long run is
scripts/fuzz_driver.py."""

from __future__ import annotations

import pytest
from test_emu_common import ensure_built

from codeisland.emulator.plan_fuzz import PlanFuzzer

CASES = 100  # per path; ~1 min together on an idle 2-core machine


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
