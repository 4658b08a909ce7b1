"""Plans the driver must refuse (destination in SMRAM, destination outside every registered
region), after which the guest runs on unchanged; and rollback restoring the original bytes."""

from __future__ import annotations

import pytest
from test_emu_common import baseline, ensure_built, plan_for

from codeisland.emulator.session import boot
from codeisland.plan import layout as L
from smmemu.memory import SMRAM_BASE
from smmemu.workload import load_workload

# every test here runs once per driver build (tests/conftest.py)
DRIVER_BUILDS = ("clang", "edk2-gcc5", "edk2-clangpdb")


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    ensure_built()


def _setup(dst_area: str):  # type: ignore[no-untyped-def]
    image = load_workload("graphsort")
    s = boot(cpus=2)
    guest = s.guest(image, threads=2)
    if dst_area == "smram":
        hot = (SMRAM_BASE + 0x300000, 0x1000)
    elif dst_area == "unregistered":
        hot = (s.machine.firmware.system_table + 0x1000, 0x1000)  # DXE data
    else:
        hot = s.region("hot")
    _imap, plan = plan_for(s, image, ["sift_down"], hot, plan_id=9)
    spec = plan.placed[0]
    return s, guest, spec, plan


@pytest.mark.parametrize(
    "area,status",
    [("smram", L.Status.TOUCHES_SMRAM), ("unregistered", L.Status.DST_NOT_REGISTERED)],
)
def test_bad_destination_is_rejected_and_guest_runs_on(area: str, status: L.Status) -> None:
    s, guest, spec, plan = _setup(area)
    guest.step(40_000)
    original = s.machine.read(spec.src, spec.size)
    dst_before = None if area == "smram" else s.machine.read(plan.placed[0].dst, spec.size)
    stage = s.client.stage(plan.to_bytes(), check=False)
    assert stage.status == status and stage.result.bytes_written == 0
    commit = s.client.commit(plan.to_bytes(), check=False)
    assert commit.status == status and commit.result.contexts_translated == 0
    assert s.machine.read(spec.src, spec.size) == original
    if dst_before is not None:
        assert s.machine.read(plan.placed[0].dst, spec.size) == dst_before
    rips = [t.rip for t in guest.threads]
    assert s.machine.smis[-1].rips_after == s.machine.smis[-1].rips_before
    assert [t.rip for t in guest.threads] == rips
    guest.run()
    assert guest.outputs() == baseline("graphsort", 2).outputs


def test_rollback_restores_original_bytes() -> None:
    s, guest, spec, plan = _setup("arena")
    guest.step(40_000)
    original = s.machine.read(spec.src, spec.size)
    reply = s.client.commit(plan.to_bytes())
    assert reply.ok and reply.result.generation == 1
    assert s.machine.read(spec.src, 1) == b"\xe9"
    stats = s.client.stats()
    assert [(m.orig, m.cur, m.flags) for m in stats.map_entries] == [
        (spec.src, plan.placed[0].dst, L.MAP_ACTIVE)
    ]
    guest.step(100_000)
    back = s.client.rollback(0)
    assert back.ok and back.result.bytes_restored >= 5
    assert s.machine.read(spec.src, spec.size) == original
    nothing = s.client.rollback(0, check=False)
    assert nothing.status == L.Status.NOTHING_TO_ROLLBACK
    guest.run()
    assert guest.outputs() == baseline("graphsort", 2).outputs
