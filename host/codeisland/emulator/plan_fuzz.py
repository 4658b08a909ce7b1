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
  scratch (SMM tables, driver globals, handler stack, save-state tiles -- registers are compared
  instead), the undo pool above the log's top (dead bytes) and the copy of the request in a
  plan slot, every register of every CPU, and the
  engine's reported state (QUERY info, STATS map, pending plan's state, id and progress) are as
  before;
* accepted: every byte written outside SMRAM lies in the plan's destinations, entry patches,
  call sites, the CPUs' stack windows or the mailbox; the plan is then staged to the end,
  committed and rolled back, after which memory, registers and engine state are back to the
  case's start (a KEEP_COPIES plan's copies stay, retired: the board is booted again).

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
from unicorn import UC_ERR_OK, UcError
from unicorn.unicorn_py3.unicorn import uclib

from smmemu import smram
from smmemu.machine import REGS
from smmemu.memory import SMRAM_BASE, SMRAM_SIZE
from smmemu.workload import load_workload

from ..analysis import analyze
from ..errors import CodeIslandError, EmulationError
from ..plan import layout as L
from ..plan.apply import make_chunks, relocated_bytes
from ..plan.digest import digest64
from ..plan.document import Plan
from ..relocation.placement import plan_ranked, region_platform
from .session import Session, boot

