"""Large pages only where the absolute address allows them: a region declaring 2 MiB pages
whose start (arena base + offset) is not 2 MiB aligned is reported and planned with 4 KiB."""

from __future__ import annotations

import pytest
from test_analysis_support import build_elf

from codeisland.analysis import analyze
from codeisland.planning.passes import Options
from codeisland.planning.planner import run_passes
from codeisland.planning.platform import (
    LARGE_PAGE,
    SMALL_PAGE,
    large_page_ranges,
    load_platform,
    page_mapping,
    parse_platform,
)

ALIGNED = 0x10000000
MISALIGNED = 0x3010000  # where the driver's arena landed before the emulator aligned it


@pytest.fixture(scope="module")
def imap(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return analyze(build_elf(tmp_path_factory.mktemp("elf")), load_base=MISALIGNED)


def test_page_mapping_keeps_large_pages_only_on_aligned_starts() -> None:
    hot = load_platform("emulated").region("hot")
    ok = page_mapping(hot, ALIGNED + 0x400000)
    assert ok.page_size == LARGE_PAGE and ok.warning is None
    bad = page_mapping(hot, MISALIGNED + 0x400000)
    assert bad.page_size == SMALL_PAGE and bad.declared == LARGE_PAGE
    assert bad.warning == (
        "region hot declares 0x200000 pages but starts at 0x3410000, not on a 0x200000 "
        "boundary: mapped and modeled with 4 KiB pages"
    )
    one_byte_off = page_mapping(hot, ALIGNED + 0x400000 + 0x1000)
    assert one_byte_off.page_size == SMALL_PAGE  # 4 KiB off is still not a large page


def test_a_large_page_region_whose_size_is_not_whole_pages_gets_small_pages() -> None:
    plat = parse_platform(
        {"region": [{"name": "h", "role": "hot", "base": 0, "size": 0x300000,
                     "page_size": LARGE_PAGE}]}
    )  # fmt: skip
    m = page_mapping(plat.region("h"), 0)
    assert m.page_size == SMALL_PAGE and m.warning and "size 0x300000" in m.warning


def test_large_page_ranges_of_the_emulated_platform() -> None:
    plat = load_platform("emulated")
    assert large_page_ranges(plat, ALIGNED) == ([(ALIGNED + 0x400000, LARGE_PAGE)], [])
    ranges, warnings = large_page_ranges(plat, MISALIGNED)
    assert ranges == [] and len(warnings) == 1 and "region hot" in warnings[0]


def test_plan_summary_reports_a_misaligned_large_page_region(imap) -> None:  # type: ignore[no-untyped-def]
    counts = {"leaf": [9.0, 8.0], "middle": [9.0, 8.0], "top": [1.0, 1.0]}
    result = run_passes(imap, load_platform("emulated"), counts, Options(arena_base=MISALIGNED))
    d = result.to_dict()
    assert d["environments"]["hot"]["page_size"] == LARGE_PAGE  # what the profile declares
    assert d["environments"]["hot"]["mapped_page_size"] == SMALL_PAGE  # what it gets
    assert len(d["warnings"]) == 1 and "0x3410000" in d["warnings"][0]
    assert any(p.startswith("environment: warning: region hot") for p in d["passes"])
    text = str(result)
    assert "environment hot: 0x3410000 +0x200000, page 0x1000" in text
    assert "  warning: region hot declares 0x200000 pages" in text
    aligned = run_passes(imap, load_platform("emulated"), counts, Options(arena_base=ALIGNED))
    assert aligned.to_dict()["warnings"] == []
    assert aligned.to_dict()["environments"]["hot"]["mapped_page_size"] == LARGE_PAGE


def test_an_offset_off_the_boundary_loses_large_pages_even_in_an_aligned_arena() -> None:
    plat = parse_platform(
        {"arena_size": 0x1000000,
         "region": [{"name": "hot", "role": "hot", "arena_offset": 0x401000, "size": LARGE_PAGE,
                     "page_size": LARGE_PAGE}]}
    )  # fmt: skip
    ranges, warnings = large_page_ranges(plat, ALIGNED)
    assert ranges == [] and "starts at 0x10401000" in warnings[0]
