"""`codeisland qemu e2e`: the whole path on real firmware, as CI runs it.

build (make -C smm, make -C smm/app) -> inject into Debian's OVMF -> boot q35/SMM under TCG
-> the app copies its workload into the driver's arena and runs rounds, printing checksums
-> the host (chipsec + qemuhelper) finds the mailbox, QUERYs, analyzes workload.elf rebased
   to where the app put it, plans the hot islands into the arena
-> a plan aimed at SMRAM is rejected and nothing is written (mailbox counters, the island's
   entry bytes and the SMRAM bytes themselves are compared before and after)
-> STAGE over as many SMIs as the budget needs, COMMIT while the workload runs: saved RIPs
   inside the islands are translated (wherever TCG delivered the SMI), entries patched
-> SAMPLE shows the CPU executing in the copies; the destination bytes equal what the plan
   says; the app keeps printing the same checksum; ROLLBACK restores the entries
-> the app is told to stop and powers the machine off.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..analysis import IslandMap, analyze
from ..errors import DriverRejected, EmulationError, ToolMissing
from ..hw.transport import ChipsecTransport
from ..plan import layout as L
from ..plan.apply import entry_patch
from ..plan.document import Plan
from ..planning.platform import load_platform
from ..relocation import RelocationPlan, Relocator, RetryPolicy, movable, occupied
from ..relocation.placement import plan_ranked, region_platform
from ..transport.mailbox import MailboxClient, smm_memory_mode
from . import session, target
from .machine import QemuVm, VmConfig
from .planning import ExpectedCopy, expected_copies

log = logging.getLogger(__name__)
OWN_HOT_ISLANDS = ("hot_loop", "mix")
CHUNK_SIZE = 256  # small diff chunks, so that a plan stages over several SMIs
ROUNDS_AFTER_COMMIT = 4
# An emulator workload's app is outside the islands (in the firmware's console output) at
# about half the SMIs, and sampling first does not predict the next SMI: 9 runs needed 19
# attempts, so 6 fail about once in 45 runs (a CI run did) and 12 about once in 2,000.
MAX_COMMIT_ATTEMPTS = 12
SAMPLES = 8
STAGE_BUDGET = 4096  # bytes per SMI: the engine's minimum, so larger plans span SMIs


@dataclass
class E2eReport:
    workload: str = "own"
    image: str = ""
    firmware_mode: str = ""  # SMM memory mode the driver reports (mailbox firmware_flags)
    booted: bool = False
    relocations: int = 0
    contexts_translated: int = 0
    checksums_ok: bool = False
    bad_plan_rejected: bool = False
    bad_plan_status: str = ""
    commit_attempts: int = 0
    bytes_written: int = 0
    stage_smis: int = 0
    fixups_applied: int = 0
    callsites_patched: int = 0
    dest_bytes_match: bool = False
    samples_in_copies: int = 0
    samples_at_entries: int = 0  # on an original entry's jump (TCG ends a block at the call)
    samples_total: int = 0
    sample_rips: list[str] = field(default_factory=list)
    rolled_back: bool = False
    cpus_in_smm: int = 0
    rounds_total: int = 0
    rounds_after_commit: int = 0
    checksum: str = ""
    round_output: str = ""  # an emulator workload's port-0xE9 output of one round
    islands: list[dict[str, Any]] = field(default_factory=list)
    driver_log: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.booted
            and self.relocations > 0
            and self.contexts_translated > 0
            and self.checksums_ok
            and self.bad_plan_rejected
            and self.dest_bytes_match
        )

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["ok"] = self.ok
        return d

    def __str__(self) -> str:
        isl = ", ".join(f"{i['name']} {i['src']:#x}->{i['dst']:#x}" for i in self.islands)
        return "\n".join(
            [
                f"booted: {self.booted}  ({', '.join(self.driver_log[-1:])})",
                f"image {self.image}; SMM memory access: {self.firmware_mode}",
                f"bad plan (SMRAM destination) rejected with nothing written: "
                f"{self.bad_plan_rejected} ({self.bad_plan_status})",
                f"relocated {self.relocations} islands: {isl}",
                f"staged in {self.stage_smis} SMIs, {self.bytes_written} bytes, "
                f"{self.fixups_applied} fix-ups, {self.callsites_patched} call sites re-pointed; "
                f"destination bytes as planned: "
                f"{self.dest_bytes_match}",
                f"contexts translated at commit: {self.contexts_translated} of "
                f"{self.cpus_in_smm} CPU(s) in SMM "
                f"(commit attempts {self.commit_attempts})",
                f"samples after commit: {self.samples_in_copies} in the copies, "
                f"{self.samples_at_entries} on an entry jump, of {self.samples_total}",
                f"checksums ok: {self.checksums_ok} ({self.rounds_total} rounds, "
                f"{self.rounds_after_commit} after commit, sum {self.checksum})",
                f"rolled back: {self.rolled_back}",
                "timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()),
                "E2E OK" if self.ok else "E2E FAILED",
            ]
        )


def build(root: Path, workload: str) -> None:
    steps = [["-C", "smm"], ["-C", "smm/app"]]
    if workload != session.OWN_WORKLOAD:
        steps = [["-C", "smm"], ["-C", "emulation"], ["-C", "smm/app", f"WORKLOAD={workload}"]]
    for args in steps:
        args = [args[0], str(root / args[1]), *args[2:]]
        r = subprocess.run(["make", "-s", *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise ToolMissing(f"make {' '.join(args)} failed: {(r.stderr or r.stdout)[-400:]}")


def refused_untouched(
    m: QemuVm, t: ChipsecTransport, rel: Relocator, bad: Plan
) -> tuple[bool, str]:
    """Send `bad` (aimed at SMRAM) as one COMMIT: (refused with TOUCHES_SMRAM or
    DST_NOT_REGISTERED and nothing written, status name).  Nothing written: the driver's byte
    and generation counters, the first island's source bytes, and its destination in SMRAM as
    the test sees it through the raw RAM file (which the guest cannot), all unchanged."""
    island = bad.islands[0]
    before_q = rel.query().info
    before_src = t.read_phys(int(island.src), 16)
    ram = m.ram()
    lo, hi = int(island.dst), int(island.dst) + int(island.size)
    before_smram = bytes(ram[lo:hi])
    try:
        rel.commit(bad.to_bytes())
        return False, "ACCEPTED"
    except DriverRejected as exc:
        status = L.Status(exc.status).name
    after_q = rel.query().info
    assert before_q is not None and after_q is not None
    unchanged = (
        after_q.total_bytes_written == before_q.total_bytes_written
        and after_q.generations == before_q.generations
        and t.read_phys(int(island.src), 16) == before_src
        and bytes(ram[lo:hi]) == before_smram
    )
    return unchanged and status in ("TOUCHES_SMRAM", "DST_NOT_REGISTERED"), status


def hot_islands(imap: IslandMap, workload: str) -> tuple[str, ...]:
    """Our workload: its hot loop and the helper it calls.  An emulator workload: every
    movable island (up to a plan's maximum), so the interrupted thread is likely in one."""
    if workload == session.OWN_WORKLOAD:
        return OWN_HOT_ISLANDS
    return tuple(i.name for i in movable(imap))[: L.MAX_ISLANDS]


@dataclass
class _Planned:
    imap: IslandMap
    names: tuple[str, ...]
    plan: RelocationPlan
    expected: list[ExpectedCopy]


class E2e:
    def __init__(
        self,
        workdir: Path,
        driver: Path | None = None,
        cpus: int = 1,
        workload: str = "own",
        firmware: Path | None = None,
        vars_template: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.firmware = firmware
        self.vars_template = vars_template
        self.workload = workload
        self.report = E2eReport(workload=workload)
        self.driver = driver
        self.cpus = cpus
        self.t0 = time.monotonic()
        self.done: re.Match[str] | None = None

    def _mark(self, name: str) -> None:
        self.report.timings[name] = time.monotonic() - self.t0

    def run(self, do_build: bool = True) -> E2eReport:
        from ..paths import repo_root

        if do_build:
            build(repo_root(), self.workload)
            self._mark("build")
        image = session.boot_image(self.workdir, self.driver, self.firmware)
        self.report.image = str(image)
        self._mark("inject")
        app = session.require(
            session.app_binary(self.workload), f"make -C smm/app WORKLOAD={self.workload}"
        )
        config = VmConfig(image=image, workdir=self.workdir / "vm", app=app, cpus=self.cpus)
        if self.vars_template is not None:
            config.vars_template = self.vars_template
        with QemuVm(config) as m:
            self._guest(m)
        return self.report

    def _guest(self, m: QemuVm) -> None:
        r = self.report
        m.wait_for("serial", r"codeisland-app: blob (0x[0-9a-f]+)", 90)
        r.booted = True
        r.driver_log = [line for line in m.debugcon().splitlines() if line.strip()]
        self._mark("boot")
        with session.transport_for(m) as t:
            client = MailboxClient(t, timeout_s=20)
            r.firmware_mode = smm_memory_mode(client.header.firmware_flags)
            rel = Relocator(client, stage_budget=STAGE_BUDGET)
            cfg = t.discover().config
            info = rel.query().info
            if info is None or not info.locked:
                raise EmulationError("the driver's allow-list is not locked after boot")
            ctl = target.read_control(t, cfg.arena_base)
            imap = analyze(session.workload_elf(self.workload), load_base=ctl.blob_base)
            names = hot_islands(imap, self.workload)
            # The UEFI app runs one thread on the BSP and every CPU is in SMM at the SMI, so no
            # thread is parked off-CPU inside an entry patch; it rolls back only with the app
            # parked outside the workload (no workload code running or on a stack), which
            # proves the copies unreachable: every byte may come back.
            plan = plan_ranked(
                imap, names, load_platform(target.PLATFORM), arena_base=cfg.arena_base, plan_id=1,
                taken=occupied(rel.address_map()), read_bytes=t.read_phys, callsites=True,
                chunk_size=CHUNK_SIZE, keep_copies=False, parked_threads=False,
            )  # fmt: skip
            wp = _Planned(imap, names, plan, expected_copies(imap, plan, t.read_phys))
            self._mark("plan")
            self._bad_plan(m, t, rel, wp)
            self._mark("bad_plan")
            self._stage_commit(t, rel, wp, cfg.arena_base)
            self._mark("commit")
            self._after_commit(m, t, rel, wp, cfg.arena_base)
        self._finish(m)

    # -- the SMRAM plan ---------------------------------------------------------------------

    def _bad_plan(self, m: QemuVm, t: ChipsecTransport, rel: Relocator, wp: _Planned) -> None:
        smram = t.helper.smram
        if smram is None or not smram.tseg_size:
            raise EmulationError("TSEG not found: no SMRAM to aim the bad plan at")
        inside = region_platform(smram.tseg_base + 0x1000, smram.tseg_size - 0x1000)
        bad = plan_ranked(
            wp.imap, wp.names, inside, arena_base=0, plan_id=99, read_bytes=t.read_phys,
            callsites=True, chunk_size=CHUNK_SIZE, keep_copies=False, parked_threads=False,
        ).plan  # fmt: skip
        self.report.bad_plan_rejected, self.report.bad_plan_status = refused_untouched(
            m, t, rel, bad
        )

    # -- stage and commit while the workload runs ------------------------------------------

    def _stage_commit(self, t: ChipsecTransport, rel: Relocator, wp: _Planned, arena: int) -> None:
        """Stage and commit through the layer; a commit whose SMI landed outside the islands
        (e.g. while the app printed) is rolled back with the app parked, so that no return
        address points into the copies, and tried again."""
        r = self.report

        def resume() -> None:
            target.resume(t, arena)
            self._wait_rounds(t, arena, 1)

        retry = RetryPolicy(
            attempts=MAX_COMMIT_ATTEMPTS,
            accept=lambda res: res.contexts_translated > 0,
            quiesce=lambda: target.pause(t, arena),
            resume=resume,
        )
        out = rel.apply(wp.plan.to_bytes(), retry)
        r.commit_attempts = out.attempts
        r.stage_smis, r.bytes_written = out.stage.smis, out.stage.bytes_written
        r.fixups_applied = out.stage.fixups_applied
        r.relocations = len(wp.plan.placed)
        r.callsites_patched = out.result.callsites_patched
        r.contexts_translated = out.result.contexts_translated
        r.cpus_in_smm = out.result.cpus

    def _wait_rounds(self, t: ChipsecTransport, arena: int, more: int) -> int:
        start = target.read_control(t, arena).rounds
        deadline = time.monotonic() + 60
        while target.read_control(t, arena).rounds < start + more:
            if time.monotonic() > deadline:
                raise EmulationError("the workload stopped making progress")
            time.sleep(0.05)
        return start

    def _after_commit(
        self, m: QemuVm, t: ChipsecTransport, rel: Relocator, wp: _Planned, arena: int
    ) -> None:
        r = self.report
        committed_round = target.read_control(t, arena).rounds
        expected = wp.expected
        dst_ok = all(t.read_phys(p.dst, len(p.final)) == p.final for p in expected)
        entries_ok = all(
            t.read_phys(int(i.src), len(entry_patch(i))) == entry_patch(i)
            for i in wp.plan.plan.islands
        )
        r.dest_bytes_match = dst_ok and entries_ok
        r.islands = [
            {"name": p.name, "src": p.src, "dst": p.dst, "size": len(p.final)} for p in expected
        ]
        rel.skip_samples()
        samples = []
        for _ in range(SAMPLES):
            samples += rel.sample()
            time.sleep(0.05)
        r.samples_total = len(samples)
        r.sample_rips = [f"{s.rip:#x}" for s in samples]
        r.samples_at_entries = sum(any(s.rip == p.src for p in expected) for s in samples)
        r.samples_in_copies = sum(
            any(p.dst <= s.rip < p.dst + len(p.final) for p in expected) for s in samples
        )
        self._wait_rounds(t, arena, ROUNDS_AFTER_COMMIT)
        # park the app so no workload code runs, undo the generation, check every byte came back
        target.pause(t, arena)
        r.rounds_after_commit = target.read_control(t, arena).rounds - committed_round
        rel.rollback(0)
        r.rolled_back = all(
            t.read_phys(p.src, len(p.original_entry)) == p.original_entry
            and t.read_phys(p.dst, len(p.final)) != p.final
            for p in expected
        )
        target.command(t, arena, target.FINISH)
        self.done = m.wait_for("serial", target.DONE_LINE.pattern, 60)

    def _finish(self, m: QemuVm) -> None:
        r = self.report
        done = self.done
        if done is None:
            raise EmulationError("the target app never reported its end")
        m.wait_exit(30)
        self._mark("done")
        sums = target.round_sums(m.serial())
        r.rounds_total = int(done.group(1))
        r.checksum = f"{sums[0][1]:#x}" if sums else ""
        same_sums = len({s for _, s in sums}) == 1
        if self.workload != session.OWN_WORKLOAD:  # the rounds' port-0xE9 outputs must agree
            outputs = m.workload_output().split(target.ROUND_MARK)[: r.rounds_total]
            r.round_output = outputs[0] if outputs else ""
            r.checksum = f"{len(outputs)} identical outputs of {len(r.round_output)} bytes"
            same_sums = len(outputs) == r.rounds_total and len(set(outputs)) == 1 and outputs[0]
        r.checksums_ok = bool(
            int(done.group(2)) == 0
            and len(sums) == r.rounds_total
            and same_sums
            and r.rounds_after_commit >= ROUNDS_AFTER_COMMIT
        )


def run_e2e(
    workdir: Path,
    driver: Path | None = None,
    do_build: bool = True,
    cpus: int = 1,
    workload: str = "own",
    firmware: Path | None = None,
    vars_template: Path | None = None,
) -> E2eReport:
    return E2e(workdir, driver, cpus, workload, firmware, vars_template).run(do_build)