PAGE = 0x1000
WORKLOAD = "graphsort"
ISLANDS = ("merge_sort", "heap_sort", "components", "sift_down", "bfs", "checksum_sorted")
STACK_WINDOW = 8 * L.MAX_STACK_SLOTS
_DIGEST = slice(L.PlanHeader.digest.offset, L.PlanHeader.digest.offset + 8)
# SMRAM the handler rewrites on every SMI whatever it is asked (compared otherwise):
SMRAM_SCRATCH = (
    (smram.TABLES, smram.TABLES_END),  # dispatch contexts
    (smram.IMAGE, smram.IMAGE_END),  # driver globals: the engine state is compared by QUERY/STATS
    (smram.POOL_END, SMRAM_BASE + SMRAM_SIZE),  # handler stack, save-state tiles (registers)
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
class _World:
    memory: dict[int, np.ndarray]
    registers: list[dict[str, int]]
    engine: tuple[object, ...]


class PlanFuzzer:
    """One booted board and its base plan; `run` drives cases against it."""

    def __init__(
        self, seed: int, *, sw_dispatch: bool = True, cpus: int = 2, driver: Path | None = None
    ) -> None:
        self.seed = seed
        self.driver = driver
        self.sw_dispatch = sw_dispatch
        self.cpus = cpus
        self._buffers: list[dict[int, np.ndarray]] = [{}, {}]
        self._turn = 0
        self._last: _World | None = None
        self._boot()

    # -- the board ------------------------------------------------------------------

    def _boot(self) -> None:
        self.session: Session = boot(
            cpus=self.cpus, sw_dispatch=self.sw_dispatch, driver=self.driver
        )
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
        self.undo_pool = self._find_undo_pool()
        self.edges = self._edges()

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

    # -- observation ----------------------------------------------------------------

    def _memory(self) -> dict[int, np.ndarray]:
        """Every mapped byte (SMRAM included), one array per Unicorn region, read through
        uc_mem_read into arrays reused round robin (Uc.mem_read allocates twice per call and
        fresh arrays page-fault: a snapshot of the board's 76 MB cost 0.7 s that way)."""
        uc = self.session.machine.uc
        regions = list(uc.mem_regions())
        self._turn = (self._turn + 1) % len(self._buffers)
        bufs = self._buffers[self._turn]
        out = {}
        for lo, hi, _ in regions:
            buf = bufs.get(lo)
            if buf is None or buf.size != hi - lo + 1:
                buf = bufs[lo] = np.empty(hi - lo + 1, dtype=np.uint8)
            ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_char))
            status = uclib.uc_mem_read(uc._uch, lo, ptr, buf.size)
            if status != UC_ERR_OK:
                raise UcError(status)
            out[lo] = buf
        return out

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
        r = q.result
        pending = (int(r.state), int(r.plan_id), int(r.chunks_done), int(r.chunks_total))
        entries = tuple(tuple(m.as_dict().values()) for m in s.map_entries)  # type: ignore[arg-type]
        return (tuple(sorted((k, str(v)) for k, v in info.items())), pending,
                int(r.generation), entries)  # fmt: skip

    def _world(self, keep: bool = False) -> _World:
        """The board now; keep=True copies the memory out of the reused buffers."""
        memory = self._memory()
        if keep:
            memory = {base: buf.copy() for base, buf in memory.items()}
        return _World(memory, self._registers(), self._engine())

    # -- diffs ----------------------------------------------------------------------

    @staticmethod
    def _diff_runs(
        before: dict[int, np.ndarray],
        after: dict[int, np.ndarray],
        skip: tuple[tuple[int, int], ...] = (),
    ) -> Iterator[tuple[int, int]]:
        """(address, length) of each run of consecutive differing bytes outside `skip`."""
        for base, old in before.items():
            new = after[base]
            if np.array_equal(old, new):
                continue
            differs = old != new
            for lo, n in skip:
                a, b = max(lo - base, 0), min(lo + n - base, differs.size)
                if a < b:
                    differs[a:b] = False
            where = np.flatnonzero(differs)
            if not where.size:
                continue
            breaks = np.flatnonzero(np.diff(where) != 1)
            starts = np.concatenate(([where[0]], where[breaks + 1]))
            ends = np.concatenate((where[breaks], [where[-1]]))
            for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
                yield base + lo, hi - lo + 1

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

    @staticmethod
    def _request_copy(after: dict[int, np.ndarray], address: int, length: int, req: bytes) -> bool:
        """Is SMRAM [address, +length) inside a copy of the request at a page-aligned slot
        of the SMM pool (where the driver's plan slots are)?"""
        ram = after[SMRAM_BASE]
        want = np.frombuffer(req, dtype=np.uint8)
        for slot in range(address & ~(PAGE - 1), smram.POOL - 1, -PAGE):
            if slot + len(req) < address + length:
                return False
            off = slot - SMRAM_BASE
            if np.array_equal(ram[off : off + len(req)], want):
                return True
        return False

    def _unchanged(self, before: _World, after: _World, req: bytes) -> str | None:
        top = int(dict(after.engine[0])["undo_bytes_used"])  # type: ignore[arg-type]
        dead = (self.undo_pool + top, L.UNDO_POOL_BYTES - top)  # above the log's top
        skip = (self.mailbox, dead, *((lo, hi - lo) for lo, hi in SMRAM_SCRATCH))
        for address, length in self._diff_runs(before.memory, after.memory, skip):
            if SMRAM_BASE <= address < SMRAM_BASE + SMRAM_SIZE:
                if self._request_copy(after.memory, address, length, req):
                    continue
                return f"SMRAM changed at {address:#x}+{length:#x}"
            return f"memory changed at {address:#x}+{length:#x}"
        for cpu, (old, new) in enumerate(zip(before.registers, after.registers, strict=True)):
            if old != new:
                return f"CPU {cpu} registers changed"
        if before.engine != after.engine:
            diff = [(a, b) for a, b in zip(before.engine, after.engine, strict=True) if a != b]
            return f"engine state changed: {diff[0][0]} -> {diff[0][1]}"
        return None

    def _allowed_writes(self, plan: Plan, pending: bool) -> list[tuple[int, int]]:
        spans = [self.mailbox]
        # a pending plan replaced by an accepted one: its staged bytes are restored
        islands = [*plan.islands, *(self.base.islands if pending else [])]
        for isl in islands:
            spans += [(int(isl.dst), int(isl.size)), (int(isl.src), L.ENTRY_ABS64_LEN)]
        spans += [(int(c.insn) + 1, 4) for c in plan.callsites]
        spans += [(regs["rsp"], STACK_WINDOW) for regs in self._registers()]
        return spans

    def _writes_outside(
        self, before: _World, after: _World, plan: Plan, pending: bool
    ) -> str | None:
        allowed = self._allowed_writes(plan, pending)
        skip = (self.mailbox, (SMRAM_BASE, SMRAM_SIZE))  # SMRAM: the engine's own state
        for address, length in self._diff_runs(before.memory, after.memory, skip):
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

    def _finish(self) -> str | None:
        """Bring an accepted plan to COMMITTED and roll it back.  A plan STAGE accepted may
        still be refused by COMMIT (a chunk digest that does not match: STAGED_CHANGED) --
        then it is replaced by the base plan, committed and rolled back.  None or a finding."""
        client = self.session.client
        client.set_stage_budget(L.STAGE_BUDGET_MAX)
        for _ in range(8):
            r = client.query().result
            if r.state in (L.STATE_STAGING, L.STATE_VALIDATED):
                client.stage(check=False)
            elif r.state == L.STATE_STAGED:
                refused = not client.commit(check=False).ok
                if refused and not client.commit(self.base.to_bytes(), check=False).ok:
                    return "the base plan could not replace a refused pending plan"
                break
            else:
                break
        if client.query().result.generation:
            back = client.rollback(0, check=False)
            if not back.ok:
                return f"rollback refused: {L.status_text(back.result.status)}"
        return None

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
        raw, what = self.mutate(rng)
        with_pending = rng.random() < 0.3
        if with_pending:
            self._pending_base()
        command = rng.choice((L.CMD_STAGE, L.CMD_COMMIT, L.CMD_COMMIT))
        budget = rng.choice((0, 0, L.MAX_CHUNK_SIZE, L.STAGE_BUDGET_MAX, rng.randrange(1 << 19)))
        client.set_stage_budget(budget)
        moved_stack = self._move_stack(rng) if rng.random() < 0.2 else None
        reuse = self._last is not None and not with_pending and moved_stack is None
        before = self._last if reuse else self._world()
        self._last = None
        reply = client.request(command, raw, check=False)
        status = L.status_text(reply.result.status)
        report.statuses[status] += 1
        keep_copies = False
        if reply.ok:
            report.accepted += 1
            plan = Plan.from_bytes(raw)
            keep_copies = plan.keep_copies
            problem = self._writes_outside(before, self._world(), plan, with_pending)
        else:
            problem = self._unchanged(before, self._world(), raw)
        if moved_stack is not None:
            self._restore_stack(*moved_stack)
        if problem is None:
            problem = self._finish()
        if problem is None and not keep_copies:
            end = self._world()
            problem = self._back_to_start(self._start, end)
            self._last = end if problem is None else None  # the next case's "before"
        if problem is not None:
            report.findings.append(
                Finding(number, problem, f"{L.Command(command).name} (budget {budget}, "
                        f"pending {with_pending}) -> {status}; mutation: {what}")
            )  # fmt: skip
        if problem is not None or keep_copies:
            self._reboot(report)  # retired copies stay for the boot: start afresh

    def _back_to_start(self, start: _World, now: _World) -> str | None:
        """After a case: outside SMRAM and the registers exactly as at the start."""
        skip = (self.mailbox, (SMRAM_BASE, SMRAM_SIZE))
        for address, length in self._diff_runs(start.memory, now.memory, skip):
            return f"after the case, memory differs at {address:#x}+{length:#x}"
        if start.registers != now.registers:
            return "after the case, registers differ"
        if _live(start) != _live(now):
            return f"after the case, generations/undo bytes/state {_live(start)} -> {_live(now)}"
        return None

    def _reboot(self, report: FuzzReport) -> None:
        report.reboots += 1
        self._boot()
        self._last = None
        self._start = self._world(keep=True)

    def run(
        self,
        cases: int,
        first: int = 0,
        progress: Callable[[FuzzReport], bool] | None = None,
    ) -> FuzzReport:
        """Run cases first..first+cases-1; progress(report) after each, False stops early."""
        report = FuzzReport(self.seed)
        self._start = self._world(keep=True)
        for n in range(first, first + cases):
            self.case(n, report)
            report.cases += 1
            if progress is not None and not progress(report):
                break
        return report


def _live(world: _World) -> tuple[object, ...]:
    """What a finished case must give back: generations, undo bytes, no plan pending."""
    info = dict(world.engine[0])  # type: ignore[arg-type]
    state = world.engine[1][0]  # type: ignore[index]
    pending = state in (L.STATE_VALIDATED, L.STATE_STAGING, L.STATE_STAGED)
    return info["generations"], info["undo_bytes_used"], pending
