"""Plan-mutation fuzzer of the real driver binary in the emulator (issue 16, adversarial evidence).

A board is booted once (smmemu, the real CodeIslandSmm.efi, guest threads of a workload stopped
mid-run inside the code) and a valid base plan is built by the relocation layer.  Each case,
seeded by (seed, case number), mutates the base plan -- a field set to an edge value (SMRAM
edges, the driver image, the SMM pool, the save-state tiles, the mailbox, the arena's ends,
wrap-around), a record duplicated or dropped, raw bytes -- and re-seals it (plan digest always,
chunk digests recomputed from memory when the islands still decode), so that mutations reach
the validator and the stage instead of stopping at BAD_DIGEST.  It is sent as STAGE or COMMIT
through the mailbox client (the host's public entry point), sometimes while another plan is
pending mid-stage, under a random stage budget.  Then, per case:

* refused: every mapped byte outside SMRAM except the mailbox, SMRAM except the handler's own
  scratch (SMM tables, the driver's writable sections, handler stack, save-state tiles --
  registers are compared instead), the undo pool above the log's top (dead bytes) and the copy
  of the request in a plan slot, every register of every CPU, and the engine's reported state
  (QUERY info, STATS map, pending plan's state, id and progress) are as before;
* accepted: every byte written outside SMRAM lies in the plan's destinations, entry patches,
  call sites, the CPUs' stack windows or the mailbox; the plan is then staged to the end,
  committed and rolled back, after which memory, registers and engine state are back to the
  case's start (a KEEP_COPIES plan's copies stay, retired, until the snapshot is restored).

The board is booted once: each case starts from a snapshot (idle, or the base plan pending
mid-stage), restored by copying back the pages that differ from it.  A case that crashes the
emulation (the driver faulted, hung, or touched memory SMM may not after lock) is a finding and
boots a new board.

Findings are reported with the case number and seed, so `--seed S --first N --cases 1`
replays one.  Used by tests/test_emu_plan_fuzz.py (a short run) and scripts/fuzz_driver.py.
"""

from __future__ import annotations

import ctypes
import random
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from unicorn import UcError

from smmemu import smram
from smmemu.machine import REGS
from smmemu.memory import SMRAM_BASE, SMRAM_SIZE
from smmemu.workload import load_workload
from smmemu.writes import WriteTracker

from ..analysis import analyze
from ..errors import CodeIslandError, EmulationError
from ..plan import layout as L
from ..plan.apply import make_chunks, relocated_bytes
from ..plan.digest import digest64
from ..plan.document import Plan
from ..relocation.placement import plan_ranked, region_platform
from .session import Session, boot

PAGE = 0x1000
_memcmp = ctypes.CDLL(None).memcmp  # the C library's, already in the process
_memcmp.restype = ctypes.c_int
_memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
WORKLOAD = "graphsort"
ISLANDS = ("merge_sort", "heap_sort", "components", "sift_down", "bfs", "checksum_sorted")
STACK_WINDOW = 8 * L.MAX_STACK_SLOTS
READ_MAX = 1 << 24  # the largest island source re-digested (the arena's size)
_DIGEST = slice(L.PlanHeader.digest.offset, L.PlanHeader.digest.offset + 8)
# SMRAM the handler rewrites on every SMI whatever it is asked (compared otherwise), besides
# the driver's writable sections (its globals: the engine state is compared by QUERY/STATS);
# its code, read-only data and the rest of the image area are compared like any byte
SMRAM_SCRATCH = (
    (smram.TABLES, smram.TABLES_END - smram.TABLES),  # dispatch contexts
    (smram.POOL_END, SMRAM_BASE + SMRAM_SIZE - smram.POOL_END),  # handler stack, save states
)


@dataclass
class Finding:
    case: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"case {self.case}: {self.kind}: {self.detail}"


@dataclass
class FuzzReport:
    seed: int
    cases: int = 0
    accepted: int = 0
    reboots: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)


@dataclass
class _Snapshot:
    """A board state cases start from: every mapped byte (copies), every CPU's registers,
    the engine as QUERY/STATS report it, and the machine's SMI counter."""

    memory: dict[int, np.ndarray]
    registers: list[dict[str, int]]
    engine: tuple[object, ...]
    smi_count: int


