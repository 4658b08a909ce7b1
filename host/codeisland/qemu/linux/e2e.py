"""`codeisland qemu e2e --guest linux`: relocate a running Linux process's code from outside.

build (smm, smm/app's workload, guest/linux's agent) -> inject into Debian's OVMF (or boot an
image with the driver built in, `--firmware`) -> boot q35/SMM under TCG with Debian's kernel and
our initramfs
-> the agent finds the mailbox, maps the driver's arena from /dev/mem at an address the kernel
   chooses (ASLR on), copies the workload there and runs it in worker threads (more threads than
   vCPUs, so some are always parked by the scheduler)
-> the host finds the mailbox by a memory scan (the EFI table pointer is virtual under Linux),
   reads the agent's control block, times QUERY round trips, SAMPLEs until a sample of the
   workload names its address space (CR3, CPL 3)
-> a plan aimed at SMRAM is rejected with nothing written
-> the relocation layer places the hot islands in the arena and stages them over several SMIs;
   COMMIT while the threads run inside them (an attempt whose SMI found no thread there is
   rolled back and placed again elsewhere, the copies kept)
-> SAMPLE attributes samples to the process and its islands; the destination bytes are what the
   plan says; ROLLBACK (copies kept, threads still running) restores the original code
-> the agent is told to finish and powers the machine off; every round's checksum agreed.

Address space: by default (`identity=True`) the agent maps the arena at virtual == physical and
the plan's islands are PHYSICAL: under SMM restricted memory access (Debian's OVMF, production
boards) the engine may not read the process's page tables, which are ordinary RAM, so a USER
island is refused (a page-table page outside the registered regions).  `identity=False` maps the
arena where the kernel chooses (ASLR) and plans USER islands of the workload's CR3 at their
virtual addresses; the engine walks the tables itself, which needs firmware built without
restricted memory access (test boards: `codeisland firmware build --variant unrestricted`; the
driver built in it walks unrestricted and logs so).  On restricted walks an identity run also
sends the same islands as a USER plan and checks it is refused (WALK_TABLE_OUTSIDE) with nothing
written; a virtual run ends there with one line naming the firmware it needs (walks.py).

Parked threads (not on a CPU at the SMI) are handled without seeing them: the original code stays
intact except where the plan patches it, an entry jump only where it replaces exactly one
instruction (else the call sites are re-pointed, one instruction each), so a parked thread
resumes in valid original code; rollback keeps the copies (PLAN_KEEP_COPIES), so a parked
thread inside a copy resumes in valid code too.
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...analysis import IslandMap, analyze
from ...errors import CodeIslandError, DriverRejected, EmulationError, ToolMissing
from ...hw.transport import ChipsecTransport
from ...paths import repo_root
from ...plan import layout as L
from ...plan.apply import copies_as_planned
from ...planning.passes import Options
from ...planning.platform import load_platform
from ...relocation import Relocator, RetryPolicy, movable, occupied, plan_relocation
from ...relocation.placement import RelocationPlan, region_platform
from ...transport.mailbox import MailboxClient, smm_memory_mode
from .. import session
from ..e2e import E2eReport, refused_untouched
from ..machine import QemuVm
from ..target import PLATFORM, ROUND_MARK
from . import agent, guest
from .walks import WALK_REFUSALS, Untouched, refusal_message, walks_unrestricted

log = logging.getLogger(__name__)
MEMORY_MIB = guest.MIN_MEMORY_MIB  # the least that boots: every MiB costs OVMF and Linux CPU time
MAX_COMMIT_ATTEMPTS = 8
ROUNDS_AFTER_COMMIT = 4
SAMPLES = 8
MAX_SAMPLES = 40
MAX_CR3_SAMPLES = 40
RANK_SAMPLES = 24  # SAMPLE SMIs that rank the islands before planning
HOT_ISLANDS = 16  # so that retries (keep-copies: each retires its copies) fit the address map
ROUND_TRIPS = 5
STAGE_BUDGET = 4096  # the engine's minimum: the plan stages over several SMIs
CHUNK_SIZE = 256
PARKED_HANDLING = (
    "parked threads keep valid code: originals stay intact except single-instruction patches "
    "(entry jump only where it replaces one instruction, else re-pointed call sites); "
    "rollback keeps the copies (retired)"
)


@dataclass
class LinuxE2eReport(E2eReport):
    guest: str = "linux"
    address_space: str = ""  # "user cr3=0x..." or "physical (identity map)"
    samples_attributed: int = 0  # samples in the workload's address space, inside an island
    samples_kernel: int = 0
    samples_other: int = 0  # other processes' user code
    threads: int = 0
    parked_threads: str = PARKED_HANDLING
    arena_phys: int = 0
    arena_va: int = 0
    mapping: str = ""
    discovery: str = ""
    smi_round_trip_ms: list[float] = field(default_factory=list)
    guest_up_seconds: float = 0.0
    guest_up_cpu_seconds: float = 0.0  # QEMU's CPU time to the agent's ready line (load-free)
    qemu_cpu_seconds: float = 0.0  # QEMU's CPU time for the whole run
    walks: str = ""  # the driver's page-walk policy, from its log: restricted / unrestricted
    virtual_plan_status: str = ""  # identity run, restricted walks: a USER plan's refusal
    virtual_plan_refused: bool = False  # ... with that status and nothing written
    thread_rounds_after_commit: list[int] = field(default_factory=list)
    ranked_samples: dict[str, int] = field(default_factory=dict)  # island -> samples before
    stage_smi_bytes: list[int] = field(default_factory=list)  # each STAGE SMI of the commit

    @property
    def ok(self) -> bool:
        refusal_held = not self.virtual_plan_status or self.virtual_plan_refused
        return (
            super().ok and self.samples_attributed > 0 and bool(self.address_space) and refusal_held
        )

    def __str__(self) -> str:
        rt = ", ".join(f"{v:.1f}" for v in self.smi_round_trip_ms)
        extra = [
            f"linux guest up after {self.guest_up_seconds:.1f} s "
            f"({self.guest_up_cpu_seconds:.1f} s of QEMU CPU, {self.qemu_cpu_seconds:.1f} s in "
            f"all); {self.discovery}",
            f"arena phys {self.arena_phys:#x} mapped by the agent at {self.arena_va:#x} "
            f"({self.mapping}); address space: {self.address_space}",
            f"QUERY round trips (ms): {rt}; bytes per STAGE SMI: {self.stage_smi_bytes}",
            f"page walks {self.walks}"
            + (
                f"; a USER plan of the same islands refused with nothing written: "
                f"{self.virtual_plan_refused} ({self.virtual_plan_status})"
                if self.virtual_plan_status
                else ""
            ),
            f"samples attributed to the workload's islands: {self.samples_attributed} "
            f"(kernel {self.samples_kernel}, other processes {self.samples_other})",
            f"{self.threads} worker threads; {self.parked_threads}",
        ]
        return "\n".join([*extra, super().__str__()])


def build(root: Path, workload: str) -> None:
    steps = [["-C", "smm"], ["-C", "smm/app"], ["-C", "guest/linux", f"WORKLOAD={workload}"]]
    if workload != guest.OWN_WORKLOAD:
        steps.insert(1, ["-C", "emulation"])
    for args in steps:
        args = [args[0], str(root / args[1]), *args[2:]]
        r = subprocess.run(["make", "-s", *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise ToolMissing(f"make {' '.join(args)} failed: {(r.stderr or r.stdout)[-400:]}")


class LinuxE2e:
    def __init__(
        self,
        workdir: Path,
        driver: Path | None = None,
        cpus: int = 1,
        workload: str = guest.OWN_WORKLOAD,
        identity: bool = True,
        firmware: Path | None = None,
        vars_template: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.firmware = firmware
        self.vars_template = vars_template
        self.driver = driver
        self.cpus = cpus
        self.workload = workload
        self.identity = identity
        self.report = LinuxE2eReport(workload=workload)
        self.t0 = time.monotonic()

    def _mark(self, name: str) -> None:
        self.report.timings[name] = time.monotonic() - self.t0

    def run(self, do_build: bool = True) -> LinuxE2eReport:
        settings = guest.LinuxSettings(
            threads=self.cpus + 1, identity=self.identity, max_seconds=300, workload=self.workload
        )
        if do_build:
            build(repo_root(), self.workload)
            self._mark("build")
        guest.check_settings(settings, MEMORY_MIB, None)
        image = session.boot_image(self.workdir, self.driver, self.firmware)
        self.report.image = str(image)
        self._mark("inject")
        config = guest.machine_config(image, self.workdir / "vm", settings, MEMORY_MIB, self.cpus)
        if self.vars_template is not None:
            config.vars_template = self.vars_template
        with QemuVm(config) as m:
            self._guest(m)
        return self.report

    # -- the guest ----------------------------------------------------------------------

    def _guest(self, m: QemuVm) -> None:
        try:
            self._drive(m)
        except CodeIslandError:
            guest.check_running(m)  # a guest that stopped is the cause, not what failed next
            raise

    def _drive(self, m: QemuVm) -> None:
        r = self.report
        up = guest.wait_booted(m)
        r.booted, r.guest_up_seconds, r.threads = True, up.seconds, up.threads
        r.guest_up_cpu_seconds = m.cpu_seconds()
        r.driver_log = [line for line in m.debugcon().splitlines() if line.strip()]
        r.walks = "unrestricted" if walks_unrestricted(r.driver_log) else "restricted"
        self._mark("boot")
        with session.transport_for(m) as t:
            d = t.discover()
            r.discovery = f"mailbox found by {d.method}"
            client = MailboxClient(t, timeout_s=20)
            r.firmware_mode = smm_memory_mode(client.header.firmware_flags)
            self._round_trips(client)
            ag = agent.Agent(t, int(d.config.arena_base))
            ctl = ag.control()
            r.arena_phys, r.arena_va = int(ctl.arena_phys), int(ctl.arena_va)
            r.mapping = "virtual == physical" if ctl.mapping == agent.MAP_IDENTITY else "ASLR"
            rel = Relocator(client, stage_budget=STAGE_BUDGET)
            space, cr3 = self._address_space(rel, ctl)
            imap = analyze(session.workload_elf(self.workload), load_base=int(ctl.blob_va))
            names = self._hottest(rel, imap, cr3)
            self._mark("plan")
            self._bad_plan(m, t, rel, imap, names, ctl)
            if space == L.SPACE_PHYSICAL and r.walks == "restricted":
                self._user_plan_refused(t, rel, imap, names, ctl, cr3)
            self._mark("bad_plan")
            plan = self._commit(t, rel, ag, imap, names, ctl, space, cr3)
            self._mark("commit")
            self._after_commit(t, rel, ag, imap, plan, ctl, cr3)
            ag.command(agent.FINISH)
            done = m.wait_for("serial", guest.DONE_LINE.pattern, 60)
        r.qemu_cpu_seconds = m.cpu_seconds()
        m.wait_exit(30)
        self._mark("done")
        r.rounds_total = int(done.group(1))
        same = int(done.group(2)) == 0 and self._rounds_agree(m)
        r.checksums_ok = (
            same
            and r.rounds_after_commit >= ROUNDS_AFTER_COMMIT
            and all(n > 0 for n in r.thread_rounds_after_commit)
        )

    def _rounds_agree(self, m: QemuVm) -> bool:
        """KIND 0: every round of every thread printed the same checksum.  KIND 1 (workload.h):
        every round wrote the same bytes on port 0xE9 (rounds run one at a time)."""
        r = self.report
        if self.workload == guest.OWN_WORKLOAD:
            sums = {s for _, _, s in guest.ROUND_LINE.findall(m.serial())}
            r.checksum = ", ".join(sorted(sums))
            return len(sums) == 1
        outputs = m.workload_output().split(ROUND_MARK)[: r.rounds_total]
        r.round_output = outputs[0] if outputs else ""
        r.checksum = f"{len(outputs)} identical outputs of {len(r.round_output)} bytes"
        return len(outputs) == r.rounds_total and len(set(outputs)) == 1 and bool(outputs[0])

    def _round_trips(self, client: MailboxClient) -> None:
        info = None
        for _ in range(ROUND_TRIPS):
            t0 = time.monotonic()
            info = client.query().info
            self.report.smi_round_trip_ms.append((time.monotonic() - t0) * 1e3)
        if info is None or not info.locked:
            raise EmulationError("the driver's allow-list is not locked after boot")

    def _address_space(self, rel: Relocator, ctl: agent.AgentControl) -> tuple[int, int]:
        """The workload's CR3, from a sample of a CPU running its code in user mode."""
        lo, hi = int(ctl.arena_va), int(ctl.arena_va + ctl.arena_size)
        for _ in range(MAX_CR3_SAMPLES):
            for s in rel.sample():
                if s.cpl == 3 and lo <= s.rip < hi:
                    cr3 = int(s.cr3) & L.CR3_ADDR_MASK
                    if ctl.mapping == agent.MAP_IDENTITY:
                        self.report.address_space = f"physical (identity map; process cr3={cr3:#x})"
                        return L.SPACE_PHYSICAL, cr3
                    self.report.address_space = f"user cr3={cr3:#x}"
                    return L.SPACE_USER, cr3
            time.sleep(0.02)
        raise EmulationError(
            f"no SAMPLE of {MAX_CR3_SAMPLES} found a CPU in the workload's code "
            "(the agent's threads are not running?)"
        )

    def _hottest(self, rel: Relocator, imap: IslandMap, cr3: int) -> tuple[str, ...]:
        """The movable islands ranked by SAMPLEs of the workload's own CPL-3 samples (ties and
        unsampled ones in address order), at most HOT_ISLANDS: the plan moves the hottest."""
        hits: dict[str, int] = {}
        for _ in range(RANK_SAMPLES):
            for s in rel.sample():
                if s.cpl == 3 and int(s.cr3) & L.CR3_ADDR_MASK == cr3:
                    isl = imap.island_at(int(s.rip))
                    if isl is not None:
                        hits[isl.name] = hits.get(isl.name, 0) + 1
            time.sleep(0.02)
        order = sorted(movable(imap), key=lambda i: (-hits.get(i.name, 0), i.start))
        self.report.ranked_samples = {n: c for n, c in hits.items()}
        return tuple(i.name for i in order[:HOT_ISLANDS])

    # -- the SMRAM plan ---------------------------------------------------------------------

    def _bad_plan(
        self,
        m: QemuVm,
        t: ChipsecTransport,
        rel: Relocator,
        imap: IslandMap,
        names: tuple[str, ...],
        ctl: agent.AgentControl,
    ) -> None:
        """A PHYSICAL plan moving the islands' physical bytes into TSEG must be refused."""
        smram = t.helper.smram
        if smram is None or not smram.tseg_size:
            raise EmulationError("TSEG not found: no SMRAM to aim the bad plan at")
        phys = analyze(imap.image.path, load_base=ctl.va_to_phys(int(ctl.blob_va)))
        bad = _plan(
            phys, names, smram.tseg_base + 0x1000, smram.tseg_size // 2, 99, t.read_phys, []
        ).plan
        self.report.bad_plan_rejected, self.report.bad_plan_status = refused_untouched(
            m, t, rel, bad
        )

    def _user_plan_refused(
        self,
        t: ChipsecTransport,
        rel: Relocator,
        imap: IslandMap,
        names: tuple[str, ...],
        ctl: agent.AgentControl,
        cr3: int,
    ) -> None:
        """Restricted walks: the same islands as a USER plan of the process's CR3 (VA == PA
        here) must be refused, the page tables being ordinary RAM, with nothing written."""
        read = _virtual_reader(t, ctl)
        base, size = _hot_region(ctl)
        plan = _plan(imap, names, base, size, 98, read, occupied(rel.address_map()))
        plan.plan.place_in_address_space(L.SPACE_USER, cr3)
        before = Untouched.take(rel, read, _written_ranges(plan))
        try:
            rel.commit(plan.to_bytes())
        except DriverRejected as exc:
            self.report.virtual_plan_status = L.Status(exc.status).name
            self.report.virtual_plan_refused = (
                exc.status == L.Status.WALK_TABLE_OUTSIDE and before.holds(rel, read)
            )
            return
        self.report.virtual_plan_status = "ACCEPTED"
        rel.rollback(0)  # restricted walks took a USER plan: the check failed; undo it

    # -- stage and commit while the threads run ---------------------------------------------

    def _commit(
        self,
        t: ChipsecTransport,
        rel: Relocator,
        ag: agent.Agent,
        imap: IslandMap,
        names: tuple[str, ...],
        ctl: agent.AgentControl,
        space: int,
        cr3: int,
    ) -> RelocationPlan:
        r = self.report
        read = _virtual_reader(t, ctl)
        hot, size = _hot_region(ctl)
        plans: dict[int, RelocationPlan] = {}
        marks: dict[int, int] = {}  # attempt -> len(rel.smis) before its first STAGE

        def replan(attempt: int) -> bytes:
            marks[attempt] = len(rel.smis)
            # placed around the live and retired copies (a rolled-back attempt's stay valid)
            taken = occupied(rel.address_map())
            plan = _plan(imap, names, hot, size, attempt, read, taken)
            plan.plan.place_in_address_space(space, cr3 if space != L.SPACE_PHYSICAL else 0)
            plans[attempt] = plan
            return plan.to_bytes()

        def resume() -> None:
            log.info("commit translated no context; rolled back, placing the islands again")
            ag.wait_rounds(1)

        # a commit whose SMI found no thread on a CPU inside the islands is undone with the
        # threads running (the copies stay valid, retired) and placed again elsewhere
        retry = RetryPolicy(
            attempts=MAX_COMMIT_ATTEMPTS,
            accept=lambda res: res.contexts_translated > 0,
            resume=resume,
            replan=replan,
        )
        first = replan(1)
        sources = [(i.start, i.size) for n in names if (i := imap.get(n)) is not None]
        before = Untouched.take(rel, read, [*sources, (hot, min(size, 0x4000))])
        try:
            out = rel.apply(first, retry)
        except DriverRejected as exc:
            if exc.status not in WALK_REFUSALS:
                raise
            # a page walk the firmware does not allow: one error naming the firmware needed,
            # once it is checked that the refusal wrote nothing
            untouched = before.holds(rel, read)
            raise DriverRejected(
                exc.status, refusal_message(exc.status, r.firmware_mode, untouched)
            ) from exc
        plan = plans[out.attempts]
        r.commit_attempts = out.attempts
        r.stage_smis, r.bytes_written = out.stage.smis, out.stage.bytes_written
        r.fixups_applied = out.stage.fixups_applied
        r.stage_smi_bytes = [
            s.bytes_written for s in rel.since(marks[out.attempts]) if s.command == "STAGE"
        ]
        r.relocations = len(plan.plan.islands)
        r.callsites_patched = int(out.result.callsites_patched)
        r.contexts_translated = int(out.result.contexts_translated)
        r.cpus_in_smm = int(out.result.cpus)
        return plan

    def _after_commit(
        self,
        t: ChipsecTransport,
        rel: Relocator,
        ag: agent.Agent,
        imap: IslandMap,
        plan: RelocationPlan,
        ctl: agent.AgentControl,
        cr3: int,
    ) -> None:
        r = self.report
        read = _virtual_reader(t, ctl)
        committed = ag.control()
        r.dest_bytes_match = copies_as_planned(plan.plan, imap.read, read)
        r.islands = [
            {"name": p.name, "src": p.src, "dst": p.dst, "size": p.size} for p in plan.placed
        ]
        # at least SAMPLES SMIs, more (up to MAX_SAMPLES) until one lands in the moved islands:
        # a vCPU is often in the kernel or another process when the SMI comes
        samples: list[L.Sample] = []
        for k in range(MAX_SAMPLES):
            samples += rel.sample()
            self._attribute(samples, plan, cr3)
            if k + 1 >= SAMPLES and r.samples_attributed > 0:
                break
            time.sleep(0.05)
        done = ag.wait_every_thread(committed, ROUNDS_AFTER_COMMIT)
        r.rounds_after_commit = int(done.rounds - committed.rounds)
        r.thread_rounds_after_commit = [
            int(done.thread_rounds[k] - committed.thread_rounds[k]) for k in range(done.threads)
        ]
        rel.rollback(0)  # while the threads run: the copies stay (retired)
        r.rolled_back = all(read(i.start, i.size) == imap.read(i.start, i.size) for i in imap)
        ag.wait_rounds(1)

    def _attribute(self, samples: list[L.Sample], plan: RelocationPlan, cr3: int) -> None:
        r = self.report
        r.samples_total = len(samples)
        r.sample_rips = [f"{s.rip:#x}" for s in samples]
        ours = [s for s in samples if s.cpl == 3 and int(s.cr3) & L.CR3_ADDR_MASK == cr3]
        r.samples_kernel = sum(s.cpl == 0 for s in samples)
        r.samples_other = sum(s.cpl == 3 for s in samples) - len(ours)
        in_copy = [s for s in ours if any(p.dst <= s.rip < p.dst + p.size for p in plan.placed)]
        in_orig = [s for s in ours if any(p.src <= s.rip < p.src + p.size for p in plan.placed)]
        r.samples_in_copies = len(in_copy)
        r.samples_at_entries = sum(any(s.rip == p.src for p in plan.placed) for s in ours)
        r.samples_attributed = len(in_copy) + len(in_orig)


