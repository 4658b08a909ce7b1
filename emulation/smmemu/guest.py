"""Guest threads on the emulated CPUs: a workload placed in the driver's arena, M threads with
their own stacks and contexts, preemptive round-robin by instruction-count slices over N CPUs.

Arena layout (the driver registers all of it SOURCE|DEST|STACK):

    arena + 0x000000 +------------------+
                     | CODE             |  the workload image (PIC; R_X86_64_RELATIVE applied)
    arena + 0x400000 +------------------+
                     | HOT              |  island destinations
    arena + 0xC00000 +------------------+
                     | STACKS           |  64 KiB per thread
    arena + 0x1000000+------------------+

Threads share nothing writable (workload.h), so each thread's output stream depends only on
(thread, nthreads), whatever the schedule and wherever the SMIs land.

Saved contexts: a thread off its CPU keeps its registers where an OS keeps them, in guest memory
-- the first CONTEXT_AREA bytes of its stack slot (like Linux's thread_info at the base of a
kernel stack), inside the registered STACK region -- written at every deschedule and cleared
while it runs.  The handler sees on-CPU threads through the save state only; this is how the
driver's RECLAIM scan (smm/core/reclaim.c) sees the parked ones too.  An exited thread's stack
slot is freed (zeroed) at the next deschedule, as an OS frees a dead thread's stack: its dead
frames are no evidence for the scan.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from unicorn import UcError
from unicorn.unicorn import UcContext
from unicorn.x86_const import UC_X86_REG_RIP

from codeisland.errors import EmulationError

from .machine import NO_UNTIL, REGS, Cpu, Machine
from .ports import PORT_GUEST_EXIT, PORT_GUEST_OUT
from .savestate import GPR_NAMES
from .workload import WorkloadImage

THREAD_STACK = 0x10000  # per thread, inside the layout's stack region
CONTEXT_AREA = 0x100  # at the base of each stack slot: a parked thread's saved registers
SPILLED = (*GPR_NAMES, "rip", "rflags")  # in this order, 8 bytes each
assert 8 * len(SPILLED) <= CONTEXT_AREA
MAX_THREADS = 16  # CI_MAX_THREADS in workload.h


@dataclass(frozen=True)
class ArenaLayout:
    """Offsets into the driver's arena: where the workload image and the thread stacks go."""

    code_offset: int
    code_size: int
    stack_offset: int
    stack_size: int

    def check(self, arena_size: int, threads: int) -> None:
        for name, off, size in (("code", self.code_offset, self.code_size),
                                ("stack", self.stack_offset, self.stack_size)):  # fmt: skip
            if off < 0 or size <= 0 or off + size > arena_size:
                raise EmulationError(
                    f"{name} region {off:#x}+{size:#x} does not fit the arena of {arena_size:#x}"
                )
        if threads * THREAD_STACK > self.stack_size:
            raise EmulationError(f"{threads} thread stacks do not fit {self.stack_size:#x} bytes")


@dataclass
class GuestThread:
    index: int
    context: UcContext
    stack_base: int
    stack_top: int
    output: bytearray = field(default_factory=bytearray)
    exit_code: int | None = None
    instructions: int = 0
    cpu: int | None = None
    stack_freed: bool = False

    @property
    def runnable(self) -> bool:
        return self.exit_code is None

    @property
    def rip(self) -> int:
        return int(self.context.reg_read(UC_X86_REG_RIP))


SliceHook = Callable[["Guest", Cpu, GuestThread], None]


