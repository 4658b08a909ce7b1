"""The emulation Transport: what a host sees of the emulated board.

Physical memory outside SMRAM, the SW SMI port (an SMI runs synchronously, so the mailbox is
answered when raise_sw_smi returns), and discovery of the mailbox the way a host finds it: the
EFI system table's configuration table array, searched for the codeisland GUID.
"""

from __future__ import annotations

import ctypes
import struct

from unicorn import UcError

from codeisland.errors import TransportError
from codeisland.plan import layout as L
from codeisland.transport.base import Transport

from . import efi
from .machine import Machine, SmiRecord


class EmulatorTransport(Transport):
    name = "smmemu"

    def __init__(self, machine: Machine, initiator: int = 0) -> None:
        self.machine = machine
        self.initiator = initiator  # the CPU that writes APM_CNT
        self.last_smi: SmiRecord | None = None

    def _check(self, address: int, size: int) -> None:
        if size < 0 or address < 0 or address + size > 1 << 64:
            raise TransportError(f"bad physical range {address:#x}+{size:#x}")
        if self.machine.memory.in_smram(address, max(size, 1)):
            raise TransportError(f"{address:#x}+{size:#x} lies in SMRAM, closed to the host")

    def read_phys(self, address: int, size: int) -> bytes:
        self._check(address, size)
        try:
            return self.machine.read(address, size)
        except UcError as exc:
            raise TransportError(f"cannot read {address:#x}+{size:#x}: {exc}") from exc

    def write_phys(self, address: int, data: bytes) -> None:
        self._check(address, len(data))
        try:
            self.machine.write(address, data)
        except UcError as exc:
            raise TransportError(f"cannot write {address:#x}+{len(data):#x}: {exc}") from exc

    def raise_sw_smi(self, value: int, data: int = 0) -> None:
        self.last_smi = self.machine.smi(value, data, self.initiator)

    def last_smi_measure(self) -> tuple[int, int] | None:
        smi = self.last_smi
        return None if smi is None else (smi.number, smi.handler_instructions)

    def config_table(self) -> L.ConfigTable:
        st = self.machine.firmware.system_table
        count, array = struct.unpack("<QQ", self.read_phys(st + efi.ST_NUMBER_OF_TABLES, 16))
        if count > 256:
            raise TransportError(f"system table claims {count} configuration tables")
        want = efi.guid_bytes(L.CONFIG_TABLE_GUID)
        for i in range(count):
            entry = self.read_phys(array + i * efi.CONFIG_ENTRY_SIZE, efi.CONFIG_ENTRY_SIZE)
            if entry[:16] == want:
                (table,) = struct.unpack_from("<Q", entry, 16)
                raw = self.read_phys(table, ctypes.sizeof(L.ConfigTable))
                cfg = L.ConfigTable.from_bytes(raw)
                if cfg.signature != L.CONFIG_SIGNATURE:
                    raise TransportError(f"codeisland config table at {table:#x} has no signature")
                return cfg
        raise TransportError(
            "the codeisland configuration table is not installed (driver not loaded?)"
        )

    def locate_mailbox(self) -> int:
        return int(self.config_table().mailbox_base)
