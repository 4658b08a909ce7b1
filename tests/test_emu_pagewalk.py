"""The real driver binary on the emulated board walks a process's page tables (plan v2).

Page tables built in the arena map a user island at an ordinary virtual address (VA != PA,
crossing a page boundary) and its destination; CPU 0's saved CR3 names those tables (with PCID
bits), CPU 1's names other tables at the same RIP.  STAGE over two SMIs, COMMIT, ROLLBACK: the
bytes land at the physical addresses the driver derived, only CPU 0's RIP and return address
move, and the sample ring attributes CPU 0's RIP to its CR3 and CPL.  Refusals (a non-present
page, tables outside the registered regions: the restricted policy) write nothing.
"""

from __future__ import annotations

import struct

import pytest
from test_emu_common import ensure_built
from unicorn.x86_const import UC_X86_REG_CR3, UC_X86_REG_CS, UC_X86_REG_RIP, UC_X86_REG_RSP

from codeisland.emulator.session import Session, boot
from codeisland.plan import layout as L
from codeisland.plan.apply import make_chunks, relocated_bytes
from codeisland.plan.document import Plan

USER = 0x7  # present, writable, user
VA_SRC = 0x7F12_3456_1000
VA_DST = 0x7F12_3458_1000
VA_STACK = 0x7FFD_0000_0000
ISLAND_OFF, ISLAND_SIZE = 0x800, 0x1800  # [VA_SRC + 0x800, + 0x2000): crosses a page
PCID = 0x3


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    ensure_built()


class Tables:
    """4-level page tables written into the board's memory from a pool of pages."""

    def __init__(self, s: Session, pool: int) -> None:
        self.s, self.next = s, pool
        self.root = self._page()

    def _page(self) -> int:
        page, self.next = self.next, self.next + 0x1000
        self.s.machine.write(page, bytes(0x1000))
        return page

    def _entry(self, table: int, index: int) -> int:
        return struct.unpack("<Q", self.s.machine.read(table + 8 * index, 8))[0]

    def map(self, va: int, pa: int, flags: int = USER) -> None:
        table = self.root
        for shift in (39, 30, 21):
            index = (va >> shift) & 511
            entry = self._entry(table, index)
            if not entry & 1:
                entry = self._page() | USER
                self.s.machine.write(table + 8 * index, struct.pack("<Q", entry))
            table = entry & L.CR3_ADDR_MASK
        self.s.machine.write(table + 8 * ((va >> 12) & 511), struct.pack("<Q", pa | flags))


def _board() -> tuple[Session, Tables, int]:
    s = boot(cpus=2)
    arena, _size = s.arena
    tables = Tables(s, arena + 0x300000)
    for k in range(2):
        tables.map(VA_SRC + 0x1000 * k, arena + 0x10000 + 0x1000 * k)
        tables.map(VA_DST + 0x1000 * k, arena + 0x40000 + 0x1000 * k)
    tables.map(VA_STACK, arena + 0x60000)
    return s, tables, arena


def _plan(
    cr3: int, src_page: int = VA_SRC, dst_page: int = VA_DST, space: int = L.SPACE_USER
) -> tuple[Plan, bytes]:
    """A user island at src_page + 0x800 with rel32 calls out of it at offset 0x10 and at the
    page boundary (field at 0x7FE); its original bytes and its relocated bytes."""
    src, dst = src_page + ISLAND_OFF, dst_page + ISLAND_OFF
    code = bytearray(b"\x90" * ISLAND_SIZE)
    fixups = []
    for off in (0x10, 0x7FD):  # E8 at off, field at off + 1
        target = src_page + 0x40
        code[off] = 0xE8
        code[off + 1 : off + 5] = struct.pack("<i", target - (src + off + 5))
        fixups.append(
            L.Fixup(island=0, kind=L.FIXUP_REL32, pc_bias=4, offset=off + 1, target=target)
        )
    code[-1] = 0xC3
    plan = Plan(plan_id=77)
    plan.islands.append(
        L.Island(
            src=src,
            dst=dst,
            size=ISLAND_SIZE,
            id=1,
            flags=L.ISLAND_ENTRY_REL32,
            space=space,
            cr3=cr3 | PCID if space != L.SPACE_PHYSICAL else 0,
        )
    )
    plan.fixups.extend(fixups)
    final = relocated_bytes(bytes(code), src, dst, fixups)
    plan.chunks.extend(make_chunks(0, final, 0x800))
    plan.rules.append(
        L.Rule(island=0, flags=L.RULE_TRANSLATE_RIP | L.RULE_TRANSLATE_RETURN, stack_slots=4)
    )
    return plan, bytes(code) + final


def _place_cpu(s: Session, cpu: int, cr3: int, rip: int, rsp: int, cs: int) -> None:
    ctx = s.machine.cpus[cpu].context
    ctx.reg_write(UC_X86_REG_CR3, cr3)
    ctx.reg_write(UC_X86_REG_RIP, rip)
    ctx.reg_write(UC_X86_REG_RSP, rsp)
    ctx.reg_write(UC_X86_REG_CS, cs)