class Guest:
    """A workload running on the machine's CPUs."""

    def __init__(
        self,
        machine: Machine,
        image: WorkloadImage,
        arena_base: int,
        arena_size: int,
        threads: int,
        layout: ArenaLayout,
        slice_instructions: int = 20_000,
    ) -> None:
        if not 1 <= threads <= MAX_THREADS:
            raise EmulationError(f"{threads} threads: workloads support 1..{MAX_THREADS}")
        layout.check(arena_size, threads)
        if image.size > layout.code_size:
            raise EmulationError(f"workload {image.name} ({image.size:#x} bytes) exceeds CODE")
        self.m = machine
        self.image = image
        self.arena_base = arena_base
        self.arena_size = arena_size
        self.layout = layout
        self.base = arena_base + layout.code_offset
        self.slice = slice_instructions
        self.instructions = 0
        self.code_bytes = 0  # executed guest code bytes, native-sliced runs only
        self.samples: list[tuple[int, int]] = []  # (thread, rip) at slice boundaries
        self.sample_slices = False
        self._load()
        self.threads = [self._make_thread(i, threads) for i in range(threads)]
        self.queue: deque[GuestThread] = deque(self.threads)
        self._cursor = 0  # next CPU to run in the current round
        self.current: GuestThread | None = None
        machine.ports.on_out(PORT_GUEST_OUT, self._out)
        machine.ports.on_out(PORT_GUEST_EXIT, self._exit)
        for cpu in machine.cpus:
            cpu.thread = None
            cpu.context = cpu.idle_context
        self._assign()

    # -- placement ------------------------------------------------------------------

    def _load(self) -> None:
        """Copy the segments and apply the image's R_X86_64_RELATIVE relocations."""
        self.m.write(self.base, bytes(self.image.size))
        for seg in self.image.segments:
            self.m.write(self.base + seg.offset, seg.data)
        mask = (1 << 64) - 1
        for site, addend in self.image.relocations:
            self.m.write(self.base + site, ((self.base + addend) & mask).to_bytes(8, "little"))

    def _make_thread(self, index: int, count: int) -> GuestThread:
        uc = self.m.uc
        stack_base = self.arena_base + self.layout.stack_offset + index * THREAD_STACK
        top = stack_base + THREAD_STACK
        for reg in REGS.values():
            uc.reg_write(reg, 0)
        rsp = top - 8  # as right after a call: a zero return address on top
        self.m.write(rsp, bytes(8))
        uc.reg_write(REGS["rsp"], rsp)
        uc.reg_write(REGS["rdi"], index)
        uc.reg_write(REGS["rsi"], count)
        uc.reg_write(REGS["rflags"], 0x202)
        uc.reg_write(REGS["rip"], self.base + self.image.entry)
        return GuestThread(index, uc.context_save(), stack_base, top)

    def address(self, function: str) -> int:
        """Where a workload function starts in the arena now (its original place)."""
        return self.base + self.image.functions[function].offset

    # -- ports ------------------------------------------------------------------------

    def _out(self, _port: int, _size: int, value: int) -> None:
        if self.current is not None:
            self.current.output.append(value & 0xFF)

    def _exit(self, _port: int, _size: int, value: int) -> None:
        if self.current is not None:
            self.current.exit_code = value
        self.m.uc.emu_stop()

    # -- scheduling ---------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return all(not t.runnable for t in self.threads)

    @property
    def runnable_threads(self) -> int:
        return sum(1 for t in self.threads if t.runnable)

    def on_cpu(self) -> list[tuple[int, GuestThread | None, int]]:
        """(CPU index, the thread it holds or None when idle, its RIP) for every CPU."""
        return [
            (c.index, c.thread if isinstance(c.thread, GuestThread) else None,
             int(c.context.reg_read(UC_X86_REG_RIP)))
            for c in self.m.cpus
        ]  # fmt: skip

    @property
    def busy_cpus(self) -> int:
        return sum(1 for c in self.m.cpus if c.thread is not None)

    def _assign(self) -> None:
        """Round-robin: each CPU gives its thread back and takes the next runnable one."""
        for cpu in self.m.cpus:
            if isinstance(cpu.thread, GuestThread) and cpu.thread.runnable:
                self.queue.append(cpu.thread)
            cpu.thread = None
            cpu.context = cpu.idle_context
        self.queue = deque(t for t in self.queue if t.runnable)
        for cpu in self.m.cpus:
            if not self.queue:
                break
            thread = self.queue.popleft()
            thread.cpu = cpu.index
            cpu.thread = thread
            cpu.context = thread.context
        for t in self.queue:
            t.cpu = None
        self._spill_contexts()

    def _spill_contexts(self) -> None:
        """Each parked thread's registers into its context area; zeros for a running one (its
        registers are in the save state); an exited thread's whole stack slot is freed."""
        for t in self.threads:
            if not t.runnable:
                if not t.stack_freed:
                    self.m.write(t.stack_base, bytes(t.stack_top - t.stack_base))
                    t.stack_freed = True
                continue
            words = bytes(8 * len(SPILLED))
            if t.cpu is None:
                words = b"".join(
                    int(t.context.reg_read(REGS[n])).to_bytes(8, "little") for n in SPILLED
                )
            self.m.write(t.stack_base, words)

    def _emulate(
        self, thread: GuestThread, where: str, until: int = NO_UNTIL, count: int = 0
    ) -> None:
        """Run `thread` in Unicorn from its saved context and save it back: the one path every
        run mode takes, so a fault or a stop reason is reported the same way for all of them."""
        uc = self.m.uc
        uc.context_restore(thread.context)
        self.current = thread
        self.m.memory.close_smram()
        try:
            uc.emu_start(thread.rip, until, count=count)
        except UcError as exc:
            uc.context_update(thread.context)
            self.m._raise_stop(where, exc)
        finally:
            self.current = None
        uc.context_update(thread.context)
        reasons = self.m.take_stop_reasons()
        if reasons:
            raise EmulationError(f"guest thread {thread.index} stopped: {reasons[0]}")

    def _run_slice(self, cpu: Cpu, thread: GuestThread, count: int) -> None:
        self._emulate(thread, f"guest thread {thread.index} on CPU {cpu.index}", count=count)
        thread.instructions += count
        self.instructions += count
        if not thread.runnable:
            self._spill_contexts()  # it exited: its stack is freed now
        if self.sample_slices:
            self.samples.append((thread.index, thread.rip))

    def step(self, budget: int, on_slice: SliceHook | None = None) -> int:
        """Run CPUs in turn, one slice each, until `budget` instructions ran or all threads
        ended.  Returns the instructions run (a thread's last slice counts whole)."""
        ran = 0
        cpus = self.m.cpus
        while ran < budget and not self.done:
            if self._cursor >= len(cpus):
                self._cursor = 0
                self._assign()
            cpu = cpus[self._cursor]
            thread = cpu.thread
            if not isinstance(thread, GuestThread) or not thread.runnable:
                self._cursor += 1
                if all(not isinstance(c.thread, GuestThread) for c in cpus):
                    self._assign()
                continue
            count = min(self.slice, budget - ran)
            self._run_slice(cpu, thread, count)
            ran += count
            if on_slice is not None:
                on_slice(self, cpu, thread)
            if not thread.runnable or count == self.slice:
                self._cursor += 1
        return ran

    def run_until(self, thread: GuestThread, address: int, limit: int = 5_000_000) -> bool:
        """Run one thread (on its CPU) until its RIP is `address`, at most `limit` instructions;
        True when it got there.  Used to place a thread at a chosen instruction before an SMI.
        (These instructions are not added to the counters: Unicorn does not report them.)"""
        if thread.cpu is None or not thread.runnable:
            return False
        self._emulate(thread, f"guest thread {thread.index}", until=address, count=limit)
        return thread.runnable and thread.rip == address

    def run(
        self,
        instructions: int | None = None,
        every: int | None = None,
        on_boundary: Callable[[Guest], None] | None = None,
        on_slice: SliceHook | None = None,
        jitter: random.Random | None = None,
    ) -> int:
        """Run until done (or `instructions`), calling `on_boundary` every `every` instructions
        -- the place to raise SMIs through the transport: periodic, or at seeded random points
        (each gap drawn from [every/2, 3*every/2) by `jitter`)."""
        total = 0
        while not self.done and (instructions is None or total < instructions):
            budget = every or self.slice * len(self.m.cpus) * 64
            if every and jitter is not None:
                budget = every // 2 + jitter.randrange(max(every, 1))
            if instructions is not None:
                budget = min(budget, instructions - total)
            total += self.step(budget, on_slice)
            if every and on_boundary is not None and not self.done:
                on_boundary(self)
        return total

    def run_sliced(
        self,
        slice_bytes: int = 400_000,
        every: int | None = None,
        on_boundary: Callable[[Guest], None] | None = None,
    ) -> int:
        """Run until done with native slices of `slice_bytes` executed code bytes (slicer.py):
        the fast mode for profiling.  Samples each thread's RIP at every slice end when
        `sample_slices` is set and calls `on_boundary` every `every` slices.  Instructions are
        not counted in this mode (code bytes are, in `code_bytes`); returns the slices run."""
        from .slicer import NativeSlicer

        uc = self.m.uc
        slicer = NativeSlicer(uc, self.arena_base, self.arena_base + self.arena_size - 1)
        slices = 0
        try:
            while not self.done:
                for cpu in self.m.cpus:
                    thread = cpu.thread
                    if not isinstance(thread, GuestThread) or not thread.runnable:
                        continue
                    slicer.arm(slice_bytes)
                    self._emulate(thread, f"guest thread {thread.index} on CPU {cpu.index}")
                    self.code_bytes += slicer.used
                    if self.sample_slices:
                        self.samples.append((thread.index, thread.rip))
                    slices += 1
                    boundary = every and on_boundary is not None and slices % every == 0
                    if boundary and on_boundary is not None and not self.done:
                        on_boundary(self)
                self._assign()
        finally:
            slicer.close()
        return slices

    def outputs(self) -> list[bytes]:
        return [bytes(t.output) for t in self.threads]
