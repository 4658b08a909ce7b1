"""The closed loop's target on a live Linux process: real SMIs, the process's own islands.

The host side of `codeisland loop --guest linux`: the machine is a mailbox transport (QEMU's
guest memory) and its sample source is the driver's SAMPLE, every CPU's saved RIP with its CR3
and CPL; the samples of this process (its CR3, CPL 3) are its observations.  Plans are the
planner's (the caller's `plan` builds them in the process's landing zone as USER islands of its
CR3) and go through the relocation layer's Relocator: STAGE over as many SMIs as the budget
needs, SAMPLEs until the process is seen inside the plan's islands, COMMIT (one that moved no
RIP is rolled back and placed again beside the retired copies, COMMIT_ATTEMPTS in all),
ROLLBACK of a generation (keep-copies: its copies are retired, their room stays reserved: the
engine never RECLAIMs copies in a process's address space), STATS for the address map.

Measured: the samples, and per relocation SMI what the driver answered (bytes written,
contexts translated, status).  Handler instructions cannot be counted under QEMU (None: the
loop's maximum stays 0 and the report says "not measured").  MODELED (no PMU in the guest): the
front-end figures, from the samples (loop/sampled.py, shared with the native host).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..analysis import IslandMap
from ..frontend.params import FrontendParams
from ..plan import layout as L
from ..relocation import Relocator
from .sampled import (
    COMMIT_ATTEMPTS,
    EXITED,
    Planner,
    ProgramEnded,
    SampledTarget,
    SampleTally,
)

ALIVE_EVERY = 8  # SAMPLEs between checks that the program still runs (the guest powers off
# a few seconds after it exited: a window must not run into that)

__all__ = ["EXITED", "LinuxTarget", "ProgramEnded"]


class LinuxTarget(SampledTarget):
    def __init__(
        self,
        rel: Relocator,
        imap: IslandMap,
        cr3: int,
        zone: tuple[int, int, bool],
        plan: Planner,
        alive: Callable[[], bool],
        *,
        contiguous: Callable[[int, int], bool] = lambda _a, _n: True,
        read: Callable[[int, int], bytes] | None = None,
        params: FrontendParams | None = None,
        cpus: int = 1,
        window_samples: int = 40,
        pause_s: float = 0.01,
        commit_attempts: int = COMMIT_ATTEMPTS,
    ) -> None:
        self.cr3 = cr3
        self.window_samples, self.pause_s = window_samples, pause_s
        super().__init__(
            rel, imap, zone, plan, alive, contiguous=contiguous, read=read, params=params,
            cpus=cpus, commit_attempts=commit_attempts,
        )  # fmt: skip

    def is_program(self, s: L.Sample) -> bool:
        return s.cpl == 3 and int(s.cr3) & L.CR3_ADDR_MASK == self.cr3

    def _collect(self, tally: SampleTally) -> list[int]:
        """window_samples SAMPLE SMIs, pause_s apart (fewer when the program ended)."""
        rips: list[int] = []
        for n in range(self.window_samples):
            if n and n % ALIVE_EVERY == 0 and not self.alive():
                break  # the window ends with what it saw; the next one says the program ended
            for s in self.rel.sample():
                self.count_sample(s, tally, rips)
            time.sleep(self.pause_s)
        return rips
