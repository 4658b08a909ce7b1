"""`codeisland native run`: profile, predict, plan and commit while a live program runs.

    analyze PROGRAM (its islands, at the load base the kernel chose)
    start it with the agent -> QUERY (the engine is locked, its regions) -> a plan aimed at the
    engine's own buffers (its "SMRAM") must be refused with nothing written
    every window: the SIGPROF samples the agent's SAMPLE wrote -> per-island counts (copies
    attributed to their islands through the address map) -> the policy observes them
    from `warmup` windows on: the policy's heat for the next window -> the hottest movable
    islands not in place yet, as many as the hot region holds -> the relocation layer's planner
    (live placement around the copies in place) -> STAGE..COMMIT while the program runs, every
    thread stopped in its handler and its RIP translated where it lies in a moved island
    the program's exit -> the report (the other hosts' lines, and the native ones)

No rollback here: keep-copies plans, and the program runs to its end with what was committed
(the layouts scripts/native_bench.py times and the model replays).  The closed loop with
keep-or-roll-back (loop/controller.py, its test in modeled front-end cycles from the samples:
there are no PMU counters) is `loop --guest native` (bench/native.py), which starts as this does.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from ..analysis import IslandMap, analyze
from ..errors import CodeIslandError, DriverRejected, PlanError, TransportError
from ..plan import layout as L
from ..plan.apply import copies_as_planned
from ..plan.document import Plan
from ..planning.passes import Options
from ..planning.platform import load_platform
from ..predict.policies import Policy, make_policy
from ..profile.attribution import IslandIndex, attribute
from ..profile.format import ProfiledIsland
from ..qemu.e2e import E2eReport
from ..relocation import Relocator, live_originals, movable, occupied, plan_relocation
from ..relocation.placement import region_platform
from ..transport.mailbox import MailboxClient
from .process import NativeProcess, arena_pages, check_program

log = logging.getLogger(__name__)
PLATFORM = "native"
MIN_HEAT = 2.0  # predicted samples in the next window below which an island is not worth a move
POLICIES = ("none", "reactive", "ewma", "predictive", "hot_once")


@dataclass
class NativeReport(E2eReport):
    program: str = ""
    policy: str = ""
    exit_status: int | None = None
    wall_seconds: float = 0.0
    arena: str = ""
    arena_base: int = 0
    arena_huge_kib: int = 0  # of the arena, backed by 2 MiB pages
    load_base: int = 0
    windows: int = 0
    samples_attributed: int = 0  # samples inside an island (original or copy)
    commits: int = 0
    not_moved: dict[str, str] = field(default_factory=dict)  # island -> why the planner refused
    smi_round_trip_ms: list[float] = field(default_factory=list)
    threads_seen: int = 0  # most threads stopped in one SMI
    ended_in_request: bool = False  # the program exited while the host was asking the agent
    # each commit as the front-end model replays it (calibrate.py): the samples taken before it,
    # its copies [src, size, dst, entry kind] and re-pointed call sites [island src, insn end]
    generations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The run was correct: the agent answered, the program exited 0, the SMRAM plan was
        refused and every copy holds what was planned.  Moving nothing is a result, not a
        failure (`relocations` and `not_moved` say what and why); a program that ended before
        the host's checks were through leaves them unmade (`ended_in_request`), not failed."""
        copies_ok = self.relocations == 0 or self.dest_bytes_match
        refused = self.bad_plan_rejected or self.ended_in_request
        return self.booted and self.checksums_ok and refused and copies_ok

    def __str__(self) -> str:
        rt = ", ".join(f"{v:.2f}" for v in self.smi_round_trip_ms)
        lines = [
            f"native host: {self.program} (policy {self.policy}), exit status "
            f"{self.exit_status}, wall time {self.wall_seconds:.3f} s",
            f"arena {self.arena_base:#x} (executable at {self.load_base:#x}): {self.arena}",
            f"SMI round trips (QUERY, ms): {rt}; most threads stopped in one SMI: "
            f"{self.threads_seen}",
            f"{self.windows} windows, {self.samples_total} samples "
            f"({self.samples_attributed} in islands); commits {self.commits}",
        ]
        if self.ended_in_request:
            lines.append(
                "the program ended while the host was asking the agent: later checks unmade"
            )
        if self.not_moved:
            shown = list(self.not_moved.items())[:5]
            lines.append(
                "not moved: " + "; ".join(f"{n}: {why}" for n, why in shown)
                + (f" (+{len(self.not_moved) - 5} more)" if len(self.not_moved) > 5 else "")
            )  # fmt: skip
        base = super().__str__().splitlines()
        keep = [
            ln
            for ln in base
            if not ln.startswith(("booted:", "image ", "rolled back", "E2E", "checksums"))
        ]
        verdict = "NATIVE OK" if self.ok else "NATIVE FAILED"
        return "\n".join([*lines, *keep, verdict])


