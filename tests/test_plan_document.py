"""Plan encode/decode round trips and the structural rejections of `Plan.from_bytes`."""

from __future__ import annotations

import pytest

from codeisland.errors import PlanError
from codeisland.plan import layout as L
from codeisland.plan.apply import entry_patch, make_chunks, relocated_bytes
from codeisland.plan.digest import digest64
from codeisland.plan.document import Plan


def _plan() -> Plan:
    plan = Plan(plan_id=42)
    isl = L.Island(src=0x10000, dst=0x200000, size=64, id=9, flags=L.ISLAND_ENTRY_REL32)
    plan.islands.append(isl)
    plan.fixups.append(L.Fixup(island=0, kind=L.FIXUP_REL32, pc_bias=4, offset=1, target=0x10100))
    plan.chunks += make_chunks(0, bytes(64), 32)
    plan.targets.append(L.Target(island=0, offset=10))
    plan.rules.append(L.Rule(island=0, flags=L.RULE_TRANSLATE_RIP, stack_slots=0))
    return plan


def test_round_trip_keeps_every_record() -> None:
    raw = _plan().to_bytes()
    back = Plan.from_bytes(raw)
    assert back.to_bytes() == raw
    assert [c.as_dict() for c in back.chunks] == [c.as_dict() for c in _plan().chunks]
    assert back.islands[0].dst == 0x200000 and back.plan_id == 42


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:10], "truncated"),
        (lambda b: b"X" + b[1:], "not a codeisland plan"),
        (lambda b: b[:-1], "size is inconsistent"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "digest"),
        (lambda b: b[:8] + b"\x09" + b[9:], "version"),
    ],
)
def test_corrupt_plans_are_rejected_with_one_clear_reason(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PlanError, match=message):
        Plan.from_bytes(mutate(_plan().to_bytes()))


def test_keep_copies_flag_round_trips_and_unknown_flags_are_refused() -> None:
    plan = _plan()
    assert not plan.keep_copies
    plan.keep_copies = True
    raw = plan.to_bytes()
    back = Plan.from_bytes(raw)
    assert back.flags == L.PLAN_KEEP_COPIES and back.keep_copies
    assert back.to_bytes() == raw
    back.keep_copies = False
    assert back.flags == 0
    plan.flags = L.PLAN_FLAGS_KNOWN + 1  # the lowest flag the engine does not know
    with pytest.raises(PlanError, match="unknown flags"):
        Plan.from_bytes(plan.to_bytes())


def test_limits_are_enforced_on_encode() -> None:
    plan = _plan()
    plan.islands = [L.Island(size=1) for _ in range(L.MAX_ISLANDS + 1)]
    with pytest.raises(PlanError, match="at most 64"):
        plan.to_bytes()


def test_relocated_bytes_retargets_rel32_and_checks_the_original() -> None:
    src, dst = 0x1000, 0x9000
    code = bytearray(16)
    code[0] = 0xE8  # call rel32 -> 0x2000
    code[1:5] = (0x2000 - (src + 5)).to_bytes(4, "little", signed=True)
    fx = L.Fixup(island=0, kind=L.FIXUP_REL32, pc_bias=4, offset=1, target=0x2000)
    out = relocated_bytes(bytes(code), src, dst, [fx])
    assert int.from_bytes(out[1:5], "little", signed=True) == 0x2000 - (dst + 5)
    bad = L.Fixup(island=0, kind=L.FIXUP_REL32, pc_bias=4, offset=1, target=0x2004)
    with pytest.raises(PlanError, match="original resolves"):
        relocated_bytes(bytes(code), src, dst, [bad])
    with pytest.raises(PlanError, match="rel32"):
        relocated_bytes(bytes(code), src, 0x2000 + (1 << 32), [fx])


def test_entry_patches() -> None:
    isl = L.Island(src=0x1000, dst=0x2000, size=32, flags=L.ISLAND_ENTRY_REL32)
    assert entry_patch(isl) == b"\xe9" + (0x2000 - 0x1005).to_bytes(4, "little", signed=True)
    isl.flags = L.ISLAND_ENTRY_ABS64
    assert entry_patch(isl) == b"\xff\x25\0\0\0\0" + (0x2000).to_bytes(8, "little")
    isl.flags = L.ISLAND_ENTRY_NONE
    assert entry_patch(isl) == b""


def test_address_space_round_trips_and_v1_plans_read_as_physical() -> None:
    plan = _plan()
    plan.place_in_address_space(L.SPACE_USER, 0x1234_5000 | 0x7)
    back = Plan.from_bytes(plan.to_bytes())
    assert (back.islands[0].space, back.islands[0].cr3) == (L.SPACE_USER, 0x1234_5007)
    with pytest.raises(PlanError, match="CR3"):
        plan.place_in_address_space(L.SPACE_USER, 0xFFF)  # PCID bits only: no tables
    with pytest.raises(PlanError, match="cr3 0"):
        plan.place_in_address_space(L.SPACE_PHYSICAL, 0x1000)
    v1 = bytearray(_plan().to_bytes())
    v1[8] = 1  # version 1, resealed below: its islands are physical
    v1[16:24] = bytes(8)
    v1[16:24] = digest64(bytes(v1)).to_bytes(8, "little")
    assert Plan.from_bytes(bytes(v1)).islands[0].space == L.SPACE_PHYSICAL
    bad = bytearray(plan.to_bytes())
    bad[8] = 1
    bad[16:24] = bytes(8)
    bad[16:24] = digest64(bytes(bad)).to_bytes(8, "little")
    with pytest.raises(PlanError, match="reserved island fields"):
        Plan.from_bytes(bytes(bad))
