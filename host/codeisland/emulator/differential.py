"""The emulated end-to-end run: a workload unrelocated, then again while the driver moves its
hottest functions at SMIs, with outputs compared byte for byte.

    baseline   boot, run the workload to the end with a SAMPLE SMI every K instructions; the
               driver's sample ring says which functions are hot
    relocated  boot again, same workload; at the stage SMI the plan is STAGEd, then the guest is
               stepped until a thread sits inside an island being moved (forced), and the plan
               is COMMITted in that SMI; SAMPLE SMIs continue at every boundary
    verdict    per-thread outputs and exit codes equal -> identical

Islands come from the analysis of the workload's ELF (codeisland.analysis: function ranges,
fix-ups, internal branch targets); selection, placement (the platform's hot region, through the
planner's passes) and the STAGE/COMMIT/ROLLBACK protocol are the relocation layer's
(codeisland.relocation).  This module only decides *when*: at which SMI boundary to stage,
to commit (once a thread is inside an island) and to roll back.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from smmemu.guest import Guest
from smmemu.workload import WorkloadImage, load_workload

from ..analysis import IslandMap, analyze
from ..errors import EmulationError
from ..plan import layout as L
from ..plan.document import Plan
from ..planning.platform import Platform, load_platform
from ..planning.redirect import redirect
from ..relocation import (
    ReclaimReport,
    ReclaimSchedule,
    RelocationPlan,
    Relocator,
    SmiReport,
    movable,
    occupied,
)
from ..relocation.placement import plan_ranked
from .session import Session, boot


@dataclass
class EmulateConfig:
    workload: str = "bytecode"
    cpus: int = 2
    threads: int = 2
    smi_every: int = 200_000
    seed: int = 1
    layout: str = "intel64"
    islands: int = 3
    names: tuple[str, ...] = ()  # move exactly these islands (else the hottest relocatable)
    sw_dispatch: bool = True
    slice_instructions: int = 20_000
    stage_at: int | None = None  # SMI boundary of the stage; None = chosen by the seed
    force_inside: bool = True
    stack_slots: int = 0  # also translate return addresses in this many stack slots
    stage_budget: int = 0  # bytes the driver stages per SMI (0 = its default)
    random_points: bool = True  # SMI gaps drawn around smi_every by the seed, else periodic
    rollback_after: int | None = None  # boundaries after commit to roll back, then re-commit
    keep_copies: bool = True  # rollback leaves the copies valid (retired); False restores them
    reclaim_every: int = 4  # after such a rollback, RECLAIM at the Nth idle boundary, then doubling
    control: bool | None = None  # run the baseline twice (None: when threads > 1)


@dataclass
class Translation:
    smi: int
    cpu: int
    thread: int | None
    island: str
    before: int
    after: int


@dataclass
class EmulateReport:
    config: EmulateConfig
    identical: bool
    relocations: int
    contexts_translated: int
    bytes_written: int
    smm_instructions_max: int
    guest_instructions: int
    baseline_instructions: int
    moved: list[dict[str, Any]] = field(default_factory=list)
    translations: list[Translation] = field(default_factory=list)
    costs: list[SmiReport] = field(default_factory=list)
    hot: list[tuple[str, int]] = field(default_factory=list)
    divergent_threads: list[int] = field(default_factory=list)
    nondeterministic_threads: list[int] = field(default_factory=list)  # differ between baselines
    not_moved: dict[str, str] = field(default_factory=dict)  # chosen or named, and why not
    reclaims: list[ReclaimReport] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    baseline_outputs: list[str] = field(default_factory=list)
    sw_path: str = ""
    events: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {
            "workload": c.workload,
            "identical": self.identical,
            "relocations": self.relocations,
            "contexts_translated": self.contexts_translated,
            "returns_translated": sum(c.returns_translated for c in self.costs),
            "bytes_written": self.bytes_written,
            "smm_instructions_max": self.smm_instructions_max,
            "guest_instructions": self.guest_instructions,
            "baseline_instructions": self.baseline_instructions,
            "cpus": c.cpus,
            "threads": c.threads,
            "smi_every": c.smi_every,
            "seed": c.seed,
            "layout": c.layout,
            "sw_smi_path": self.sw_path,
            "islands": self.moved,
            "translations": [t.__dict__ for t in self.translations],
            "smis": [s.__dict__ for s in self.costs],
            "hot_functions": [{"name": n, "samples": k} for n, k in self.hot],
            "divergent_threads": self.divergent_threads,
            "nondeterministic_threads": self.nondeterministic_threads,
            "not_moved": self.not_moved,
            "keep_copies": c.keep_copies,
            "reclaim_every": c.reclaim_every,
            "reclaims": [r.to_dict() for r in self.reclaims],
            "events": self.events,
        }

    def __str__(self) -> str:
        c = self.config
        lines = [
            f"codeisland emulate: {c.workload} on {c.cpus} CPUs x {c.threads} threads, "
            f"{c.layout} save states, SW SMI via {self.sw_path}, SMI every {c.smi_every:,} "
            f"instructions, seed {c.seed}",
            "",
            "hot functions (driver SAMPLE ring, baseline run):",
        ]
        lines += [f"  {n:<24} {k:>6} samples" for n, k in self.hot[:8]] or ["  (none)"]
        lines += ["", "moved:"]
        for m in self.moved:
            lines.append(
                f"  {m['name']:<24} {m['src']:#x} -> {m['dst']:#x}  {m['size']:>5} bytes  "
                f"{m['fixups']} fix-ups  by {m['redirect']}"
            )
        if not self.moved:
            lines.append("  (nothing)")
        lines += [f"  not moved: {n}: {why}" for n, why in self.not_moved.items()]
        lines += ["", "threads translated at SMIs:"]
        for t in self.translations:
            who = f"thread {t.thread}" if t.thread is not None else "idle"
            lines.append(
                f"  SMI {t.smi:>3} CPU {t.cpu} ({who}) in {t.island}: {t.before:#x} -> {t.after:#x}"
            )
        if not self.translations:
            lines.append("  (none)")
        lines += ["", "SMIs that changed code (handler instructions, bytes written):"]
        for s in self.costs:
            if s.command not in ("SAMPLE", "STATS", "QUERY"):
                lines.append(
                    f"  SMI {s.smi:>3} {s.command:<8} {s.status:<4} "
                    f"{s.handler_instructions:>8,} insns {s.bytes_written:>6} bytes"
                )
        samples = [s for s in self.costs if s.command == "SAMPLE"]
        if samples:
            worst = max(s.handler_instructions for s in samples)
            lines.append(f"  + {len(samples)} SAMPLE SMIs (up to {worst:,} handler instructions)")
        if self.reclaims:
            freed = sum(len(r.freed) for r in self.reclaims)
            lines += ["", f"RECLAIM SMIs: {len(self.reclaims)}, retired copies freed {freed}:"]
            lines += [f"  {c}" for c in self.reclaims[-1].to_dict()["copies"]] or ["  (none)"]
        verdict = "IDENTICAL" if self.identical else f"DIFFERENT (threads {self.divergent_threads})"
        if self.nondeterministic_threads:
            verdict += (
                f"; threads {self.nondeterministic_threads} are nondeterministic (their output "
                "differs between two unrelocated runs: shared state), not compared"
            )
        lines += [
            "",
            f"relocations {self.relocations}, contexts translated {self.contexts_translated} "
            f"(+{sum(c.returns_translated for c in self.costs)} return addresses), "
            f"bytes written {self.bytes_written}, most handler instructions in one SMI "
            f"{self.smm_instructions_max:,}",
            f"guest instructions {self.guest_instructions:,} (baseline "
            f"{self.baseline_instructions:,})",
            f"outputs: {verdict}",
        ]
        lines += [f"note: {e}" for e in self.events]
        return "\n".join(lines)


class _Run:
    """One boot + one guest; every request goes through the session's relocation layer."""

    def __init__(self, cfg: EmulateConfig, image: WorkloadImage) -> None:
        self.cfg = cfg
        self.session: Session = boot(cfg.cpus, cfg.layout, sw_dispatch=cfg.sw_dispatch)
        self.guest: Guest = self.session.guest(image, cfg.threads, cfg.slice_instructions)
        self.relocator: Relocator = self.session.relocator
        self.relocator.stage_budget = cfg.stage_budget

    @property
    def costs(self) -> list[SmiReport]:
        return self.relocator.smis

    def sample(self) -> list[L.Sample]:
        return self.relocator.sample()


