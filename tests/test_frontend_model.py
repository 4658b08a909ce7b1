"""Front-end cost model: hand-made fetch streams with known misses, native vs reference."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from codeisland.errors import InputError
from codeisland.frontend import FrontendParams, ReferenceFrontEnd, load_frontend_params
from codeisland.frontend.fetchtrace import FetchModel, library_path

needs_lib = pytest.mark.skipif(
    not library_path().is_file(), reason="make -C emulation/native has not been run"
)

TINY = FrontendParams(
    l1i_size=256,  # 4 lines, 2 ways, 2 sets
    l1i_ways=2,
    l1i_line=64,
    itlb4k_entries=2,
    itlb4k_ways=2,
    itlb2m_entries=1,
    itlb2m_ways=1,
    fetch_cycles=1,
    l1i_miss_cycles=10,
    itlb4k_miss_cycles=100,
    itlb2m_miss_cycles=50,
)


def native(params: FrontendParams, blocks, huge=()) -> dict[str, int]:
    m = FetchModel(params.native())
    for base, size in huge:
        m.add_huge_region(base, size)
    addrs = np.array([a for a, _ in blocks], dtype=np.uint64)
    sizes = np.array([s for _, s in blocks], dtype=np.uint32)
    m.feed(addrs, sizes)
    return m.totals()


def test_reference_known_misses_lru() -> None:
    # lines 0, 2, 4 all map to set 0 of a 2-way cache: the third evicts line 0 (LRU)
    ref = ReferenceFrontEnd(TINY)
    c = ref.feed([(0, 64), (128, 64), (0, 64), (256, 64), (128, 64), (0, 1)])
    # misses: 0, 128, (0 hit), 256 evicts 128 (LRU), 128 miss evicts 0, 0 miss
    assert c["l1i_misses"] == 5
    assert c["lines"] == 6
    assert c["itlb4k_misses"] == 1  # all in page 0
    assert c["cycles"] == 6 * 1 + 5 * 10 + 1 * 100


def test_block_spanning_lines_and_pages() -> None:
    ref = ReferenceFrontEnd(TINY)
    c = ref.feed([(4096 - 32, 64)])  # straddles a line and a page boundary
    assert c == {
        "lines": 2,
        "l1i_misses": 2,
        "itlb4k_misses": 2,
        "itlb2m_misses": 0,
        "cycles": 2 + 20 + 200,
    }


@needs_lib
def test_native_matches_hand_counts() -> None:
    blocks = [(0, 64), (128, 64), (0, 64), (256, 64), (128, 64), (0, 1), (4096 - 32, 64)]
    t = native(TINY, blocks)
    # the straddling block starts in page 0 (warm TLB) and ends in page 1
    assert (t["lines"], t["l1i_misses"], t["itlb4k_misses"]) == (8, 7, 2)


@needs_lib
def test_huge_region_uses_2m_tlb() -> None:
    huge = [(0x200000, 0x400000)]
    blocks = [(0x200000 + i * 4096, 16) for i in range(8)] + [(0x400000, 16), (0x200000, 16)]
    t = native(TINY, blocks, huge)
    ref = ReferenceFrontEnd(TINY, huge).feed(blocks)
    # 8 pages of one 2 MiB page: one 2M miss; then the second 2 MiB page evicts it (1 entry)
    assert t["itlb2m_misses"] == 3
    assert t["itlb4k_misses"] == 0
    assert {k: t[k] for k in ref} == ref


@needs_lib
@pytest.mark.parametrize("seed", range(6))
def test_native_equals_reference_on_random_streams(seed: int) -> None:
    rng = random.Random(seed)
    params = FrontendParams(
        l1i_size=1024,
        l1i_ways=rng.choice([1, 2, 4]),
        l1i_line=rng.choice([32, 64]),
        itlb4k_entries=8,
        itlb4k_ways=rng.choice([1, 2, 8]),
        itlb2m_entries=2,
        itlb2m_ways=rng.choice([1, 2]),
        l1i_miss_cycles=7,
        itlb4k_miss_cycles=11,
        itlb2m_miss_cycles=5,
    )
    huge = [(0x400000, 0x200000)]
    hot = [rng.randrange(0, 0x800000) for _ in range(40)]
    blocks = [(rng.choice(hot) + rng.randrange(0, 256), rng.randrange(1, 200)) for _ in range(3000)]
    t = native(params, blocks, huge)
    ref = ReferenceFrontEnd(params, huge).feed(blocks)
    assert {k: t[k] for k in ref} == ref


@needs_lib
def test_island_attribution_follows_ranges() -> None:
    m = FetchModel(TINY.native())
    # island 0 at its original place and at a relocated copy; island 1 elsewhere
    m.set_ranges([0x5000, 0x1000, 0x9000], [0x5100, 0x1100, 0x9040], [0, 0, 1])
    m.feed(
        np.array([0x1000, 0x5010, 0x9000, 0x9000, 0x7000], dtype=np.uint64),
        np.array([16, 32, 8, 8, 4], dtype=np.uint32),
    )
    c = m.island_counts(2)
    assert c["blocks"].tolist() == [2, 2]
    assert c["bytes"].tolist() == [48, 16]
    assert m.totals()["unattributed_blocks"] == 1


def test_params_validation_and_toml(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="l1i_line"):
        FrontendParams(l1i_line=48)
    bad = tmp_path / "p.toml"
    bad.write_text("[frontend]\nl1i_sizee = 3\n")
    with pytest.raises(InputError, match="unknown"):
        load_frontend_params(bad)
    good = tmp_path / "g.toml"
    good.write_text("[frontend]\nl1i_ways = 4\n")
    assert load_frontend_params(good).l1i_ways == 4
    with pytest.raises(InputError, match="not found"):
        load_frontend_params(tmp_path / "none.toml")
