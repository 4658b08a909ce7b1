"""Where copies go: the planner's passes, with a Place pass that knows the live address map.

    select -> merge -> split -> prioritise -> environment -> order -> place (live) -> build

`LivePlace` is the planner's Place with one difference: a destination is the first gap of its
region that no copy the driver holds now overlaps -- resident copies (MAP_ACTIVE) and retired
ones a KEEP_COPIES rollback left as valid code (MAP_RETIRED) -- read through STATS, so a later
plan never lands on bytes a thread may still execute or return into.  Rolled-back space that
the driver restored is free again.

Regions come from the platform profile (offsets into the driver's arena); a driver may narrow
them (`regions=`, `capacity=`) to model a smaller hot region.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..analysis import IslandMap
from ..errors import PlanError
from ..plan import layout as L
from ..plan.document import Plan
from ..planning.passes import (
    Build,
    Candidate,
    Environment,
    Merge,
    Options,
    Order,
    Place,
    PlanContext,
    Prioritise,
    Select,
    Split,
    _align,
    _reaches,
)
from ..planning.planner import run_passes
from ..planning.platform import Platform, Region

ReadBytes = Callable[[int, int], bytes]
Span = tuple[int, int]
OCCUPYING = L.MAP_ACTIVE | L.MAP_RETIRED


def occupied(entries: Iterable[L.MapEntry]) -> list[Span]:
    """Destination ranges the driver's address map says are taken (resident or retired)."""
    return sorted((int(e.cur), int(e.cur) + int(e.size)) for e in entries if e.flags & OCCUPYING)


class LivePlace(Place):
    """Place, first fit around the copies the driver holds now (and those placed before)."""

    name = "place"

    def __init__(self, taken: Sequence[Span] = ()) -> None:
        self.taken = sorted(taken)

    def _place(self, ctx: PlanContext, c: Candidate, cursor: dict[str, int]) -> bool:
        size = c.island.size
        for region in self._regions_from(ctx, c.environment):
            start = ctx.region_start(region)
            at = _first_fit(self.taken, start, start + region.size, size, region.alignment)
            if at is None or not _reaches(c.island, at):
                continue
            c.dst, c.environment = at, region.name
            self.taken = sorted([*self.taken, (at, at + size)])
            return True
        return False


def _first_fit(taken: Sequence[Span], lo: int, hi: int, size: int, align: int) -> int | None:
    at = _align(lo, align)
    for t_lo, t_hi in taken:
        if t_hi <= at:
            continue
        if at + size <= t_lo:
            break
        at = _align(max(at, t_hi), align)
    return at if at + size <= hi else None


@dataclass(frozen=True)
class PlacedCopy:
    """One island of a plan: where it is, where its copy goes."""

    name: str
    src: int
    dst: int
    size: int
    fixups: int
    members: tuple[str, ...] = ()


@dataclass
class RelocationPlan:
    """A plan the driver can take, with what the planner decided about each island."""

    plan: Plan
    placed: list[PlacedCopy] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return self.plan.to_bytes()

    def island_of(self, address: int) -> str:
        for p in self.placed:
            if p.src <= address < p.src + p.size:
                return p.name
        return "?"

    @property
    def merged(self) -> list[tuple[str, ...]]:
        return [p.members for p in self.placed if len(p.members) > 1]


def narrowed(
    platform: Platform, regions: Sequence[str] | None, capacity: dict[str, int] | None
) -> Platform:
    """`platform` with only the named destination regions, each capped at `capacity` bytes."""
    keep = [
        dataclasses.replace(r, size=min(r.size, (capacity or {}).get(r.name, r.size)))
        for r in platform.regions
        if regions is None or r.name in regions or r not in platform.destinations()
    ]
    return dataclasses.replace(platform, regions=keep)


def plan_relocation(
    imap: IslandMap,
    platform: Platform,
    options: Options,
    *,
    counts: dict[str, list[float]] | None = None,
    taken: Sequence[Span] = (),
    read_bytes: ReadBytes | None = None,
    all_or_nothing: bool = False,
) -> RelocationPlan:
    """Run the planner's passes with live placement; `read_bytes` reads the islands' current
    bytes through the host's transport.  With `all_or_nothing`, an island the regions have no
    room for fails the whole plan (PlanError) instead of being left out."""
    passes = [Select(), Merge(), Split(), Prioritise(), Environment(), Order(), LivePlace(taken),
              Build()]  # fmt: skip
    result = run_passes(imap, platform, counts or {}, options, passes, read_bytes=read_bytes)
    ctx = result.ctx
    if all_or_nothing and ctx.rejected:
        name, why = next(iter(ctx.rejected.items()))
        raise PlanError(f"{name} does not move: {why}")
    placed = [
        PlacedCopy(c.name, c.island.start, c.dst or 0, c.island.size, len(c.island.fixups),
                   tuple(c.island.members))
        for c in ctx.candidates
    ]  # fmt: skip
    assert ctx.plan is not None
    return RelocationPlan(ctx.plan, placed, dict(ctx.rejected), list(ctx.log))


def plan_ranked(
    imap: IslandMap,
    names: Sequence[str],
    platform: Platform,
    *,
    arena_base: int,
    plan_id: int,
    stack_slots: int = 0,
    taken: Sequence[Span] = (),
    read_bytes: ReadBytes | None = None,
    callsites: bool = False,
    chunk_size: int = 1024,
) -> RelocationPlan:
    """Move exactly `names`, most important first, packed in that order (no profile, so no
    merges and no call-chain clustering); any island that cannot move fails the plan."""
    opts = Options(
        names=tuple(names), plan_id=plan_id, stack_slots=stack_slots, callsites=callsites,
        chunk_size=chunk_size, arena_base=arena_base, keep_order=True,
        priorities={n: float(len(names) - k) for k, n in enumerate(names)},
    )  # fmt: skip
    return plan_relocation(
        imap, platform, opts, taken=taken, read_bytes=read_bytes, all_or_nothing=True
    )


def region_platform(base: int, size: int, alignment: int = 64) -> Platform:
    """A platform of one destination region at an absolute address (tests, explicit targets)."""
    return Platform("explicit", [Region("dest", "hot", size, base=base, alignment=alignment)])