Runs = list[tuple[int, int]]  # (address, length) of runs of whole pages
# Outside SMRAM only the pages stored to are compared (smmemu.writes): the board's other 64 MiB
# can change only through a store or a host write, which the tracker sees, so comparing them
# byte by byte twice per case (8 ms) is not needed; SMRAM, where the handler's own stores are,
# is compared whole.  Every AUDIT_EVERY-th case compares every mapped byte and reports a
# changed page the tracker did not see as a finding.
AUDIT_EVERY = 64


class PlanFuzzer:
    """One booted board and its base plan; `run` drives cases against it.  The board is booted
    once: every case starts from a snapshot (idle, or the base plan pending mid-stage) that is
    restored by copying back only the pages that differ from it -- found by comparing every
    mapped byte, which the per-case checks need anyway."""

    def __init__(
        self, seed: int, *, sw_dispatch: bool = True, cpus: int = 2, driver: Path | None = None
    ) -> None:
        self.seed = seed
        self.driver = driver
        self.sw_dispatch = sw_dispatch
        self.cpus = cpus
        self._boot()

    # -- the board ------------------------------------------------------------------

    def _boot(self) -> None:
        self._tracker: WriteTracker | None = None  # every byte compared while booting
        self._audit, self._missed = False, set[int]()
        self.session: Session = boot(
            cpus=self.cpus, sw_dispatch=self.sw_dispatch, driver=self.driver,
            count_smm_instructions=False,
        )  # fmt: skip
        image = load_workload(WORKLOAD)
        guest = self.session.guest(image, threads=self.cpus)
        guest.step(60_000)  # threads stopped inside the workload's code
        base = self.session.arena[0]
        imap = analyze(image.path, load_base=self.session.region("code")[0])
        self.base = plan_ranked(
            imap, list(ISLANDS), region_platform(*self.session.region("hot")), arena_base=base,
            plan_id=0x16, stack_slots=4, read_bytes=self.session.machine.read, callsites=True,
            chunk_size=256,
        ).plan  # fmt: skip
        self.base.keep_copies = False  # its cases roll back to the start exactly
        self.mailbox = (self.session.client.base, L.MAILBOX_SIZE)
        driver = self.session.machine.driver
        assert driver is not None and driver.writable  # booted: its .data holds the engine
        self._driver_globals = driver.writable
        self.undo_pool = self._find_undo_pool()
        self.edges = self._edges()
        self._ram = self.session.machine.memory.ram  # the board's RAM, in place
        self.idle = self._snapshot()
        self._pending_base()
        self.staged = self._snapshot()
        self._idle_to_staged = self._changed(self.idle)
        self._since_idle = self._idle_to_staged  # pages where the board differs from idle
        self._restore(self.idle)
        if self._engine() != self.idle.engine:  # the snapshot must give the board back
            raise EmulationError("restoring the fuzzer's snapshot did not restore the engine")
        self._since_idle = self._changed(self.idle)
        self._restore(self.idle)
        machine = self.session.machine
        low = min(self._ram)
        self._tracker = machine.write_tracker = WriteTracker(machine.uc, low, SMRAM_BASE)

    def _find_undo_pool(self) -> int:
        """SMRAM address of the driver's undo pool: its SMM pages hold plan slot 0, slot 1, then
        the pool; slot 0 is found by a refused request's copy there (nothing pending yet)."""
        marker = b"codeisland-fuzz:" + self.seed.to_bytes(8, "little")
        self.session.client.stage(marker, check=False)  # BAD_TOTAL_SIZE, copied first
        pool = bytes(self.session.machine.uc.mem_read(smram.POOL, smram.POOL_END - smram.POOL))
        at = pool.find(marker)
        if at < 0 or at % PAGE:
            raise EmulationError("the driver's plan slot was not found in the SMM pool")
        return smram.POOL + at + 2 * L.PLAN_MAX_SIZE

    def _edges(self) -> list[int]:
        """Addresses a hostile plan would aim at."""
        q = self.session.client.query()
        out = [0, 1, PAGE, SMRAM_BASE, SMRAM_BASE - 1, SMRAM_BASE + SMRAM_SIZE,
               SMRAM_BASE + SMRAM_SIZE - 1, smram.IMAGE, smram.POOL, smram.SMBASE0 + 0x8000,
               self.mailbox[0], self.mailbox[0] + L.MAILBOX_SIZE - 1, (1 << 64) - 1,
               (1 << 64) - PAGE, 1 << 63, (1 << 32) - 1]  # fmt: skip
        for r in q.regions:
            out += [int(r.base), int(r.base) + int(r.size), int(r.base) + int(r.size) - 1]
        return out

    # -- snapshots --------------------------------------------------------------------

    def _snapshot(self) -> _Snapshot:
        engine = self._engine()  # its SMIs first: the memory copy is of the board after them
        memory = {}
        for base, ram in self._ram.items():
            # only the pages in use are copied: the rest stays unallocated zero pages, which
            # makes comparing most of the board's 76 MB against them cheap
            copy = memory[base] = np.zeros(ram.size, dtype=np.uint8)
            used = np.flatnonzero(ram.reshape(-1, PAGE).any(axis=1))
            copy.reshape(-1, PAGE)[used] = ram.reshape(-1, PAGE)[used]
        return _Snapshot(memory, self._registers(), engine, self.session.machine.smi_count)

    def _changed(self, ref: _Snapshot) -> Runs:
        """Runs of whole pages where the board's RAM differs from `ref` now.  Before the
        tracker is on (booting) and on audit cases, every mapped byte is compared; otherwise
        all of SMRAM and, elsewhere, the pages that can differ (`_candidates`).  An audit
        case records in `_missed` any changed page the tracked compare would not have found."""
        if self._tracker is None or self._audit:
            pages = [p for b, r in self._ram.items() for p in self._differing(ref, b, 0, r.size)]
            if self._tracker is not None:
                self._missed |= set(pages) - set(self._tracked_changes(ref))
        else:
            pages = self._tracked_changes(ref)
        return _page_runs(pages, self._ram)

    def _tracked_changes(self, ref: _Snapshot) -> list[int]:
        pages = self._differing(ref, SMRAM_BASE, 0, SMRAM_SIZE)
        for page in self._candidates(ref):
            base = max(b for b in self._ram if b <= page)
            pages += self._differing(ref, base, page - base, PAGE)
        return pages

    def _candidates(self, ref: _Snapshot) -> set[int]:
        """Pages outside SMRAM that may differ from `ref`: those stored to or written by the
        host since the last restore, and where the restored snapshot itself
        differs from `ref` (a case that started from the staged one, compared with idle)."""
        assert self._tracker is not None
        pages = set(self._tracker.pages())
        if ref is not self._restored:
            pages.update(a + k for a, n in self._idle_to_staged for k in range(0, n, PAGE))
        return {p for p in pages if not SMRAM_BASE <= p < SMRAM_BASE + SMRAM_SIZE}

    def _differing(self, ref: _Snapshot, base: int, lo: int, n: int) -> list[int]:
        """Addresses of the pages of mapping `base`'s [lo, lo+n) that differ from `ref`
        (memcmp in place over blocks, split down to the pages that differ)."""
        ram = self._ram[base]
        live, old = ram.ctypes.data, ref.memory[base].ctypes.data
        todo, pages = [(lo, n)], []
        while todo:
            lo, n = todo.pop()
            if not _memcmp(live + lo, old + lo, n):
                continue
            if n == PAGE:
                pages.append(base + lo)
                continue
            step = max(PAGE, n // 16 // PAGE * PAGE)
            todo += [(at, min(step, lo + n - at)) for at in range(lo, lo + n, step)]
        return pages

    def _restore(self, target: _Snapshot) -> None:
        """Put the board back to `target`: the pages that differ from idle (and, for the
        staged snapshot, those where it differs from idle) copied back, registers, counters."""
        runs = self._since_idle
        if target is self.staged:
            runs = runs + self._idle_to_staged
        machine = self.session.machine
        for address, length in runs:
            base = max(b for b in self._ram if b <= address)
            lo = address - base
            self._ram[base][lo : lo + length] = target.memory[base][lo : lo + length]
            if not SMRAM_BASE <= address < SMRAM_BASE + SMRAM_SIZE:
                machine.uc.ctl_remove_cache(address, address + length)  # code may live there
        self._since_idle = [] if target is self.idle else list(self._idle_to_staged)
        self._restored = target
        if self._tracker is not None:
            self._tracker.clear()  # the restore wrote the snapshot back, not the board
        for cpu, regs in zip(machine.cpus, target.registers, strict=True):
            for name, value in regs.items():
                cpu.context.reg_write(REGS[name], value)
        machine.smi_count = target.smi_count
        machine.smis.clear()  # a long run would keep millions of records
        machine.debug_log.clear()

    # -- observation ----------------------------------------------------------------

    def _registers(self) -> list[dict[str, int]]:
        return [
            {name: int(cpu.context.reg_read(reg)) for name, reg in REGS.items()}
            for cpu in self.session.machine.cpus
        ]

    def _engine(self) -> tuple[object, ...]:
        client = self.session.client
        q, s = client.query(), client.stats()
        assert q.info is not None
        info = q.info.as_dict()
        del info["stage_budget"]  # the mailbox's budget field, echoed by every request
        r = self._query = q.result  # the QUERY answer behind the tuple
        pending = (int(r.state), int(r.plan_id), int(r.chunks_done), int(r.chunks_total))
        entries = tuple(tuple(m.as_dict().values()) for m in s.map_entries)  # type: ignore[arg-type]
        return (tuple(sorted((k, str(v)) for k, v in info.items())), pending,
                int(r.generation), entries)  # fmt: skip

    # -- diffs ----------------------------------------------------------------------

    def _diff_runs(
        self, ref: _Snapshot, skip: tuple[tuple[int, int], ...] = (), pages: Runs | None = None
    ) -> Iterator[tuple[int, int]]:
        """(address, length) of each run of consecutive bytes where the board differs from
        `ref` now, outside `skip`: bytes compared only in the pages that differ (`pages`, when
        the caller has just found them)."""
        for address, length in self._changed(ref) if pages is None else pages:
            base = max(b for b in self._ram if b <= address)
            lo = address - base
            differs = self._ram[base][lo : lo + length] != ref.memory[base][lo : lo + length]
            for s_lo, n in skip:
                a, b = max(s_lo - address, 0), min(s_lo + n - address, length)
                if a < b:
                    differs[a:b] = False
            where = np.flatnonzero(differs)
            if not where.size:
                continue
            breaks = np.flatnonzero(np.diff(where) != 1)
            starts = np.concatenate(([where[0]], where[breaks + 1]))
            ends = np.concatenate((where[breaks], [where[-1]]))
            for first, last in zip(starts.tolist(), ends.tolist(), strict=True):
                yield address + first, last - first + 1

    @staticmethod
    def _inside(address: int, length: int, spans: list[tuple[int, int]]) -> bool:
        """Is [address, +length) covered by the union of spans (adjacent islands' copies make
        one run of written bytes)?"""
        end = address
        for lo, n in sorted(spans):
            if lo > end:
                break
            end = max(end, lo + n)
            if end >= address + length:
                return True
        return end >= address + length and length == 0

    def _request_copies(self, req: bytes) -> tuple[tuple[int, int], ...]:
        """The driver's plan slots (the two SMM-pool areas right below its undo pool) that
        hold a copy of the request: a refused request may leave its copy there, nothing else."""
        ram, want = self._ram[SMRAM_BASE], np.frombuffer(req, dtype=np.uint8)
        spans = []
        for slot in (self.undo_pool - 2 * L.PLAN_MAX_SIZE, self.undo_pool - L.PLAN_MAX_SIZE):
            off = slot - SMRAM_BASE
            if np.array_equal(ram[off : off + len(req)], want):
                spans.append((slot, len(req)))
        return tuple(spans)

    def _unchanged(
        self, start: _Snapshot, registers: list[dict[str, int]], req: bytes
    ) -> tuple[str | None, tuple[object, ...] | None]:
        """A refused request: memory (SMRAM included), registers and engine as at `start`.
        (None or a finding, the engine state if it was asked for.)"""
        top = int(dict(start.engine[0])["undo_bytes_used"])  # type: ignore[arg-type]
        dead = (self.undo_pool + top, L.UNDO_POOL_BYTES - top)  # above the log's top
        copies = self._request_copies(req)
        skip = (self.mailbox, dead, *SMRAM_SCRATCH, *self._driver_globals, *copies)
        for address, length in self._diff_runs(start, skip):
            if SMRAM_BASE <= address < SMRAM_BASE + SMRAM_SIZE:
                return f"SMRAM changed at {address:#x}+{length:#x}", None
            return f"memory changed at {address:#x}+{length:#x}", None
        for cpu, (old, new) in enumerate(zip(registers, self._registers(), strict=True)):
            if old != new:
                return f"CPU {cpu} registers changed", None
        engine = self._engine()  # SMIs: after the memory compare
        if start.engine != engine:
            return f"engine state changed: {_engine_diff(start.engine, engine)}", engine
        return None, engine

    def _allowed_writes(self, plan: Plan, pending: bool) -> list[tuple[int, int]]:
        spans = [self.mailbox]
        # a pending plan replaced by an accepted one: its staged bytes are restored
        islands = [*plan.islands, *(self.base.islands if pending else [])]
        for isl in islands:
            spans += [(int(isl.dst), int(isl.size)), (int(isl.src), L.ENTRY_ABS64_LEN)]
        spans += [(int(c.insn) + 1, 4) for c in plan.callsites]
        spans += [(regs["rsp"], STACK_WINDOW) for regs in self._registers()]
        return spans

    def _writes_outside(self, start: _Snapshot, plan: Plan, pending: bool) -> str | None:
        allowed = self._allowed_writes(plan, pending)
        skip = (self.mailbox, (SMRAM_BASE, SMRAM_SIZE))  # SMRAM: the engine's own state
        for address, length in self._diff_runs(start, skip):
            if not self._inside(address, length, allowed):
                return f"accepted plan wrote {address:#x}+{length:#x} outside its regions"
        return None

    # -- mutations ------------------------------------------------------------------

    def _value(self, rng: random.Random, bits: int, old: int) -> int:
        mask = (1 << bits) - 1
        pick = rng.random()
        if pick < 0.3 and bits == 64:
            v = rng.choice(self.edges) + rng.choice((0, 0, -1, 1, -8, 8, -PAGE, PAGE))
        elif pick < 0.55:
            v = old + rng.choice((-1, 1, -4, 4, -16, 16, -256, 256, 1 << (bits - 1)))
        elif pick < 0.75:
            v = rng.choice((0, 1, 2, 3, 4, 5, 8, 14, 15, 16, 255, 4096, mask, mask - 1, mask >> 1))
        else:
            v = rng.getrandbits(bits)
        return v & mask

    def _mutate_field(self, rng: random.Random, plan: Plan) -> str:
        tables = [(name, rows) for name, rows in zip(
            ("islands", "fixups", "callsites", "chunks", "targets", "rules"), plan.tables(),
            strict=True) if rows]  # fmt: skip
        name, rows = rng.choice(tables)
        row = rng.choice(rows)
        fname, ftype, *_ = rng.choice(row._fields_)
        if hasattr(ftype, "_length_"):  # an array field
            arr = getattr(row, fname)
            i = rng.randrange(len(arr))
            arr[i] = self._value(rng, ctypes.sizeof(ftype._type_) * 8, arr[i])
        else:
            setattr(row, fname, self._value(rng, ctypes.sizeof(ftype) * 8, getattr(row, fname)))
        return f"{name}.{fname}"

    def _mutate_rows(self, rng: random.Random, plan: Plan) -> str:
        rows = rng.choice([t for t in plan.tables() if t])
        i = rng.randrange(len(rows))
        op = rng.choice(("dup", "drop", "swap"))
        if op == "dup":
            rows.insert(i, type(rows[i]).from_bytes(bytes(rows[i])))
        elif op == "drop":
            del rows[i]
        elif len(rows) > 1:
            j = rng.randrange(len(rows))
            rows[i], rows[j] = rows[j], rows[i]
        return f"rows.{op}"

    def _redigest_chunks(self, plan: Plan) -> None:
        """Chunk digests as the host would compute them for the mutated islands."""
        read = self.session.machine.read
        chunks: list[L.Chunk] = []
        for index, isl in enumerate(plan.islands):
            if isl.size > READ_MAX:  # a mutated size: no board holds such an island
                raise ValueError(f"island {index} of {int(isl.size):#x} bytes")
            fixups = [f for f in plan.fixups if f.island == index]
            original = read(int(isl.src), int(isl.size))
            final = relocated_bytes(original, int(isl.src), int(isl.dst), fixups)
            chunks += make_chunks(index, final, 256)
        plan.chunks = chunks

    def mutate(self, rng: random.Random) -> tuple[bytes, str]:
        plan = Plan.from_bytes(self.base.to_bytes())
        what = []
        if rng.random() < 0.15:  # the base plan itself: reaches commit-time refusals
            return self.base.to_bytes(), "none"
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            what.append(self._mutate_field(rng, plan) if rng.random() < 0.85
                        else self._mutate_rows(rng, plan))  # fmt: skip
        if rng.random() < 0.5:
            try:
                self._redigest_chunks(plan)
                what.append("chunks re-digested")
            except (CodeIslandError, ValueError, OverflowError, struct.error, UcError):
                pass  # islands no longer readable/decodable: keep the old digests
        try:
            raw = bytearray(plan.to_bytes())
        except (CodeIslandError, ValueError, OverflowError):
            raw = bytearray(self.base.to_bytes())
        if rng.random() < 0.1:  # raw bytes anywhere (header included), re-sealed
            for _ in range(rng.randrange(1, 4)):
                raw[rng.randrange(len(raw))] = rng.getrandbits(8)
            raw[_DIGEST] = bytes(8)
            raw[_DIGEST] = digest64(raw).to_bytes(8, "little")
            what.append("raw bytes")
        return bytes(raw), ", ".join(what)

    # -- a case ---------------------------------------------------------------------

    def _finish(self, last: L.Result) -> tuple[str | None, bool]:
        """Bring an accepted plan to COMMITTED and roll it back, from `last` (the engine's
        newest answer).  A plan STAGE accepted may still be refused by COMMIT (a chunk digest
        that does not match: STAGED_CHANGED) -- then it is replaced by the base plan,
        committed and rolled back.  (None or a finding, whether any request was sent.)"""
        client = self.session.client
        client.set_stage_budget(L.STAGE_BUDGET_MAX)
        r, sent = last, False
        for _ in range(8):
            if r.state in (L.STATE_STAGING, L.STATE_VALIDATED):
                r, sent = client.stage(check=False).result, True
            elif r.state == L.STATE_STAGED:
                reply, sent = client.commit(check=False), True
                if not reply.ok:
                    reply = client.commit(self.base.to_bytes(), check=False)
                    if not reply.ok:
                        return "the base plan could not replace a refused pending plan", sent
                r = reply.result
                break
            else:
                break
        if r.generation:
            back, sent = client.rollback(0, check=False), True
            if not back.ok:
                return f"rollback refused: {L.status_text(back.result.status)}", sent
        return None, sent

    def _move_stack(self, rng: random.Random) -> tuple[int, int]:
        """A thread's stack pointer outside every STACK region (where an OS thread running
        moved code may have it): a COMMIT with a return-address rule is refused at commit
        time, after its plan was validated and staged -- the issue's path to 16.1."""
        cpu = rng.randrange(len(self.session.machine.cpus))
        ctx = self.session.machine.cpus[cpu].context
        old = int(ctx.reg_read(REGS["rsp"]))
        ctx.reg_write(REGS["rsp"], rng.choice((0x20000, self.mailbox[0] - 0x1000, old + (1 << 40))))
        return cpu, old

    def _restore_stack(self, cpu: int, rsp: int) -> None:
        self.session.machine.cpus[cpu].context.reg_write(REGS["rsp"], rsp)

    def _pending_base(self) -> None:
        """Leave the base plan pending mid-stage (the state of the issue's finding)."""
        client = self.session.client
        client.set_stage_budget(L.MAX_CHUNK_SIZE)
        client.stage(self.base.to_bytes(), check=True)

    def case(self, number: int, report: FuzzReport) -> None:
        rng = random.Random(self.seed * 1_000_003 + number)
        client = self.session.client
        self._audit, self._missed = number % AUDIT_EVERY == 0, set()
        raw, what = self.mutate(rng)
        with_pending = rng.random() < 0.3
        start = self.staged if with_pending else self.idle
        self._restore(start)
        command = rng.choice((L.CMD_STAGE, L.CMD_COMMIT, L.CMD_COMMIT))
        budget = rng.choice((0, 0, L.MAX_CHUNK_SIZE, L.STAGE_BUDGET_MAX, rng.randrange(1 << 19)))
        client.set_stage_budget(budget)
        moved_stack = self._move_stack(rng) if rng.random() < 0.2 else None
        registers = self._registers()  # the start's, with a stack moved
        status, keep_copies, problem = "-", False, None
        try:
            reply = client.request(command, raw, check=False)
            status = L.status_text(reply.result.status)
            report.statuses[status] += 1
            last, engine = reply.result, None
            if reply.ok:
                report.accepted += 1
                plan = Plan.from_bytes(raw)
                keep_copies = plan.keep_copies
                problem = self._writes_outside(start, plan, with_pending)
            else:
                problem, engine = self._unchanged(start, registers, raw)
                last = self._query
            if moved_stack is not None:
                self._restore_stack(*moved_stack)
            if problem is None:
                problem, sent = self._finish(last)
                if sent:
                    engine = None
            if problem is None and not keep_copies:
                problem = self._back_to_idle(engine)
        except EmulationError as exc:  # the driver faulted, hung or broke a locked-SMM rule
            problem, crashed = f"emulation: {exc}", True
        else:
            crashed = False
        if problem is None and self._missed:
            pages = ", ".join(f"{p:#x}" for p in sorted(self._missed)[:4])
            problem = f"the write tracker missed {len(self._missed)} changed pages ({pages})"
        if problem is not None:
            report.findings.append(
                Finding(number, problem, f"{L.Command(command).name} (budget {budget}, "
                        f"pending {with_pending}) -> {status}; mutation: {what}")
            )  # fmt: skip
        if crashed:
            self._reboot(report)  # Unicorn stopped mid-handler: a new board
        elif problem is not None or keep_copies:
            # retired copies or a finding's damage: all of it goes with the idle snapshot
            self._since_idle = self._changed(self.idle)

    def _back_to_idle(self, engine: tuple[object, ...] | None) -> str | None:
        """After a case: outside SMRAM and the registers exactly as idle, no generation,
        undo byte or plan left (`engine`: the engine now, if known without asking again).
        Records which pages differ from idle (for the restore)."""
        live = _live(self._engine() if engine is None else engine)
        skip = (self.mailbox, (SMRAM_BASE, SMRAM_SIZE))
        self._since_idle = self._changed(self.idle)
        for address, length in self._diff_runs(self.idle, skip, self._since_idle):
            return f"after the case, memory differs at {address:#x}+{length:#x}"
        if self.idle.registers != self._registers():
            return "after the case, registers differ"
        was = _live(self.idle.engine)
        if was != live:
            return f"after the case, generations/undo bytes/state {was} -> {live}"
        return None

    def _reboot(self, report: FuzzReport) -> None:
        report.reboots += 1
        self._boot()

    def run(
        self,
        cases: int,
        first: int = 0,
        progress: Callable[[FuzzReport], bool] | None = None,
    ) -> FuzzReport:
        """Run cases first..first+cases-1; progress(report) after each, False stops early."""
        report = FuzzReport(self.seed)
        for n in range(first, first + cases):
            self.case(n, report)
            report.cases += 1
            if progress is not None and not progress(report):
                break
        return report


def _page_runs(pages: list[int], ram: dict[int, np.ndarray]) -> Runs:
    """Runs of adjacent pages; a run never spans two mappings (the restore slices one array)."""
    runs: Runs = []
    bases = sorted(ram)
    for page in sorted(set(pages)):
        if runs and runs[-1][0] + runs[-1][1] == page and page not in bases:
            runs[-1] = (runs[-1][0], runs[-1][1] + PAGE)
        else:
            runs.append((page, PAGE))
    return runs


def _live(engine: tuple[object, ...]) -> tuple[object, ...]:
    """What a finished case must give back: generations, undo bytes, no plan pending."""
    info = dict(engine[0])  # type: ignore[arg-type]
    state = engine[1][0]  # type: ignore[index]
    pending = state in (L.STATE_VALIDATED, L.STATE_STAGING, L.STATE_STAGED)
    return info["generations"], info["undo_bytes_used"], pending


def _engine_diff(old: tuple[object, ...], new: tuple[object, ...]) -> str:
    """The first part of the engine's state that differs (QUERY info fields by name)."""
    if old[0] != new[0]:
        was, now = dict(old[0]), dict(new[0])  # type: ignore[call-overload]
        return ", ".join(f"{k} {was[k]} -> {now[k]}" for k in was if was[k] != now.get(k))
    part = next(i for i in range(1, len(old)) if old[i] != new[i])
    name = ("info", "pending (state, plan, chunks done, chunks)", "generation", "map")[part]
    return f"{name} {old[part]} -> {new[part]}"
