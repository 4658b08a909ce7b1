"""Forced SMI points: threads stopped at an island's first, middle and last instruction on
several CPUs when the commit SMI lands; every saved RIP is translated at the same offset and
the run still matches the unrelocated one byte for byte."""

from __future__ import annotations

import pytest
from iced_x86 import Decoder
from test_emu_common import baseline, ensure_built, plan_for

from codeisland.emulator.session import boot
from codeisland.plan import layout as L
from smmemu.machine import NO_UNTIL, REGS
from smmemu.workload import load_workload

# every test here runs once per driver build (tests/conftest.py)
DRIVER_BUILDS = ("clang", "edk2-gcc5")


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    ensure_built()


def _boundaries(code: bytes, ip: int) -> list[int]:
    return [insn.ip for insn in Decoder(64, code, ip=ip)]


@pytest.mark.parametrize("layout,sw_dispatch", [("intel64", True), ("amd64", False)])
def test_rip_at_first_middle_last_instruction_on_three_cpus(layout: str, sw_dispatch: bool) -> None:
    image = load_workload("graphsort")
    s = boot(cpus=3, layout=layout, sw_dispatch=sw_dispatch)
    guest = s.guest(image, threads=3)
    hot = s.region("hot")
    _imap, plan = plan_for(s, image, ["sift_down"], hot, plan_id=5)
    spec = plan.placed[0]
    dst = plan.placed[0].dst
    assert s.client.stage(plan.to_bytes()).result.state == L.STATE_STAGED

    code = s.machine.read(spec.src, spec.size)
    insns = _boundaries(code, spec.src)
    guest.step(60_000)  # all three threads into their heap sort
    first, middle, last = guest.threads
    assert guest.run_until(first, insns[0])
    assert guest.run_until(last, insns[-1])
    # middle: single-step until the thread executes an instruction strictly inside the island
    for _ in range(200_000):
        if insns[0] < middle.rip < insns[-1]:
            break
        guest.run_until(middle, NO_UNTIL, limit=1)
    assert middle.rip in insns[1:-1]
    wanted = [first.rip, middle.rip, last.rip]
    assert [c.thread.rip for c in s.machine.cpus] == wanted  # type: ignore[union-attr]

    reply = s.client.commit()
    assert reply.ok and reply.result.contexts_translated == 3
    smi = s.machine.smis[-1]
    assert smi.rips_before == wanted
    assert smi.rips_after == [dst + (a - spec.src) for a in wanted]
    assert [t.rip for t in guest.threads] == smi.rips_after
    assert s.machine.read(spec.src, 5)[0] == 0xE9  # entry jump written

    guest.run()
    expected = baseline("graphsort", 3)
    assert guest.outputs() == expected.outputs
    assert [t.exit_code for t in guest.threads] == [0, 0, 0]


def test_return_address_into_a_moved_caller_is_translated() -> None:
    image = load_workload("lz")
    s = boot(cpus=2, layout="intel64")
    guest = s.guest(image, threads=2)
    _imap, plan = plan_for(s, image, ["match_len", "lz_compress"], stack_slots=16)
    callee, caller = plan.placed
    assert s.client.stage(plan.to_bytes()).ok
    thread = guest.threads[0]
    assert guest.run_until(thread, callee.src)  # at match_len's entry, called by lz_compress
    rsp = int(thread.context.reg_read(REGS["rsp"]))
    ret = int.from_bytes(s.machine.read(rsp, 8), "little")
    assert caller.src <= ret < caller.src + caller.size

    reply = s.client.commit()
    assert reply.ok and reply.result.returns_translated >= 1
    assert thread.rip == callee.dst
    moved_ret = int.from_bytes(s.machine.read(rsp, 8), "little")
    assert moved_ret == caller.dst + (ret - caller.src)

    guest.run()
    assert guest.outputs() == baseline("lz", 2).outputs
