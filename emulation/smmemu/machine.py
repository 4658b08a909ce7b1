"""The emulated multi-CPU machine: Unicorn, memory, ports, CPUs with save-state maps, the
firmware tables, the loaded driver, and SMI entry/exit.

One Unicorn instance executes whichever CPU is running; every CPU's context lives in a
UcContext between slices (guest threads own theirs, an idle CPU holds an idle context).  An SMI
is taken between slices, like hardware takes it at an instruction boundary:

  1. every CPU writes its context into its save-state map (SMBASE + 0x8000 + map offset);
  2. SMRAM opens (and after ready-to-lock, memory that was conventional at lock closes);
  3. the dispatcher runs the driver's handlers in Unicorn on the SMM stack of the CPU that
     raised the SMI (SwDispatch2 children whose value matches APM_CNT, then root handlers);
  4. RSM: every CPU's context is reloaded from its map (so RIP rewrites take effect); SMRAM
     closes before code outside SMM runs again (memory.close_smram).  Code bytes the handler
     rewrote are re-translated: Unicorn drops the translations of pages emulated code stores to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from iced_x86 import Decoder
from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_BLOCK,
    UC_HOOK_MEM_FETCH_PROT,
    UC_HOOK_MEM_FETCH_UNMAPPED,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_READ_PROT,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_WRITE,
    UC_HOOK_MEM_WRITE_PROT,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_MEM_FETCH_PROT,
    UC_MEM_FETCH_UNMAPPED,
    UC_MEM_READ_PROT,
    UC_MEM_READ_UNMAPPED,
    UC_MEM_WRITE,
    UC_MEM_WRITE_PROT,
    UC_MEM_WRITE_UNMAPPED,
    UC_MODE_64,
    Uc,
    UcError,
)
from unicorn.unicorn import UcContext
from unicorn.x86_const import (
    UC_X86_REG_CR3,
    UC_X86_REG_CS,
    UC_X86_REG_EFLAGS,
    UC_X86_REG_R8,
    UC_X86_REG_R9,
    UC_X86_REG_R10,
    UC_X86_REG_R11,
    UC_X86_REG_R12,
    UC_X86_REG_R13,
    UC_X86_REG_R14,
    UC_X86_REG_R15,
    UC_X86_REG_RAX,
    UC_X86_REG_RBP,
    UC_X86_REG_RBX,
    UC_X86_REG_RCX,
    UC_X86_REG_RDI,
    UC_X86_REG_RDX,
    UC_X86_REG_RIP,
    UC_X86_REG_RSI,
    UC_X86_REG_RSP,
)

from codeisland.errors import EmulationError

from . import efi, smram
from .devices import CmosRtc, InputEvents
from .firmware import Firmware
from .memory import SMRAM_BASE, SMRAM_SIZE, TRAP_BASE, TRAP_SIZE, MemoryMap
from .pe import LoadedImage, load_pe
from .ports import PORT_APM_CNT, PORT_APM_STS, PORT_DEBUGCON, PORT_TRAP, PortBus
from .savestate import LAYOUTS, SaveStateMap
from .slicer import NativeSlicer
from .traps import TrapTable
from .writes import WriteTracker

REGS = {
    "rax": UC_X86_REG_RAX, "rbx": UC_X86_REG_RBX, "rcx": UC_X86_REG_RCX,
    "rdx": UC_X86_REG_RDX, "rsp": UC_X86_REG_RSP, "rbp": UC_X86_REG_RBP,
    "rsi": UC_X86_REG_RSI, "rdi": UC_X86_REG_RDI, "r8": UC_X86_REG_R8, "r9": UC_X86_REG_R9,
    "r10": UC_X86_REG_R10, "r11": UC_X86_REG_R11, "r12": UC_X86_REG_R12,
    "r13": UC_X86_REG_R13, "r14": UC_X86_REG_R14, "r15": UC_X86_REG_R15,
    "rip": UC_X86_REG_RIP, "rflags": UC_X86_REG_EFLAGS,
}  # fmt: skip
# Saved at SMI entry (the handler reads them: address space and CPL), not written back at RSM.
ENTRY_ONLY_REGS = {"cr3": UC_X86_REG_CR3, "cs": UC_X86_REG_CS}

_SMRAM_END = SMRAM_BASE + SMRAM_SIZE - 1
# A firmware call that executes more code bytes than this in SMRAM is a hang (~10^9
# instructions; RECLAIM's scan of a 16 MiB arena, the longest legitimate run, is ~10^7).
# Counted by a native block hook (slicer.py), not emu_start's timeout: that starts a timer
# thread per call, which costs an SMI milliseconds of waiting on a loaded machine.
CALL_BUDGET_BYTES = 1 << 32
NO_UNTIL = 0xFFFF_FFFF_FFFF_F000
HOLE_LEAD = 512  # bytes before a locked hole where an access into it may start

_ACCESS = {
    UC_MEM_READ_UNMAPPED: "read of unmapped", UC_MEM_WRITE_UNMAPPED: "write to unmapped",
    UC_MEM_FETCH_UNMAPPED: "fetch from unmapped", UC_MEM_READ_PROT: "read of protected",
    UC_MEM_WRITE_PROT: "write to protected", UC_MEM_FETCH_PROT: "fetch from protected",
}  # fmt: skip


@dataclass
class Cpu:
    """One logical CPU: its SMBASE tile, save-state map and the context it holds now."""

    index: int
    map: SaveStateMap
    context: UcContext
    idle_context: UcContext
    thread: object | None = None  # the guest thread on it, or None when idle


@dataclass
class SmiRecord:
    """One SMI as the machine saw it."""

    number: int
    apm: int
    initiator: int
    handler_instructions: int = 0
    handlers: list[tuple[str, int]] = field(default_factory=list)  # (kind, EFI status)
    rips_before: list[int] = field(default_factory=list)
    rips_after: list[int] = field(default_factory=list)


class Machine:
    """The emulated board.  Build it, `boot()` the driver, `ready_to_lock()`, then run guests
    (smmemu.guest) and raise SMIs (`smi()`, or EmulatorTransport.raise_sw_smi)."""

    def __init__(
        self,
        cpus: int = 2,
        layout: str = "intel64",
        *,
        sw_dispatch: bool = True,
        smm_access: bool = True,
        withhold: frozenset[str] = frozenset(),
        count_smm_instructions: bool = True,
    ) -> None:
        if layout not in LAYOUTS:
            raise EmulationError(f"unknown save-state layout {layout!r} (intel64 or amd64)")
        if not 1 <= cpus <= 64:
            raise EmulationError(f"{cpus} CPUs: the machine has 1..64")
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.write_tracker: WriteTracker | None = None  # pages stored to, for a host that diffs
        self._guard: NativeSlicer | None = None
        self.layout = LAYOUTS[layout]
        self._stop_reasons: list[str] = []
        self._fault: str | None = None
        self.memory = MemoryMap(self.uc)
        self.smram = smram.Smram()
        self.ports = PortBus(self.uc, self.stop_with)
        self.traps = TrapTable(self.uc, self.stop_with)
        self.traps.add_page(TRAP_BASE, TRAP_SIZE)
        self.traps.add_page(smram.TRAP, 0x1000)
        self.ports.on_out(PORT_TRAP, self.traps.dispatch)
        self.return_stub = TRAP_BASE + TRAP_SIZE - 16  # hlt: where firmware calls return to
        self.idle_stub = TRAP_BASE + TRAP_SIZE - 8  # hlt; jmp $-1: an idle CPU
        self.write(self.return_stub, b"\xf4")
        self.write(self.idle_stub, b"\xf4\xeb\xfd")
        self.in_smm = False
        self.locked = False
        self.apm = (0, 0)
        self.smi_count = 0
        self.smis: list[SmiRecord] = []
        self.debug_log: list[str] = []
        self._debug_line = bytearray()
        self.save_state_trace: list[tuple[str, int, int, int]] = []
        self.trace_save_states = False
        self.driver: LoadedImage | None = None
        self.entry_status: int | None = None
        self._smm_icount = 0
        self._block_sizes: dict[int, int] = {}
        self.cpus = [self._make_cpu(i) for i in range(cpus)]
        self.firmware = Firmware(
            self, sw_dispatch=sw_dispatch, smm_access=smm_access, withhold=withhold
        )
        self.ports.on_out(PORT_DEBUGCON, self._debugcon)
        self.ports.on_in(PORT_APM_CNT, lambda _p, _s: self.apm[0])
        self.ports.on_in(PORT_APM_STS, lambda _p, _s: self.apm[1])
        self.ports.on_out(PORT_APM_STS, self._apm_data)
        self.ports.on_out(PORT_APM_CNT, self._apm_from_guest)
        # board devices every guest may read; their owners set the clock and queue events
        self.rtc = CmosRtc()
        self.rtc.attach(self.ports)
        self.input_events = InputEvents()
        self.input_events.attach(self.ports)
        self.uc.hook_add(
            UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED | UC_HOOK_MEM_FETCH_UNMAPPED
            | UC_HOOK_MEM_READ_PROT | UC_HOOK_MEM_WRITE_PROT | UC_HOOK_MEM_FETCH_PROT,
            self._on_fault,
        )  # fmt: skip
        self._smm_hook_ids: list[int] = []
        self.count_smm_instructions = count_smm_instructions
        self._smram_code_hooked = False  # every SMRAM translation made under the SMM hooks?
        self.pending_guest_smi: int | None = None
        self._sw_context = self.smram.table_alloc(32)

    # -- memory helpers -----------------------------------------------------------------

    def read(self, address: int, size: int) -> bytes:
        """Bytes of physical memory (protections do not apply, as with uc_mem_read)."""
        for base, ram in self.memory.ram.items():
            if base <= address and address + size <= base + ram.size:  # in place: no copy out
                return ram[address - base : address - base + size].tobytes()
        return bytes(self.uc.mem_read(address, size))  # unmapped or across mappings

    def write(self, address: int, data: bytes) -> None:
        self.uc.mem_write(address, bytes(data))
        if self.write_tracker is not None:  # host writes bypass Unicorn's hooks
            self.write_tracker.note(address, len(data))

    def _make_cpu(self, index: int) -> Cpu:
        ssm = SaveStateMap(self.layout, self.smram.smbase(index), self.read, self.write)
        self.uc.reg_write(UC_X86_REG_RIP, self.idle_stub)
        for name, reg in REGS.items():
            if name not in ("rip", "rflags"):
                self.uc.reg_write(reg, 0)
        self.uc.reg_write(UC_X86_REG_EFLAGS, 0x202)
        idle = self.uc.context_save()
        return Cpu(index, ssm, idle, idle)

    # -- stopping and faults ----------------------------------------------------------------

    def stop_with(self, reason: str) -> None:
        """Stop the running emulation; the caller of emu_start raises EmulationError."""
        self._stop_reasons.append(reason)
        self.uc.emu_stop()

    def _on_fault(
        self, uc: Uc, access: int, address: int, size: int, value: int, _u: object
    ) -> bool:
        where = self.memory.describe(address)
        mode = "in SMM" if self.in_smm else "outside SMM"
        self._fault = f"{_ACCESS.get(access, 'access to')} memory at {address:#x} ({where}) {mode}"
        return False

    def _raise_stop(self, what: str, exc: UcError | None = None) -> None:
        rip = int(self.uc.reg_read(UC_X86_REG_RIP))
        if self._stop_reasons:
            reason = self._stop_reasons[0]
            self._stop_reasons.clear()
            raise EmulationError(f"{what} stopped: {reason}")
        if exc is not None:
            fault = self._fault or str(exc)
            self._fault = None
            raise EmulationError(f"{what} faulted at rip={rip:#x}: {fault}")

    def take_stop_reasons(self) -> list[str]:
        out = list(self._stop_reasons)
        self._stop_reasons.clear()
        return out

    # -- I/O ports ------------------------------------------------------------------------

    def _debugcon(self, _port: int, _size: int, value: int) -> None:
        ch = value & 0xFF
        if ch == 0x0A:
            self.debug_log.append(self._debug_line.decode("latin-1"))
            self._debug_line.clear()
        elif ch != 0x0D:
            self._debug_line.append(ch)

    def _apm_data(self, _port: int, _size: int, value: int) -> None:
        self.apm = (self.apm[0], value & 0xFF)

    def _apm_from_guest(self, _port: int, _size: int, value: int) -> None:
        # A guest's OUT to APM_CNT raises a synchronous SMI at the next instruction boundary.
        self.apm = (value & 0xFF, self.apm[1])
        self.pending_guest_smi = value & 0xFF
        self.uc.emu_stop()

    def note_save_state(self, op: str, cpu: int, register: int, value: int = 0) -> None:
        if self.trace_save_states:
            self.save_state_trace.append((op, cpu, register, value))

    # -- SMM instruction counting -----------------------------------------------------------

    def _smm_hooks(self, on: bool) -> None:
        """Hooks present only while an SMI is handled: after lock, accesses to memory SMM may
        not touch (a read/write hook per hole, so the handler's other accesses cost nothing)
        and code fetches outside SMRAM; the handler's instruction count (a block hook bounded
        to SMRAM), optional (`count_smm_instructions`): a Python callback per block is most
        of an SMI's cost when nobody reads the figure (the plan fuzzer).  Guest code never
        runs under them.  Guest code the handler rewrites needs nothing here: Unicorn drops
        the translations of a page that emulated code stores to (self-modifying code)."""
        if on and not self._smm_hook_ids:
            below = SMRAM_BASE - 1
            rw = UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE
            self._smm_hook_ids = [
                self.uc.hook_add(UC_HOOK_BLOCK, self._on_smm_fetch_outside, None, 0, below)
            ]
            for base, length in self.memory.locked_holes or ():
                # Unicorn matches a hook on the access's first byte: start early enough for
                # the widest access (a 512-byte FXSAVE area) that ends inside the hole
                lead = max(base - HOLE_LEAD, 0)
                self._smm_hook_ids.append(
                    self.uc.hook_add(rw, self._on_smm_access, None, lead, base + length - 1)
                )
            if self.count_smm_instructions:
                self._smm_hook_ids.append(self.uc.hook_add(
                    UC_HOOK_BLOCK, self._on_smm_block, None, SMRAM_BASE, _SMRAM_END
                ))  # fmt: skip
        elif not on:
            for hook in self._smm_hook_ids:
                self.uc.hook_del(hook)
            self._smm_hook_ids = []
        if on and not self._smram_code_hooked:
            # Blocks translated while no hook was present (the driver's entry point, the
            # ready-to-lock notification) never call one: drop them once.  Blocks translated
            # under the hooks keep calling them (Unicorn checks its hook lists when they run),
            # so later SMIs need no re-translation -- which cost ~7 ms per SMI.
            self.uc.ctl_remove_cache(SMRAM_BASE, _SMRAM_END + 1)
            self._smram_code_hooked = True

    def _on_smm_access(
        self, uc: Uc, access: int, address: int, size: int, value: int, _u: object
    ) -> None:
        if self.memory.smm_denied(address, size):
            what = "write to" if access == UC_MEM_WRITE else "read of"
            where = self.memory.describe(address)
            self.stop_with(f"{what} memory at {address:#x} ({where}) in SMM after lock")

    def _on_smm_fetch_outside(self, uc: Uc, address: int, size: int, _u: object) -> None:
        if self.locked:
            where = self.memory.describe(address)
            self.stop_with(f"fetch from {address:#x} ({where}) in SMM after lock")

    def _on_smm_block(self, uc: Uc, address: int, size: int, _u: object) -> None:
        n = self._block_sizes.get(address)
        if n is None:
            code = bytes(uc.mem_read(address, size))
            n = sum(1 for _ in Decoder(64, code, ip=address))
            self._block_sizes[address] = n
        self._smm_icount += n

    # -- calling firmware code ------------------------------------------------------------

    def call(self, function: int, args: list[int], what: str) -> int:
        """Run `function(args...)` (MS x64) to its return; in SMM on the SMM stack. RAX."""
        rsp = smram.STACK_TOP - 0x100
        for name, reg in REGS.items():
            if name not in ("rip", "rflags"):
                self.uc.reg_write(reg, 0)
        self.uc.reg_write(UC_X86_REG_EFLAGS, 0x2)
        regs = (UC_X86_REG_RCX, UC_X86_REG_RDX, UC_X86_REG_R8, UC_X86_REG_R9)
        for reg, value in zip(regs, args[:4], strict=False):
            self.uc.reg_write(reg, value)
        stack = bytearray(0x28 + 8 * max(0, len(args) - 4))
        stack[0:8] = self.return_stub.to_bytes(8, "little")
        for i, value in enumerate(args[4:]):
            stack[0x28 + 8 * i : 0x30 + 8 * i] = value.to_bytes(8, "little")
        rsp -= len(stack)
        rsp &= ~0xF
        rsp -= 8  # as right after a call: rsp + 8 is 16-byte aligned
        self.write(rsp, bytes(stack))
        self.uc.reg_write(UC_X86_REG_RSP, rsp)
        if not self.in_smm:
            self.memory.close_smram()
        guard = self._hang_guard()
        guard.arm(CALL_BUDGET_BYTES)
        try:
            self.uc.emu_start(function, self.return_stub)
        except UcError as exc:
            self._raise_stop(what, exc)
        self._raise_stop(what)
        rip = int(self.uc.reg_read(UC_X86_REG_RIP))
        if rip != self.return_stub:
            raise EmulationError(
                f"{what} did not return: {guard.used} bytes of SMRAM code executed (a hang)"
            )
        return int(self.uc.reg_read(UC_X86_REG_RAX))

    def _hang_guard(self) -> NativeSlicer:
        """The budget of SMRAM code a call may execute (guest code never runs there)."""
        if self._guard is None:
            self._guard = NativeSlicer(self.uc, SMRAM_BASE, _SMRAM_END)
        return self._guard

    def smm_call(self, function: int, args: list[int], what: str) -> int:
        """Call SMRAM code in SMM under the same rules and counters as an SMI handler."""
        self._enter_smm()
        self._smm_icount = 0
        self._smm_hooks(True)
        try:
            return self.call(function, args, what)
        finally:
            self._smm_hooks(False)
            self._leave_smm()

    # -- boot ---------------------------------------------------------------------------

    def boot(self, driver: Path) -> int:
        """Load the driver into SMRAM and run its entry point in SMM; returns its status."""
        image = load_pe(driver, smram.IMAGE, smram.IMAGE_END - smram.IMAGE)
        self.driver = image
        self.write(image.base, image.image)
        self._enter_smm()
        try:
            status = self.call(image.entry, [0x2000, self.firmware.system_table], "driver entry")
        finally:
            self._leave_smm()
        self.entry_status = status
        self._smram_code_hooked = False
        if status != efi.EFI_SUCCESS:
            raise EmulationError(f"driver entry point returned status {status:#x}")
        return status

    def ready_to_lock(self) -> None:
        """Install SmmReadyToLock: run the notifications, then lock SMM page access."""
        self._enter_smm()
        try:
            for guid, function in list(self.firmware.reg.notifies):
                if guid == efi.SMM_READY_TO_LOCK_GUID:
                    self.call(function, [self._guid_ptr(guid), 0, 0], "ready-to-lock notify")
        finally:
            self._leave_smm()
        self._smram_code_hooked = False
        self.memory.lock()
        self.locked = True
        self.firmware.events.append("SmmReadyToLock")

    def _guid_ptr(self, guid: str) -> int:
        address = self.smram.table_alloc(16)
        self.write(address, efi.guid_bytes(guid))
        return address

    # -- SMI -----------------------------------------------------------------------------

    def _enter_smm(self) -> None:
        self.memory.enter_smm()
        self.in_smm = True

    def _leave_smm(self) -> None:
        self.in_smm = False  # SMRAM closes before code outside SMM runs (memory.close_smram)

    def smi(self, apm: int, data: int = 0, initiator: int = 0) -> SmiRecord:
        """A software SMI on every CPU: save states, dispatch, RSM.  See the module doc."""
        if self.driver is None:
            raise EmulationError("no driver is loaded")
        self.apm = (apm & 0xFF, data & 0xFF)
        self.smi_count += 1
        record = SmiRecord(self.smi_count, apm & 0xFF, initiator)
        for cpu in self.cpus:
            regs = {n: int(cpu.context.reg_read(r)) for n, r in (REGS | ENTRY_ONLY_REGS).items()}
            record.rips_before.append(regs["rip"])
            cpu.map.store(regs)
        self._enter_smm()
        self._smm_icount = 0
        self._smm_hooks(True)
        try:
            self.firmware.set_current_cpu(initiator)
            self._dispatch(record)
        finally:
            record.handler_instructions = self._smm_icount
            self._smm_hooks(False)
            self._leave_smm()
            self._rsm(record)
        self.smis.append(record)
        return record

    def _dispatch(self, record: SmiRecord) -> None:
        fw = self.firmware
        for child in list(fw.reg.sw_children):
            if child.value == self.apm[0]:
                # EFI_SMM_SW_CONTEXT {UINTN SwSmiCpuIndex; UINT8 CommandPort; UINT8 DataPort}
                # (16 bytes with padding), then the UINTN CommBufferSize that points at it.
                cpu = record.initiator
                ctx = self._sw_context
                self.write(ctx, cpu.to_bytes(8, "little") + bytes([self.apm[0], self.apm[1]]))
                self.write(ctx + 16, (16).to_bytes(8, "little"))
                args = [child.handle, child.context, ctx, ctx + 16]
                status = self.call(child.function, args, "SW SMI handler")
                record.handlers.append(("sw", status))
        for handler, handle in list(fw.reg.root_handlers):
            status = self.call(handler, [handle, 0, 0, 0], "root SMI handler")
            record.handlers.append(("root", status))

    def _rsm(self, record: SmiRecord) -> None:
        for cpu in self.cpus:
            regs = cpu.map.load()
            for name, value in regs.items():
                cpu.context.reg_write(REGS[name], value)
            record.rips_after.append(regs["rip"])
