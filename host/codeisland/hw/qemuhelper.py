"""A chipsec helper that reaches a QEMU guest instead of a board.

chipsec's HAL (physmem, io, pci, interrupts) talks to a `Helper`; on a board that is chipsec's
Linux helper and its kernel module.  This one implements the same interface for a QEMU guest
started by `codeisland qemu run`:

    physical memory   the guest RAM file (memory-backend-file, share=on), address == offset;
                      TSEG (SMRAM) reads return 0xFF and writes are dropped, as on a platform
                      whose SMRAM is closed, so the host never sees what a board would hide
    I/O ports         QMP human-monitor-command `o` / `i` (QMP has no port command)
    PCI config        CF8/CFC through those ports
    SW SMI            0xB3 <- data, 0xB2 <- code: QEMU's ICH9 APM raises the SMI on the vCPUs,
                      which take it at the end of their current translation block
    CPUID             only the VMX/SVM feature bits, from QEMU's CPU model (QOM properties)

It is selected the way chipsec selects helpers: by name ("qemuhelper") in chipsec's helper
registry (`register()` adds it), or passed as an instance to Chipset.load_helper.  Its guest is
named by CODEISLAND_QEMU_RAM / CODEISLAND_QEMU_QMP / CODEISLAND_QEMU_MEM_MIB when chipsec
creates it by name.  Nothing here loads a kernel module.
"""

from __future__ import annotations

import mmap
import os
import sys
from typing import Any, NoReturn

from chipsec.helper.basehelper import Helper
from chipsec.library.exceptions import OsHelperError, UnimplementedAPIError

from ..errors import TransportError
from . import q35
from .qmp import Qmp

NAME = "qemuhelper"
APM_CNT, APM_STS = 0xB2, 0xB3
PCI_ADDR, PCI_DATA = 0xCF8, 0xCFC