@dataclass
class _Moves:
    """What the windows carry from one to the next."""

    islands: list[ProfiledIsland]
    policy: Policy
    index: IslandIndex
    head: int = 0  # sample ring position read so far
    room: int = 0  # bytes of the hot region not planned yet
    history: list[np.ndarray] = field(default_factory=list)
    entries: list[L.MapEntry] = field(default_factory=list)  # the engine's address map
    resident: set[int] = field(default_factory=set)
    refused: set[int] = field(default_factory=set)  # the planner would not move them

    def wanted(self, heat: np.ndarray) -> list[int]:
        """The hottest islands predicted at MIN_HEAT or more, not in place, that fit."""
        want: list[int] = []
        room = self.room
        for k in (int(k) for k in np.argsort(-heat) if heat[k] >= MIN_HEAT):
            if k in self.resident or k in self.refused or self.islands[k].size > room:
                continue
            if len(want) >= L.MAX_ISLANDS or len(self.entries) >= L.MAX_MAP_ENTRIES - L.MAX_ISLANDS:
                break
            want.append(k)
            room -= self.islands[k].size
        self.room = room
        return want


class NativeRun:
    def __init__(
        self,
        argv: list[str],
        *,
        policy: str = "predictive",
        window_s: float = 0.2,
        warmup: int = 2,
        sample_hz: int = 1000,
        stdout: IO[bytes] | int | None = None,
        stdin: IO[bytes] | int | None = None,
    ) -> None:
        self.argv = argv
        self.policy_name = policy
        self.window_s = window_s
        self.warmup = warmup
        self.sample_hz = sample_hz
        self.stdout, self.stdin = stdout, stdin
        self.report = NativeReport(policy=policy, program=argv[0], workload=argv[0])
        self.platform = load_platform(PLATFORM)

    def run(self) -> NativeReport:
        r = self.report
        t0 = time.monotonic()
        # before the start: not the program's time.  Jump-table functions move too: a copy's
        # indirect jump lands in the original, which this host never overwrites (keep-copies)
        imap = analyze(check_program(self.argv[0])).allowing_indirect_jumps()
        r.timings["analyze"] = time.monotonic() - t0
        proc = NativeProcess(
            self.argv, sample_hz=self.sample_hz, stdout=self.stdout, stdin=self.stdin
        )
        try:
            self._drive(proc, imap)
        except TransportError:
            if not (r.booted and proc.exited.wait(2.0)):
                proc.kill()
                raise
            r.ended_in_request = True  # it ended before the host's first windows: not an error
        except CodeIslandError:
            proc.kill()
            raise
        finally:
            r.exit_status = proc.wait()
            r.wall_seconds = proc.seconds
            proc.close()
        r.checksums_ok = r.exit_status == 0
        r.checksum = f"exit status {r.exit_status}"
        return r

    def _drive(self, proc: NativeProcess, imap0: IslandMap) -> None:
        r = self.report
        t0 = time.monotonic()
        t = proc.wait_ready()
        r.booted = True
        r.image = str(proc.program)
        r.firmware_mode = "native process (no firmware)"
        r.load_base = proc.load_base()
        imap = imap0.rebased(r.load_base)
        client = MailboxClient(t, timeout_s=10)
        r.arena_base = int(client.header.arena_base)
        pages = arena_pages(proc.pid, r.arena_base)
        r.arena, r.arena_huge_kib = str(pages), pages.huge_kib
        rel = Relocator(client)
        regions = self._round_trips(rel)
        r.timings["ready"] = time.monotonic() - t0
        self._bad_plan(rel, t, imap, regions)
        self._windows(proc, rel, t, imap)

    def _round_trips(self, rel: Relocator) -> list[L.RegionInfo]:
        reply = None
        for _ in range(3):
            t0 = time.monotonic()
            reply = rel.query()
            self.report.smi_round_trip_ms.append((time.monotonic() - t0) * 1e3)
            self.report.threads_seen = max(self.report.threads_seen, int(reply.result.cpus))
        assert reply is not None and reply.info is not None
        if not reply.info.locked:
            raise CodeIslandError("the agent's engine is not locked")
        return reply.regions

    def _bad_plan(
        self, rel: Relocator, t: Any, imap: IslandMap, regions: list[L.RegionInfo]
    ) -> None:
        """A plan whose destination is the engine's own buffers must be refused, nothing
        written (the native "SMRAM": the agent registers them forbidden)."""
        r = self.report
        smram = [g for g in regions if g.flags & L.REGION_SMRAM]
        candidates = [i for i in movable(imap) if i.size >= 16]
        if not smram or not candidates:
            r.bad_plan_status = "no SMRAM region or no island to aim with"
            return
        dst = int(smram[0].base) + 0x1000
        bad = None
        for isl in candidates:  # the first island the planner can move at all
            opts = Options(names=(isl.name,), plan_id=999, arena_base=dst)
            try:
                bad = plan_relocation(
                    imap, region_platform(dst, 0x10000), opts, read_bytes=t.read_phys,
                    all_or_nothing=True,
                )  # fmt: skip
                break
            except PlanError as exc:
                log.debug("bad plan: %s does not plan: %s", isl.name, exc)
                continue
        if bad is None:
            r.bad_plan_status = "no island the planner can move"
            return
        src = int(bad.plan.islands[0].src)
        before = (rel.query().info, t.read_phys(src, 16))
        try:
            rel.commit(bad.to_bytes())
            r.bad_plan_status = "ACCEPTED"
            return
        except DriverRejected as exc:
            r.bad_plan_status = L.Status(exc.status).name
        after = rel.query().info
        assert before[0] is not None and after is not None
        r.bad_plan_rejected = (
            after.total_bytes_written == before[0].total_bytes_written
            and t.read_phys(src, 16) == before[1]
            and r.bad_plan_status in ("TOUCHES_SMRAM", "DST_NOT_REGISTERED")
        )

    # -- the windows -------------------------------------------------------------------------

    def _windows(self, proc: NativeProcess, rel: Relocator, t: Any, imap: IslandMap) -> None:
        chosen = [i for i in movable(imap) if i.size >= 16]
        islands = [ProfiledIsland(k + 1, i.name, i.start, i.size) for k, i in enumerate(chosen)]
        st = _Moves(islands, make_policy(self.policy_name, len(islands)), IslandIndex(islands))
        st.head = rel.client.sample_head()
        st.room = self.platform.region("hot").size
        while not proc.exited.wait(self.window_s):
            try:
                self._window(proc, rel, t, imap, st)
            except TransportError:
                # the program ended while a request or read was under way: its run is over,
                # what was committed stays committed (a request the agent never answered did
                # not happen: it answers only after its engine ran)
                if proc.exited.wait(2.0):
                    self.report.ended_in_request = True
                    break
                raise

    def _window(
        self, proc: NativeProcess, rel: Relocator, t: Any, imap: IslandMap, st: _Moves
    ) -> None:
        """One window: its samples to the policy, then the moves its prediction asks for."""
        r = self.report
        samples, st.head = rel.client.samples_since(st.head)
        rips = [int(s.rip) for s in samples if s.cpl == 3]
        counts, _outside = attribute(rips, st.index, st.entries)
        r.samples_total += len(samples)
        r.samples_attributed += int(counts.sum())
        self._in_copies(rips, st.entries)
        st.history.append(counts.astype(np.float64))
        st.policy.observe(counts, np.zeros(len(st.islands)), window_context(proc.pid))
        r.windows += 1
        if not st.policy.relocates or r.windows < self.warmup:
            return
        heat = st.policy.predict(time.time() % 86400, None)
        want = st.wanted(heat)
        if not want:
            return
        moved = self._commit(rel, t, imap, st.islands, want, st.history, heat, st.entries)
        st.room += sum(st.islands[k].size for k in want if k not in moved)
        st.resident.update(moved)
        st.refused.update(k for k in want if k not in moved)
        st.entries = rel.address_map()

    def _in_copies(self, rips: list[int], entries: list[L.MapEntry]) -> None:
        """Samples taken in a copy, and on an original entry (its jump), once copies exist."""
        live = [(int(e.orig), int(e.cur), int(e.size)) for e in entries if e.flags & L.MAP_ACTIVE]
        for rip in rips:
            self.report.samples_in_copies += any(c <= rip < c + n for _o, c, n in live)
            self.report.samples_at_entries += any(rip == o for o, _c, _n in live)

    def _commit(
        self,
        rel: Relocator,
        t: Any,
        imap: IslandMap,
        islands: list[ProfiledIsland],
        want: list[int],
        history: list[np.ndarray],
        heat: np.ndarray,
        entries: list[L.MapEntry],
    ) -> set[int]:
        """Plan `want` through the relocation layer and commit it; the positions moved."""
        r = self.report
        names = tuple(islands[k].name for k in want)
        recent = np.array(history[-8:])
        series = {islands[k].name: [float(x) for x in recent[:, k]] for k in want}
        opts = Options(
            names=names, plan_id=r.commits + 1, callsites=True, keep_copies=True,
            parked_threads=True, arena_base=r.arena_base, frozen=live_originals(entries),
            priorities={islands[k].name: float(heat[k]) for k in want},
        )  # fmt: skip
        try:
            plan = plan_relocation(
                imap, self.platform, opts, counts=series, taken=occupied(entries),
                read_bytes=t.read_phys, only=("hot",),
            )  # fmt: skip
        except PlanError as exc:
            for n in names:
                r.not_moved[n] = str(exc)
            return set()
        r.not_moved.update(plan.rejected)
        if not plan.plan.islands:
            return set()
        out = rel.apply(plan.to_bytes())
        res = out.result
        r.commits += 1
        r.commit_attempts += out.attempts
        r.relocations += len(plan.plan.islands)
        r.stage_smis += out.stage.smis
        r.bytes_written += out.stage.bytes_written + int(res.bytes_written)
        r.fixups_applied += out.stage.fixups_applied + int(res.fixups_applied)
        r.callsites_patched += int(res.callsites_patched)
        r.contexts_translated += int(res.contexts_translated)
        r.cpus_in_smm = max(r.cpus_in_smm, int(res.cpus))
        r.threads_seen = max(r.threads_seen, int(res.cpus))
        r.dest_bytes_match = (r.commits == 1 or r.dest_bytes_match) and copies_as_planned(
            plan.plan, imap.read, t.read_phys
        )
        r.islands += [{"name": p.name, "src": p.src, "dst": p.dst, "size": p.size}
                      for p in plan.placed]  # fmt: skip
        r.generations.append(_generation(plan.plan, r.samples_total))
        pos = {isl.name: k for k, isl in enumerate(islands)}
        return {pos[m] for p in plan.placed for m in (p.members or (p.name,)) if m in pos}


def _generation(plan: Plan, samples_before: int) -> dict[str, Any]:
    isl = plan.islands
    return {
        "samples_before": samples_before,
        "islands": [[int(i.src), int(i.size), int(i.dst), int(i.flags) & L.ISLAND_ENTRY_MASK]
                    for i in isl],
        "calls": [[int(isl[c.island].src), int(c.insn) + L.ENTRY_REL32_LEN]  # E8/E9 rel32
                  for c in plan.callsites],
    }  # fmt: skip


def window_context(pid: int) -> dict[str, float]:
    """The window's context features, from /proc (no input events on this host)."""
    cpus = os.cpu_count() or 1
    running = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                running += f.read().rsplit(")", 1)[1].split()[0] == "R"
    except OSError:
        pass
    return {
        "time_of_day": time.time() % 86400,
        "input_events": 0.0,
        "runnable_threads": float(running),
        "busy_cpus": float(min(running, cpus)),
        "cpus": float(cpus),
    }
