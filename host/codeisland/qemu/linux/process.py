"""`codeisland qemu process`: relocate an unmodified program's own code in a Linux guest from SMM.

The program is the host's binary as its Debian package installed it (PIE, dynamically linked,
built without patchable entries), run once in the guest under our LD_PRELOAD landing library
(guest/linux/landing.c), which makes its text pages its own and physically contiguous and maps a
2 MiB landing zone within rel32 reach (program.py packs program, libraries, landing library and
/init).  Then

  boot  -> the landing line names the load base, the text range and the zone (and its page size)
  find  -> the host finds the mailbox by a memory scan, SAMPLEs until a CPU runs the program's
           text in user mode: that sample's CR3 is the process's address space
  read  -> the host walks the same page tables (hw.vaspace) to read the text and check that the
           memory holds the ELF the analysis read (the analysis of the host's file, rebased to
           the load base), and which islands and call sites are physically contiguous (the
           engine needs one physical range per island and per call site)
  rank  -> SAMPLEs attribute RIPs to the analysis' islands by CR3 + CPL 3 (until RANK_HITS)
  plan  -> the planner places the hottest movable islands in the landing zone, redirecting
           through re-pointed `call rel32` sites or entry jumps only where the analysis proves
           them safe for parked threads (planning.redirect), keep-copies on rollback; the plan's
           islands are USER islands of that CR3 at their virtual addresses
  move  -> STAGE/COMMIT through the relocation layer while the program runs, the COMMIT sent
           right after a SAMPLE found the program inside a planned island; an attempt whose SMI
           still found its CPU outside is rolled back (copies retired) and placed again, at
           most COMMIT_ATTEMPTS times
  check -> copies, entry jumps and call sites read back through the page walk; samples in the
           copies; ROLLBACK while the program still runs (never after it exited: see below)
  exit  -> a new plan is staged and left pending; once the program has exited, the SMI that
           would write it (STAGE continuation or COMMIT) must be refused with 0 bytes written
  end   -> the program's output (size + sha256 on the serial console) against the same
           pipeline run on the host, unrelocated.

Attached (`--pid PID|NAME`, run.attach): the guest starts the program itself, with nothing of
ours in it, and guest/linux/attach.c gives the named process the same text and zone from outside
(ptrace: every thread stopped, system calls injected, registers restored, detached) and prints
the landing library's lines; from `find` on everything is the same.  The analysis reads the
host's file at the path the guest's /proc/PID/exe names (the guest runs the host's files).  An
attacher's refusal (no such process, a kernel thread, no room for a zone, ...) is one line, exit
2, with nothing written; the guest's program is then waited for and its output still checked.

On firmware that keeps SMM restricted memory access (Debian's OVMF with the driver injected:
the default here) the engine may not walk a process's page tables, so the same plan is refused
(WALK_TABLE_OUTSIDE) with nothing written; the program runs on and its output is still checked.

Exit: a process that exits while a generation of its code is committed is not rolled back from
here: the engine's undo log holds physical addresses of pages the kernel has freed (the engine
refuses such a ROLLBACK itself; smm/README.md, "Address spaces").
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...analysis import IslandMap, analyze
from ...errors import (
    CodeIslandError,
    DriverRejected,
    EmulationError,
    InputError,
    PlanError,
    ToolMissing,
)
from ...hw.vaspace import PageFault, VirtualSpace
from ...paths import repo_root
from ...plan import layout as L
from ...plan.apply import copies_as_planned
from ...planning.passes import Options
from ...relocation import Relocator, RetryPolicy, movable, occupied, plan_relocation
from ...relocation.placement import RelocationPlan, region_platform
from ...transport.mailbox import MailboxClient
from .. import session
from ..machine import QemuVm, VmConfig
from . import guest, program
from .walks import firmware_needed

log = logging.getLogger(__name__)
MEMORY_MIB = 256
MAX_CR3_SAMPLES = 200
RANK_HITS = 24  # samples of the program in its islands before it is ranked
MAX_RANK_SAMPLES = 200
HOT_ISLANDS = 12
COMMIT_ATTEMPTS = 16
SAMPLES_AFTER = 12
STAGE_BUDGET = 4096
CHUNK_SIZE = 512
LANDING_TIMEOUT_S = 400.0
LANDING_GRACE_S = 5.0  # how long after an error line the landing line may still come
RUN_TIMEOUT_S = 900.0
REFUSED_WAIT_S = 60.0  # how long a refused --pid waits to see the guest's program finish
SMALL_PAGE = 4096
EXIT_PLAN_ID = 90  # the plan left pending when the program exits
RESTRICTED_HINT = (
    "this firmware keeps SMM restricted memory access, so the engine may not walk the "
    "process's page tables (ordinary RAM); "
    + firmware_needed("codeisland qemu process --exec PROGRAM")
)


@dataclass
class Firmware:
    code: Path | None = None  # None: Debian's OVMF with the driver injected (restricted)
    vars: Path | None = None
    driver: Path | None = None


@dataclass
class ProcessReport:
    program: str
    args: list[str]
    firmware: str = ""
    booted: bool = False
    guest_up_seconds: float = 0.0
    landing: dict[str, Any] = field(default_factory=dict)
    landing_warnings: list[str] = field(default_factory=list)
    attached: str = ""  # --pid: the guest process codeisland attached to (it did not start it)
    cr3: int = 0
    text_matches_elf: bool = False
    islands_analysed: int = 0
    islands_movable: int = 0
    samples_ranked: dict[str, int] = field(default_factory=dict)
    rank_samples: dict[str, int] = field(default_factory=dict)  # process / kernel / other
    not_contiguous: list[str] = field(default_factory=list)
    planned: list[dict[str, Any]] = field(default_factory=list)  # name, src, dst, size, redirect
    rejected: dict[str, str] = field(default_factory=dict)
    refused: str = ""  # the driver's status when it refused the plan
    refused_untouched: bool = False
    commit_attempts: int = 0
    stage_smis: int = 0
    bytes_written: int = 0
    fixups_applied: int = 0
    callsites_patched: int = 0
    contexts_translated: int = 0
    cpus_in_smm: int = 0
    copies_match: bool = False
    samples_after: int = 0
    samples_in_copies: int = 0
    rolled_back: str = ""  # "yes" | "skipped: ..." | ""
    exit_pending: dict[str, Any] = field(default_factory=dict)  # a plan pending at the exit
    output: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    output_matches: bool = False
    program_seconds: float | None = None
    smis: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def relocated(self) -> bool:
        return (
            not self.refused
            and bool(self.planned)
            and self.copies_match
            and self.contexts_translated > 0
            and self.output_matches
        )

    @property
    def ok(self) -> bool:
        """Relocated on unrestricted firmware, or refused untouched on restricted firmware;
        either way the program's output is the unrelocated run's."""
        if self.refused:
            return self.refused_untouched and self.output_matches
        exit_ok = self.exit_pending.get("refused_untouched", True)
        return self.relocated and exit_ok

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["ok"], d["relocated"] = self.ok, self.relocated
        return d

    def __str__(self) -> str:
        z = self.landing
        lines = [
            f"{self.program} {' '.join(self.args)} on {self.firmware}",
            f"guest up after {self.guest_up_seconds:.1f} s; pid {z.get('pid')} base "
            f"{z.get('base', 0):#x} text {z.get('text', ['?'])[0]:#x}; landing zone "
            f"{z.get('zone', 0):#x} ({z.get('size', 0) >> 10} KiB, "
            f"{'2 MiB pages' if z.get('huge') else '4 KiB pages'} via {z.get('via')})",
            f"address space cr3 {self.cr3:#x}; text in memory == analysed ELF: "
            f"{self.text_matches_elf}; {self.islands_movable} of {self.islands_analysed} islands "
            "movable",
        ]
        lines += [f"  warning: {w}" for w in self.landing_warnings]
        if self.attached:
            lines.append(attached_line(self.attached, z))
        for p in self.planned:
            lines.append(
                f"  {p['name']}: {p['src']:#x} -> {p['dst']:#x} ({p['size']} B, {p['redirect']})"
            )
        if self.refused:
            lines.append(f"plan refused: {self.refused}; nothing written: {self.refused_untouched}")
        else:
            lines.append(
                f"committed at attempt {self.commit_attempts}: {self.stage_smis} stage SMIs, "
                f"{self.bytes_written} bytes, {self.fixups_applied} fix-ups, "
                f"{self.callsites_patched} call sites, {self.contexts_translated} contexts "
                f"translated; copies as planned: {self.copies_match}"
            )
            lines.append(
                f"after commit {self.samples_in_copies}/{self.samples_after} of the program's "
                f"samples in the copies; rollback: {self.rolled_back}"
            )
        if self.exit_pending:
            lines.append(f"plan pending when the program exited: {self.exit_pending}")
        lines.append(
            output_line(self.output, self.reference, self.output_matches, self.program_seconds)
        )
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


class ProcessRelocation:
    def __init__(
        self, run: program.ProgramRun, workdir: Path, firmware: Firmware, cpus: int = 1
    ) -> None:
        self.run = run
        self.workdir = workdir
        self.firmware = firmware
        self.cpus = cpus
        self.report = ProcessReport(str(run.exe), list(run.args), attached=run.attach or "")
        self.names: tuple[str, ...] = ()  # the ranked islands the plans move
        self.t0 = time.monotonic()

    def _mark(self, name: str) -> None:
        self.report.timings[name] = round(time.monotonic() - self.t0, 1)

    def execute(self, do_build: bool = True) -> ProcessReport:
        self.run.check()
        if do_build:
            build(inject=self.firmware.code is None and self.firmware.driver is None)
        out = repo_root() / "guest" / "build" / "linux"
        landing = out / "codeisland-landing.so"
        busybox = guest.busybox()
        initrd = program.build_initramfs(
            self.run, busybox, landing, self.workdir / "initramfs", out / "codeisland-attach"
        )
        ref = self.run.reference(busybox, landing)
        self.report.reference = ref.__dict__
        fw = self.firmware
        image = session.boot_image(self.workdir, fw.driver, fw.code)
        self.report.firmware = str(fw.code) if fw.code else "Debian's OVMF + injected driver"
        config = VmConfig(
            image=image,
            workdir=self.workdir / "vm",
            memory_mib=MEMORY_MIB,
            cpus=self.cpus,
            kernel=guest.kernel_image(),
            initrd=initrd,
            append="console=ttyS0,115200 panic=0 loglevel=4" + self.run.kernel_args(),
            **({"vars_template": fw.vars} if fw.vars else {}),
        )
        self._mark("prepare")
        with QemuVm(config) as m:
            try:
                self._drive(m, ref)
            except InputError:
                raise  # bad input (--pid): its own line, whatever the guest did afterwards
            except CodeIslandError as exc:
                self._check_guest(m, exc)
                raise
        return self.report

    def _check_guest(self, m: QemuVm, exc: CodeIslandError) -> None:
        """A guest that stopped, or a program that ended, is the cause of what failed next."""
        serial = m.serial()
        if cause := guest.linux_boot_failure(serial, MEMORY_MIB):
            raise EmulationError(cause) from exc
        out = program.parse_output(serial)
        if (
            out is None
            and self.report.landing
            and program.exited(serial, self.report.landing["pid"])
        ):
            raise EmulationError(
                f"the program exited mid-run (its address space is gone): {exc}"
            ) from exc
        if out is None:
            return
        if self.report.cr3 == 0:
            raise EmulationError(
                f"the program ended (status {out.status}) before a SAMPLE found it running: "
                "give it more work"
            ) from exc
        raise EmulationError(
            f"the program exited mid-run (status {out.status}, its address space is gone): {exc}"
        ) from exc

    # -- the run ----------------------------------------------------------------------------

    def _drive(self, m: QemuVm, ref: program.Output) -> None:
        r = self.report
        z = self._landing(m)
        with session.transport_for(m) as t:
            t.discover()
            client = MailboxClient(t, timeout_s=20)
            rel = Relocator(client, stage_budget=STAGE_BUDGET)
            r.cr3 = self._address_space(rel, z)
            space = VirtualSpace(t.read_phys, r.cr3)
            imap = self._analysis(space, z)
            self._mark("analysis")
            self.names = self._hottest(rel, imap, space)
            plan = self._commit(rel, imap, space, z)
            self._mark("commit")
            pending = None
            if plan is not None:
                self._after_commit(m, rel, imap, plan, space)
                pending = self._stage_pending(m, rel, imap, space, z)
            out = self._output(m)
            if pending is not None:
                self._after_exit(rel, pending)
            r.smis = rel.report()
        m.wait_exit(60)  # /init powers off after its linger
        r.output = out.__dict__
        r.program_seconds = out.seconds
        r.output_matches = out.status == ref.status == 0 and (out.size, out.sha256) == (
            ref.size,
            ref.sha256,
        )

    def _landing(self, m: QemuVm) -> program.Landing:
        deadline = time.monotonic() + LANDING_TIMEOUT_S
        failed_at = 0.0  # when an error line was first seen without the landing line
        while True:
            serial = m.serial()
            if found := program.LANDING_LINE.search(serial):
                z = program.Landing.parse(found)
                break
            if cause := guest.linux_boot_failure(serial, MEMORY_MIB):
                raise EmulationError(cause)
            if refused := program.ATTACH_ERROR.search(serial):
                self._attach_refused(m, refused.group(1))
            ended = "codeisland-init: program exited" in serial or not m.running
            # an error line is final only when no landing line follows it (some are not:
            # text left shared, no fork reports); warnings never are
            if failed := program.LANDING_FAILED.search(serial):
                failed_at = failed_at or time.monotonic()
                if ended or time.monotonic() - failed_at > LANDING_GRACE_S:
                    raise EmulationError(f"the landing library failed: {failed.group(1)}")
            if ended:
                raise EmulationError(
                    "the program ended before "
                    + (
                        "codeisland attached to it"
                        if self.run.attach
                        else "the landing library reported"
                    )
                )
            if time.monotonic() > deadline:
                raise EmulationError(
                    f"no landing line on the serial console in {LANDING_TIMEOUT_S:.0f} s"
                )
            time.sleep(0.1)
        if self.run.attach:
            try:
                analysed_program(self.run, z)
            except InputError as exc:  # before any SMI: the same line as the attacher's refusals
                self._attach_refused(m, str(exc))
        r = self.report
        r.booted, r.guest_up_seconds = True, time.monotonic() - m.started_at
        r.landing = {k: v for k, v in z.__dict__.items()}
        r.landing_warnings = program.LANDING_ERROR.findall(m.serial())
        self._mark("landing")
        return z

    def _attach_refused(self, m: QemuVm, why: str) -> None:
        """--pid refused (by the attacher before it stopped anything, or by the analysis after
        the attach), no SMI wrote anything: one line; the guest's own program is waited for (a
        while), so the line can say it ran on unharmed."""
        ref = self.report.reference
        try:
            out = self._output(m, REFUSED_WAIT_S)
            fate = (
                "ran on unharmed (output identical to the unrelocated run)"
                if (out.status, out.size, out.sha256) == (0, ref["size"], ref["sha256"])
                else f"ran on but its output DIFFERS (status {out.status})"
            )
        except EmulationError:
            fate = f"was not touched (it did not finish within {REFUSED_WAIT_S:.0f} s)"
        raise InputError(
            f"--pid {self.run.attach}: {why}; nothing written, the guest's program {fate}"
        )

    def _address_space(self, rel: Relocator, z: program.Landing) -> int:
        lo, hi = z.text
        for _ in range(MAX_CR3_SAMPLES):
            for s in rel.sample():
                if s.cpl == 3 and lo <= s.rip < hi:
                    return int(s.cr3) & L.CR3_ADDR_MASK
            time.sleep(0.02)
        raise EmulationError(
            f"no SAMPLE of {MAX_CR3_SAMPLES} found a CPU in the program's text "
            f"{lo:#x}-{hi:#x} (did it finish already?)"
        )

    def _analysis(self, space: VirtualSpace, z: program.Landing) -> IslandMap:
        """The host's ELF, rebased to the load base; its text must be what the process runs."""
        r = self.report
        exe = analysed_program(self.run, z)
        # jump tables send the copies' indirect jumps into the originals, which stay intact
        imap = analyze(exe, load_base=z.base).allowing_indirect_jumps()
        r.islands_analysed = len(imap)
        r.islands_movable = len(movable(imap))
        lo, hi = z.text
        try:
            live = space.read(lo, hi - lo)
        except PageFault as exc:
            raise EmulationError(
                f"the program's text is not mapped in cr3 {r.cr3:#x}: {exc}"
            ) from exc
        # the ELF's bytes over the executable segment (its file image; the tail of the last page
        # past the segment is other file bytes in both)
        r.text_matches_elf = all(
            imap.read(i.start, i.size) == live[i.start - lo : i.start - lo + i.size]
            for i in imap
            if lo <= i.start and i.start + i.size <= hi
        )
        if not r.text_matches_elf:
            raise EmulationError(
                f"the process's text at {lo:#x} is not {exe} as analysed "
                "(a different binary, or not the load base the landing library reported)"
            )
        return imap

    def _hottest(self, rel: Relocator, imap: IslandMap, space: VirtualSpace) -> tuple[str, ...]:
        """The movable islands the program's own samples (CR3 + CPL 3) fall in, hottest first;
        SAMPLEs until RANK_HITS of them landed in islands (at most MAX_RANK_SAMPLES SMIs)."""
        r = self.report
        hits: dict[str, int] = {}
        seen = {"process": 0, "kernel": 0, "other": 0}
        for _ in range(MAX_RANK_SAMPLES):
            for s in rel.sample():
                ours = s.cpl == 3 and int(s.cr3) & L.CR3_ADDR_MASK == r.cr3
                seen["process" if ours else "kernel" if s.cpl == 0 else "other"] += 1
                isl = imap.island_at(int(s.rip)) if ours else None
                if isl is not None:
                    hits[isl.name] = hits.get(isl.name, 0) + 1
            if sum(hits.values()) >= RANK_HITS:
                break
            time.sleep(0.02)
        r.rank_samples = seen
        r.samples_ranked = hits
        # only what the samples saw: a plan moves the program's hot code, nothing it guessed
        order = sorted(
            (i for i in movable(imap) if hits.get(i.name)),
            key=lambda i: (-hits[i.name], i.start),
        )
        if not order:
            raise EmulationError(
                f"no SAMPLE found the program in a movable island (samples: {seen}; per "
                f"island: {hits or 'none'})"
            )
        names: list[str] = []
        for isl in order:
            if len(names) == HOT_ISLANDS:
                break
            if not space.contiguous(isl.start, isl.size):
                r.not_contiguous.append(isl.name)
                continue
            names.append(isl.name)
        return tuple(names)

    def _plan(
        self, imap: IslandMap, space: VirtualSpace, z: program.Landing, plan_id: int,
        taken: list[tuple[int, int]],
    ) -> RelocationPlan:  # fmt: skip
        names = list(self.names)
        priorities = {n: float(len(names) - k) for k, n in enumerate(names)}
        return plan_in_zone(imap, space, z, names, plan_id, taken, priorities)

    def _commit(
        self, rel: Relocator, imap: IslandMap, space: VirtualSpace, z: program.Landing
    ) -> RelocationPlan | None:
        """Stage and commit through the relocation layer; an attempt whose SMI found the
        program's CPU outside the islands is rolled back while it runs (copies retired) and
        placed again around them.  None when the driver refused the first plan."""
        r = self.report
        plans: dict[int, RelocationPlan] = {}

        def replan(attempt: int) -> bytes:
            plan = self._plan(imap, space, z, attempt, occupied(rel.address_map()))
            if not plan.placed:
                raise PlanError(f"nothing of the ranked islands moves: {plan.rejected}")
            plan.plan.place_in_address_space(L.SPACE_USER, r.cr3)
            plans[attempt] = plan
            return plan.to_bytes()

        def inside() -> None:
            spans = [(c.src, c.src + c.size) for c in plans[max(plans)].placed]
            rel.sample_until(
                lambda s: (
                    s.cpl == 3
                    and int(s.cr3) & L.CR3_ADDR_MASK == r.cr3
                    and any(lo <= s.rip < hi for lo, hi in spans)
                )
            )

        first = replan(1)
        before = snapshot(space, plans[1])
        retry = RetryPolicy(
            attempts=COMMIT_ATTEMPTS,
            accept=lambda res: res.contexts_translated > 0,
            replan=replan,
            before_commit=inside,
        )
        try:
            out = rel.apply(first, retry)
        except DriverRejected as exc:
            if len(plans) > 1:
                raise
            r.refused = L.Status(exc.status).name
            r.refused_untouched = snapshot(space, plans[1]) == before
            self._describe(plans[1])
            return None
        plan = plans[out.attempts]
        self._describe(plan)
        res = out.result
        r.commit_attempts = out.attempts
        r.stage_smis, r.bytes_written = out.stage.smis, out.stage.bytes_written
        r.fixups_applied = out.stage.fixups_applied
        r.callsites_patched = int(res.callsites_patched)
        r.contexts_translated = int(res.contexts_translated)
        r.cpus_in_smm = int(res.cpus)
        return plan

    def _describe(self, plan: RelocationPlan) -> None:
        """Per island: where it goes and how callers reach the copy."""
        self.report.planned = [
            {"name": c.name, "src": c.src, "dst": c.dst, "size": c.size,
             "redirect": c.redirect, "fixups": c.fixups}
            for c in plan.placed
        ]  # fmt: skip
        self.report.rejected = dict(plan.rejected)

    def _after_commit(
        self, m: QemuVm, rel: Relocator, imap: IslandMap, plan: RelocationPlan, space: VirtualSpace
    ) -> None:
        r = self.report
        r.copies_match = copies_as_planned(plan.plan, imap.read, space.read)
        samples: list[L.Sample] = []
        for _ in range(SAMPLES_AFTER):
            samples += rel.sample()
            time.sleep(0.05)
        ours = [s for s in samples if s.cpl == 3 and int(s.cr3) & L.CR3_ADDR_MASK == r.cr3]
        r.samples_after = len(ours)
        r.samples_in_copies = sum(
            any(p.dst <= s.rip < p.dst + p.size for p in plan.placed) for s in ours
        )
        if program.exited(m.serial(), self.report.landing["pid"]):
            r.rolled_back = "skipped: the program had exited (its pages are freed)"
            return
        originals = plan.patched_spans()
        before = {span: imap.read(*span) for span in originals}
        rel.rollback(0)  # while the program runs: entries and call sites restored, copies kept
        restored = all(space.read(*span) == want for span, want in before.items())
        r.rolled_back = "yes" if restored else "NO: originals not restored"

    def _stage_pending(
        self, m: QemuVm, rel: Relocator, imap: IslandMap, space: VirtualSpace, z: program.Landing
    ) -> L.Result | None:
        """A plan staged (not committed) while the program runs, left pending when it exits."""
        if program.exited(m.serial(), self.report.landing["pid"]):
            self.report.exit_pending = {"skipped": "the program had exited already"}
            return None
        plan = self._plan(imap, space, z, EXIT_PLAN_ID, occupied(rel.address_map()))
        plan.plan.place_in_address_space(L.SPACE_USER, self.report.cr3)
        return rel.begin_stage(plan.to_bytes())

    def _after_exit(self, rel: Relocator, staged: L.Result) -> None:
        """The process has exited (its pages freed) with the plan pending: the next SMIs must
        be refused with nothing written (the engine re-walks the dead CR3)."""
        info = rel.query().info
        assert info is not None
        written = int(info.total_bytes_written)
        state = "STAGED" if staged.state == L.STATE_STAGED else "STAGING"
        # the one request that would write into its pages: the next chunks, or the commit
        name, send = ("COMMIT", rel.commit) if state == "STAGED" else ("STAGE", rel.continue_stage)
        try:
            send()
            statuses = [f"{name} ACCEPTED"]
        except DriverRejected as exc:
            statuses = [f"{name} {L.Status(exc.status).name}"]
        after = rel.query().info
        assert after is not None
        self.report.exit_pending = {
            "state_at_exit": state,
            "refusals": statuses,
            "bytes_written": int(after.total_bytes_written) - written,
            "refused_untouched": all("ACCEPTED" not in x for x in statuses)
            and int(after.total_bytes_written) == written,
        }

    def _output(self, m: QemuVm, timeout_s: float = RUN_TIMEOUT_S) -> program.Output:
        deadline = time.monotonic() + timeout_s
        while (out := program.parse_output(m.serial())) is None:
            if cause := guest.linux_boot_failure(m.serial(), MEMORY_MIB):
                raise EmulationError(cause)
            if not m.running:
                raise EmulationError("the guest powered off before the program printed its output")
            if time.monotonic() > deadline:
                raise EmulationError(f"the program did not finish in {timeout_s:.0f} s")
            time.sleep(0.2)
        self._mark("done")
        return out


