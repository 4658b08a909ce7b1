"""Pure-Python reference of the native front-end model (emulation/native/fetchmodel.c).

Slow and simple on purpose: tests feed the same fetch streams to both and compare every
counter.  Same semantics: per block, every cache line it spans is one fetch; each fetch looks up
the iTLB of its page size (2 MiB inside a registered huge region, else 4 KiB), then the L1i;
all arrays are set-associative with true LRU replacement.
"""

from __future__ import annotations

from collections.abc import Iterable

from .params import FrontendParams


class _Lru:
    def __init__(self, entries: int, ways: int) -> None:
        self.sets = entries // ways
        self.ways = ways
        self.content: list[list[int]] = [[] for _ in range(self.sets)]  # MRU last

    def access(self, key: int) -> bool:
        ways = self.content[key % self.sets]
        if key in ways:
            ways.remove(key)
            ways.append(key)
            return True
        if len(ways) == self.ways:
            ways.pop(0)
        ways.append(key)
        return False


class ReferenceFrontEnd:
    def __init__(self, params: FrontendParams, huge: Iterable[tuple[int, int]] = ()) -> None:
        self.p = params
        self.huge = [(base, base + size) for base, size in huge]
        self.l1i = _Lru(params.l1i_size // params.l1i_line, params.l1i_ways)
        self.tlb4k = _Lru(params.itlb4k_entries, params.itlb4k_ways)
        self.tlb2m = _Lru(params.itlb2m_entries, params.itlb2m_ways)
        self.counts = {"lines": 0, "l1i_misses": 0, "itlb4k_misses": 0, "itlb2m_misses": 0}
        self.counts["cycles"] = 0

    def _fetch(self, line_addr: int) -> None:
        p, c = self.p, self.counts
        c["lines"] += 1
        c["cycles"] += p.fetch_cycles
        if any(lo <= line_addr < hi for lo, hi in self.huge):
            if not self.tlb2m.access(line_addr >> 21):
                c["itlb2m_misses"] += 1
                c["cycles"] += p.itlb2m_miss_cycles
        elif not self.tlb4k.access(line_addr >> 12):
            c["itlb4k_misses"] += 1
            c["cycles"] += p.itlb4k_miss_cycles
        if not self.l1i.access(line_addr // p.l1i_line):
            c["l1i_misses"] += 1
            c["cycles"] += p.l1i_miss_cycles

    def feed(self, blocks: Iterable[tuple[int, int]]) -> dict[str, int]:
        line = self.p.l1i_line
        for addr, size in blocks:
            if size == 0:
                continue
            for ln in range(addr // line, (addr + size - 1) // line + 1):
                self._fetch(ln * line)
        return dict(self.counts)
