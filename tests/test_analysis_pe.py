"""Analysis of PE32+ images: our own EFI driver build, and Debian OVMF's stripped drivers."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_analysis_support import build_pe, ovmf_drivers

from codeisland.analysis import analyze
from codeisland.analysis import model as M
from codeisland.analysis.verify import verify


@pytest.fixture(scope="module")
def workload_pe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pe(tmp_path_factory.mktemp("pe"))


@pytest.fixture(scope="module")
def drivers() -> dict[str, bytes]:
    return ovmf_drivers()


def test_stripped_pe_found_by_descent(workload_pe: Path) -> None:
    imap = analyze(workload_pe)
    assert imap.format == "pe32+"
    assert imap.image.link_base == 0x180000000
    entry = imap.island_at(imap.image.entry or 0)
    assert entry is not None and entry.start == imap.image.entry and entry.source == "descent"
    # every function the entry reaches by direct calls is found, and the call graph links them
    reached = {entry.name}
    todo = [entry]
    while todo:
        isl = todo.pop()
        for target in isl.calls:
            callee = imap.island_at(target)
            assert callee is not None and callee.start == target
            if callee.name not in reached:
                reached.add(callee.name)
                todo.append(callee)
    assert len(reached) >= 4  # efi_main -> top -> middle -> leaf, chooser
    assert any(i.reason == M.INDIRECT_JUMP for i in imap)  # the switch's jump table
    assert verify(imap).ok


def test_ovmf_smm_drivers_analyse_and_verify(drivers: dict[str, bytes]) -> None:
    smm = {n: pe for n, pe in drivers.items() if n.startswith("smm:")}
    assert "smm:PiSmmCpuDxeSmm" in smm and len(smm) >= 6
    checked = 0
    for name, pe in smm.items():
        imap = analyze(pe)
        d = imap.to_dict()
        assert d["format"] == "pe32+" and d["islands"] > 5, name
        # padding zeros are not code: descent stops before them, coverage ignores them
        assert 0.85 < d["coverage"]["ratio"] <= 1.0, name
        assert sum(d["not_relocatable"].values()) + d["relocatable"] == d["islands"]
        report = verify(imap)
        assert report.ok, (name, [str(m) for m in report.mismatches[:3]])
        checked += report.checked_instructions
    assert checked > 10_000


def test_ovmf_large_dxe_drivers_subset(drivers: dict[str, bytes]) -> None:
    big = sorted(drivers.items(), key=lambda kv: -len(kv[1]))[:3]
    for name, pe in big:
        imap = analyze(pe)
        report = verify(imap, limit=150)
        assert report.ok and report.islands == 150, name
        # data decoded as code is kept out of relocation, with a reason
        assert imap.not_relocatable().get(M.OUTSIDE_IMAGE, 0) >= 0


def test_rebased_pe_reads_relocated_pointers(drivers: dict[str, bytes]) -> None:
    pe = drivers["smm:PiSmmCpuDxeSmm"]
    imap = analyze(pe)
    sites = imap.image.abs_pointer_sites
    assert sites, "PiSmmCpuDxeSmm has base relocations"
    moved = imap.rebased(0x7E000000)
    bias = 0x7E000000 - imap.image.link_base
    site = sites[0]
    before = int.from_bytes(imap.read(site, 8), "little")
    after = int.from_bytes(moved.read(site + bias, 8), "little")
    assert after == before + bias


def test_pdata_gives_function_bounds(tmp_path: Path) -> None:
    pe = build_pe(tmp_path, extra=("-funwind-tables",))
    imap = analyze(pe)
    ranges = imap.image.unwind_ranges
    assert len(ranges) >= 3
    by_start = {i.start: i for i in imap}
    for start, end in ranges:
        assert by_start[start].source == "pdata" and by_start[start].end == end
    assert verify(imap).ok


SELF_REF_C = r"""
__attribute__((noinline)) void *selfref(int x) { return x ? (void *)selfref : (void *)0; }
unsigned long long efi_main(void) { return (unsigned long long)selfref(1); }
"""


def test_abs64_pointer_into_the_island(tmp_path: Path) -> None:
    """-mcmodel=large: `movabs rcx, selfref` inside selfref is a DIR64 base relocation that
    points into its own island, hence an ABS64 fix-up; rebasing moves the pointer too."""
    from codeisland.plan import layout as L
    from codeisland.planning import build_plan

    pe = build_pe(tmp_path, source=SELF_REF_C, name="selfref", extra=("-mcmodel=large",))
    imap = analyze(pe).rebased(0x7E000000)
    isl = imap.islands[0]
    (fx,) = isl.fixups
    assert (fx.kind, fx.pc_bias, fx.target) == (L.FIXUP_ABS64, 0, isl.start)
    assert int.from_bytes(imap.read(isl.start + fx.offset, 8), "little") == 0x7E001000
    report = verify(imap)
    assert report.ok and report.islands == 1
    dst = 0x7E400000
    plan = build_plan(imap, [(isl, dst)], parked_threads=False)  # nothing calls it directly
    assert plan.fixups[0].kind == L.FIXUP_ABS64
    final = plan.chunks[0]
    from codeisland.plan.apply import relocated_bytes
    from codeisland.plan.digest import digest64

    moved = relocated_bytes(imap.read(isl.start, isl.size), isl.start, dst, isl.fixup_records(0))
    assert int.from_bytes(moved[fx.offset : fx.offset + 8], "little") == dst
    assert final.digest == digest64(moved[: final.length])


def test_coff_symbols_name_the_islands(tmp_path: Path) -> None:
    pe = build_pe(tmp_path, extra=("-funwind-tables",), link_extra=("-debug:symtab",))
    imap = analyze(pe)
    names = {i.name for i in imap}
    assert {"leaf", "middle", "chooser", "top", "efi_main"} <= names
    assert {s.source for s in imap.image.symbols} == {"coff"}
    assert imap["efi_main"].start == imap.image.entry
    assert imap["chooser"].reason == M.INDIRECT_JUMP
    assert imap.call_graph()["middle"] == ["leaf"]


def test_exports_name_the_islands(tmp_path: Path) -> None:
    pe = build_pe(tmp_path, link_extra=("-export:top", "-export:middle"))
    imap = analyze(pe)
    assert [(s.name, s.source) for s in imap.image.symbols] == [
        ("middle", "export"),
        ("top", "export"),
    ]
    assert imap["top"].source == "descent" and imap["middle"].start in imap["top"].calls
