"""Board devices every guest can read (CMOS RTC, input events) and the page allocator's
2 MiB alignment of large allocations."""

from __future__ import annotations

import pytest

from codeisland.emulator.session import arena_layout
from codeisland.errors import EmulationError
from codeisland.planning.platform import load_platform
from smmemu.devices import CmosRtc, InputEvents
from smmemu.guest import Guest
from smmemu.machine import Machine
from smmemu.memory import LARGE_PAGE, PAGE, POOL_BASE, POOL_SIZE
from smmemu.workload import Segment, WorkloadImage


def _asm_read_devices() -> bytes:
    """Read CMOS hours, minutes, seconds (0x84 sets the NMI-mask bit, which is not part of
    the index), then port 0xEB twice; write each byte to the guest output port; exit 0."""
    code = b""
    for index in (0x84, 0x02, 0x00):
        code += bytes([0xB0, index, 0xE6, 0x70, 0xE4, 0x71, 0xE6, 0xE9])  # mov al; out; in; out
    code += bytes([0xE4, 0xEB, 0xE6, 0xE9]) * 2  # in al, 0xEB; out 0xE9, al
    return code + bytes([0x31, 0xC0, 0xE6, 0xEA, 0xF4])  # xor eax, eax; out 0xEA, al; hlt


def _guest(machine: Machine, code: bytes) -> Guest:
    arena = 0x1000000
    base = machine.memory.allocate_pages(arena // PAGE, 5)
    assert base is not None
    image = WorkloadImage("raw", None, 0, (Segment(0, code, len(code)),), {})  # type: ignore[arg-type]
    return Guest(
        machine, image, base, arena, threads=1, layout=arena_layout(load_platform("emulated"))
    )


def test_guest_reads_the_rtc_and_input_events_of_every_machine() -> None:
    m = Machine()
    g = _guest(m, _asm_read_devices())
    m.rtc.set_time(13 * 3600 + 45 * 60 + 7)
    m.input_events.push(code=5)
    g.run()
    assert g.threads[0].exit_code == 0
    assert g.outputs() == [bytes([0x13, 0x45, 0x07, 0x05, 0x00])]  # BCD; queue then empty
    assert m.input_events.delivered == 1 and m.input_events.pending == 0


def test_rtc_defaults_to_midnight_and_rejects_times_outside_a_day() -> None:
    m = Machine()
    g = _guest(m, _asm_read_devices())
    g.run()
    assert g.outputs() == [bytes(5)]
    rtc = CmosRtc()
    rtc.set_time(24 * 3600 - 1)
    assert [rtc.register(i) for i in (4, 2, 0, 0x0A)] == [0x23, 0x59, 0x59, 0]
    for bad in (-1, 24 * 3600):
        with pytest.raises(EmulationError, match="not within one day"):
            rtc.set_time(bad)


def test_input_queue_order_clear_and_bad_codes() -> None:
    q = InputEvents()
    q.push(3, count=2)
    q.push(7)
    assert list(q.queue) == [3, 3, 7]
    q.clear()
    assert q.pending == 0 and q.delivered == 0
    for code in (0, 256):
        with pytest.raises(EmulationError, match=r"1\.\.255"):
            q.push(code)
    with pytest.raises(EmulationError, match="cannot queue -1"):
        q.push(1, count=-1)


def test_allocations_of_2mib_or_more_are_2mib_aligned_smaller_ones_are_not() -> None:
    m = Machine()
    small = m.memory.allocate_pages(3, 6)
    large = m.memory.allocate_pages(LARGE_PAGE // PAGE, 6)
    odd = m.memory.allocate_pages(LARGE_PAGE // PAGE + 1, 6)
    after = m.memory.allocate_pages(1, 6)
    assert small == POOL_BASE + POOL_SIZE - 3 * PAGE and small % LARGE_PAGE
    assert large is not None and large % LARGE_PAGE == 0 and large + LARGE_PAGE <= small
    assert odd is not None and odd % LARGE_PAGE == 0 and odd + LARGE_PAGE + PAGE <= large
    assert after == odd - PAGE  # small ones pack below again
    assert m.memory.allocate_pages(POOL_SIZE // PAGE, 6) is None  # no longer fits


def test_driver_arena_and_its_hot_area_are_2mib_aligned() -> None:
    from test_emu_common import ensure_built

    from codeisland.emulator.session import boot

    ensure_built()
    s = boot(cpus=1)
    base, size = s.arena
    hot, _hot_size = s.region("hot")
    assert size >= 0x1000000 and base % LARGE_PAGE == 0 and hot % LARGE_PAGE == 0
