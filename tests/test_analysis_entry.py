"""Entry-patch safety for threads the handler cannot see (parked by a scheduler).

A 5-byte entry jump is preemption-safe only when it replaces exactly one instruction; clang's
-fpatchable-function-entry=5 gives every function one 5-byte NOP for that purpose.
"""

from __future__ import annotations

from pathlib import Path

from test_analysis_support import build_elf

from codeisland.analysis import analyze
from codeisland.paths import emulation_build_dir

SOURCE = """
__attribute__((noinline)) int leaf(int x) { return x * 3 + 1; }
__attribute__((noinline)) int twice(int x) { return leaf(x) + leaf(x + 1); }
int _start(void) { return twice(4); }
"""


def _safety(path: Path) -> dict[str, tuple[int, bool]]:
    imap = analyze(path)
    return {i.name: (i.entry_insn_len, i.entry_preemption_safe) for i in imap.islands}


def test_plain_prologue_is_not_preemption_safe(tmp_path: Path) -> None:
    got = _safety(build_elf(tmp_path, SOURCE, "plain"))
    # leaf starts with a 3-byte lea: a parked thread after it would sit inside the jump
    assert got["leaf"][0] < 5
    assert got["leaf"][1] is False


def test_patchable_entry_makes_every_function_safe(tmp_path: Path) -> None:
    got = _safety(build_elf(tmp_path, SOURCE, "patchable", ("-fpatchable-function-entry=5",)))
    assert got["leaf"] == (5, True)
    assert got["twice"] == (5, True)


def test_shipped_workloads_are_built_preemption_safe() -> None:
    for elf in sorted((emulation_build_dir() / "workloads").glob("*.elf")):
        imap = analyze(elf)
        unsafe = [i.name for i in imap.islands if i.relocatable and not i.entry_preemption_safe]
        assert unsafe == [], f"{elf.name}: {unsafe}"