def _hot_islands(samples: list[L.Sample], imap: IslandMap) -> Counter[str]:
    """Samples per island of the analysis (which also finds the islands of a stripped ELF)."""
    heat: Counter[str] = Counter()
    for s in samples:
        isl = imap.island_at(int(s.rip))
        if isl is not None:
            heat[isl.name] += 1
    return heat


@dataclass
class Baseline:
    """The unrelocated run: what every relocated run must reproduce."""

    outputs: list[bytes]
    exit_codes: list[int | None]
    heat: Counter[str]
    instructions: int


# (phase, guest instructions so far) at every SMI boundary: for progress bars
Progress = Callable[[str, int], None]


def run_baseline(
    cfg: EmulateConfig, image: WorkloadImage | None = None, progress: Progress | None = None
) -> Baseline:
    """Boot, run the workload to its end with a SAMPLE SMI every smi_every instructions."""
    image = image or load_workload(cfg.workload)
    run = _Run(cfg, image)
    samples: list[L.Sample] = []

    def boundary(g: Guest) -> None:
        samples.extend(run.sample())
        if progress is not None:
            progress("baseline", g.instructions)

    run.guest.run(every=cfg.smi_every, on_boundary=boundary)
    imap = analyze(image.path, load_base=run.guest.base)
    return Baseline(
        run.guest.outputs(),
        [t.exit_code for t in run.guest.threads],
        _hot_islands(samples, imap),
        run.guest.instructions,
    )


