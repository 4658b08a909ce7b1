"""ROLLBACK with CI_PLAN_KEEP_COPIES in the emulated machine, with the real driver.

lz_compress (caller) and match_len (callee) move with no return-address window (0 slots).  A
thread is stopped at the entry of match_len's copy, called from lz_compress's copy: its return
address points into the copy of lz_compress, beyond every window the rollback translates.
With the flag the rollback moves the thread's RIP back to the original match_len and leaves the
copies in place, so the return lands in valid code and the run matches the unrelocated one byte
for byte; the copies stay reserved (retired) and a later plan aimed at them is refused.  Without
the flag (the default, every byte restored) the same return lands on the arena's int3 fill and
the guest faults: the hazard the flag removes.
"""

from __future__ import annotations

import pytest
from test_emu_common import baseline, ensure_built, plan_for

from codeisland.emulator.session import Session, boot
from codeisland.errors import CodeIslandError
from codeisland.plan import layout as L
from smmemu.machine import REGS
from smmemu.workload import load_workload

# every test here runs once per driver build (tests/conftest.py)
DRIVER_BUILDS = ("clang", "edk2-gcc5")

RETIRED = L.MAP_ROLLED_BACK | L.MAP_RETIRED


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    ensure_built()


def _return_into_copy(keep: bool, layout: str):  # type: ignore[no-untyped-def]
    """Commit, then stop thread 0 at match_len's copy with its return address in the copy of
    lz_compress; returns (session, guest, callee, caller, return address, rsp, original bytes
    by island name)."""
    image = load_workload("lz")
    s = boot(cpus=2, layout=layout)
    guest = s.guest(image, threads=2)
    _imap, built = plan_for(s, image, ["match_len", "lz_compress"], plan_id=31, stack_slots=0)
    built.plan.keep_copies = keep
    assert built.plan.flags == (L.PLAN_KEEP_COPIES if keep else 0)
    assert all(r.stack_slots == 0 for r in built.plan.rules)
    callee, caller = built.placed
    assert s.machine.read(caller.dst, caller.size) == b"\xcc" * caller.size  # the arena's fill
    pristine = {p.name: s.machine.read(p.src, p.size) for p in (callee, caller)}
    commit = s.client.commit(built.to_bytes())
    assert commit.ok and commit.result.generation == 1
    thread = guest.threads[0]
    assert guest.run_until(thread, callee.dst)
    rsp = int(thread.context.reg_read(REGS["rsp"]))
    ret = int.from_bytes(s.machine.read(rsp, 8), "little")
    assert caller.dst <= ret < caller.dst + caller.size  # called from the copy
    return s, guest, callee, caller, ret, rsp, pristine


def _map(s: Session) -> list[tuple[int, int, int]]:
    return [(m.orig, m.cur, m.flags) for m in s.client.stats().map_entries]


@pytest.mark.parametrize("layout", ["intel64", "amd64"])
def test_keep_copies_rollback_leaves_the_copy_valid(layout: str) -> None:
    s, guest, callee, caller, ret, rsp, pristine = _return_into_copy(True, layout)
    thread = guest.threads[0]
    copies = {p.name: s.machine.read(p.dst, p.size) for p in (callee, caller)}
    undo_live = s.client.query().info.undo_bytes_used  # type: ignore[union-attr]

    back = s.client.rollback(0)
    assert back.ok and back.result.generation == 0
    assert back.result.contexts_translated == 1 and back.result.returns_translated == 0
    assert back.result.bytes_restored == 2 * L.ENTRY_REL32_LEN  # the two entry jumps only
    assert thread.rip == callee.src  # RIP back in the original
    assert int.from_bytes(s.machine.read(rsp, 8), "little") == ret  # beyond the window: kept
    for p in (callee, caller):
        assert s.machine.read(p.dst, p.size) == copies[p.name]  # copy bytes identical
        assert s.machine.read(p.src, p.size) == pristine[p.name]  # entry jump restored
    assert _map(s) == [(callee.src, callee.dst, RETIRED), (caller.src, caller.dst, RETIRED)]
    info = s.client.query().info
    assert info is not None and info.undo_bytes_used == 0 < undo_live

    # the retired copies are reserved: the same destinations are refused, past them is free
    _imap, again = plan_for(s, guest.image, ["match_len"], plan_id=32)
    assert again.placed[0].dst == callee.dst
    refused = s.client.stage(again.to_bytes(), check=False)
    assert refused.status == L.Status.DST_OVERLAPS_CODE and refused.result.bytes_written == 0
    past = (caller.dst + caller.size, 0x1000)
    _imap, elsewhere = plan_for(s, guest.image, ["match_len"], past, plan_id=33)
    assert s.client.commit(elsewhere.to_bytes()).ok

    guest.run()  # thread 0 returns into the kept copy of lz_compress
    expected = baseline("lz", 2)
    assert guest.outputs() == expected.outputs
    assert [t.exit_code for t in guest.threads] == [0, 0]
    assert s.machine.read(caller.dst, caller.size) == copies[caller.name]


def test_without_the_flag_the_return_lands_on_int3() -> None:
    s, guest, callee, caller, ret, _rsp, pristine = _return_into_copy(False, "intel64")
    back = s.client.rollback(0)
    assert back.ok and back.result.contexts_translated == 1
    assert back.result.bytes_restored == callee.size + caller.size + 2 * L.ENTRY_REL32_LEN
    assert s.machine.read(caller.dst, caller.size) == b"\xcc" * caller.size
    assert all(s.machine.read(p.src, p.size) == pristine[p.name] for p in (callee, caller))
    assert _map(s) == [
        (callee.src, callee.dst, L.MAP_ROLLED_BACK),
        (caller.src, caller.dst, L.MAP_ROLLED_BACK),
    ]
    # thread 0 returns into the restored fill: int3 at its return address
    with pytest.raises(CodeIslandError, match=rf"thread 0 .*faulted at rip={ret + 1:#x}"):
        guest.run()
    assert guest.threads[0].exit_code is None
