"""Merging adjacent islands into one contiguous island.

Only neighbours in address order can merge: an island is one contiguous block that the engine
copies as a whole, so "merged" means the byte range from the first member's start to the last
member's end (padding between members included), re-analysed as one block.  Calls and jumps
between members become internal (no fix-ups, the copy keeps them relative); the merged island's
entry is the first member's entry, so only that member gets the trampoline: calls into later
members keep reaching the original code (still valid) unless the plan re-points their call sites.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

from ..errors import PlanError
from .decode import Scanner
from .model import Island, IslandMap

MAX_GAP = 64  # bytes of padding allowed between merged neighbours


def merge(imap: IslandMap, members: Sequence[Island], scanner: Scanner | None = None) -> Island:
    """One island covering `members` (address-adjacent, in any order), re-analysed."""
    ordered = sorted(members, key=lambda i: i.start)
    if not ordered:
        raise PlanError("nothing to merge")
    for a, b in itertools.pairwise(ordered):
        if not 0 <= b.start - a.end <= MAX_GAP:
            raise PlanError(f"islands {a.name} and {b.name} are not neighbours; cannot merge")
    if len(ordered) == 1:
        return ordered[0]
    scanner = scanner or Scanner(imap.image)
    names = tuple(n for i in ordered for n in (i.members or (i.name,)))
    start, end = ordered[0].start - imap.bias, ordered[-1].end - imap.bias
    isl, _ = scanner.scan("+".join(names), start, end, "merged")
    return replace(isl.shifted(imap.bias), members=names)