def test_virtual_island_round_trip_through_the_driver() -> None:
    s, tables, arena = _board()
    plan, both = _plan(tables.root)
    code, final = both[:ISLAND_SIZE], both[ISLAND_SIZE:]
    pa_src, pa_dst = arena + 0x10000 + ISLAND_OFF, arena + 0x40000 + ISLAND_OFF
    s.machine.write(pa_src, code)
    dst_before = s.machine.read(pa_dst, ISLAND_SIZE)
    s.machine.write(arena + 0x60000 + 0x808, struct.pack("<Q", VA_SRC + ISLAND_OFF + 0x15))
    _place_cpu(s, 0, tables.root | 0x5, VA_SRC + ISLAND_OFF + 0x20, VA_STACK + 0x800, 0x33)
    _place_cpu(s, 1, arena + 0x3F0000, VA_SRC + ISLAND_OFF + 0x20, VA_STACK + 0x800, 0x33)

    s.client.set_stage_budget(0x1000)  # two 2 KiB chunks per SMI: three chunks, two SMIs
    first = s.client.stage(plan.to_bytes())
    assert first.result.state == L.STATE_STAGING
    assert s.client.stage().result.state == L.STATE_STAGED
    assert s.machine.read(pa_dst, ISLAND_SIZE) == final
    commit = s.client.commit()
    r = commit.result
    assert (r.contexts_translated, r.returns_translated) == (1, 1)
    record = s.machine.smis[-1]
    assert record.rips_after[0] == VA_DST + ISLAND_OFF + 0x20  # the process's CPU moved
    assert record.rips_after[1] == VA_SRC + ISLAND_OFF + 0x20  # another address space: not
    entry = s.machine.read(pa_src, 5)
    assert entry[0] == 0xE9
    assert VA_SRC + ISLAND_OFF + 5 + struct.unpack("<i", entry[1:])[0] == VA_DST + ISLAND_OFF
    slot = struct.unpack("<Q", s.machine.read(arena + 0x60000 + 0x808, 8))[0]
    assert slot == VA_DST + ISLAND_OFF + 0x15
    print(f"\nCOMMIT with page walks: {record.handler_instructions} handler instructions")

    head = s.client.sample_head()
    s.client.sample()
    samples, _ = s.client.samples_since(head)
    by_cpu = {smp.cpu: smp for smp in samples}
    assert by_cpu[0].cr3 == tables.root | 0x5 and by_cpu[0].cpl == 3
    assert by_cpu[0].rip == VA_DST + ISLAND_OFF + 0x20

    back = s.client.rollback(0)
    assert back.ok and back.result.contexts_translated == 1
    assert s.machine.smis[-1].rips_after[0] == VA_SRC + ISLAND_OFF + 0x20
    assert s.machine.read(pa_src, ISLAND_SIZE) == code
    assert s.machine.read(pa_dst, ISLAND_SIZE) == dst_before


@pytest.mark.parametrize(
    "break_it,status",
    [
        ("not_present", L.Status.PAGE_NOT_PRESENT),
        ("tables_outside", L.Status.WALK_TABLE_OUTSIDE),
        ("supervisor", L.Status.SUPERVISOR_PAGE),
    ],
)
def test_refused_walks_write_nothing(break_it: str, status: L.Status) -> None:
    s, tables, arena = _board()
    cr3 = tables.root
    if break_it == "not_present":
        tables.map(VA_SRC + 0x1000, 0, flags=0)
    elif break_it == "supervisor":
        tables.map(VA_DST, arena + 0x40000, flags=0x3)
    else:  # tables in DXE memory, outside every region: restricted memory access
        cr3 = s.machine.firmware.system_table & ~0xFFF
    plan, _ = _plan(cr3)
    before = s.machine.read(arena, 0x400000)
    for send in (s.client.stage, s.client.commit):
        reply = send(plan.to_bytes(), check=False)
        assert reply.status == status and reply.result.bytes_written == 0
        assert reply.result.failed_index == 0
    assert s.machine.read(arena, 0x400000) == before


def _instructions_per_smi(virtual: bool) -> list[tuple[str, int]]:
    """Handler instructions of each SMI of one round trip, the island virtual or physical."""
    s, tables, arena = _board()
    pa_src_page, pa_dst_page = arena + 0x10000, arena + 0x40000
    if virtual:
        plan, both = _plan(tables.root)
        rip, rsp = VA_SRC + ISLAND_OFF + 0x20, VA_STACK + 0x800
    else:
        plan, both = _plan(0, pa_src_page, pa_dst_page, L.SPACE_PHYSICAL)
        rip, rsp = pa_src_page + ISLAND_OFF + 0x20, arena + 0x60800
    s.machine.write(pa_src_page + ISLAND_OFF, both[:ISLAND_SIZE])
    _place_cpu(s, 0, tables.root, rip, rsp, 0x33)
    s.client.set_stage_budget(0x1000)
    steps = (
        ("STAGE (plan, 2 chunks)", lambda: s.client.stage(plan.to_bytes())),
        ("STAGE (continue)", lambda: s.client.stage()),
        ("COMMIT", lambda: s.client.commit()),
        ("SAMPLE", lambda: s.client.sample()),
        ("ROLLBACK", lambda: s.client.rollback(0)),
    )
    out = []
    for name, send in steps:
        assert send().ok, name
        out.append((name, s.machine.smis[-1].handler_instructions))
    return out


def test_handler_instructions_with_page_walks() -> None:
    """Prints the figures (not a timing test; each SMI must succeed): the same island through a
    page walk and as a physical island."""
    virtual, physical = _instructions_per_smi(True), _instructions_per_smi(False)
    print()
    for (name, v), (_, p) in zip(virtual, physical, strict=True):
        print(f"{name:24s} virtual {v:7d}  physical {p:7d}  walk +{v - p}")
