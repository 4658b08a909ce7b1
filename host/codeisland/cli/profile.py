"""`codeisland profile record|show`: record a profile from an emulated run; inspect one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from .options import emit, json_option


@dataclass
class ProfileSummary:
    path: Path
    doc: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.doc

    def __str__(self) -> str:
        d = self.doc
        lines = [
            f"{self.path}: codeisland profile v{d['version']}, {d['windows']} windows, "
            f"{d['islands']} islands, source {d['source']}",
            f"samples {d['samples']} (unattributed {d['unattributed']}), "
            f"exact block counts: {'yes' if d['exact'] else 'no'}",
            "hottest islands (samples):",
        ]
        for row in d["hottest"]:
            lines.append(f"  {row['name']:<32} {row['start']:#014x} {row['samples']:>8}")
        return "\n".join(lines)


def summarize(path: Path, top: int = 10) -> ProfileSummary:
    from ..profile.format import PROFILE_VERSION, Profile

    p = Profile.load(path)
    counts = p.counts("samples").sum(axis=0)
    order = counts.argsort()[::-1][:top]
    return ProfileSummary(
        path,
        {
            "version": PROFILE_VERSION,
            "windows": len(p.windows),
            "islands": len(p.islands),
            "source": p.source,
            "samples": int(counts.sum()),
            "unattributed": sum(w.unattributed for w in p.windows),
            "exact": all(w.exact is not None for w in p.windows) and bool(p.windows),
            "hottest": [
                {"name": p.islands[i].name, "start": p.islands[i].start, "samples": int(counts[i])}
                for i in order
                if counts[i] > 0
            ],
        },
    )


@click.group(name="profile")
def command() -> None:
    """Profiles: per-island, per-window samples plus context (versioned, validated files)."""


@command.command(name="record")
@click.option("--workload", default="phase_daily", show_default=True, help="Workload to run.")
@click.option(
    "--source",
    type=click.Choice(["emulator", "model"]),
    default="emulator",
    show_default=True,
    help="emulator: the real driver in smmemu; model: the benchmark's island-level model.",
)
@click.option("--cpus", default=2, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--windows", default=8, show_default=True)
@click.option("--window-instructions", default=400_000, show_default=True)
@click.option("--sample-every", default=20_000, show_default=True, help="Instructions per SAMPLE.")
@click.option("--seed", default=1, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@json_option
def record(
    workload: str,
    source: str,
    cpus: int,
    threads: int,
    windows: int,
    window_instructions: int,
    sample_every: int,
    seed: int,
    output: Path,
    as_json: bool,
) -> None:
    """Record a profile file from an emulated run."""
    if windows < 1 or window_instructions < 1 or sample_every < 1:
        raise UsageError("--windows, --window-instructions and --sample-every must be positive")
    if source == "model":
        from ..bench.workloads import WORKLOADS
        from ..profile.record import record_model

        if workload not in WORKLOADS:
            raise UsageError(f"model workloads are {', '.join(WORKLOADS)}")
        profile = record_model(workload, windows, seed)
    else:
        from ..profile.record import record_emulated

        profile = record_emulated(
            workload,
            cpus=cpus,
            threads=threads,
            windows=windows,
            window_instructions=window_instructions,
            sample_every=sample_every,
            seed=seed,
        )
    try:
        profile.save(output)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from None
    emit(summarize(output), as_json)


@command.command(name="show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--top", default=10, show_default=True)
@json_option
def show(path: Path, top: int, as_json: bool) -> None:
    """Validate a profile file and summarize it."""
    emit(summarize(path, top), as_json)
