"""`codeisland analyze IMAGE`: islands, fix-ups, limits, call graph and coverage of an image."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..analysis import IslandMap, analyze
from ..analysis.coexec import coexecution, load_counts
from .options import INPUT_FILE, emit, json_option, load_base_option


@dataclass
class AnalyzeReport:
    imap: IslandMap
    list_islands: bool = False
    weights: dict[tuple[str, str], float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = self.imap.to_dict(with_islands=self.list_islands)
        out["call_graph"] = {k: v for k, v in self.imap.call_graph().items() if v}
        if self.weights is not None:
            out["coexecution"] = [
                {"a": a, "b": b, "weight": w}
                for (a, b), w in sorted(self.weights.items(), key=lambda kv: -kv[1])
            ]
        return out

    def __str__(self) -> str:
        d = self.imap.to_dict()
        cov = d["coverage"]
        lines = [
            f"{d['path'] or 'image'}: {d['format']}, linked at {d['link_base']:#x}"
            + (f", loaded at {d['load_base']:#x}" if d["load_base"] != d["link_base"] else ""),
            f"  islands      {d['islands']} ({d['relocatable']} relocatable)",
            f"  fix-ups      {d['fixups']}   direct call sites {d['callsites']}   "
            f"call edges {d['call_edges']}",
            f"  coverage     {cov['island_bytes']} of {cov['code_bytes']} code bytes "
            f"({100 * cov['ratio']:.1f}%), by source "
            + ", ".join(f"{k} {v}" for k, v in sorted(cov["by_source"].items())),
        ]
        warning = self.imap.relocation_warning()
        if warning:
            lines.append(f"  warning: {warning}")
        if d["not_relocatable"]:
            lines.append("  not relocatable:")
            for reason, count in sorted(d["not_relocatable"].items(), key=lambda kv: -kv[1]):
                lines.append(f"    {count:6d}  {reason}")
        if self.list_islands:
            lines.append("  islands:")
            for isl in self.imap:
                state = "ok" if isl.relocatable else f"no: {isl.reason} {isl.detail}"
                lines.append(
                    f"    {isl.start:#014x} {isl.size:7d} {len(isl.fixups):5d} fx  "
                    f"{isl.name}  [{isl.source}] {state}"
                )
        if self.weights:
            lines.append("  co-execution (heaviest first):")
            for (a, b), w in sorted(self.weights.items(), key=lambda kv: -kv[1])[:20]:
                lines.append(f"    {w:10.0f}  {a} + {b}")
        return "\n".join(lines)


@click.command("analyze")
@click.argument("image", type=INPUT_FILE)
@load_base_option
@click.option("--islands", "list_islands", is_flag=True, help="List every island.")
@click.option(
    "--profile",
    type=INPUT_FILE,
    default=None,
    help="Per-window counts ({name: [counts]} or a sample profile) for co-execution weights.",
)
@json_option
def command(
    image: Path, load_base: int | None, list_islands: bool, profile: Path | None, as_json: bool
) -> None:
    """Find the islands of an ELF64 or PE32+ image: fix-ups, limits, call graph, coverage."""
    imap = analyze(image, progress=sys.stderr.isatty(), load_base=load_base)
    weights = coexecution(load_counts(profile)) if profile else None
    emit(AnalyzeReport(imap, list_islands, weights), as_json)
