"""Where functions are: symbols, unwind tables, then recursive descent for the rest.

Order of trust: sized symbols (symtab, DWARF, dynsym) first, then unwind ranges (.eh_frame FDEs,
PE .pdata) for what symbols leave uncovered; both give exact bounds.  Everything else is found by
recursive descent from seeds: the entry point, unsized symbols and exports, direct call targets,
RIP-relative LEAs into code and relocated pointers into code (function-pointer tables), repeated
until no new seed appears.  A descent function ends where its reachable code ends, and never runs
into the next known function.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import replace

from tqdm import tqdm

from ..formats import Image
from . import model as M
from .decode import ScanExtras, Scanner


def known_ranges(image: Image) -> list[tuple[int, int, str, str]]:
    """Disjoint (start, end, name, source) from sized symbols, then unwind ranges."""
    cands: list[tuple[int, int, str, str]] = []
    for sym in image.symbols:
        if sym.size:
            cands.append((sym.addr, sym.addr + sym.size, sym.name, sym.source))
    unwind = "pdata" if image.format.startswith("pe") else "eh_frame"
    named = {s.addr: s.name for s in image.symbols}
    for start, end in image.unwind_ranges:
        cands.append((start, end, named.get(start, f"fn_{start:x}"), unwind))
    out: list[tuple[int, int, str, str]] = []
    taken: list[tuple[int, int]] = []
    for cand in cands:  # symbols first: they win every overlap
        i = bisect_right(taken, (cand[0], 2**64))
        if i and taken[i - 1][1] > cand[0]:
            continue
        if i < len(taken) and taken[i][0] < cand[1]:
            continue
        taken.insert(i, (cand[0], cand[1]))
        out.append(cand)
    out.sort()
    return out


def initial_seeds(image: Image) -> dict[int, str]:
    seeds: dict[int, str] = {}
    for sym in image.symbols:
        if not sym.size:
            seeds[sym.addr] = sym.name
    if image.entry is not None and image.in_code(image.entry):
        seeds.setdefault(image.entry, "entry")
    for value in sorted(set(image.abs_pointers.values())):
        if image.in_code(value):
            seeds.setdefault(value, f"fn_{value:x}")
    return seeds


class Discovery:
    """Grows the island list until every seed lies inside an island."""

    def __init__(self, image: Image, progress: bool = False) -> None:
        self.image = image
        self.scanner = Scanner(image)
        self.islands: dict[int, M.Island] = {}
        self.starts: list[int] = []
        self.callsites: dict[int, list[tuple[int, int]]] = defaultdict(list)
        self.progress = progress
        self.seeds = initial_seeds(image)
        self.strong: set[int] = set(self.seeds)  # starts that something really enters

    def covered(self, addr: int) -> bool:
        i = bisect_right(self.starts, addr) - 1
        return i >= 0 and addr < self.islands[self.starts[i]].end

    def next_start(self, addr: int) -> int:
        i = bisect_right(self.starts, addr)
        return self.starts[i] if i < len(self.starts) else 2**64

    def run(self) -> list[M.Island]:
        ranges = known_ranges(self.image)
        for start, _end, _name, _src in ranges:
            insort(self.starts, start)
        # placeholders so descent bounds respect known functions before they are scanned
        for start, end, name, src in ranges:
            self.islands[start] = M.Island(name, start, end - start, src)
        seeds = self._scan_all(ranges, "analysing")
        seeds.update(self.seeds)
        while seeds:
            found = self._descend(seeds)
            seeds = self._scan_all(found, "descent")
        out = [self._checked_start(self.islands[s]) for s in self.starts]
        return [self.scanner.after_endbr(i) for i in out]

    def _checked_start(self, isl: M.Island) -> M.Island:
        """A descent island whose start only a LEA names may be data in a code section
        (a jump table, a constant): never offer it for relocation."""
        if isl.source != "descent" or isl.reason is not None or isl.start in self.strong:
            return isl
        return replace(isl, reason=M.WEAK_START, detail="no call, jump, symbol or pointer")

    def _descend(self, seeds: dict[int, str]) -> list[tuple[int, int, str, str]]:
        found = []
        for addr in sorted(seeds):
            if self.covered(addr) or not self.image.in_code(addr):
                continue
            end = self.scanner.descend(addr, self.next_start(addr))
            if end <= addr:
                continue
            name = seeds[addr] if not seeds[addr].startswith("fn_") else f"fn_{addr:x}"
            insort(self.starts, addr)
            self.islands[addr] = M.Island(name, addr, end - addr, "descent")
            found.append((addr, end, name, "descent"))
        return found

    def _scan_all(self, ranges: Iterable[tuple[int, int, str, str]], what: str) -> dict[int, str]:
        ranges = list(ranges)
        seeds: dict[int, str] = {}
        bar = tqdm(
            total=sum(e - s for s, e, _, _ in ranges),
            unit="B",
            unit_scale=True,
            desc=what,
            disable=not self.progress or not ranges,
            leave=False,
        )
        found: set[int] = set()
        for isl, extras in self._scans(ranges, bar):
            self.islands[isl.start] = isl
            for site, opcode, target in extras.callsites:
                self.callsites[target].append((site, opcode))
            self.strong.update(isl.calls)
            self.strong.update(isl.jumps_out)
            found.update(isl.calls)
            found.update(isl.jumps_out)
            found.update(extras.code_refs)
        bar.close()
        for target in found:
            if not self.covered(target):
                seeds[target] = f"fn_{target:x}"
        return seeds

    def _scans(
        self, ranges: list[tuple[int, int, str, str]], bar: tqdm
    ) -> Iterator[tuple[M.Island, ScanExtras]]:
        # one process: forked workers were tried and lost to pickling the results (the
        # scan itself is ~1 s for a 6 MB .text)
        for start, end, name, source in ranges:
            yield self.scanner.scan(name, start, end, source)
            bar.update(end - start)
