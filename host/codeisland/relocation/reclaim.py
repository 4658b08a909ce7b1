"""Reclaiming retired copies: what the driver's RECLAIM answered, and when a host asks.

A KEEP_COPIES rollback leaves each copy in place as valid code (MAP_RETIRED), because a thread
may still return into it from deep in its stack.  RECLAIM (plan.h, smm/core/reclaim.c) frees
the copies a conservative scan proves unreachable -- no saved RIP or GPR of any CPU and no
aligned word of any registered STACK region points into them -- by filling them with int3 and
dropping MAP_RETIRED, so the placement's `occupied()` no longer counts them and later plans may
land there.  Copies something still refers to stay, with the reason.

When: the host decides.  `ReclaimSchedule` is the one policy the hosts share: after a rollback
that retired copies, a RECLAIM at the `every`-th SMI boundary, then again after twice as many
boundaries each time copies were kept (a frame deep in a stack tends to stay a while, and each
scan reads every STACK word), until none is left; every = 0: never.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..plan import layout as L
from ..transport.mailbox import Reply

VERDICTS = {
    L.RECLAIM_FREED: "freed",
    L.RECLAIM_KEPT_REGISTER: "kept: a saved register points into it",
    L.RECLAIM_KEPT_MEMORY: "kept: a stack word points into it",
    L.RECLAIM_KEPT_PINNED: "kept: a kept newer copy may branch into it",
    L.RECLAIM_KEPT_SPACE: "kept: a virtual address space's stacks cannot be scanned",
}


def describe(entry: L.ReclaimEntry) -> str:
    """One retired copy's verdict, with the evidence that kept it."""
    what = VERDICTS.get(int(entry.verdict), f"verdict {entry.verdict}")
    where = int(entry.where)
    if entry.verdict == L.RECLAIM_KEPT_REGISTER:
        what += f" (CPU {where >> 32}, register {where & 0xFFFFFFFF})"
    elif entry.verdict == L.RECLAIM_KEPT_MEMORY:
        what += f" (word at {where:#x})"
    elif entry.verdict == L.RECLAIM_KEPT_PINNED:
        what += f" (generation {where})"
    return f"copy {int(entry.cur):#x}+{int(entry.size):#x} of generation {entry.generation}: {what}"


@dataclass
class ReclaimReport:
    """One RECLAIM SMI: every retired copy it considered and what became of it."""

    entries: list[L.ReclaimEntry] = field(default_factory=list)
    registers_scanned: int = 0
    words_scanned: int = 0
    bytes_freed: int = 0

    @classmethod
    def from_reply(cls, reply: Reply) -> ReclaimReport:
        info = reply.reclaim
        if info is None:
            return cls()
        return cls(list(reply.reclaim_entries), int(info.registers_scanned),
                   int(info.words_scanned), int(info.bytes_freed))  # fmt: skip

    @property
    def freed(self) -> list[L.ReclaimEntry]:
        return [e for e in self.entries if e.verdict == L.RECLAIM_FREED]

    @property
    def kept(self) -> list[L.ReclaimEntry]:
        return [e for e in self.entries if e.verdict != L.RECLAIM_FREED]

    def to_dict(self) -> dict[str, Any]:
        return {
            "freed": len(self.freed),
            "kept": len(self.kept),
            "bytes_freed": self.bytes_freed,
            "registers_scanned": self.registers_scanned,
            "words_scanned": self.words_scanned,
            "copies": [describe(e) for e in self.entries],
        }


@dataclass
class ReclaimSchedule:
    """After a rollback retired copies, RECLAIM at the `every`-th SMI boundary, then with the
    interval doubled (up to `every * 64`) while copies are kept; every = 0: never (the copies
    stay reserved for the boot)."""

    every: int = 4
    pending: bool = False  # the driver may hold retired copies
    _interval: int = 0
    _since: int = 0

    def retired(self) -> None:
        """A KEEP_COPIES rollback just retired copies."""
        self.pending, self._interval, self._since = self.every > 0, self.every, 0

    def due(self) -> bool:
        """Called once per idle SMI boundary: is this one a RECLAIM?"""
        if not self.pending:
            return False
        self._since += 1
        return self._since >= self._interval

    def answered(self, report: ReclaimReport) -> None:
        self.pending, self._since = bool(report.kept), 0
        self._interval = min(self._interval * 2, self.every * 64)