def output_line(
    output: dict[str, Any],
    reference: dict[str, Any],
    matches: bool,
    seconds: float | None,
    clock: str = "",
) -> str:
    """The report line comparing the relocated run's output with the unrelocated run's
    (`matches`: same exit status, size and digest, as the run decided)."""
    return (
        f"output {output.get('size')} bytes sha256 {str(output.get('sha256'))[:16]} vs "
        f"unrelocated {reference.get('size')} bytes {str(reference.get('sha256'))[:16]}: "
        f"{'identical' if matches else 'DIFFERENT'}"
        + (f"; program ran {seconds:.1f} s{clock}" if seconds else "")
    )


def analysed_program(run: program.ProgramRun, z: program.Landing) -> Path:
    """The ELF the analysis reads: the program we started, or for an attached process the
    host's file at the path its /proc/PID/exe names (the guest runs the host's files)."""
    if not run.attach or Path(z.exe) == run.exe:
        return run.exe
    exe = Path(z.exe)
    if not exe.is_file():
        raise InputError(
            f"guest process {z.pid} runs {exe}, which this host has no copy of to analyse"
        )
    program.check_elf(exe)
    return exe


def attached_line(attached: str, z: dict[str, Any]) -> str:
    """The report's line for a process codeisland attached to rather than started."""
    return (
        f"attached to guest process {attached} (pid {z.get('pid')}, {z.get('exe')}; started by "
        "the guest, not by codeisland): text and zone set up by ptrace, the process not restarted"
    )


