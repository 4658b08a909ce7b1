"""`codeisland profile record|show`: record a sample profile from an emulated run; inspect one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from ..profile.format import Profile
from .options import (
    CPUS,
    CPUS_HELP,
    INPUT_FILE,
    INSTRUCTIONS,
    NAME,
    OUTPUT_FILE,
    THREADS,
    THREADS_HELP,
    WINDOWS,
    emit,
    json_option,
    seed_option,
)
from .outputs import OutputFile


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
    from ..profile.format import PROFILE_VERSION

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
    """Sample profiles (not platform profiles): per-island, per-window samples plus context."""


@command.command(name="record")
@click.option(
    "--workload", default="phase_daily", show_default=True, type=NAME, help="Workload to run."
)
@click.option(
    "--source",
    type=click.Choice(["emulator", "model", "qemu"]),
    default="emulator",
    show_default=True,
    help="emulator: the real driver on the emulated board; model: the benchmark's island-level "
    "model; qemu: SAMPLE SMIs on a running guest (--qemu DIR, e.g. `qemu run --guest linux`).",
)
@click.option(
    "--qemu",
    "qemu_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --source qemu: the workdir of a running `codeisland qemu run --guest linux`.",
)
@click.option(
    "--samples", default=16, show_default=True, type=click.IntRange(1, 100_000),
    help="With --source qemu: SAMPLE SMIs per window.",
)  # fmt: skip
@click.option("--cpus", default=2, show_default=True, type=CPUS, help=CPUS_HELP)
@click.option("--threads", default=2, show_default=True, type=THREADS, help=THREADS_HELP)
@click.option("--windows", default=8, show_default=True, type=WINDOWS, help="Windows to record.")
@click.option(
    "--window-instructions", default=400_000, show_default=True, type=INSTRUCTIONS,
    help="Guest instructions per window.",
)  # fmt: skip
@click.option(
    "--sample-every", default=20_000, show_default=True, type=INSTRUCTIONS,
    help="Guest instructions per SAMPLE SMI.",
)  # fmt: skip
@seed_option("Workload and SMI seed")
@click.option(
    "-o", "--output", type=OUTPUT_FILE, required=True, help="Where to write the sample profile."
)
@json_option
def record(
    workload: str,
    source: str,
    qemu_dir: Path | None,
    samples: int,
    cpus: int,
    threads: int,
    windows: int,
    window_instructions: int,
    sample_every: int,
    seed: int,
    output: Path,
    as_json: bool,
) -> None:
    """Record a sample-profile file from an emulated run, or from a running QEMU guest."""
    if (source == "qemu") != (qemu_dir is not None):
        raise UsageError("--source qemu and --qemu DIR go together")
    with OutputFile(output, what="profile") as tmp:
        if qemu_dir is not None:
            profile = _record_qemu(qemu_dir, windows, samples)
        elif source == "model":
            profile = _record_model(workload, windows, seed)
        else:
            from ..emulator.record import record_emulated

            profile = record_emulated(
                workload, cpus=cpus, threads=threads, windows=windows,
                window_instructions=window_instructions, sample_every=sample_every, seed=seed,
            )  # fmt: skip
        profile.save(tmp)
        summary = summarize(tmp)
    summary.path = output
    emit(summary, as_json)


def _record_model(workload: str, windows: int, seed: int) -> Profile:
    from ..loop.model_target import record_model
    from ..loop.workloads import WORKLOADS

    if workload not in WORKLOADS:
        raise UsageError(f"model workloads are {', '.join(WORKLOADS)}")
    return record_model(workload, windows, seed)


def _record_qemu(workdir: Path, windows: int, samples: int) -> Profile:
    from ..qemu import session
    from ..qemu.linux.profile import record_guest

    if not 1 <= samples <= 10_000:
        raise UsageError(f"--samples must be 1..10000 (got {samples})")
    with session.transport_from_workdir(workdir) as t:
        return record_guest(t, windows, samples)


@command.command(name="show")
@click.argument("path", type=INPUT_FILE)
@click.option(
    "--top", default=10, show_default=True, type=click.IntRange(1, 10_000),
    help="Show this many of the hottest islands.",
)  # fmt: skip
@json_option
def show(path: Path, top: int, as_json: bool) -> None:
    """Validate a sample-profile file and summarize it."""
    emit(summarize(path, top), as_json)
