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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..analysis import Island, IslandMap
from ..errors import PlanError
from ..plan import layout as L
from ..plan.apply import entry_patch
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
from ..planning.redirect import planned_redirect

ReadBytes = Callable[[int, int], bytes]
Span = tuple[int, int]
OCCUPYING = L.MAP_ACTIVE | L.MAP_RETIRED


def occupied(entries: Iterable[L.MapEntry]) -> list[Span]:
    """Destination ranges the driver's address map says are taken (resident or retired)."""
    return sorted((int(e.cur), int(e.cur) + int(e.size)) for e in entries if e.flags & OCCUPYING)


def live_originals(entries: Iterable[L.MapEntry]) -> tuple[Span, ...]:
    """Original ranges of the islands active generations moved (Options.frozen): the engine
    refuses a call site in them (CALLSITE_IN_ISLAND), so a later plan re-points none there."""
    return tuple(
        sorted((int(e.orig), int(e.orig) + int(e.size)) for e in entries if e.flags & L.MAP_ACTIVE)
    )


class LivePlace(Place):
    """Place, first fit around the copies the driver holds now (and those placed before).

    `only` limits destinations to these regions and `capacity` caps their size (a driver that
    models a smaller hot region), without changing what the earlier passes saw."""

    name = "place"

    def __init__(
        self,
        taken: Sequence[Span] = (),
        only: Sequence[str] | None = None,
        capacity: dict[str, int] | None = None,
    ) -> None:
        self.taken = sorted(taken)
        self.only = None if only is None else tuple(only)
        self.capacity = capacity or {}

    def _place(self, ctx: PlanContext, c: Candidate, cursor: dict[str, int]) -> bool:
        size = c.island.size
        first = c.environment if self.only is None or c.environment in self.only else None
        for region in self._regions_from(ctx, first):
            if self.only is not None and region.name not in self.only:
                continue
            start = ctx.region_start(region)
            end = start + min(region.size, self.capacity.get(region.name, region.size))
            at = _first_fit(self.taken, start, end, size, region.alignment)
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
    island: Island | None = field(default=None, compare=False, repr=False)
    redirect: str = ""  # how callers reach the copy (planning.redirect.planned_redirect)


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

    def patched_spans(self) -> list[tuple[int, int]]:
        """Where a commit writes outside the copies: entry jumps and re-pointed call sites."""
        p = self.plan
        spans = [(int(i.src), len(entry_patch(i))) for i in p.islands if entry_patch(i)]
        return spans + [(int(c.insn), L.ENTRY_REL32_LEN) for c in p.callsites]

    def written_spans(self) -> list[tuple[int, int]]:
        """Every span the plan may write: destinations, entry jumps, call sites."""
        return [(int(i.dst), int(i.size)) for i in self.plan.islands] + self.patched_spans()


def plan_relocation(
    imap: IslandMap,
    platform: Platform,
    options: Options,
    *,
    counts: dict[str, list[float]] | None = None,
    taken: Sequence[Span] = (),
    read_bytes: ReadBytes | None = None,
    all_or_nothing: bool = False,
    only: Sequence[str] | None = None,
    capacity: dict[str, int] | None = None,
) -> RelocationPlan:
    """Run the planner's passes with live placement (`LivePlace(taken, only, capacity)`);
    `read_bytes` reads the islands' current bytes through the host's transport.  With
    `all_or_nothing`, an island the regions have no room for fails the whole plan (PlanError)
    instead of being left out."""
    place = LivePlace(taken, only, capacity)
    passes = [Select(), Merge(), Split(), Prioritise(), Environment(), Order(), place, Build()]
    result = run_passes(imap, platform, counts or {}, options, passes, read_bytes=read_bytes)
    ctx = result.ctx
    if all_or_nothing and ctx.rejected:
        name, why = next(iter(ctx.rejected.items()))
        raise PlanError(f"{name} does not move: {why}")
    assert ctx.plan is not None
    placed = [
        PlacedCopy(c.name, c.island.start, c.dst or 0, c.island.size, len(c.island.fixups),
                   tuple(c.island.members), c.island, planned_redirect(ctx.plan, k))
        for k, c in enumerate(ctx.candidates)
    ]  # fmt: skip
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
    keep_copies: bool = True,
    parked_threads: bool = True,
) -> RelocationPlan:
    """Move exactly `names`, most important first, packed in that order (no profile, so no
    merges and no call-chain clustering); any island that cannot move fails the plan."""
    opts = Options(
        names=tuple(names), plan_id=plan_id, stack_slots=stack_slots, callsites=callsites,
        chunk_size=chunk_size, arena_base=arena_base, keep_order=True, keep_copies=keep_copies,
        parked_threads=parked_threads,
        priorities={n: float(len(names) - k) for k, n in enumerate(names)},
    )  # fmt: skip
    return plan_relocation(
        imap, platform, opts, taken=taken, read_bytes=read_bytes, all_or_nothing=True
    )


def region_platform(base: int, size: int, alignment: int = 64) -> Platform:
    """A platform of one destination region at an absolute address (tests, explicit targets)."""
    return Platform("explicit", [Region("dest", "hot", size, base=base, alignment=alignment)])
