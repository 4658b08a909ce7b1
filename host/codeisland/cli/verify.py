"""`codeisland verify IMAGE`: move every relocatable island in Python and re-decode the copy."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..analysis import analyze
from ..analysis.verify import DEFAULT_DELTA, verify
from .options import DISTANCE, INPUT_FILE, emit_check, json_option, load_base_option


@click.command("verify")
@click.argument("image", type=INPUT_FILE)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Check only this many islands, spread over the image.",
)
@click.option(
    "--delta",
    type=DISTANCE,
    default=hex(DEFAULT_DELTA),
    help="How far each copy moves (plus 16 bytes per island); 1..2**47-1.",
)
@load_base_option
@json_option
def command(
    image: Path, limit: int | None, delta: int, load_base: int | None, as_json: bool
) -> None:
    """Apply every island's fix-ups as the engine would and check all targets still resolve."""
    progress = sys.stderr.isatty()
    imap = analyze(image, progress=progress, load_base=load_base)
    report = verify(imap, limit=limit, delta=delta, progress=progress)
    verdict = (
        f"{len(report.mismatches)} mismatches, {report.errors} islands the engine would "
        f"refuse, in {image}"
    )
    emit_check(report, as_json, report.ok, verdict)
