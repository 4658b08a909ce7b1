"""The chipsec side without a guest: qemuhelper's memory view, discovery, Q35 decoding."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest
from chipsec.library.exceptions import OsHelperError

from codeisland.errors import TransportError
from codeisland.hw import q35
from codeisland.hw.qemuhelper import QemuHelper, register

MIB = 1 << 20


@pytest.fixture
def helper(tmp_path: Path) -> QemuHelper:
    ram = tmp_path / "ram"
    ram.write_bytes(bytes(4 * MIB))
    h = QemuHelper(str(ram), str(tmp_path / "none.sock"), 4)
    fd = ram.open("r+b")
    h.ram = mmap.mmap(fd.fileno(), 4 * MIB)
    h.smram = q35.SmramState(0x1A, 0x3F, 4 * MIB, 3 * MIB, MIB)  # TSEG = [3 MiB, 4 MiB)
    h.ram[3 * MIB : 3 * MIB + 4] = b"SMRM"
    return h


def test_smram_reads_as_ff_and_writes_are_dropped(helper: QemuHelper) -> None:
    assert helper.read_phys_mem(3 * MIB, 4) == b"\xff" * 4
    # a read straddling the TSEG base: the low part is RAM, the rest is hidden
    helper.write_phys_mem(3 * MIB - 2, 4, b"ABCD")
    assert helper.read_phys_mem(3 * MIB - 2, 4) == b"AB\xff\xff"
    assert helper.ram is not None and helper.ram[3 * MIB : 3 * MIB + 4] == b"SMRM"
    helper.write_phys_mem(0x1000, 3, b"xyz")
    assert helper.read_phys_mem(0x1000, 3) == b"xyz"


def test_out_of_range_access_raises(helper: QemuHelper) -> None:
    with pytest.raises(OsHelperError):
        helper.read_phys_mem(4 * MIB - 2, 4)
    with pytest.raises(OsHelperError):
        helper.write_phys_mem(-1, 1, b"x")


def test_registered_by_name_in_chipsec() -> None:
    from chipsec.helper.oshelper import helper as os_helper

    register()
    assert "qemuhelper" in os_helper().get_available_helpers()
    h = os_helper().get_helper("qemuhelper")
    assert isinstance(h, QemuHelper)


def test_helper_refuses_to_start_without_a_guest() -> None:
    h = QemuHelper("", "", 0)
    with pytest.raises(OsHelperError, match="CODEISLAND_QEMU_RAM"):
        h.create()


def test_q35_tseg_sizes() -> None:
    regs = {0x9D: 0x1A, 0x9E: 0x3F, 0xB0: 0x2000, 0x50: 16}

    def read(bus: int, dev: int, fun: int, off: int, size: int) -> int:
        return regs[off]

    s = q35.read_smram_state(read)
    assert (s.tolud, s.tseg_size, s.tseg_base) == (0x20000000, 16 * MIB, 0x1F000000)
    assert s.locked and not s.open and s.tseg_enabled
    regs[0x9E] = 0x05  # TSEG_SZ = 2 -> 8 MiB
    assert q35.read_smram_state(read).tseg_size == 8 * MIB
    regs[0x9E] = 0x04  # T_EN = 0
    assert q35.read_smram_state(read).tseg_size == 0


def test_transport_selects_qemuhelper_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from codeisland.hw.transport import ChipsecTransport

    monkeypatch.delenv("CODEISLAND_QEMU_RAM", raising=False)
    with pytest.raises(TransportError, match="CODEISLAND_QEMU_RAM"):
        ChipsecTransport("qemuhelper", 1 << 20)  # found by name, then refuses: no guest named
