"""Attribute RIP samples to original islands, through the driver's address map.

A sample taken while a thread ran in a relocated copy carries the copy's address; the address
map (STATS -> ci_map_entry: orig, cur, size, flags) translates it back to the original range
before the island lookup, so an island's counts follow it wherever it runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..plan import layout as L
from .format import ProfiledIsland


class IslandIndex:
    """Sorted island ranges for vectorised lookups: address -> island position (or -1)."""

    def __init__(self, islands: Sequence[ProfiledIsland]) -> None:
        order = sorted(range(len(islands)), key=lambda k: islands[k].start)
        self.position = np.array(order, dtype=np.int64)
        self.starts = np.array([islands[k].start for k in order], dtype=np.uint64)
        self.ends = np.array([islands[k].start + islands[k].size for k in order], dtype=np.uint64)
        self.count = len(islands)

    def lookup(self, addresses: np.ndarray) -> np.ndarray:
        a = np.asarray(addresses, dtype=np.uint64)
        slot = np.searchsorted(self.starts, a, side="right") - 1
        inside = (slot >= 0) & (a < self.ends[np.clip(slot, 0, None)])
        return np.where(inside, self.position[np.clip(slot, 0, None)], -1)

    def histogram(self, addresses: np.ndarray) -> tuple[np.ndarray, int]:
        """Counts per island (island order) and the number of addresses in no island."""
        pos = self.lookup(addresses)
        hits = pos[pos >= 0]
        return np.bincount(hits, minlength=self.count), int((pos < 0).sum())


_LIVE_COPY = L.MAP_ACTIVE | L.MAP_RETIRED


def translate(rips: Iterable[int], map_entries: Sequence[L.MapEntry]) -> np.ndarray:
    """Map addresses inside relocated copies back to their original addresses.

    Active copies, and retired ones (rolled back with PLAN_KEEP_COPIES): threads still
    returning through a retired copy run the island's code, so they count for the island.
    """
    if isinstance(rips, np.ndarray):  # the loops' samples: no Python int per sample
        a = rips.astype(np.uint64, copy=True)
    else:
        a = np.fromiter((int(r) for r in rips), dtype=np.uint64)
    for e in map_entries:
        if not e.flags & _LIVE_COPY or e.cur == e.orig:
            continue
        inside = (a >= e.cur) & (a < e.cur + e.size)
        a[inside] = a[inside] - np.uint64(e.cur) + np.uint64(e.orig)
    return a


def attribute(
    rips: Iterable[int], index: IslandIndex, map_entries: Sequence[L.MapEntry] = ()
) -> tuple[np.ndarray, int]:
    """Per-island sample counts of RIPs, copies attributed to originals."""
    return index.histogram(translate(rips, map_entries))