class QemuHelper(Helper):
    """chipsec Helper for a QEMU guest with shared RAM and a QMP socket."""

    def __init__(self, ram_path: str = "", qmp_path: str = "", memory_mib: int = 0) -> None:
        super().__init__()
        self.name = "QemuHelper"
        self.os_system = "qemu"
        self.os_release = "q35"
        self.os_version = "tcg"
        self.os_machine = "x86_64"
        self.driverpath = ""
        self.ram_path = ram_path or os.environ.get("CODEISLAND_QEMU_RAM", "")
        self.qmp_path = qmp_path or os.environ.get("CODEISLAND_QEMU_QMP", "")
        self.memory_size = (memory_mib or int(os.environ.get("CODEISLAND_QEMU_MEM_MIB", "0"))) << 20
        self.qmp: Qmp | None = None
        self.ram: mmap.mmap | None = None
        self.smram: q35.SmramState | None = None

    # -- lifecycle (chipsec calls create, start ... stop, delete) --------------------------

    def create(self) -> bool:
        if not self.ram_path or not self.qmp_path or not self.memory_size:
            raise OsHelperError(
                "qemuhelper needs CODEISLAND_QEMU_RAM, CODEISLAND_QEMU_QMP and "
                "CODEISLAND_QEMU_MEM_MIB (or constructor arguments)",
                1,
            )
        return True

    def start(self) -> bool:
        try:
            fd = os.open(self.ram_path, os.O_RDWR)
        except OSError as exc:
            raise OsHelperError(
                f"cannot open guest RAM {self.ram_path}: {exc.strerror}", 1
            ) from exc
        try:
            self.ram = mmap.mmap(fd, self.memory_size, mmap.MAP_SHARED)
        finally:
            os.close(fd)
        try:
            self.qmp = Qmp(self.qmp_path)
        except TransportError as exc:
            raise OsHelperError(str(exc), 1) from exc
        self.smram = q35.read_smram_state(self.read_pci_reg)
        self.driver_loaded = True
        return True

    def stop(self) -> bool:
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        if self.ram is not None:
            self.ram.close()
            self.ram = None
        self.driver_loaded = False
        return True

    def delete(self) -> bool:
        return True

    # -- physical memory ----------------------------------------------------------------

    def _check(self, address: int, length: int) -> mmap.mmap:
        if self.ram is None:
            raise OsHelperError("qemuhelper is not started", 1)
        if address < 0 or length < 0 or address + length > self.memory_size:
            raise OsHelperError(
                f"physical range {address:#x}+{length:#x} is outside guest RAM "
                f"({self.memory_size:#x} bytes)",
                1,
            )
        return self.ram

    def _smram_overlap(self, address: int, length: int) -> tuple[int, int] | None:
        s = self.smram
        if s is None or not s.tseg_size:
            return None
        lo, hi = max(address, s.tseg_base), min(address + length, s.tseg_base + s.tseg_size)
        return (lo - address, hi - address) if lo < hi else None

    def read_phys_mem(self, phys_address: int, length: int) -> bytes:
        ram = self._check(phys_address, length)
        data = bytearray(ram[phys_address : phys_address + length])
        hole = self._smram_overlap(phys_address, length)
        if hole is not None:
            data[hole[0] : hole[1]] = b"\xff" * (hole[1] - hole[0])
        return bytes(data)

    def write_phys_mem(self, phys_address: int, length: int, buffer: bytes) -> int:
        ram = self._check(phys_address, length)
        data = bytes(buffer[:length])
        hole = self._smram_overlap(phys_address, length)
        if hole is None:
            ram[phys_address : phys_address + length] = data
            return length
        # closed SMRAM drops writes from outside SMM; write only the parts around it
        ram[phys_address : phys_address + hole[0]] = data[: hole[0]]
        ram[phys_address + hole[1] : phys_address + length] = data[hole[1] :]
        return length

    def read_mmio_reg(self, phys_address: int, size: int) -> int:
        return int.from_bytes(self.read_phys_mem(phys_address, size), "little")

    def write_mmio_reg(self, phys_address: int, size: int, value: int) -> int:
        return self.write_phys_mem(phys_address, size, value.to_bytes(size, "little"))

    def va2pa(self, virtual_address: int) -> tuple[int, int]:
        return virtual_address, 0  # the host sees guest physical memory only

    # -- ports, PCI, SMI ----------------------------------------------------------------

    def _monitor(self) -> Qmp:
        if self.qmp is None:
            raise OsHelperError("qemuhelper is not started", 1)
        return self.qmp

    def read_io_port(self, io_port: int, size: int) -> int:
        return self._monitor().inb(io_port, size)

    def write_io_port(self, io_port: int, value: int, size: int) -> int:
        self._monitor().outb(io_port, value, size)
        return 0

    def _pci_addr(self, bus: int, device: int, function: int, offset: int) -> int:
        return 0x80000000 | bus << 16 | device << 11 | function << 8 | (offset & 0xFC)

    def read_pci_reg(self, bus: int, device: int, function: int, address: int, size: int) -> int:
        self.write_io_port(PCI_ADDR, self._pci_addr(bus, device, function, address), 4)
        return self.read_io_port(PCI_DATA + (address & 3), size)

    def write_pci_reg(
        self, bus: int, device: int, function: int, address: int, value: int, size: int
    ) -> int:
        self.write_io_port(PCI_ADDR, self._pci_addr(bus, device, function, address), 4)
        return self.write_io_port(PCI_DATA + (address & 3), value, size)

    def send_sw_smi(
        self,
        cpu_thread_id: int,
        SMI_code_data: int,
        _rax: int,
        _rbx: int,
        _rcx: int,
        _rdx: int,
        _rsi: int,
        _rdi: int,
    ) -> tuple[int, int, int, int, int, int, int]:
        """Raise the SMI from the monitor; no CPU's registers carry arguments in this path."""
        self.write_io_port(APM_STS, (SMI_code_data >> 8) & 0xFF, 1)
        self.write_io_port(APM_CNT, SMI_code_data & 0xFF, 1)
        return (_rax, _rbx, _rcx, _rdx, _rsi, _rdi, 0)

    def get_threads_count(self) -> int:
        return len(self._monitor().execute("query-cpus-fast"))

    def cpuid(self, eax: int, ecx: int) -> tuple[int, int, int, int]:
        """VMX (leaf 1 ECX bit 5) and SVM (leaf 0x80000001 ECX bit 2) from the CPU model."""
        cpus = self._monitor().execute("query-cpus-fast")
        path = cpus[0]["qom-path"]

        def flag(name: str) -> bool:
            try:
                return bool(self._monitor().execute("qom-get", path=path, property=name))
            except TransportError:
                return False

        if eax == 1:
            return (0, 0, (1 << 5) if flag("vmx") else 0, 0)
        if eax == 0x80000001:
            return (0, 0, (1 << 2) if flag("svm") else 0, 0)
        self._unsupported(f"cpuid leaf {eax:#x}")

    def get_affinity(self) -> int:
        return 0

    def set_affinity(self, value: int) -> int:
        return 0

    # -- what a monitor cannot do ---------------------------------------------------------

    def _unsupported(self, what: str) -> NoReturn:
        raise UnimplementedAPIError(f"qemuhelper: {what} is not reachable through QEMU's monitor")

    def read_msr(self, cpu_thread_id: int, msr_addr: int) -> tuple[int, int]:
        self._unsupported(f"MSR {msr_addr:#x}")

    def write_msr(self, cpu_thread_id: int, msr_addr: int, eax: int, edx: int) -> int:
        self._unsupported(f"MSR {msr_addr:#x}")

    def read_cr(self, cpu_thread_id: int, cr_number: int) -> int:
        self._unsupported("control registers")

    def write_cr(self, cpu_thread_id: int, cr_number: int, value: int) -> int:
        self._unsupported("control registers")

    def alloc_phys_mem(self, size: int, max_phys_address: int) -> tuple[int, int]:
        self._unsupported("allocating guest memory")

    def free_phys_mem(self, phys_address: int) -> None:
        self._unsupported("freeing guest memory")

    def map_io_space(self, phys_address: int, size: int, cache_type: int) -> int:
        self._unsupported("mapping I/O space")

    def load_ucode_update(self, cpu_thread_id: int, ucode_update_buffer: bytes) -> bool:
        self._unsupported("microcode updates")

    def get_descriptor_table(self, cpu_thread_id: int, desc_table_code: int) -> Any:
        self._unsupported("descriptor tables")

    def EFI_supported(self) -> bool:
        return False

    def get_EFI_variable(self, name: str, guid: str) -> Any:
        self._unsupported("EFI variables")

    def set_EFI_variable(self, *args: Any) -> Any:
        self._unsupported("EFI variables")

    def delete_EFI_variable(self, name: str, guid: str) -> Any:
        self._unsupported("EFI variables")

    def list_EFI_variables(self) -> Any:
        self._unsupported("EFI variables")

    def enum_ACPI_tables(self) -> Any:
        self._unsupported("ACPI tables")

    def get_ACPI_table(self, table_name: str) -> Any:
        self._unsupported("ACPI tables")

    def msgbus_send_read_message(self, mcr: int, mcrx: int) -> Any:
        self._unsupported("the message bus")

    def msgbus_send_write_message(self, mcr: int, mcrx: int, mdr: int) -> None:
        self._unsupported("the message bus")

    def msgbus_send_message(self, mcr: int, mcrx: int, mdr: int | None) -> Any:
        self._unsupported("the message bus")

    def hypercall(self, *args: int) -> int:
        self._unsupported("hypercalls")

    def retpoline_enabled(self) -> bool:
        return False


def get_helper() -> QemuHelper:
    """chipsec's helper-module convention: a factory named get_helper."""
    return QemuHelper()


def register() -> None:
    """Add "qemuhelper" to chipsec's helper registry, next to linuxhelper/efihelper/..."""
    from chipsec.helper.oshelper import helper as os_helper

    os_helper().avail_helpers[NAME] = sys.modules[__name__]
