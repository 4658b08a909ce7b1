"""The closed loop's target on a live native process: the agent's signals as SMIs.

The host side of `codeisland loop --guest native`: the machine is the process itself
(native/transport.py: its memory through /proc/PID/mem, the SMI a signal to it, answered by the
LD_PRELOAD agent running the engine over every thread's ucontext).  Its sample source is the
agent's SIGPROF ring: a window is the next `window_samples` samples the ring gets (fewer when
the program exits, or after `window_timeout_s` with none: a program blocked in a system call
takes no CPU-time samples).  Every sample is the program's own (one address space; the kernel's
time gives none), so all of them are observations.

Plans are the caller's (the planner in the agent's arena, PHYSICAL islands at the process's own
addresses) and go through the relocation layer's Relocator as on every host: STAGE, the SAMPLE
SMIs of the wait for a thread inside the plan's islands, COMMIT; ROLLBACK keeps copies (retired:
their room stays taken, see SampledTarget.reclaim_price).  A commit that found no thread inside
is kept (commit_attempts 1): nothing was at risk, and a retry would only retire a copy's room.
The samples read during the wait (its SAMPLE SMIs', biased toward the islands, and the
SIGPROF samples between them) are the wait's, not a window's (one ring position: the
Relocator's).

Measured: the samples, and per relocation request what the engine answered (bytes written,
contexts translated, status).  MODELED (no PMU): the front-end figures, from the samples
(loop/sampled.py, shared with the Linux guest).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..analysis import IslandMap
from ..errors import TransportError
from ..frontend.params import FrontendParams
from ..plan import layout as L
from ..plan.apply import copies_as_planned
from ..relocation import Relocator
from .sampled import Planner, SampledTarget, SampleTally
from .target import RelocationResult

POLL_S = 0.005  # between reads of the sample ring


class NativeTarget(SampledTarget):
    def __init__(
        self,
        rel: Relocator,
        imap: IslandMap,
        zone: tuple[int, int, bool],
        plan: Planner,
        alive: Callable[[], bool],
        *,
        read: Callable[[int, int], bytes] | None = None,
        params: FrontendParams | None = None,
        cpus: int = 1,
        window_samples: int = 40,
        window_timeout_s: float = 2.0,
        commit_attempts: int = 1,
        running: Callable[[], int] | None = None,
    ) -> None:
        self.window_samples, self.window_timeout_s = window_samples, window_timeout_s
        self.running = running  # the program's runnable threads now (/proc), if known
        self.copies_checked = 0  # commits whose copies were read back
        self.copies_ok = True  # every copy read back held what its plan says
        super().__init__(
            rel, imap, zone, plan, alive, read=read, params=params, cpus=cpus,
            commit_attempts=commit_attempts,
        )  # fmt: skip

    def commit(
        self,
        islands: list[int],
        counts: np.ndarray | None = None,
        priorities: np.ndarray | None = None,
    ) -> RelocationResult:
        """As every SampledTarget commits; then the copies read back against the plan (while
        the program runs: its memory goes with it)."""
        res = super().commit(islands, counts, priorities)
        if res.refused is None and self.last_plan is not None and self.read is not None:
            try:
                ok = copies_as_planned(self.last_plan.plan, self.imap.read, self.read)
            except TransportError:
                if self.alive():
                    raise
            else:
                self.copies_checked += 1
                self.copies_ok = self.copies_ok and ok
        return res

    def threads(self, tally: SampleTally) -> int:
        """Every SIGPROF sample is one thread's (cpu 0): the count comes from `running`."""
        return self.running() if self.running is not None else super().threads(tally)

    def is_program(self, s: L.Sample) -> bool:
        return s.cpl == 3  # a ucontext of the program's own threads, in user mode

    def _collect(self, tally: SampleTally) -> list[int]:
        """The ring's next window_samples samples (see the module docstring)."""
        rips: list[int] = []
        seen = 0
        deadline = time.monotonic() + self.window_timeout_s
        while True:
            ended = not self.alive()  # then the ring is read once more: its last samples
            try:
                got, self.rel.sample_head = self.rel.client.samples_since(self.rel.sample_head)
            except TransportError:
                if self.alive():
                    raise
                break  # its memory went with it
            for s in got:
                self.count_sample(s, tally, rips)
            seen += len(got)
            if ended or seen >= self.window_samples or time.monotonic() >= deadline:
                return rips
            time.sleep(POLL_S)
        return rips
