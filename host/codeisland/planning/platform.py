"""Platform profiles (TOML): the environments islands can be placed in.

A region is a named memory range, given absolutely (`base`) or inside the driver's code arena
(`arena_offset`, resolved once the arena address is known), with page size (4 KiB or 2 MiB),
alignment, NUMA node, cache policy, preferred CPUs and a role: `source` (where code runs
today), `hot` / `warm` (destinations, tried in that order), `stack`.  `[[hint]]` entries are
environments an SMI handler cannot create (a dedicated core, another VM, an accelerator): they
are reported with every plan, never acted upon.  Tables this module does not know (e.g. the
prediction engineer's `[frontend]` cost model) stay available in `Platform.tables`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..documents import load_toml, parse_toml
from ..errors import UsageError

SMALL_PAGE = 4096
LARGE_PAGE = 2 * 1024 * 1024
PAGE_SIZES = (SMALL_PAGE, LARGE_PAGE)
CACHE_POLICIES = ("wb", "wt", "wc", "uc")
ROLES = ("source", "hot", "warm", "stack")
DEST_ROLES = ("hot", "warm")
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "platforms"


@dataclass(frozen=True)
class Region:
    name: str
    role: str
    size: int
    base: int | None = None
    arena_offset: int | None = None
    page_size: int = 4096
    alignment: int = 16
    numa_node: int = 0
    cache: str = "wb"
    preferred_cpus: tuple[int, ...] = ()

    def start(self, arena_base: int | None) -> int:
        if self.base is not None:
            start = self.base
        elif arena_base is None:
            raise UsageError(f"region {self.name} is arena-relative: give the arena base")
        else:
            start = arena_base + int(self.arena_offset or 0)
        if start + self.size > 2**64:
            raise UsageError(f"region {self.name} at {start:#x} runs past the 64-bit address space")
        return start

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class PageMapping:
    """How a region is mapped once its absolute start is known.

    A region declares a page size, but a large page maps only from a large-page boundary: an
    arena-relative region lands wherever firmware put the arena (AllocatePages promises 4 KiB
    alignment, no more).  A region whose start (or size) does not fit its declared page size
    is therefore mapped -- and modeled -- with 4 KiB pages, and `warning` says why; it is never
    silently claimed as a large page.
    """

    region: str
    start: int
    size: int
    declared: int  # page size the profile asks for
    page_size: int  # page size it can be mapped with at this start
    warning: str | None = None


def page_mapping(region: Region, start: int) -> PageMapping:
    page = region.page_size
    why = None
    if page > SMALL_PAGE and start % page:
        why = f"starts at {start:#x}, not on a {page:#x} boundary"
    elif page > SMALL_PAGE and region.size % page:
        why = f"size {region.size:#x} is not a multiple of {page:#x}"
    if why is None:
        return PageMapping(region.name, start, region.size, page, page)
    return PageMapping(
        region.name, start, region.size, page, SMALL_PAGE,
        f"region {region.name} declares {page:#x} pages but {why}: mapped and modeled "
        f"with 4 KiB pages",
    )  # fmt: skip


def large_page_ranges(
    platform: Platform, arena_base: int | None
) -> tuple[list[tuple[int, int]], list[str]]:
    """(base, size) of every region that really gets large pages at this arena base, and a
    warning for each region that declared large pages but cannot have them."""
    ranges, warnings = [], []
    for r in platform.regions:
        m = page_mapping(r, r.start(arena_base))
        if m.warning is not None:
            warnings.append(m.warning)
        elif m.page_size > SMALL_PAGE:
            ranges.append((m.start, m.size))
    return ranges, warnings


@dataclass(frozen=True)
class Hint:
    name: str
    kind: str
    description: str = ""
    cpus: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "cpus": list(self.cpus),
        }


@dataclass
class Platform:
    name: str
    regions: list[Region]
    hints: list[Hint] = field(default_factory=list)
    arena_size: int | None = None
    arena_base: int | None = None
    tables: dict[str, Any] = field(default_factory=dict)  # unknown tables, kept verbatim
    path: str | None = None

    def destinations(self) -> list[Region]:
        """Destination regions, hot before warm, in file order."""
        return sorted(
            (r for r in self.regions if r.role in DEST_ROLES),
            key=lambda r: DEST_ROLES.index(r.role),
        )

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise UsageError(f"platform {self.name} has no region {name!r}")


def _int(table: dict[str, Any], key: str, where: str, default: int | None = None) -> int | None:
    value = table.get(key, default)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise UsageError(f"{where}: {key} must be a non-negative integer, not {value!r}")
    return value


def _region(t: dict[str, Any], n: int, arena_size: int | None) -> Region:
    where = f"region {n} ({t.get('name', '?')})"
    name, role = t.get("name"), t.get("role", "warm")
    if not isinstance(name, str) or not name:
        raise UsageError(f"{where}: needs a name")
    if role not in ROLES:
        raise UsageError(f"{where}: role {role!r} is not one of {ROLES}")
    size = _int(t, "size", where)
    base, off = _int(t, "base", where), _int(t, "arena_offset", where)
    if not size:
        raise UsageError(f"{where}: size must be positive")
    if (base is None) == (off is None):
        raise UsageError(f"{where}: give exactly one of base and arena_offset")
    if off is not None and arena_size is not None and off + size > arena_size:
        raise UsageError(f"{where}: [{off:#x}, {off + size:#x}) exceeds the arena")
    page = _int(t, "page_size", where, 4096)
    align = _int(t, "alignment", where, 16)
    if page not in PAGE_SIZES:
        raise UsageError(f"{where}: page_size must be 4096 or 2097152")
    if not align or align & (align - 1):
        raise UsageError(f"{where}: alignment must be a power of two")
    start = base if base is not None else off
    if page > 4096 and (start or 0) % page and base is not None:
        raise UsageError(f"{where}: a {page:#x} page region must start on a page boundary")
    cache = t.get("cache", "wb")
    if cache not in CACHE_POLICIES:
        raise UsageError(f"{where}: cache {cache!r} is not one of {CACHE_POLICIES}")
    cpus = t.get("preferred_cpus", [])
    if not isinstance(cpus, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cpus
    ):
        raise UsageError(f"{where}: preferred_cpus must be a list of CPU numbers")
    return Region(
        name,
        role,
        size,
        base,
        off,
        page,
        align,
        _int(t, "numa_node", where, 0) or 0,
        cache,
        tuple(cpus),
    )


def _tables(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """An array of tables ([[key]]); anything else is refused by name."""
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise UsageError(f"platform: {key} must be an array of tables ([[{key}]])")
    return value


def _hint(h: dict[str, Any], n: int) -> Hint:
    cpus = h.get("cpus", [])
    if not isinstance(cpus, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cpus
    ):
        raise UsageError(f"hint {n}: cpus must be a list of CPU numbers")
    return Hint(
        str(h.get("name", h.get("kind", "?"))),
        str(h.get("kind", "hint")),
        str(h.get("description", "")),
        tuple(cpus),
    )


def parse_platform(doc: dict[str, Any], path: str | None = None) -> Platform:
    arena_size = _int(doc, "arena_size", "platform")
    regions = [_region(t, n, arena_size) for n, t in enumerate(_tables(doc, "region"))]
    if not any(r.role in DEST_ROLES for r in regions):
        raise UsageError("platform has no destination region (role hot or warm)")
    names = [r.name for r in regions]
    if len(set(names)) != len(names):
        raise UsageError(f"platform region names repeat: {names}")
    hints = [_hint(h, n) for n, h in enumerate(_tables(doc, "hint"))]
    known = {"name", "arena_size", "arena_base", "region", "hint"}
    return Platform(
        name=str(doc.get("name", Path(path).stem if path else "platform")),
        regions=regions,
        hints=hints,
        arena_size=arena_size,
        arena_base=_int(doc, "arena_base", "platform"),
        tables={k: v for k, v in doc.items() if k not in known},
        path=path,
    )


def load_platform(spec: str | Path) -> Platform:
    """A platform from a TOML path, or by the name of a shipped profile ("emulated")."""
    path = Path(spec)
    if not path.exists() and "/" not in str(spec) and not str(spec).endswith(".toml"):
        shipped = SHIPPED / f"{spec}.toml"
        if not shipped.is_file():
            raise UsageError(f"no shipped platform named {spec!r}")
        text, where = shipped.read_text(), f"{spec}.toml"
    else:
        return parse_platform(load_toml(path, "platform"), str(path))
    return parse_platform(parse_toml(text, f"platform {where}"), where)
