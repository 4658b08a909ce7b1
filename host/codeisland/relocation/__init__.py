"""The relocation layer: what every host drives the SMM driver through.

    host driver (emulate, closed loop, profile record, qemu e2e, a Linux guest, a board)
        |  a Transport (+ its discovery of the mailbox) and a guest that runs the workload
        v
    selection   never_move(imap) / movable(imap): the one never-move list, from the image
    placement   plan_relocation(...): the planner's passes, Place aware of the live map
    protocol    Relocator: STAGE...STAGED -> COMMIT / ROLLBACK, one no-progress guard,
                one RetryPolicy, SAMPLE / STATS, a SmiReport per SMI
    reclaim     RECLAIM of retired copies proven unreachable: ReclaimReport, ReclaimSchedule
        |
    MailboxClient over the Transport  ->  the driver

/work/notes/relocation-layer-api.md (and README "How the pieces fit") say how a host plugs in.
"""

from .never_move import movable, never_move
from .placement import (
    LivePlace,
    PlacedCopy,
    RelocationPlan,
    live_originals,
    occupied,
    plan_relocation,
)
from .protocol import CommitOutcome, Relocator, RetryPolicy, SmiReport, StageOutcome
from .reclaim import ReclaimReport, ReclaimSchedule

__all__ = [
    "CommitOutcome",
    "LivePlace",
    "PlacedCopy",
    "ReclaimReport",
    "ReclaimSchedule",
    "RelocationPlan",
    "Relocator",
    "RetryPolicy",
    "SmiReport",
    "StageOutcome",
    "live_originals",
    "movable",
    "never_move",
    "occupied",
    "plan_relocation",
]
