"""The emulated board itself: save-state maps, booting the real driver on both SW SMI paths,
the services it calls, SMRAM and locked-SMM access rules, an unimplemented service."""

from __future__ import annotations

import pytest
from test_emu_common import ensure_built

from codeisland.emulator.session import arena_layout, boot
from codeisland.errors import EmulationError, TransportError
from codeisland.plan import layout as L
from codeisland.planning.platform import load_platform
from smmemu import efi, smram
from smmemu import machine as machine_module
from smmemu.guest import Guest
from smmemu.machine import Machine
from smmemu.memory import SMRAM_BASE
from smmemu.savestate import LAYOUTS, REG_RIP, SaveStateMap
from smmemu.workload import Segment, WorkloadImage

# every test here runs once per driver build (tests/conftest.py)
DRIVER_BUILDS = ("clang", "edk2-gcc5", "edk2-clangpdb")

BOOT_TRACE_COMMON = [
    f"gBS->LocateProtocol({efi.SMM_BASE2_GUID}) -> found",
    f"gBS->LocateProtocol({efi.SMM_ACCESS2_GUID}) -> found",
]


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    ensure_built()


# -- save-state maps ----------------------------------------------------------------------


def test_save_state_offsets_follow_the_manuals() -> None:
    intel, amd = LAYOUTS["intel64"], LAYOUTS["amd64"]
    # SDM "SMRAM State Save Map for Intel 64": RIP 7FD8h, RSP 7F7Ch, RAX 7F5Ch, CR0 7FF8h
    assert (intel.fields["rip"].offset, intel.fields["rsp"].offset) == (0x7FD8, 0x7F7C)
    assert (intel.fields["rax"].offset, intel.fields["cr0"].offset) == (0x7F5C, 0x7FF8)
    # AMD64 APM table 10-2: RAX 7FF8h, RSP 7FD8h, RIP 7F78h, RFLAGS 7F70h
    assert (amd.fields["rax"].offset, amd.fields["rsp"].offset) == (0x7FF8, 0x7FD8)
    assert (amd.fields["rip"].offset, amd.fields["rflags"].offset) == (0x7F78, 0x7F70)
    assert (intel.map_size, amd.map_size) == (0x400, 0x200)


@pytest.mark.parametrize("layout", ["intel64", "amd64"])
def test_save_state_store_load_round_trip(layout: str) -> None:
    memory = bytearray(0x10000)
    ssm = SaveStateMap(
        LAYOUTS[layout],
        0,
        lambda a, n: bytes(memory[a - 0x0 : a + n]),
        lambda a, d: memory.__setitem__(slice(a, a + len(d)), d),
    )
    regs = {n: 0x1111 * (i + 1) for i, n in enumerate(("rax", "rbx", "rcx", "rsp", "rip"))}
    ssm.store(regs)
    loaded = ssm.load()
    assert {k: loaded[k] for k in regs} == regs
    assert loaded["r15"] == 0
    assert ssm.read("revision") == LAYOUTS[layout].revision


# -- booting the driver ------------------------------------------------------------------------


@pytest.mark.parametrize("sw_dispatch", [True, False])
def test_boot_trace_and_query_on_both_sw_smi_paths(sw_dispatch: bool) -> None:
    s = boot(cpus=3, layout="amd64", sw_dispatch=sw_dispatch)
    events = s.machine.firmware.events
    assert events[:2] == BOOT_TRACE_COMMON
    assert events[2].startswith("gBS->AllocatePages(256 pages, EfiReservedMemoryType)")
    assert events[3].startswith("gBS->AllocatePages(4096 pages, EfiRuntimeServicesCode)")
    assert events[4].startswith(f"gBS->InstallConfigurationTable({L.CONFIG_TABLE_GUID}")
    registration = (
        "SwDispatch2->Register(SwSmiInputValue=0xc1)"
        if sw_dispatch
        else "gSmst->SmiHandlerRegister(root)"
    )
    assert registration in events
    assert events[-1] == "SmmReadyToLock"
    path = "swdispatch2" if sw_dispatch else "root"
    assert any(f"path={path}" in line for line in s.machine.debug_log)

    reply = s.client.query()
    assert reply.ok and reply.info is not None
    assert reply.info.locked == 1 and reply.result.cpus == 3
    flags = {(r.base, r.size): r.flags for r in reply.regions}
    assert flags[(s.machine.smram.base, s.machine.smram.size)] == L.REGION_SMRAM
    arena = s.arena
    assert flags[arena] == L.REGION_SOURCE | L.REGION_DEST | L.REGION_STACK
    cfg = s.transport.config_table()
    assert (cfg.arena_base, cfg.arena_size) == arena
    smi = s.machine.smis[-1]
    assert smi.handlers == [("sw" if sw_dispatch else "root", efi.EFI_SUCCESS)]
    assert smi.handler_instructions > 0


