"""Equivalence check: move islands in Python exactly as the engine would and re-decode the copy.

For every relocatable island (or a chosen subset), the copy's bytes are computed with
codeisland.plan.apply.relocated_bytes from the island's fix-ups, then the original and the copy
are decoded side by side.  Every instruction must decode to the same instruction, and every
branch target and RIP-relative effective address of the copy must equal the original's, with
addresses inside the island translated to the copy (the copy keeps its internal layout; outside
targets stay absolute).  A fix-up the analysis missed or got wrong shows up as a mismatch.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any

import iced_x86
from tqdm import tqdm

from ..errors import CodeIslandError
from ..plan.apply import relocated_bytes
from .model import Island, IslandMap

# destinations: far enough that every rel32 field changes, near enough to stay in reach, and
# not page aligned so that no alignment assumption hides a missing fix-up
DEFAULT_DELTA = 0x12_3450


@dataclass
class Mismatch:
    island: str
    offset: int
    what: str
    expected: int
    got: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "island": self.island,
            "offset": self.offset,
            "what": self.what,
            "expected": self.expected,
            "got": self.got,
        }

    def __str__(self) -> str:
        return (
            f"{self.island}+{self.offset:#x}: {self.what} expected {self.expected:#x}, "
            f"got {self.got:#x}"
        )


@dataclass
class VerifyReport:
    path: str | None
    format: str
    islands: int = 0
    skipped: int = 0  # not relocatable
    checked_instructions: int = 0
    checked_references: int = 0
    fixups_applied: int = 0
    errors: int = 0  # islands whose fix-ups the engine would reject
    mismatches: list[Mismatch] = field(default_factory=list)
    relocation_warning: str | None = None  # the image would run with unapplied relocations

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "islands": self.islands,
            "skipped": self.skipped,
            "checked_instructions": self.checked_instructions,
            "checked_references": self.checked_references,
            "fixups_applied": self.fixups_applied,
            "errors": self.errors,
            "mismatches": len(self.mismatches),
            "mismatch_list": [m.to_dict() for m in self.mismatches[:100]],
            "ok": self.ok,
            "relocation_warning": self.relocation_warning,
        }

    def __str__(self) -> str:
        lines = [
            f"{self.path or 'image'} ({self.format}): {self.islands} islands moved and re-decoded, "
            f"{self.skipped} not relocatable skipped",
            f"  {self.checked_instructions} instructions, {self.checked_references} branch/RIP "
            f"references, {self.fixups_applied} fix-ups applied",
            f"  {len(self.mismatches)} mismatches, {self.errors} islands rejected"
            + ("  -> OK" if self.ok else "  -> FAILED"),
        ]
        lines += [f"  {m}" for m in self.mismatches[:20]]
        if self.relocation_warning:
            lines.append(f"  warning: {self.relocation_warning}")
        return "\n".join(lines)


def _pick(islands: list[Island], limit: int | None) -> list[Island]:
    """All islands, or `limit` of them spread evenly over the address space."""
    if limit is None or limit >= len(islands):
        return islands
    step = len(islands) / max(limit, 1)
    return [islands[int(i * step)] for i in range(limit)]


def verify(
    imap: IslandMap, *, limit: int | None = None, delta: int = DEFAULT_DELTA, progress: bool = False
) -> VerifyReport:
    """Move each relocatable island by `delta` (plus 16 bytes per island) and compare."""
    report = VerifyReport(imap.image.path, imap.format)
    report.relocation_warning = imap.relocation_warning()
    movable = [i for i in imap if i.relocatable]
    report.skipped = len(imap) - len(movable)
    chosen = _pick(movable, limit)
    collecting = gc.isenabled()
    gc.disable()  # see analyze(): many long-lived objects, no cycles
    try:
        _check_all(imap, chosen, delta, progress, report)
    finally:
        if collecting:
            gc.enable()
    return report


def _check_all(
    imap: IslandMap, chosen: list[Island], delta: int, progress: bool, report: VerifyReport
) -> None:
    for n, isl in enumerate(
        tqdm(chosen, desc="verify", unit="island", disable=not progress, leave=False)
    ):
        _check_island(imap, isl, isl.start + delta + 16 * n, report)


def _check_island(imap: IslandMap, isl: Island, dst: int, report: VerifyReport) -> None:
    original = imap.read(isl.start, isl.size)
    try:
        copy = relocated_bytes(original, isl.start, dst, isl.fixup_records(0))
    except CodeIslandError as exc:
        report.errors += 1
        report.mismatches.append(Mismatch(isl.name, 0, f"engine would reject: {exc}", 0, 0))
        return
    report.islands += 1
    report.fixups_applied += len(isl.fixups)
    start, end = isl.start, isl.end

    def moved(addr: int) -> int:
        return addr - start + dst if start <= addr < end else addr

    a_dec = iced_x86.Decoder(64, original, ip=start)
    b_dec = iced_x86.Decoder(64, copy, ip=dst)
    a, b = iced_x86.Instruction(), iced_x86.Instruction()
    while a_dec.can_decode:
        a_dec.decode_out(a)
        b_dec.decode_out(b)
        off = a.ip - start
        report.checked_instructions += 1
        if a.code != b.code or a.len != b.len:
            report.mismatches.append(Mismatch(isl.name, off, "instruction changed", a.code, b.code))
            return
        if a.near_branch_target:
            report.checked_references += 1
            if b.near_branch_target != moved(a.near_branch_target):
                report.mismatches.append(
                    Mismatch(
                        isl.name,
                        off,
                        "branch target",
                        moved(a.near_branch_target),
                        b.near_branch_target,
                    )
                )
        if a.is_ip_rel_memory_operand:
            report.checked_references += 1
            if b.ip_rel_memory_address != moved(a.ip_rel_memory_address):
                report.mismatches.append(
                    Mismatch(
                        isl.name,
                        off,
                        "rip-relative address",
                        moved(a.ip_rel_memory_address),
                        b.ip_rel_memory_address,
                    )
                )
    for fx in isl.fixups:
        if fx.kind == 3:  # ABS64: the copy's pointer must point into the copy
            got = int.from_bytes(copy[fx.offset : fx.offset + 8], "little")
            report.checked_references += 1
            if got != moved(fx.target):
                report.mismatches.append(
                    Mismatch(isl.name, fx.offset, "abs64 pointer", moved(fx.target), got)
                )
