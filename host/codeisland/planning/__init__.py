"""Planning: from an IslandMap (and a profile, a platform) to a relocation Plan.

    from codeisland.planning import build_plan
    plan = build_plan(imap, [("hot_fn", dst), (island, dst2)], plan_id=7, chunk_size=1024,
                      entry="auto", stack_slots=0, callsites=False, read_bytes=None)
    plan.to_bytes()  # the binary document of plan.h

`build_plan` is the mechanical last step (records, fix-ups, chunk digests of the relocated bytes,
internal targets, entry kind REL32 when it reaches else ABS64, context rules).
"""

from __future__ import annotations

from .build import build_plan, entry_kind

__all__ = ["build_plan", "entry_kind"]
