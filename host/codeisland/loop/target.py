"""What the closed loop needs from its target (LoopTarget), whichever runs the workload.

The loop sees: a window of observations (RIP samples as found, exact per-island counts and
modeled front-end cycles from the native hook, context), and three relocation verbs with the
driver's semantics: commit a set of islands as one new generation (staged over as many SMIs as
the per-SMI byte budget needs, then one commit SMI), roll back a generation (and every newer one,
as CI_CMD_ROLLBACK does), and read the address map (CI_CMD_STATS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..plan import layout as L
from ..profile.format import ProfiledIsland, WindowContext


@dataclass
class Observation(WindowContext):
    rips: np.ndarray  # sampled saved RIPs, untranslated (may lie in relocated copies)
    exact: np.ndarray  # executed blocks per island (native hook)
    mem: np.ndarray  # data accesses per island (sampled)
    island_cycles: np.ndarray  # modeled front-end cycles per island
    island_l1i_misses: np.ndarray  # modeled L1i misses per island
    island_itlb_misses: np.ndarray  # modeled iTLB misses per island (4 KiB or 2 MiB)
    frontend: dict[str, int]  # totals of the front-end model for the window


@dataclass
class RelocationResult:
    """What one commit or rollback cost, as the driver reports it (or the model estimates it)."""

    generation: int
    islands: list[int] = field(default_factory=list)
    bytes_staged: int = 0
    bytes_skipped: int = 0
    bytes_restored: int = 0
    fixups: int = 0
    smis: int = 0
    handler_insns_max: int = 0  # most handler instructions in one of these SMIs
    cycles: int = 0  # modeled cycles the SMIs took from the guest
    merged: list[list[int]] = field(default_factory=list)  # members committed as one island
    refused: str | None = None  # why nothing was committed (the planner's reason), if so
    reclaims: int = 0  # RECLAIM SMIs among `smis` (their cost is in `cycles`)
    bytes_freed: int = 0  # room of retired copies they freed


class LoopTarget(Protocol):
    islands: list[ProfiledIsland]
    fixups: np.ndarray
    hot_capacity: int
    max_generations: int

    def run_window(self) -> Observation: ...

    def peek_next(self) -> np.ndarray | None:
        """Samples per island of the next window, if this machine can replay it (oracle)."""

    def commit(
        self,
        islands: list[int],
        counts: np.ndarray | None = None,
        priorities: np.ndarray | None = None,
    ) -> RelocationResult:
        """Commit `islands` as one generation; `counts` (recent windows x islands) and
        `priorities` let a machine that plans with the planner merge co-executed neighbours."""

    def conflicts(self, counts: np.ndarray) -> list[tuple[int, list[int]]]:
        """(generation, members) of merged islands in place whose members' needs now differ."""

    def rollback(self, generation: int) -> RelocationResult: ...

    def address_map(self) -> list[L.MapEntry]: ...

    def retired_bytes(self) -> int:
        """Hot-region bytes held by copies a rollback kept (retired, reserved for the boot):
        room of hot_capacity that no later plan can use until a RECLAIM frees it."""

    def reclaim_price(self) -> float:
        """Modeled cycles one RECLAIM would take from the guest."""

    def reclaim(self) -> RelocationResult:
        """RECLAIM: free the retired copies no thread can reach (its cost in the result)."""

    def generations(self) -> list[tuple[int, list[int]]]:
        """Active generations, oldest first: (generation, island positions)."""
