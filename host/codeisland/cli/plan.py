"""`codeisland plan build …` (islands + profile + platform -> plan file) and `plan show PLAN`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..analysis import analyze
from ..analysis.coexec import load_counts
from ..documents import load_json
from ..errors import InputError
from ..plan import layout as L
from ..plan.document import Plan
from ..planning.passes import Options
from ..planning.planner import run_passes
from ..planning.platform import load_platform
from .options import (
    ADDRESS,
    INPUT_FILE,
    KEEP_COPIES_HELP,
    OUTPUT_FILE,
    emit,
    json_option,
    load_base_option,
)
from .outputs import OutputFile


@click.group("plan")
def command() -> None:
    """Build relocation plans and decode plan files."""


@command.command("build")
@click.argument("image", type=INPUT_FILE)
@click.option(
    "--platform",
    "platform_spec",
    default="emulated",
    show_default=True,
    help="Platform profile: a TOML path or a shipped name.",
)
@click.option(
    "--profile",
    type=INPUT_FILE,
    default=None,
    help="Per-window counts ({name: [counts]} or a sample profile).",
)
@click.option(
    "--island",
    "names",
    multiple=True,
    help="Move this island (repeatable); without a profile at least one is needed.",
)
@click.option(
    "-o",
    "--out",
    type=OUTPUT_FILE,
    required=True,
    help="Where to write the binary plan.",
)
@load_base_option
@click.option(
    "--arena-base",
    type=ADDRESS,
    default=None,
    help="Address of the driver's arena (default: the platform's arena_base).",
)
@click.option(
    "--plan-id", type=click.IntRange(0, 2**32 - 1), default=1, show_default=True,
    help="The plan's id (the driver reports it per generation).",
)  # fmt: skip
@click.option(
    "--max-islands", type=click.IntRange(1, L.MAX_ISLANDS), default=L.MAX_ISLANDS,
    show_default=True, help="Move at most this many islands.",
)  # fmt: skip
@click.option(
    "--chunk-size", type=click.IntRange(1, L.MAX_CHUNK_SIZE), default=1024, show_default=True,
    help="Bytes per differential copy chunk (the unit the driver stages and compares).",
)  # fmt: skip
@click.option(
    "--stack-slots",
    type=click.IntRange(0, L.MAX_STACK_SLOTS),
    default=0,
    show_default=True,
    help="Also translate return addresses found in this many 8-byte slots of each stack.",
)
@click.option("--no-callsites", is_flag=True, help="Do not re-point direct call sites.")
@click.option(
    "--keep-copies/--restore-copies",
    default=True,
    show_default=True,
    help=KEEP_COPIES_HELP,
)
@click.option(
    "--no-parked-threads",
    is_flag=True,
    help="Every thread of the moved code is on a CPU during the SMI (single-threaded "
    "firmware): entry jumps are then safe on any island.",
)
@click.option(
    "--priorities",
    type=INPUT_FILE,
    default=None,
    help="JSON {island name: priority} from the predictor (default: samples per byte).",
)
@json_option
def build_cmd(
    image: Path,
    platform_spec: str,
    profile: Path | None,
    names: tuple[str, ...],
    out: Path,
    load_base: int | None,
    arena_base: int | None,
    plan_id: int,
    max_islands: int,
    chunk_size: int,
    stack_slots: int,
    no_callsites: bool,
    keep_copies: bool,
    no_parked_threads: bool,
    priorities: Path | None,
    as_json: bool,
) -> None:
    """Select, merge/split, prioritise, place (rel32 reach, capacity) and encode a plan."""
    if profile is None and not names:
        raise click.UsageError("give --profile or at least one --island")
    platform_path = Path(platform_spec) if Path(platform_spec).is_file() else None
    inputs = (image, profile, priorities, platform_path)
    with OutputFile(out, inputs=inputs, what="plan") as tmp:
        platform = load_platform(platform_spec)
        counts = load_counts(profile) if profile else {n: [1.0] for n in names}
        options = Options(
            names=names,
            max_islands=max_islands,
            plan_id=plan_id,
            chunk_size=chunk_size,
            stack_slots=stack_slots,
            callsites=not no_callsites,
            keep_copies=keep_copies,
            parked_threads=not no_parked_threads,
            arena_base=arena_base,
            priorities=load_priorities(priorities) if priorities else {},
            # without a profile nothing says two islands run together: move exactly those named
            merge_ratio=0.5 if profile else float("inf"),
        )
        imap = analyze(image, progress=sys.stderr.isatty(), load_base=load_base)
        result = run_passes(imap, platform, counts, options)
        tmp.write_bytes(result.plan.to_bytes())
    emit(result, as_json)


def load_priorities(path: Path) -> dict[str, float]:
    doc = load_json(path, "priorities")
    # load_json refuses NaN and infinities: a priority orders islands, NaN orders nothing
    if not isinstance(doc, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in doc.values()
    ):
        raise InputError(f"priorities {path} must be a JSON object {{island name: number}}")
    return {str(k): float(v) for k, v in doc.items()}


class PlanView:
    def __init__(self, plan: Plan, path: Path) -> None:
        self.plan, self.path = plan, path

    def to_dict(self) -> dict[str, Any]:
        p = self.plan
        return {
            "path": str(self.path),
            "plan_id": p.plan_id,
            "digest": p.digest,
            "total_size": p.total_size,
            "flags": p.flags,
            "keep_copies": p.keep_copies,
            "islands": [r.as_dict() for r in p.islands],
            "fixups": [r.as_dict() for r in p.fixups],
            "callsites": [r.as_dict() for r in p.callsites],
            "chunks": [r.as_dict() for r in p.chunks],
            "targets": [r.as_dict() for r in p.targets],
            "rules": [r.as_dict() for r in p.rules],
        }

    def __str__(self) -> str:
        p = self.plan
        entry = {
            L.ISLAND_ENTRY_NONE: "none",
            L.ISLAND_ENTRY_REL32: "rel32",
            L.ISLAND_ENTRY_ABS64: "abs64",
        }
        kinds = {L.FIXUP_REL32: "rel32", L.FIXUP_RIPREL32: "riprel32", L.FIXUP_ABS64: "abs64"}
        lines = [
            f"{self.path}: plan {p.plan_id}, {p.total_size} bytes, digest {p.digest:#018x}",
            f"  {len(p.islands)} islands, {len(p.fixups)} fix-ups, {len(p.callsites)} call "
            f"sites, {len(p.chunks)} chunks ({p.copy_bytes} bytes), {len(p.targets)} "
            f"targets, {len(p.rules)} rules",
            "  on rollback: "
            + ("copies stay in place (retired)" if p.keep_copies else "every byte is restored"),
        ]
        for n, isl in enumerate(p.islands):
            fx = [f for f in p.fixups if f.island == n]
            by_kind = {k: sum(1 for f in fx if f.kind == k) for k in kinds}
            lines.append(
                f"  [{n}] id {isl.id}: {isl.src:#x} -> {isl.dst:#x} size {isl.size} entry "
                f"{entry.get(isl.flags & L.ISLAND_ENTRY_MASK, '?')}; fix-ups "
                + (", ".join(f"{kinds[k]} {v}" for k, v in by_kind.items() if v) or "none")
            )
        for r in p.rules:
            lines.append(
                f"  rule island {r.island}: flags {r.flags:#x} stack slots {r.stack_slots}"
            )
        return "\n".join(lines)


@command.command("show")
@click.argument("plan", type=INPUT_FILE)
@json_option
def show_cmd(plan: Path, as_json: bool) -> None:
    """Decode a plan file; a corrupt one is rejected with one line."""
    try:
        raw = plan.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {plan}: {exc.strerror or exc}") from None
    emit(PlanView(Plan.from_bytes(raw), plan), as_json)