def _plan(
    imap: IslandMap,
    names: tuple[str, ...],
    base: int,
    size: int,
    plan_id: int,
    read: Any,
    taken: list[tuple[int, int]],
) -> RelocationPlan:
    opts = Options(
        names=names,
        plan_id=plan_id,
        chunk_size=CHUNK_SIZE,
        callsites=True,
        keep_copies=True,
        keep_order=True,
        arena_base=base,
        priorities={n: float(len(names) - k) for k, n in enumerate(names)},
    )
    return plan_relocation(
        imap, region_platform(base, size), opts, taken=taken, read_bytes=read, all_or_nothing=True
    )


def _hot_region(ctl: agent.AgentControl) -> tuple[int, int]:
    """The arena's hot region at the agent's addresses: (start, size)."""
    region = load_platform(PLATFORM).region("hot")  # the driver's arena layout
    return int(ctl.arena_va) + int(region.arena_offset or 0), int(region.size)


def _written_ranges(plan: RelocationPlan) -> list[tuple[int, int]]:
    """Every range `plan` would write: its copies, entry jumps and call sites."""
    ranges = [(p.dst, p.size) for p in plan.placed] + [(p.src, 16) for p in plan.placed]
    return ranges + [(int(cs.insn), 5) for cs in plan.plan.callsites]


def _virtual_reader(t: ChipsecTransport, ctl: agent.AgentControl) -> Any:
    """Read the agent's virtual addresses through its one linear arena mapping (the host's
    view, for planning and checking only: the engine walks the page tables itself)."""
    return lambda va, n: t.read_phys(ctl.va_to_phys(va), n)


def run_linux_e2e(
    workdir: Path,
    driver: Path | None = None,
    do_build: bool = True,
    cpus: int = 1,
    workload: str = guest.OWN_WORKLOAD,
    identity: bool = True,
    firmware: Path | None = None,
    vars_template: Path | None = None,
) -> LinuxE2eReport:
    return LinuxE2e(workdir, driver, cpus, workload, identity, firmware, vars_template).run(
        do_build
    )