def plan_in_zone(
    imap: IslandMap, space: VirtualSpace, z: program.Landing, names: list[str], plan_id: int,
    taken: list[tuple[int, int]], priorities: dict[str, float],
    counts: dict[str, list[float]] | None = None,
) -> RelocationPlan:  # fmt: skip
    """The planner's plan for `names` (best first) in the landing zone, without islands whose
    call sites cross a physical page boundary (the engine would refuse them:
    PAGES_DISCONTIGUOUS)."""
    size = z.size if z.huge else SMALL_PAGE  # 4 KiB pages: one page is all that is contiguous
    names = list(names)
    while names:
        opts = Options(
            names=tuple(names), plan_id=plan_id, chunk_size=CHUNK_SIZE, callsites=True,
            keep_copies=True, keep_order=True, arena_base=z.zone,
            priorities={n: priorities.get(n, 0.0) for n in names},
        )  # fmt: skip
        plan = plan_relocation(
            imap, region_platform(z.zone, size), opts, counts=counts or {}, taken=taken,
            read_bytes=space.read,
        )  # fmt: skip
        p = plan.plan
        bad = {p.islands[cs.island].src for cs in p.callsites if not space.contiguous(cs.insn, 5)}
        if not bad:
            return plan
        names = [n for n in names if imap[n].start not in bad]
    raise PlanError("no ranked island has call sites the engine can reach")


def snapshot(space: VirtualSpace, plan: RelocationPlan) -> list[bytes]:
    """The bytes a plan may write (destinations, entry jumps, call sites), read now."""
    return [space.read(a, n) for a, n in plan.written_spans()]


def build(inject: bool) -> None:
    """The landing library and the attacher, and the driver when it is to be injected (make:
    no-op if built)."""
    steps = [["-C", str(repo_root() / "guest/linux"), "landing", "attach"]]
    if inject:
        steps.insert(0, ["-C", str(repo_root() / "smm")])
    for args in steps:
        r = subprocess.run(["make", "-s", *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise ToolMissing(f"make {' '.join(args)} failed: {(r.stderr or r.stdout)[-400:]}")


def run_process(
    run: program.ProgramRun,
    workdir: Path,
    firmware: Firmware,
    cpus: int = 1,
    do_build: bool = True,
) -> ProcessReport:
    if not 1 <= cpus <= 8:
        raise InputError(f"cpus must be 1..8 (got {cpus})")
    return ProcessRelocation(run, workdir, firmware, cpus).execute(do_build)
