"""Mutated images (random byte flips, truncations): analysis and verify either succeed or raise
one InputError/PlanError line, never another exception (a traceback for the user)."""

from __future__ import annotations

import random

import pytest
from test_analysis_support import build_elf, build_pe

from codeisland.analysis import analyze
from codeisland.analysis.verify import verify
from codeisland.errors import CodeIslandError

CASES = 400


def mutate(rng: random.Random, base: bytes) -> bytes:
    data = bytearray(base)
    region = rng.choice([0x40, 0x400, len(data)])  # ELF/PE header, headers + tables, anywhere
    for _ in range(rng.choice([1, 2, 4, 8, 32])):
        data[rng.randrange(min(region, len(data)))] = rng.randrange(256)
    if rng.random() < 0.2:
        data = data[: rng.randrange(len(data))]
    return bytes(data)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("mut")
    elf = build_elf(tmp, extra=("-fasynchronous-unwind-tables", "-Wl,--eh-frame-hdr", "-g"))
    pe = build_pe(tmp, extra=("-funwind-tables",))
    return {"elf": elf.read_bytes(), "pe": pe.read_bytes()}


@pytest.mark.parametrize("kind", ["elf", "pe"])
def test_mutations_fail_cleanly(images: dict[str, bytes], kind: str) -> None:
    rng = random.Random(20261124)
    outcomes = {"ok": 0, "rejected": 0}
    for _ in range(CASES):
        data = mutate(rng, images[kind])
        try:
            verify(analyze(data))
            outcomes["ok"] += 1
        except CodeIslandError as exc:
            assert str(exc) and "\n" not in str(exc)
            outcomes["rejected"] += 1
    # both paths are exercised: some mutations are harmless, some are caught
    assert outcomes["ok"] > 10 and outcomes["rejected"] > 10, outcomes
