"""Analysis of small compiled ELF workloads, checked against objdump and the symbol table."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_analysis_support import build_elf, run_tool

from codeisland.analysis import analyze
from codeisland.analysis import model as M
from codeisland.plan import layout as L


@pytest.fixture(scope="module")
def workload_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_elf(tmp_path_factory.mktemp("elf"))


_LINE = re.compile(r"^\s*([0-9a-f]+):\s+((?:[0-9a-f]{2} )+)\s*(\S+)\s*(.*)$")
_FUNC = re.compile(r"^([0-9a-f]+) <(.+)>:$")


def objdump_refs(path: Path) -> dict[str, set[tuple[int, int]]]:
    """(instruction end, absolute target) of every rel32 branch and rip-relative operand that
    objdump shows, per function (the ground truth the fix-ups must match)."""
    if shutil.which("objdump") is None:
        pytest.skip("objdump is not installed")
    text = subprocess.run(
        ["objdump", "-d", "-w", str(path)], capture_output=True, text=True, check=True
    ).stdout
    out: dict[str, set[tuple[int, int]]] = {}
    func = None
    for line in text.splitlines():
        if m := _FUNC.match(line):
            func = m.group(2)
            out[func] = set()
            continue
        m = _LINE.match(line)
        if not m or func is None:
            continue
        addr, raw, _mnem, rest = int(m.group(1), 16), m.group(2).split(), m.group(3), m.group(4)
        end = addr + len(raw)
        if "(%rip)" in rest and "#" in rest:
            out[func].add((end, int(rest.split("#")[1].split()[0], 16)))
        elif (t := re.match(r"^([0-9a-f]+) <", rest)) and raw[0] in ("e8", "e9", "0f"):
            out[func].add((end, int(t.group(1), 16)))
    return out


def test_functions_come_from_symtab_with_exact_bounds(workload_elf: Path) -> None:
    imap = analyze(workload_elf)
    names = {i.name: i for i in imap}
    assert {"leaf", "middle", "chooser", "top", "_start"} <= set(names)
    nm = subprocess.run(
        ["nm", "-S", str(workload_elf)], capture_output=True, text=True, check=True
    ).stdout
    for line in nm.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[3] in names:
            addr, size, _kind, name = fields
            assert (names[name].start, names[name].size) == (int(addr, 16), int(size, 16))
            assert names[name].source == "symtab"


def test_fixups_match_objdump(workload_elf: Path) -> None:
    imap = analyze(workload_elf)
    truth = objdump_refs(workload_elf)
    checked = 0
    for isl in imap:
        ours = {(isl.start + f.offset + f.pc_bias, f.target) for f in isl.fixups}
        theirs = {(end, t) for end, t in truth[isl.name] if t not in isl}
        assert ours == theirs, isl.name
        checked += len(ours)
    assert checked >= 10


def test_limits_and_targets(workload_elf: Path) -> None:
    imap = analyze(workload_elf)
    chooser = imap["chooser"]
    assert chooser.reason == M.INDIRECT_JUMP  # the switch is a jump table
    middle = imap["middle"]
    assert middle.relocatable and middle.reason is None
    assert 0x20 in middle.targets  # the loop head (jne 1320 in objdump)
    assert imap["leaf"].start in middle.calls
    assert imap.call_graph()["middle"] == ["leaf"]
    assert imap.not_relocatable() == {M.INDIRECT_JUMP: 1}
    kinds = {f.kind for f in middle.fixups}
    assert kinds == {L.FIXUP_REL32, L.FIXUP_RIPREL32}


def test_rebased_moves_every_address(workload_elf: Path) -> None:
    imap = analyze(workload_elf)
    base = 0x7F3000000
    moved = imap.rebased(base)
    bias = base - imap.image.link_base
    assert moved.load_base == base
    for a, b in zip(imap, moved, strict=True):
        assert b.start == a.start + bias
        assert [f.target - bias for f in b.fixups] == [f.target for f in a.fixups]
        assert [f.offset for f in b.fixups] == [f.offset for f in a.fixups]
        assert moved.read(b.start, b.size) == imap.read(a.start, a.size)
    assert moved.rebased(imap.image.link_base).islands == imap.islands
    before = imap.callsites[imap["middle"].start]
    after = moved.callsites[moved["middle"].start]
    assert len(before) == 3  # calls from top, jumps from chooser's cases
    assert after == [(site + bias, op) for site, op in before]
    assert {op for _, op in after} == {0xE8, 0xE9}


def test_report_keys(workload_elf: Path) -> None:
    d = analyze(workload_elf).to_dict()
    for key in ("format", "islands", "relocatable", "not_relocatable", "fixups", "coverage"):
        assert key in d
    assert d["format"] == "elf64"
    assert d["islands"] == 5 and d["relocatable"] == 4
    assert 0.5 < d["coverage"]["ratio"] <= 1.0


def _bounds(imap) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    return [(i.start, i.size) for i in imap]


def test_stripped_elf_uses_eh_frame(tmp_path: Path) -> None:
    elf = build_elf(tmp_path, extra=("-fasynchronous-unwind-tables", "-Wl,--eh-frame-hdr"))
    stripped = tmp_path / "stripped.elf"
    run_tool("strip", "-o", str(stripped), str(elf))
    full, bare = analyze(elf), analyze(stripped)
    assert {i.source for i in full} == {"symtab"}
    assert {i.source for i in bare} == {"eh_frame"}
    assert _bounds(bare) == _bounds(full)  # FDE ranges are the exact function bounds
    assert [len(i.fixups) for i in bare] == [len(i.fixups) for i in full]


def test_elf_without_symtab_uses_dwarf(tmp_path: Path) -> None:
    elf = build_elf(tmp_path, extra=("-g",))
    nosym = tmp_path / "nosym.elf"
    run_tool("objcopy", "--strip-all", "--keep-section=.debug_*", str(elf), str(nosym))
    full, dwarf = analyze(elf), analyze(nosym)
    assert {i.source for i in dwarf} == {"dwarf"}
    assert [(i.name, i.start, i.size) for i in dwarf] == [(i.name, i.start, i.size) for i in full]


def test_stripped_without_unwind_falls_back_to_descent(workload_elf: Path, tmp_path: Path) -> None:
    stripped = tmp_path / "bare.elf"
    run_tool("strip", "-o", str(stripped), str(workload_elf))
    imap, full = analyze(stripped), analyze(workload_elf)
    assert {i.source for i in imap} == {"descent"}
    assert imap.image.entry == full["_start"].start
    # the entry and every direct callee are found at the symbol addresses
    assert {i.start for i in imap} == {i.start for i in full}
    assert imap.island_at(full["chooser"].start).reason == M.INDIRECT_JUMP  # type: ignore[union-attr]


def test_jump_table_copy_runs_like_the_original(workload_elf: Path) -> None:
    """A function with a jump table, moved with its fix-ups, returns what the original returns
    for every case: its table sends the copy's indirect jump into the original (kept intact)."""
    from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_MODE_64, Uc
    from unicorn.x86_const import UC_X86_REG_EDI, UC_X86_REG_RAX, UC_X86_REG_RSP

    from codeisland.plan.apply import relocated_bytes

    imap = analyze(workload_elf)
    assert imap["chooser"].reason == M.INDIRECT_JUMP
    allowed = imap.allowing_indirect_jumps()
    chooser = allowed["chooser"]
    assert chooser.relocatable and chooser.indirect_jumps == 1
    assert allowed["middle"] == imap["middle"]  # nothing else changes
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    top = max(s.end for s in imap.image.sections)
    uc.mem_map(0, (top + 0xFFF) & ~0xFFF)
    for sec in imap.image.sections:
        if sec.size and not sec.nobits:
            uc.mem_write(sec.addr, imap.read(sec.addr, sec.size))
    dst, stack, done = 0x4000_0000, 0x5000_0000, 0x6000_0000
    for base in (dst, stack, done):
        uc.mem_map(base, 0x10000)
    original = imap.read(chooser.start, chooser.size)
    uc.mem_write(dst, relocated_bytes(original, chooser.start, dst, chooser.fixup_records(0)))
    uc.mem_write(done, b"\xf4")
    in_original: list[int] = []
    uc.hook_add(
        UC_HOOK_CODE,
        lambda _uc, addr, _size, _data: in_original.append(addr),
        begin=chooser.start,
        end=chooser.end - 1,
    )

    def call(entry: int, x: int) -> int:
        uc.reg_write(UC_X86_REG_RSP, stack + 0x8000)
        uc.mem_write(stack + 0x8000, done.to_bytes(8, "little"))
        uc.reg_write(UC_X86_REG_EDI, x)
        uc.emu_start(entry, done)
        return int(uc.reg_read(UC_X86_REG_RAX)) & 0xFFFF_FFFF

    for x in range(-1, 9):
        want = call(chooser.start, x)
        in_original.clear()
        assert call(dst, x) == want, x
        if 0 <= x <= 6:  # a table case: the copy's jump went on in the original
            assert in_original, x
