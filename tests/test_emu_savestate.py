"""The SmmCpu protocol finds a CPU's save-state map by the revision the CPU wrote (as
coreboot's save-state table does) and refuses a revision no table describes."""

from __future__ import annotations

import dataclasses

import pytest
from test_emu_common import ensure_built

from codeisland.emulator.session import boot
from codeisland.plan import layout as L
from smmemu.savestate import BY_REVISION, LAYOUTS, SaveStateMap, reported_map

SMBASE = 0x1000


class _Memory:
    def __init__(self) -> None:
        self.data = bytearray(0x20000)

    def read(self, address: int, size: int) -> bytes:
        return bytes(self.data[address : address + size])

    def write(self, address: int, data: bytes) -> None:
        self.data[address : address + len(data)] = data


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_the_map_is_found_by_the_revision_the_cpu_wrote(name: str) -> None:
    mem = _Memory()
    SaveStateMap(LAYOUTS[name], SMBASE, mem.read, mem.write).store({"rip": 0x1234, "rax": 7})
    found = reported_map(SMBASE, mem.read, mem.write)
    assert found is not None and found.layout is LAYOUTS[name]
    assert found.read("rip") == 0x1234 and found.read("rax") == 7


def test_an_unknown_revision_finds_no_map() -> None:
    mem = _Memory()
    SaveStateMap(LAYOUTS["intel64"], SMBASE, mem.read, mem.write).store({"rip": 1})
    mem.write(SMBASE + 0x8000 + 0x7EFC, (0x00DEAD01).to_bytes(4, "little"))
    assert 0x00DEAD01 not in BY_REVISION
    assert reported_map(SMBASE, mem.read, mem.write) is None


def test_the_driver_cannot_read_a_save_state_of_an_unknown_revision() -> None:
    ensure_built()
    s = boot(cpus=2)
    assert s.client.sample().ok  # known revisions: the driver reads every CPU's RIP
    cpu = s.machine.cpus[1]
    cpu.map.layout = dataclasses.replace(cpu.map.layout, revision=0x00DEAD01)
    reply = s.client.request(L.Command.SAMPLE, check=False)
    assert reply.status == L.Status.CPU_ACCESS
