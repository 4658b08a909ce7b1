"""`codeisland doctor`: what a relocation needs, checked through chipsec, each with a verdict.

Checks run in order and never stop at the first failure; a check that cannot be made in the
current setting (e.g. MSRs under QEMU) says so as "unknown" instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import CodeIslandError
from .hw import q35
from .hw.transport import ChipsecTransport
from .plan import layout as L
from .transport.mailbox import MailboxClient, Reply, smm_memory_mode

OK, WARN, FAIL, UNKNOWN = "ok", "warn", "fail", "unknown"
Q35_MCH = 0x29C08086
IA32_SMRR_PHYSBASE, IA32_SMRR_PHYSMASK = 0x1F2, 0x1F3
SMRR_VALID = 1 << 11

# why a Linux process's own code needs the test-board image (qemu process, WALK_TABLE_OUTSIDE)
OWN_PAGES_NEED = (
    "a process's own pages cannot be relocated here: the engine may not walk its page tables "
    "(ordinary RAM), which needs the test-board firmware (codeisland firmware build --variant "
    "unrestricted)"
)


@dataclass
class Check:
    name: str
    verdict: str
    detail: str
    advice: str = ""

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass
class DoctorReport:
    helper: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return all(c.verdict != FAIL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "helper": self.helper,
            "ready": self.ready,
            "checks": [c.to_dict() for c in self.checks],
        }

    def __str__(self) -> str:
        lines = [f"codeisland doctor (chipsec helper: {self.helper})"]
        for c in self.checks:
            lines.append(f"  [{c.verdict:^7}] {c.name}: {c.detail}")
            if c.advice:
                lines.append(f"            -> {c.advice}")
        lines.append("ready to relocate" if self.ready else "NOT ready to relocate")
        return "\n".join(lines)


class Doctor:
    """Runs the checks against one chipsec transport."""

    def __init__(self, transport: ChipsecTransport, under_qemu: bool) -> None:
        self.t = transport
        self.cs = transport.cs
        self.under_qemu = under_qemu
        self.smram: q35.SmramState | None = None
        self.client: MailboxClient | None = None
        self.query: Reply | None = None

    def run(self) -> DoctorReport:
        report = DoctorReport(type(self.t.helper).__name__)
        steps: list[Callable[[], Check]] = [
            self.smm_present,
            self.smm_locked,
            self.smrr,
            self.driver_found,
            self.driver_query,
            self.sw_smi,
            self.restricted_memory,
            self.target,
            self.virtualization,
        ]
        for step in steps:
            try:
                report.checks.append(step())
            except (CodeIslandError, RuntimeError) as exc:  # chipsec raises RuntimeErrors
                name = step.__name__.replace("_", " ")
                report.checks.append(Check(name, FAIL, f"check failed: {exc}"))
        return report

    def smm_present(self) -> Check:
        did = self.cs.pci.read_dword(0, 0, 0, 0)
        if did != Q35_MCH:
            return Check(
                "smm present",
                UNKNOWN,
                f"host bridge {did:#010x} is not Q35; this build decodes Q35 SMRAM registers only",
                "run `chipsec_main -m common.smm` and `-m common.smrr` for this platform",
            )
        self.smram = q35.read_smram_state(self._read_pci)
        s = self.smram
        if not s.tseg_enabled:
            return Check(
                "smm present",
                FAIL,
                "TSEG is disabled (ESMRAMC.T_EN = 0)",
                "boot firmware built with SMM (OVMF: SMM_REQUIRE, -machine smm=on)",
            )
        return Check(
            "smm present", OK, f"TSEG {s.tseg_base:#x}+{s.tseg_size:#x} (TOLUD {s.tolud:#x})"
        )

    def _read_pci(self, bus: int, dev: int, fun: int, offset: int, size: int) -> int:
        pci = self.cs.pci
        read = {1: pci.read_byte, 2: pci.read_word, 4: pci.read_dword}[size]
        return int(read(bus, dev, fun, offset))

    def _smi_count(self) -> int:
        assert self.client is not None
        at = self.client.base + L.Mailbox.smi_count.offset
        return int.from_bytes(self.t.read_phys(at, 4), "little")

    def smm_locked(self) -> Check:
        s = self.smram
        if s is None:
            return Check("smm locked", UNKNOWN, "SMRAM registers not decoded on this platform")
        if s.open:
            return Check(
                "smm locked",
                FAIL,
                "SMRAM is open (D_OPEN = 1): any code can read it",
                "firmware must close and lock SMRAM before handing over to the OS",
            )
        if not s.locked:
            return Check(
                "smm locked",
                FAIL,
                "SMRAM is not locked (D_LCK = 0)",
                "firmware must set D_LCK at end of DXE (SmmReadyToLock)",
            )
        return Check("smm locked", OK, f"D_LCK set (SMRAM register {s.smram:#04x})")

    def smrr(self) -> Check:
        try:
            base = self.cs.msr.read_msr(0, IA32_SMRR_PHYSBASE)
            mask = self.cs.msr.read_msr(0, IA32_SMRR_PHYSMASK)
        except RuntimeError as exc:
            why = (
                "QEMU does not implement SMRR and its monitor reads no MSRs"
                if self.under_qemu
                else str(exc)
            )
            return Check(
                "smrr",
                UNKNOWN,
                f"cannot read IA32_SMRR_PHYSBASE/MASK: {why}",
                "on a board, chipsec's Linux helper reads them (chipsec -m common.smrr)",
            )
        base_v, mask_v = base[0] | base[1] << 32, mask[0] | mask[1] << 32
        if not mask_v & SMRR_VALID:
            return Check(
                "smrr",
                FAIL,
                "SMRR is not enabled (PHYSMASK.V = 0)",
                "enable SMRR in firmware: without it SMRAM is cacheable from outside",
            )
        return Check("smrr", OK, f"PHYSBASE {base_v:#x} PHYSMASK {mask_v:#x}")

    def driver_found(self) -> Check:
        try:
            d = self.t.discover()
            self.client = MailboxClient(self.t, timeout_s=10.0)
        except CodeIslandError as exc:
            return Check(
                "driver found",
                FAIL,
                str(exc),
                "inject it: codeisland firmware inject --image IN --driver "
                "smm/build/CodeIslandSmm.efi -o OUT, and flash/boot OUT",
            )
        return Check(
            "driver found",
            OK,
            f"mailbox {d.config.mailbox_base:#x}, "
            f"arena {d.config.arena_base:#x}+{d.config.arena_size:#x}, "
            f"SW SMI {d.config.sw_smi_value:#x}; found by {d.method}: {d.explain()}",
        )

    def driver_query(self) -> Check:
        if self.client is None:
            return Check("driver query", UNKNOWN, "driver not found")
        self.query = self.client.query()
        info = self.query.info
        if info is None:
            return Check("driver query", FAIL, "QUERY answered without its info block")
        detail = (
            f"engine v{info.engine_version}, plan v{info.plan_version}, "
            f"{info.region_count} regions, allow-list "
            f"{'locked' if info.locked else 'NOT locked'}, islands<={info.max_islands}, "
            f"plan<={info.plan_max_size} bytes, stage budget {info.stage_budget}"
        )
        if info.plan_version != L.PLAN_VERSION:
            return Check(
                "driver query",
                FAIL,
                detail,
                f"this tool writes plan v{L.PLAN_VERSION}: update the driver or the tool",
            )
        if not info.locked:
            return Check(
                "driver query",
                WARN,
                detail,
                "the allow-list locks at SmmReadyToLock; boot further before relocating",
            )
        return Check("driver query", OK, detail)

    def sw_smi(self) -> Check:
        if self.client is None:
            return Check("sw smi delivery", UNKNOWN, "driver not found")
        before = self._smi_count()
        reply = self.client.query()
        after = self._smi_count()
        if after == before:
            return Check("sw smi delivery", FAIL, "QUERY answered but the SMI count did not move")
        return Check(
            "sw smi delivery",
            OK,
            f"SMI {self.client.header.sw_smi_value:#x} on 0xB2 answered "
            f"(driver SMI count {before} -> {after}, {reply.result.cpus} CPU(s) in SMM)",
        )

    def restricted_memory(self) -> Check:
        """The SMM memory mode from the driver's evidence (firmware_flags in its mailbox: the
        PCD as the platform build compiled it), and the regions code may be moved in."""
        if self.client is None or self.query is None or self.query.info is None:
            return Check("restricted memory", UNKNOWN, "driver not queried")
        code = [r for r in self.query.regions if r.flags & (L.REGION_SOURCE | L.REGION_DEST)]
        regions = ", ".join(f"{r.base:#x}+{r.size:#x}/{r.flags:#x}" for r in code) or "none"
        mode = smm_memory_mode(self.client.header.firmware_flags)
        if not code:
            return Check(
                "restricted memory",
                WARN,
                f"{mode}; the driver registered no code region",
                "the driver can relocate nothing: check its log for reservation errors",
            )
        if mode == "restricted":
            return Check(
                "restricted memory",
                OK,
                "restricted (the platform build fixed PcdCpuSmmRestrictedMemoryAccess TRUE, "
                f"the driver reports): code to relocate must live in {regions}; "
                f"{OWN_PAGES_NEED}",
            )
        if mode == "unrestricted":
            return Check(
                "restricted memory",
                WARN,
                "UNRESTRICTED: test-board firmware (PcdCpuSmmRestrictedMemoryAccess FALSE, the "
                "driver reports); SMM can reach any memory outside SMRAM.  The engine still "
                f"refuses SMRAM and anything out of bounds: code moves only within its "
                f"registered regions ({regions}) or pages its own walk finds",
                "never run this image on a production machine",
            )
        return Check(
            "restricted memory",
            WARN,
            "unknown: the driver was not built inside this platform's EDK2 build (injected, or "
            "built alone), so it cannot say; EDK2's default (and Debian's OVMF) restricts, "
            f"in which case code to relocate must live in {regions} ({OWN_PAGES_NEED})",
            "for evidence, build the firmware with the driver in its DSC "
            "(codeisland firmware build)",
        )

    def target(self) -> Check:
        """What runs from the arena: our Linux agent or UEFI target app, or nothing known."""
        if self.client is None:
            return Check("target", UNKNOWN, "driver not found")
        from .qemu import target as uefi_app
        from .qemu.linux import agent as linux_agent

        arena = int(self.client.header.arena_base)
        try:
            ctl = linux_agent.Agent(self.t, arena).control()
        except CodeIslandError:
            ctl = None
        if ctl is not None:
            return self._linux_target(ctl)
        try:
            app = uefi_app.read_control(self.t, arena)
        except CodeIslandError:
            return Check(
                "target",
                UNKNOWN,
                f"nothing of ours at the arena base {arena:#x} (no target app, no Linux agent)",
                "start one: codeisland qemu run --guest linux (or the UEFI target app)",
            )
        return Check(
            "target",
            OK,
            f"UEFI target app: workload at {app.blob_base:#x}, {app.rounds} rounds",
        )

    def _linux_target(self, ctl: Any) -> Check:
        """Our Linux agent; at an address the kernel chose, whether this firmware lets the
        engine walk the process's page tables (else which firmware does)."""
        from .qemu.linux import agent as linux_agent
        from .qemu.linux.walks import firmware_needed

        identity = ctl.mapping == linux_agent.MAP_IDENTITY
        where = "at virtual == physical" if identity else f"at {ctl.arena_va:#x} (virtual)"
        detail = (
            f"Linux guest agent pid {ctl.pid} maps the arena {where}; workload "
            f"{ctl.workload.decode(errors='replace')} at {ctl.blob_va:#x}, {ctl.threads} "
            f"thread(s), {ctl.rounds} rounds, {ctl.bad_rounds} bad"
        )
        assert self.client is not None
        mode = smm_memory_mode(self.client.header.firmware_flags)
        if identity or mode == "unrestricted":
            how = "physical islands" if identity else "USER islands of its CR3 (page walks)"
            return Check("target", OK, f"{detail}; relocatable as {how}")
        return Check(
            "target",
            WARN,
            f"{detail}; SMM memory access {mode}: the engine will refuse USER islands of this "
            "process (its page tables are ordinary RAM)",
            firmware_needed(),
        )

    def virtualization(self) -> Check:
        from chipsec.hal.cpuid import CpuID

        cpuid = CpuID(self.cs)
        vmx = bool(cpuid.cpuid(1, 0)[2] & (1 << 5))
        svm = bool(cpuid.cpuid(0x80000001, 0)[2] & (1 << 2))
        where = "QEMU's CPU model" if self.under_qemu else "CPUID"
        if vmx or svm:
            return Check(
                "virtualization",
                OK,
                f"{'VMX' if vmx else 'SVM'} present ({where}): VM environments may be "
                f"planned as host-side hints",
            )
        return Check(
            "virtualization",
            WARN,
            f"no VMX/SVM ({where})",
            "plans naming a VM environment will be reported as unavailable",
        )
