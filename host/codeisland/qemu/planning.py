"""What the QEMU e2e checks a committed plan against: per island, the bytes its copy must hold
after STAGE (computed on the host from the island's live bytes and its fix-ups) and the entry
bytes COMMIT overwrites (which ROLLBACK must restore).

Placement and the protocol are the relocation layer's (codeisland.relocation); this module
only predicts, independently of the driver, what a correct apply leaves in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..analysis import IslandMap
from ..plan import layout as L
from ..plan.apply import relocated_bytes
from ..relocation import RelocationPlan

Read = Callable[[int, int], bytes]


@dataclass
class ExpectedCopy:
    name: str
    src: int
    dst: int
    final: bytes  # what the destination must hold after STAGE
    original_entry: bytes  # the bytes COMMIT overwrites at src (restored by ROLLBACK)


def expected_copies(imap: IslandMap, plan: RelocationPlan, read: Read) -> list[ExpectedCopy]:
    out = []
    for index, p in enumerate(plan.placed):
        isl = imap[p.name]
        final = relocated_bytes(
            read(isl.start, isl.size), isl.start, p.dst, isl.fixup_records(index)
        )
        out.append(ExpectedCopy(p.name, p.src, p.dst, final, read(isl.start, L.ENTRY_ABS64_LEN)))
    return out
