"""Run the planner's passes and describe the result for people (`str`) and machines (`to_dict`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..analysis import IslandMap
from ..plan.document import Plan
from .build import ReadBytes
from .passes import DEFAULT_PASSES, Options, Pass, PlanContext
from .platform import Platform
from .redirect import planned_redirect


@dataclass
class PlanResult:
    ctx: PlanContext

    @property
    def plan(self) -> Plan:
        assert self.ctx.plan is not None
        return self.ctx.plan

    def to_dict(self) -> dict[str, Any]:
        ctx, plan = self.ctx, self.plan
        graph = ctx.imap.call_graph()
        return {
            "plan_id": plan.plan_id,
            "digest": plan.digest,
            "total_size": plan.total_size,
            "platform": ctx.platform.name,
            "islands": [
                c.to_dict(
                    sorted({d for m in c.island.members for d in graph.get(m, [])}),
                    self.redirect_of(c.island.start),
                )
                for c in sorted(ctx.candidates, key=lambda c: c.dst or 0)
            ],
            "fixups": len(plan.fixups),
            "callsites": len(plan.callsites),
            "chunks": len(plan.chunks),
            "copy_bytes": plan.copy_bytes,
            "rejected": ctx.rejected,
            "environments": self.environments(),
            "hints": self.hints(),
            "warnings": self.warnings(),
            "passes": ctx.log,
        }

    def redirect_of(self, src: int) -> str:
        """How the plan sends callers to the copy of the island at `src`."""
        index = next(i for i, rec in enumerate(self.plan.islands) if rec.src == src)
        return planned_redirect(self.plan, index)

    def environments(self) -> dict[str, dict[str, Any]]:
        """Each destination region with what the plan put there."""
        out = {}
        for region in self.ctx.platform.destinations():
            placed = [c for c in self.ctx.candidates if c.environment == region.name]
            out[region.name] = {
                **region.to_dict(),
                "start": self.ctx.region_start(region),
                "mapped_page_size": self.ctx.page_mapping(region).page_size,
                "islands": len(placed),
                "bytes_used": sum(c.island.size for c in placed),
            }
        return out

    def warnings(self) -> list[str]:
        """Destination regions that cannot have the page size they declare at this arena."""
        found = (self.ctx.page_mapping(r).warning for r in self.ctx.platform.destinations())
        return [w for w in found if w is not None]

    def hints(self) -> list[dict[str, Any]]:
        """The platform's hint-only environments, plus CPU preferences of the regions used:
        an SMI handler moves code, it cannot pin threads to CPUs."""
        out = [h.to_dict() for h in self.ctx.platform.hints]
        for name, env in self.environments().items():
            if env["islands"] and env["preferred_cpus"]:
                out.append(
                    {
                        "name": f"{name}-affinity",
                        "kind": "cpu_affinity",
                        "description": f"run threads of the {env['islands']} islands in region "
                        f"{name} on CPUs {env['preferred_cpus']} (host scheduler)",
                        "cpus": env["preferred_cpus"],
                    }
                )
        return out

    def __str__(self) -> str:
        d = self.to_dict()
        lines = [
            f"plan {d['plan_id']} for platform {d['platform']}: {len(d['islands'])} islands, "
            f"{d['fixups']} fix-ups, {d['callsites']} call sites, {d['chunks']} chunks, "
            f"{d['copy_bytes']} bytes to copy, plan {d['total_size']} bytes "
            f"(digest {d['digest']:#018x})",
        ]
        for i in d["islands"]:
            lines.append(
                f"  {i['src']:#014x} -> {i['dst']:#014x} {i['size']:6d} B  {i['environment']:6s} "
                f"freq {i['frequency']:8.0f}  prio {i['priority']:.4g}  {i['name']}  "
                f"[{i['redirect']}]"
            )
        for name, why in list(d["rejected"].items())[:20]:
            lines.append(f"  not moved: {name}: {why}")
        for name, env in d["environments"].items():
            lines.append(
                f"  environment {name}: {env['start']:#x} +{env['size']:#x}, page "
                f"{env['mapped_page_size']:#x}, align {env['alignment']}, node {env['numa_node']}, "
                f"cache {env['cache']}: {env['islands']} islands, {env['bytes_used']} bytes"
            )
        for h in d["hints"]:
            lines.append(
                f"  hint (host side, SMM does not act on it): {h['name']}: {h['description']}"
            )
        lines += [f"  warning: {w}" for w in d["warnings"]]
        lines += [f"  pass {line}" for line in d["passes"]]
        return "\n".join(lines)


def run_passes(
    imap: IslandMap,
    platform: Platform,
    counts: dict[str, list[float]],
    options: Options | None = None,
    passes: Sequence[Pass] | None = None,
    verify_each: bool = True,
    read_bytes: ReadBytes | None = None,
) -> PlanResult:
    """Plan moves for `imap` on `platform`, verifying after each pass when asked; the islands'
    bytes come from `read_bytes` (a live machine) when given, else from the image."""
    ctx = PlanContext(imap, platform, counts, options or Options(), read_bytes=read_bytes)
    for p in passes if passes is not None else [cls() for cls in DEFAULT_PASSES]:
        p.run(ctx)
        if verify_each:
            p.verify(ctx)
    return PlanResult(ctx)
