"""Planning: from an IslandMap (and a profile, a platform) to a relocation Plan.

Mechanical last step, for callers that choose destinations themselves:

    from codeisland.planning import build_plan
    plan = build_plan(imap, [("hot_fn", dst), (island, dst2)], plan_id=7, chunk_size=1024,
                      entry="auto", stack_slots=0, callsites=False, read_bytes=None)
    plan.to_bytes()  # the binary document of plan.h

`build_plan` derives every record from the analysed islands: fix-ups sorted by (island, offset),
chunks tiling each island with digests of the bytes `plan.apply.relocated_bytes` computes,
internal branch targets, entry REL32 when it reaches (else ABS64), one context rule per island
(saved RIPs, plus return addresses when stack_slots > 0), optional call-site re-pointing.

The whole planner (what `codeisland plan build` runs):

    from codeisland.planning.planner import run_passes
    from codeisland.planning.platform import load_platform
    from codeisland.planning.passes import Options
    result = run_passes(imap, load_platform("emulated"), counts, Options(arena_base=...))
    result.plan, str(result), result.to_dict()

Passes (planning.passes): select -> merge -> split -> prioritise -> environment -> order ->
place -> build, each with a verify step.  Platform profiles (planning.platform) are TOML files;
host/codeisland/data/platforms/emulated.toml documents the emulated arena layout.
"""

from __future__ import annotations

from .build import build_plan, entry_kind

__all__ = ["build_plan", "entry_kind"]