def nondeterministic_threads(cfg: EmulateConfig, baseline: Baseline) -> list[int]:
    """The control run: the unrelocated workload again under another schedule (other slice
    length, seeded SMI gaps); threads whose output or exit code changes depend on the schedule
    (threads sharing state), so a difference there is no evidence against relocation."""
    other = replace(cfg, slice_instructions=max(1000, cfg.slice_instructions * 3 // 7))
    image = load_workload(cfg.workload)
    run = _Run(other, image)
    jitter = random.Random(cfg.seed ^ 0xC0417)
    run.guest.run(every=cfg.smi_every, on_boundary=lambda g: run.sample(), jitter=jitter)
    outputs = run.guest.outputs()
    codes = [t.exit_code for t in run.guest.threads]
    return [
        i
        for i in range(cfg.threads)
        if outputs[i] != baseline.outputs[i] or codes[i] != baseline.exit_codes[i]
    ]


def choose_islands(
    cfg: EmulateConfig, imap: IslandMap, heat: Counter[str], refused: dict[str, str]
) -> list[str]:
    """The named islands, or the hottest relocatable ones by the baseline's samples; islands
    no redirection can move without a hazard for parked threads go to `refused` with why."""
    if cfg.names:
        for n in cfg.names:
            if imap.get(n) is None:
                raise EmulationError(f"workload {cfg.workload} has no island named {n!r}")
        wanted = list(cfg.names)
    else:
        ok = {i.name for i in movable(imap)}
        wanted = [n for n, _ in heat.most_common() if n in ok]
    chosen = []
    for name in wanted:
        isl = imap[name]
        if not isl.relocatable:
            refused[name] = f"{isl.reason} ({isl.detail})"
            continue
        how = redirect(imap, isl)
        if not how.moves:
            refused[name] = how.why
            continue
        chosen.append(name)
    return chosen if cfg.names else chosen[: cfg.islands]


def _plan(
    run: _Run,
    imap: IslandMap,
    platform: Platform,
    names: list[str],
    plan_id: int,
    taken: list[tuple[int, int]],
) -> RelocationPlan:
    """`names` (hottest first) into the platform's destination regions of this boot's arena,
    around the copies the driver holds (`taken`: active and retired), bytes read through the
    transport.  No names: an empty plan that is never sent."""
    if not names:
        return RelocationPlan(Plan(plan_id=plan_id))
    return plan_ranked(
        imap, names, platform, arena_base=run.session.arena[0], plan_id=plan_id,
        stack_slots=run.cfg.stack_slots, taken=taken, read_bytes=run.session.transport.read_phys,
        keep_copies=run.cfg.keep_copies,
    )  # fmt: skip


def run_emulation(
    cfg: EmulateConfig, baseline: Baseline | None = None, progress: Progress | None = None
) -> EmulateReport:
    """The whole differential run; raises EmulationError when the machine stops.  A baseline
    of the same workload and thread count may be reused (outputs do not depend on the rest)."""
    image = load_workload(cfg.workload)
    baseline = baseline or run_baseline(cfg, image, progress)
    report = EmulateReport(cfg, False, 0, 0, 0, 0, 0, baseline.instructions)
    if cfg.control if cfg.control is not None else cfg.threads > 1:
        if progress is not None:
            progress("control", 0)
        report.nondeterministic_threads = nondeterministic_threads(cfg, baseline)
    rng = random.Random(cfg.seed)
    run = _Run(cfg, image)
    imap = analyze(image.path, load_base=run.guest.base)
    chosen = choose_islands(cfg, imap, baseline.heat, report.not_moved)
    if not cfg.names and len(chosen) < cfg.islands:
        report.events.append(
            f"warning: --islands {cfg.islands} capped at {len(chosen)}: only {len(chosen)} "
            "movable islands were sampled in the baseline"
        )
    platform = load_platform("emulated")
    plan_id = cfg.seed & 0xFFFF or 1
    # a board booted a moment ago holds no copies: the first plan needs no STATS
    plan = _plan(run, imap, platform, chosen, plan_id, taken=[])
    stage_at = cfg.stage_at if cfg.stage_at is not None else rng.randrange(1, 4)
    report.hot = baseline.heat.most_common()
    report.sw_path = "SwDispatch2" if cfg.sw_dispatch else "root handler"
    flow = _Flow(run, plan, rng, cfg, report, stage_at)

    def boundary(g: Guest) -> None:
        if progress is not None:
            progress("relocated", g.instructions)
        flow.boundary()
        if flow.replan:
            flow.replan = False
            taken = occupied(run.relocator.address_map())
            flow.plan = _plan(run, imap, platform, chosen, flow.plan.plan.plan_id + 1, taken)

    jitter = random.Random(cfg.seed ^ 0x5EED) if cfg.random_points else None
    run.guest.run(every=cfg.smi_every, on_boundary=boundary, jitter=jitter)
    if flow.phase != "committed" and plan.placed:
        report.events.append(f"the workload ended with the plan {flow.phase}; it did not commit")
    outputs = run.guest.outputs()
    codes = [t.exit_code for t in run.guest.threads]
    shaky = set(report.nondeterministic_threads)
    report.divergent_threads = [
        i
        for i in range(cfg.threads)
        if i not in shaky
        and (outputs[i] != baseline.outputs[i] or codes[i] != baseline.exit_codes[i])
    ]
    report.identical = not report.divergent_threads and all(
        c == 0 for i, c in enumerate(codes) if i not in shaky
    )
    report.outputs = [o.decode("latin-1") for o in outputs]
    report.baseline_outputs = [o.decode("latin-1") for o in baseline.outputs]
    report.costs = list(run.costs)
    report.guest_instructions = run.guest.instructions
    report.smm_instructions_max = max((c.handler_instructions or 0 for c in run.costs), default=0)
    report.bytes_written = sum(c.bytes_written for c in run.costs)
    report.contexts_translated = sum(c.contexts_translated for c in run.costs)
    return report


class _Flow:
    """What each SMI boundary of the relocated run does, as explicit phases:

        wait --(stage_at)--> STAGE plan --> staging --STAGE ""...--> staged
        staged --(step until a thread is inside an island)--> COMMIT --> committed
        committed --(rollback_after boundaries)--> ROLLBACK --> wait (a new plan, next SMI)

    Boundaries with nothing to do raise a SAMPLE SMI.  STAGE continues over as many SMIs as the
    driver's per-SMI byte budget needs, with the guest running in between."""

    def __init__(
        self,
        run: _Run,
        plan: RelocationPlan,
        rng: random.Random,
        cfg: EmulateConfig,
        report: EmulateReport,
        stage_at: int,
    ) -> None:
        self.run, self.plan, self.rng, self.cfg, self.report = run, plan, rng, cfg, report
        self.stage_at = stage_at
        self.phase = "wait" if plan.placed else "idle"
        self.b = 0
        self.committed_at = 0
        self.rolled_back = False
        self.replan = False
        self.reclaims = ReclaimSchedule(cfg.reclaim_every)

    def boundary(self) -> None:
        self.b += 1
        run, cfg = self.run, self.cfg
        if self.phase == "wait" and self.b >= self.stage_at:
            self._staged(run.relocator.begin_stage(self.plan.to_bytes()))
        elif self.phase == "staging":
            self._staged(run.relocator.continue_stage())
        elif self.phase == "staged":
            self._commit()
        elif (
            self.phase == "committed"
            and cfg.rollback_after is not None
            and not self.rolled_back
            and self.b == self.committed_at + cfg.rollback_after
        ):
            run.relocator.rollback(0)
            self.report.events.append(f"SMI boundary {self.b}: rolled the generation back")
            self.rolled_back, self.replan = True, True
            self.phase, self.stage_at = "wait", self.b + 1
            if cfg.keep_copies:
                self.reclaims.retired()
        elif self.reclaims.due():
            answer = run.relocator.reclaim()
            self.reclaims.answered(answer)
            self.report.reclaims.append(answer)
        else:
            run.sample()

    def _staged(self, result: L.Result) -> None:
        self.phase = "staged" if result.state == L.STATE_STAGED else "staging"

    def _commit(self) -> None:
        run, plan, report = self.run, self.plan, self.report
        if self.cfg.force_inside and not _step_until_inside(run, plan, self.rng):
            report.events.append("no thread entered the islands before the commit (not forced)")
        run.relocator.commit()
        smi = run.session.transport.last_smi
        if smi is None:
            raise EmulationError("no SMI was raised")
        for cpu, thread, _rip in run.guest.on_cpu():
            before, after = smi.rips_before[cpu], smi.rips_after[cpu]
            if before != after:
                who = None if thread is None else thread.index
                report.translations.append(
                    Translation(smi.number, cpu, who, plan.island_of(before), before, after)
                )
        _note_parked(run, plan, report)
        report.relocations += len(plan.placed)
        for p in plan.placed:
            report.moved.append(
                {"name": p.name, "src": p.src, "dst": p.dst, "size": p.size, "fixups": p.fixups,
                 "smi": smi.number, "redirect": p.redirect}
            )  # fmt: skip
        self.phase, self.committed_at = "committed", self.b


def _step_until_inside(
    run: _Run, plan: RelocationPlan, rng: random.Random, limit: int = 60_000
) -> bool:
    """Advance the guest in short, seeded steps until some CPU's thread is inside an island."""
    spans = [(p.src, p.src + p.size) for p in plan.placed]
    for _ in range(limit):
        for _cpu, thread, rip in run.guest.on_cpu():
            if thread is not None and any(lo <= rip < hi for lo, hi in spans):
                return True
        if run.guest.done:
            return False
        run.guest.step(rng.randrange(1, 200))
    return False


def _note_parked(run: _Run, plan: RelocationPlan, report: EmulateReport) -> None:
    """Threads not on any CPU at the commit are invisible to the handler (as on a board, where
    the OS keeps them): one parked inside the bytes the entry jump overwrote resumes in them."""
    on_cpu = {id(t) for _cpu, t, _rip in run.guest.on_cpu() if t is not None}
    for t in run.guest.threads:
        if id(t) in on_cpu or not t.runnable:
            continue
        for p, rec in zip(plan.placed, plan.plan.islands, strict=True):
            kind = rec.flags & L.ISLAND_ENTRY_MASK
            patch = {L.ISLAND_ENTRY_REL32: 5, L.ISLAND_ENTRY_ABS64: 14}.get(kind, 0)
            if p.src < t.rip < p.src + patch:
                report.events.append(
                    f"hazard: thread {t.index} is parked at {t.rip:#x}, inside the entry patch "
                    f"of {p.name}, and was not on a CPU to be translated"
                )