def test_root_handler_ignores_foreign_sw_smi() -> None:
    s = boot(sw_dispatch=False)
    before = s.client.smi_count()
    record = s.machine.smi(0x42)
    assert record.handlers == [("root", efi.EFI_WARN_INTERRUPT_SOURCE_QUIESCED)]
    assert s.client.smi_count() == before


def test_sample_reads_every_cpu_through_the_cpu_protocol() -> None:
    s = boot(cpus=4)
    s.machine.trace_save_states = True
    s.client.sample()
    samples, head = s.client.samples_since(0)
    assert head == 4 and [x.cpu for x in samples] == [0, 1, 2, 3]
    assert {x.rip for x in samples} == {s.machine.idle_stub}
    reads = [(op, cpu) for op, cpu, reg, _ in s.machine.save_state_trace if reg == REG_RIP]
    assert reads == [("read", 0), ("read", 1), ("read", 2), ("read", 3)]


def test_unimplemented_service_stops_the_run_naming_it() -> None:
    with pytest.raises(EmulationError, match=r"gBS->InstallConfigurationTable.*not implement"):
        boot(withhold=frozenset({"gBS->InstallConfigurationTable"}))


def test_a_firmware_call_that_never_returns_is_a_hang_not_a_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call is bounded by the SMRAM code bytes it executes (a native block hook), so a
    handler stuck in a loop ends the call with an error instead of hanging the host."""
    monkeypatch.setattr(machine_module, "CALL_BUDGET_BYTES", 1 << 20)
    m = Machine()
    loop = smram.IMAGE_END - 0x10  # the unused end of the driver image area
    m.memory.enter_smm()
    m.write(loop, b"\x48\xff\xc0\xeb\xfb")  # inc rax; jmp back: a loop of 5-byte blocks
    with pytest.raises(EmulationError, match=r"stuck did not return: 10485\d\d bytes of SMRAM"):
        m.smm_call(loop, [], "stuck")
    m.write(loop, b"\xc3")  # ret: the same guard lets a call that returns finish
    m.smm_call(loop, [], "returns")


# -- memory rules ----------------------------------------------------------------------------


def _raw_guest(machine: Machine, code: bytes) -> Guest:
    base = machine.memory.allocate_pages(4096, 5)
    assert base is not None
    image = WorkloadImage("raw", machine.driver.path if machine.driver else None, 0,  # type: ignore[arg-type]
                          (Segment(0, code, len(code)),), {})  # fmt: skip
    return Guest(
        machine, image, base, 4096 * 4096, threads=1, layout=arena_layout(load_platform("emulated"))
    )


def test_guest_touching_smram_faults_outside_smm() -> None:
    m = Machine()
    # mov rax, [SMRAM_BASE + 0x100]  (absolute moffs64 form)
    code = b"\x48\xa1" + (SMRAM_BASE + 0x100).to_bytes(8, "little") + b"\xf4"
    guest = _raw_guest(m, code)
    with pytest.raises(
        EmulationError, match=r"read of protected memory at 0x8000100 \(SMRAM\) outside SMM"
    ):
        guest.run()


def test_guest_touching_smram_faults_after_an_smi() -> None:
    # SMRAM is opened at SMI entry and closed only before code outside SMM runs again
    s = boot()
    s.client.query()
    assert s.machine.memory.smram_open
    code = b"\x48\xa1" + (SMRAM_BASE + 0x100).to_bytes(8, "little") + b"\xf4"
    guest = _raw_guest(s.machine, code)
    with pytest.raises(
        EmulationError, match=r"read of protected memory at 0x8000100 \(SMRAM\) outside SMM"
    ):
        guest.run()


def test_smm_code_touching_conventional_memory_faults_after_lock() -> None:
    s = boot()
    m = s.machine
    dxe_data = m.firmware.system_table  # boot-services data: conventional at lock
    code_at = m.smram.pool_alloc(64)
    assert code_at is not None

    def load_from(address: int) -> None:  # mov rax, [address]; ret
        m._enter_smm()
        m.write(code_at, b"\x48\xa1" + address.to_bytes(8, "little") + b"\xc3")
        m._leave_smm()

    load_from(dxe_data)
    with pytest.raises(EmulationError, match=r"read of memory at .*boot-services memory\) in SMM"):
        m.smm_call(code_at, [], "probe")
    load_from(s.arena[0])  # runtime code reserved before lock: accessible
    m.smm_call(code_at, [], "probe")
    # calling out of SMRAM (into the arena) faults once locked
    with pytest.raises(EmulationError, match=r"fetch from .*EfiRuntimeServicesCode.* in SMM"):
        m.smm_call(s.arena[0], [], "probe")


def test_transport_refuses_smram() -> None:
    s = boot()
    with pytest.raises(TransportError, match="SMRAM"):
        s.transport.read_phys(SMRAM_BASE + 0x1000, 16)
    with pytest.raises(TransportError, match="SMRAM"):
        s.transport.write_phys(SMRAM_BASE - 8, bytes(16))
