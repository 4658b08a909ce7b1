"""The planner's passes (BOLT-style): each has a name, `run(ctx)` and an optional `verify(ctx)`.

    select -> merge -> split -> prioritise -> environment -> order -> place -> build

Every pass reads and writes one `PlanContext`; `planner.run_passes` runs them in order and, when
asked, calls each pass's verify right after it so a broken invariant names the pass that broke
it.  Each candidate keeps the seed's metadata (frequency, resources, dependencies, performance,
priority, environment) through merges and splits.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..analysis import Island, IslandMap
from ..analysis.coexec import coexecution
from ..analysis.decode import Scanner
from ..analysis.merge import MAX_GAP, merge
from ..errors import PlanError
from ..plan import layout as L
from ..plan.document import Plan
from .build import ReadBytes, build_plan
from .platform import PageMapping, Platform, Region, page_mapping
from .redirect import redirect

S32 = (-(1 << 31), (1 << 31) - 1)


@dataclass
class Candidate:
    """An island the planner may move, with the metadata every later pass relies on."""

    island: Island
    frequency: float = 0.0  # profile samples over all windows (members summed)
    priority: float = 0.0  # what placement sorts by (higher first)
    environment: str | None = None  # destination region name, once chosen
    dst: int | None = None
    member_freq: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.island.name

    @property
    def resources(self) -> dict[str, int]:
        return {
            "bytes": self.island.size,
            "fixups": len(self.island.fixups),
            "targets": len(self.island.targets),
        }

    @property
    def performance(self) -> float:
        """Samples per byte: the hot-region benefit density."""
        return self.frequency / max(self.island.size, 1)

    def to_dict(self, dependencies: list[str], redirect: str = "") -> dict[str, Any]:
        return {
            "name": self.name,
            "redirect": redirect,
            "members": list(self.island.members),
            "src": self.island.start,
            "size": self.island.size,
            "dst": self.dst,
            "environment": self.environment,
            "frequency": self.frequency,
            "priority": round(self.priority, 6),
            "performance": round(self.performance, 6),
            "resources": self.resources,
            "dependencies": dependencies,
        }


@dataclass
class Options:
    names: tuple[str, ...] = ()  # explicit islands (no profile needed)
    max_islands: int = L.MAX_ISLANDS
    merge_ratio: float = 0.5  # merge neighbours when weight >= ratio * min(freq)
    split_ratio: float = 8.0  # split a merge whose members' frequencies differ more than this
    plan_id: int = 1
    chunk_size: int = 1024
    stack_slots: int = 0
    callsites: bool = True
    keep_copies: bool = True  # PLAN_KEEP_COPIES: rollback leaves the copies (retired)
    parked_threads: bool = True  # threads may be off-CPU at the SMI (planning.redirect)
    arena_base: int | None = None
    priorities: dict[str, float] = field(default_factory=dict)  # from the predictor
    keep_order: bool = False  # place in priority order, no call-chain clustering (caller ranked)
    # originals of islands live generations moved: no call site in them is re-pointed
    frozen: tuple[tuple[int, int], ...] = ()


@dataclass
class PlanContext:
    imap: IslandMap
    platform: Platform
    counts: dict[str, list[float]]
    options: Options
    candidates: list[Candidate] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # name -> why it does not move
    log: list[str] = field(default_factory=list)
    plan: Plan | None = None
    weights: dict[tuple[str, str], float] = field(default_factory=dict)
    read_bytes: ReadBytes | None = None  # the islands' live bytes (default: the image's)
    _scanner: Scanner | None = None

    def note(self, text: str) -> None:
        self.log.append(text)

    @property
    def scanner(self) -> Scanner:
        if self._scanner is None:
            self._scanner = Scanner(self.imap.image)
        return self._scanner

    def weight(self, a: str, b: str) -> float:
        """Co-execution weight of two islands, computed when first asked: merge looks at
        neighbours and order at the few placed islands, never at all pairs of a profile."""
        key = (a, b) if a < b else (b, a)
        if key not in self.weights:
            pair = {n: self.counts.get(n, ()) for n in key}
            self.weights[key] = coexecution(pair).get(key, 0.0) if all(pair.values()) else 0.0
        return self.weights[key]

    def region_start(self, region: Region) -> int:
        return region.start(
            self.options.arena_base
            if self.options.arena_base is not None
            else self.platform.arena_base
        )

    def page_mapping(self, region: Region) -> PageMapping:
        """The page size `region` really gets at its absolute start (see platform.page_mapping)."""
        return page_mapping(region, self.region_start(region))


class Pass(Protocol):
    name: str

    def run(self, ctx: PlanContext) -> None: ...

    def verify(self, ctx: PlanContext) -> None: ...


def _disjoint(ctx: PlanContext, what: str) -> None:
    spans = sorted((c.island.start, c.island.end, c.name) for c in ctx.candidates)
    for (_, e0, n0), (s1, _, n1) in itertools.pairwise(spans):
        if s1 < e0:
            raise PlanError(f"{what}: candidates {n0} and {n1} overlap")


class Select:
    """Candidates: the named islands, or every relocatable island the profile saw run."""

    name = "select"

    def run(self, ctx: PlanContext) -> None:
        if ctx.options.names:
            chosen = [ctx.imap[n] for n in ctx.options.names]
        else:
            chosen = [i for i in ctx.imap if sum(ctx.counts.get(i.name, ())) > 0]
        for isl in chosen:
            if not isl.relocatable:
                ctx.rejected[isl.name] = f"{isl.reason} ({isl.detail})"
                continue
            how = redirect(ctx.imap, isl, parked_threads=ctx.options.parked_threads)
            if not how.moves:
                ctx.rejected[isl.name] = how.why
                continue
            freq = float(sum(ctx.counts.get(isl.name, ())))
            ctx.candidates.append(Candidate(isl, freq, member_freq={isl.name: freq}))
        unknown = sorted(n for n in ctx.counts if ctx.imap.get(n) is None)
        if unknown:  # a profile of another build, or islands named differently
            ctx.note(
                f"select: {len(unknown)} profile islands are not in the image "
                f"(first: {', '.join(unknown[:3])})"
            )
        ctx.note(f"select: {len(ctx.candidates)} candidates, {len(ctx.rejected)} not relocatable")

    def verify(self, ctx: PlanContext) -> None:
        _disjoint(ctx, self.name)
        for c in ctx.candidates:
            if not c.island.relocatable:
                raise PlanError(f"select: {c.name} is not relocatable")


class Merge:
    """Merge address neighbours that run together (weight >= ratio x the rarer one's count)."""

    name = "merge"

    def run(self, ctx: PlanContext) -> None:
        cands = sorted(ctx.candidates, key=lambda c: c.island.start)
        out: list[Candidate] = []
        for cand in cands:
            prev = out[-1] if out else None
            if prev is not None and self._mergeable(ctx, prev, cand):
                merged = merge(ctx.imap, [prev.island, cand.island], ctx.scanner)
                if merged.relocatable and merged.size <= L.MAX_ISLAND_SIZE:
                    out[-1] = Candidate(
                        merged,
                        prev.frequency + cand.frequency,
                        member_freq={**prev.member_freq, **cand.member_freq},
                    )
                    ctx.note(
                        f"merge: {cand.name} after {prev.island.members[-1]} "
                        f"({len(merged.members)} members from {merged.members[0]})"
                    )
                    continue
            out.append(cand)
        ctx.candidates = out

    def _mergeable(self, ctx: PlanContext, a: Candidate, b: Candidate) -> bool:
        if not 0 <= b.island.start - a.island.end <= MAX_GAP:
            return False
        w = max(ctx.weight(x, y) for x in a.member_freq for y in b.member_freq)
        freqs = [*a.member_freq.values(), *b.member_freq.values()]
        least = min(freqs)
        # never build what Split would take apart again (members wanting different regions)
        return (
            least > 0
            and w >= ctx.options.merge_ratio * least
            and max(freqs) <= ctx.options.split_ratio * least
        )

    def verify(self, ctx: PlanContext) -> None:
        _disjoint(ctx, self.name)


class Split:
    """Split merged islands whose members' needs conflict: one far hotter than another
    (they want different regions), or a merged block that cannot move as a whole."""

    name = "split"

    def run(self, ctx: PlanContext) -> None:
        out: list[Candidate] = []
        for cand in ctx.candidates:
            freqs = list(cand.member_freq.values())
            conflict = len(freqs) > 1 and (
                not cand.island.relocatable
                or max(freqs) > ctx.options.split_ratio * max(min(freqs), 1e-9)
            )
            if not conflict:
                out.append(cand)
                continue
            ctx.note(f"split: {cand.name} (member frequencies {freqs})")
            for name in cand.island.members:
                isl = ctx.imap[name]
                out.append(
                    Candidate(
                        isl,
                        cand.member_freq.get(name, 0.0),
                        member_freq={name: cand.member_freq.get(name, 0.0)},
                    )
                )
        ctx.candidates = out

    def verify(self, ctx: PlanContext) -> None:
        _disjoint(ctx, self.name)


class Prioritise:
    """Priority: the predictor's value when given, else samples per byte; keep the top N."""

    name = "prioritise"

    def run(self, ctx: PlanContext) -> None:
        given = ctx.options.priorities
        for c in ctx.candidates:
            prio = [given[m] for m in c.island.members if m in given]
            c.priority = max(prio) if prio else c.performance
        ctx.candidates.sort(key=lambda c: (-c.priority, -c.frequency, c.island.start))
        for c in ctx.candidates[ctx.options.max_islands :]:
            ctx.rejected[c.name] = "below the plan's island budget"
        del ctx.candidates[ctx.options.max_islands :]

    def verify(self, ctx: PlanContext) -> None:
        if len(ctx.candidates) > L.MAX_ISLANDS:
            raise PlanError(f"prioritise: {len(ctx.candidates)} islands exceed {L.MAX_ISLANDS}")


class Environment:
    """Hot region first by priority while capacity lasts, then warm regions."""

    name = "environment"

    def run(self, ctx: PlanContext) -> None:
        for r in ctx.platform.destinations():
            warning = ctx.page_mapping(r).warning
            if warning is not None:
                ctx.note(f"environment: warning: {warning}")
        free = {r.name: r.size for r in ctx.platform.destinations()}
        for c in ctx.candidates:
            need = c.island.size + 64
            region = next((r for r in ctx.platform.destinations() if free[r.name] >= need), None)
            if region is None:
                ctx.rejected[c.name] = "no destination region has room"
                continue
            free[region.name] -= need
            c.environment = region.name
        ctx.candidates = [c for c in ctx.candidates if c.environment]

    def verify(self, ctx: PlanContext) -> None:
        for r in ctx.platform.destinations():
            used = sum(c.island.size for c in ctx.candidates if c.environment == r.name)
            if used > r.size:
                raise PlanError(f"environment: region {r.name} over capacity ({used} > {r.size})")


class Order:
    """C3-style call-chain clustering per region: join clusters along the heaviest co-execution
    (or call) edges while a cluster fits one page, then lay clusters out by priority (samples
    per byte unless the predictor gave priorities)."""

    name = "order"

    def run(self, ctx: PlanContext) -> None:
        ctx.order = []
        graph = ctx.imap.call_graph()
        for region in ctx.platform.destinations():
            members = [c for c in ctx.candidates if c.environment == region.name]
            # clusters that fit one page of what the region can really be mapped with
            if ctx.options.keep_order:
                ctx.order.extend(c.name for c in members)
                continue
            page = ctx.page_mapping(region).page_size
            ctx.order.extend(self._cluster(ctx, members, page, graph))

    def _cluster(
        self, ctx: PlanContext, cands: list[Candidate], page: int, graph: dict[str, list[str]]
    ) -> list[str]:
        by_name = {c.name: c for c in cands}
        cluster = {c.name: [c.name] for c in cands}
        edges: list[tuple[float, str, str]] = []  # (weight, caller, callee)
        names = list(by_name)

        def calls(x: str, y: str) -> bool:
            return any(
                m in graph.get(a, ())
                for a in by_name[x].island.members
                for m in by_name[y].island.members
            )

        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                w = max(
                    ctx.weight(x, y)
                    for x in by_name[a].island.members
                    for y in by_name[b].island.members
                )
                ab, ba = calls(a, b), calls(b, a)
                if w or ab or ba:
                    caller, callee = (b, a) if ba and not ab else (a, b)
                    edges.append((w + (1e-3 if ab or ba else 0.0), caller, callee))
        for _w, a, b in sorted(edges, reverse=True):
            ca, cb = cluster[a], cluster[b]
            if ca is cb:
                continue
            size = sum(by_name[n].island.size for n in ca + cb)
            if size > page:
                continue
            joined = ca + cb  # C3: the caller's cluster, then the callee's
            for n in joined:
                cluster[n] = joined
        unique = {id(v): v for v in cluster.values()}.values()

        def rank(names: list[str]) -> float:
            # a cluster goes where its most important member should go
            return max(by_name[n].priority for n in names)

        return [n for cl in sorted(unique, key=lambda cl: -rank(cl)) for n in cl]

    def verify(self, ctx: PlanContext) -> None:
        if sorted(ctx.order) != sorted(c.name for c in ctx.candidates):
            raise PlanError("order: the order does not list every candidate exactly once")


class Place:
    """Addresses in order, aligned; every fix-up and the entry jump must stay in rel32 reach
    (a candidate that would overflow moves to the next region or is rejected)."""

    name = "place"

    def run(self, ctx: PlanContext) -> None:
        cursor = {r.name: ctx.region_start(r) for r in ctx.platform.destinations()}
        by_name = {c.name: c for c in ctx.candidates}
        placed: list[Candidate] = []
        for name in ctx.order:
            c = by_name[name]
            if self._place(ctx, c, cursor):
                placed.append(c)
                continue
            if len(c.island.members) < 2:
                ctx.rejected[c.name] = "no region in rel32 reach of every fix-up has room"
                continue
            # a merged block that fits nowhere: its members may still fit one by one
            ctx.note(f"split at place: {c.name}")
            for member in c.island.members:
                freq = c.member_freq.get(member, 0.0)
                part = Candidate(
                    ctx.imap[member], freq, c.priority, c.environment, member_freq={member: freq}
                )
                if self._place(ctx, part, cursor):
                    placed.append(part)
                else:
                    ctx.rejected[member] = "no region in rel32 reach of every fix-up has room"
        ctx.candidates = placed

    def _place(self, ctx: PlanContext, c: Candidate, cursor: dict[str, int]) -> bool:
        for region in self._regions_from(ctx, c.environment):
            at = _align(cursor[region.name], region.alignment)
            if at + c.island.size > ctx.region_start(region) + region.size:
                continue
            if not _reaches(c.island, at):
                continue
            c.dst, c.environment = at, region.name
            cursor[region.name] = at + c.island.size
            return True
        return False

    @staticmethod
    def _regions_from(ctx: PlanContext, first: str | None) -> list[Region]:
        dests = ctx.platform.destinations()
        names = [r.name for r in dests]
        i = names.index(first) if first in names else 0
        return dests[i:]

    def verify(self, ctx: PlanContext) -> None:
        spans = sorted((c.dst or 0, (c.dst or 0) + c.island.size, c.name) for c in ctx.candidates)
        for (_, e0, n0), (s1, _, n1) in itertools.pairwise(spans):
            if s1 < e0:
                raise PlanError(f"place: destinations of {n0} and {n1} overlap")
        for c in ctx.candidates:
            if c.dst is None or not _reaches(c.island, c.dst):
                raise PlanError(f"place: {c.name} placed out of rel32 reach")


class Build:
    """Encode the placed islands as a plan (records, fix-ups, chunk digests, rules)."""

    name = "build"

    def run(self, ctx: PlanContext) -> None:
        if not ctx.candidates:
            raise PlanError(
                "no island to move: "
                + (
                    "; ".join(f"{n}: {why}" for n, why in list(ctx.rejected.items())[:5])
                    or "the profile names no relocatable island"
                )
            )
        o = ctx.options
        moves = [(c.island, c.dst or 0) for c in ctx.candidates]
        ctx.plan = build_plan(
            ctx.imap,
            moves,
            plan_id=o.plan_id,
            chunk_size=o.chunk_size,
            stack_slots=o.stack_slots,
            callsites=o.callsites,
            read_bytes=ctx.read_bytes,
            keep_copies=o.keep_copies,
            parked_threads=o.parked_threads,
            frozen=o.frozen,
        )
        ctx.note(
            f"build: {len(ctx.plan.islands)} islands, {len(ctx.plan.fixups)} fix-ups, "
            f"{len(ctx.plan.chunks)} chunks, {ctx.plan.total_size} bytes"
        )

    def verify(self, ctx: PlanContext) -> None:
        from ..analysis.verify import VerifyReport, _check_island

        assert ctx.plan is not None
        Plan.from_bytes(ctx.plan.to_bytes())  # the host's twin of the engine's checks
        report = VerifyReport(ctx.imap.image.path, ctx.imap.format)
        for c in ctx.candidates:
            _check_island(ctx.imap, c.island, c.dst or 0, report)
        if not report.ok:
            raise PlanError(f"build: re-decoded copies disagree: {report.mismatches[0]}")


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


def _reaches(isl: Island, dst: int) -> bool:
    for f in isl.fixups:
        if f.kind in (L.FIXUP_REL32, L.FIXUP_RIPREL32):
            value = f.target - (dst + f.offset + f.pc_bias)
            if not S32[0] <= value <= S32[1]:
                return False
    return True


DEFAULT_PASSES: tuple[type, ...] = (
    Select,
    Merge,
    Split,
    Prioritise,
    Environment,
    Order,
    Place,
    Build,
)
