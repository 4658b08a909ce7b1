"""Differential runs of the real driver in the emulator: random (seed, SMI point, island,
layout, CPUs, SW SMI path) combinations, each compared byte for byte with the unrelocated run."""

from __future__ import annotations

import random

import pytest
from test_emu_common import LEAF_ISLANDS, MIXED_ISLANDS, baseline

from codeisland.emulator.differential import EmulateConfig, run_emulation

# every test here runs once per driver build (tests/conftest.py)
DRIVER_BUILDS = ("clang", "edk2-gcc5")

COMBOS = 10


def _combos() -> list[tuple[str, int, str, int, int, tuple[str, ...], bool]]:
    rng = random.Random(20261124)
    out = []
    for i in range(COMBOS):
        workload = ("graphsort", "hashtab", "lz")[i % 3]
        names = LEAF_ISLANDS[workload] + MIXED_ISLANDS[workload]
        picked = tuple(rng.sample(names, k=rng.randint(1, min(3, len(names)))))
        out.append(
            (
                workload,
                rng.randrange(1 << 30),
                rng.choice(("intel64", "amd64")),
                rng.choice((30_000, 70_000, 150_000)),
                2 + (i % 2),
                picked,
                i % 4 != 3,
            )
        )
    return out


@pytest.mark.parametrize("workload,seed,layout,smi_every,cpus,islands,sw_dispatch", _combos())
def test_relocated_run_matches_baseline(
    workload: str,
    seed: int,
    layout: str,
    smi_every: int,
    cpus: int,
    islands: tuple[str, ...],
    sw_dispatch: bool,
) -> None:
    cfg = EmulateConfig(
        workload=workload, cpus=cpus, threads=2, smi_every=smi_every, seed=seed,
        layout=layout, names=islands, sw_dispatch=sw_dispatch,
    )  # fmt: skip
    report = run_emulation(cfg, baseline(workload, 2))
    assert report.divergent_threads == []
    assert report.identical
    assert sorted(m["name"] for m in report.moved) == sorted(islands)
    assert report.relocations == len(islands)
    commands = [c.command for c in report.costs]
    assert commands.count("STAGE") >= 1 and commands.count("COMMIT") == 1
    assert all(c.status == "OK" for c in report.costs)
    # the forced commit lands with a thread inside an island being moved
    assert report.contexts_translated >= 1
    for t in report.translations:
        moved = next(m for m in report.moved if m["name"] == t.island)
        assert t.after - moved["dst"] == t.before - moved["src"]
    assert report.bytes_written == sum(m["size"] for m in report.moved)
    assert report.smm_instructions_max > 0


def test_return_address_translation_matches_baseline() -> None:
    cfg = EmulateConfig(
        workload="lz", cpus=2, threads=2, smi_every=60_000, seed=11, stack_slots=16,
        names=("match_len", "lz_compress"),
    )  # fmt: skip
    report = run_emulation(cfg, baseline("lz", 2))
    assert report.identical
    assert report.to_dict()["returns_translated"] == sum(c.returns_translated for c in report.costs)
    assert report.contexts_translated >= 1


@pytest.mark.parametrize("keep", [True, False])
def test_rollback_then_recommit_matches_baseline(keep: bool) -> None:
    cfg = EmulateConfig(
        workload="graphsort", cpus=2, threads=2, smi_every=50_000, seed=7, rollback_after=3,
        names=("sift_down", "merge_sort"), keep_copies=keep,
    )  # fmt: skip
    report = run_emulation(cfg, baseline("graphsort", 2))
    assert report.identical
    commands = [c.command for c in report.costs if c.command != "SAMPLE"]
    # the re-plan reads the driver's address map (STATS) so it is placed around live copies
    moves = [c for c in commands if c != "RECLAIM"]
    assert moves == ["STAGE", "COMMIT", "ROLLBACK", "STATS", "STAGE", "COMMIT"]
    # kept copies are reclaimed later (RECLAIM SMIs after the re-commit); restored ones need not
    assert ("RECLAIM" in commands) == keep
    assert commands[: len(moves)] == moves  # ... and only once the plan is committed again
    assert report.relocations == 4
    first, again = report.moved[:2], report.moved[2:]
    if keep:  # the default: the rolled-back copies stay valid (retired), the new ones go past
        end = max(m["dst"] + m["size"] for m in first)
        assert all(m["dst"] >= end for m in again)
    else:  # every byte restored: the space is free again and the same plan fits it
        assert [m["dst"] for m in again] == [m["dst"] for m in first]


def test_stage_over_several_smis_with_the_guest_running_between() -> None:
    names = ("lz_compress", "lz_decompress", "gen_text", "ci_memcpy", "memcpy", "ci_memset",
             "memset", "fnv1a", "ci_line")  # fmt: skip
    cfg = EmulateConfig(workload="lz", smi_every=40_000, seed=3, stage_budget=4096, names=names)
    report = run_emulation(cfg, baseline("lz", 2))
    assert report.identical
    steps = [(c.command, c.bytes_written) for c in report.costs if c.command != "SAMPLE"]
    total = sum(m["size"] for m in report.moved)
    assert total > 4096
    assert [c for c, _ in steps] == ["STAGE", "STAGE", "COMMIT"]
    assert all(n <= 4096 for _, n in steps) and sum(n for _, n in steps) == total
