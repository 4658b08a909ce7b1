"""Find the driver's mailbox from outside: EFI system table -> configuration table -> our entry.

The driver publishes a ci_config_table (plan.h) under CI_CONFIG_TABLE_GUID.  Like chipsec's UEFI
HAL, we find the EFI system table by its signature ("IBI SYST") scanning physical memory
downwards in 1 MiB chunks, check its header, and walk its configuration table.  Everything read
is bounds-checked: this is memory another agent controls.
"""

from __future__ import annotations

import ctypes
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import TransportError
from ..plan import layout as L

SYSTEM_TABLE_SIGNATURE = b"IBI SYST"
SYSTEM_TABLE_HEADER_SIZE = 120  # EFI_SYSTEM_TABLE, x64
CONFIG_ENTRY_SIZE = 24  # EFI_GUID + pointer
MAX_CONFIG_ENTRIES = 256
CHUNK = 1 << 20

ReadPhys = Callable[[int, int], bytes]


@dataclass
class Discovery:
    system_table: int
    config_entries: int
    config_table: int  # address of our ci_config_table
    config: L.ConfigTable

    def to_dict(self) -> dict[str, int]:
        return {
            "system_table": self.system_table,
            "config_entries": self.config_entries,
            "config_table": self.config_table,
            "mailbox_base": int(self.config.mailbox_base),
            "arena_base": int(self.config.arena_base),
            "arena_size": int(self.config.arena_size),
            "sw_smi_value": int(self.config.sw_smi_value),
        }


def find_system_tables(read: ReadPhys, memory_size: int) -> list[int]:
    """Addresses of plausible EFI system tables, highest first."""
    found = []
    top = memory_size - CHUNK
    for base in range(top, -1, -CHUNK):
        try:
            chunk = read(base, CHUNK)
        except TransportError:
            continue  # a hole (MMIO, beyond RAM): chipsec's UEFI HAL skips these too
        pos = chunk.find(SYSTEM_TABLE_SIGNATURE)
        while pos != -1:
            if pos % 8 == 0 and _plausible(chunk[pos : pos + 24]):
                found.append(base + pos)
            pos = chunk.find(SYSTEM_TABLE_SIGNATURE, pos + 1)
        if found:
            break
    return found


def _plausible(header: bytes) -> bool:
    if len(header) < 24:
        return False
    _, revision, size, crc, reserved = struct.unpack("<QIIII", header)
    return revision >> 16 == 2 and size == SYSTEM_TABLE_HEADER_SIZE and crc != 0 and reserved == 0


def discover(read: ReadPhys, memory_size: int) -> Discovery:
    """Locate the codeisland configuration table; TransportError when it is not there."""
    want = uuid.UUID(L.CONFIG_TABLE_GUID).bytes_le
    tables = find_system_tables(read, memory_size)
    if not tables:
        raise TransportError("no EFI system table found in physical memory")
    for st in tables:
        count, table = struct.unpack("<QQ", read(st + 104, 16))
        if not 0 < count <= MAX_CONFIG_ENTRIES or table + count * CONFIG_ENTRY_SIZE > memory_size:
            continue
        raw = read(table, count * CONFIG_ENTRY_SIZE)
        for i in range(count):
            guid, pointer = raw[i * 24 : i * 24 + 16], struct.unpack_from("<Q", raw, i * 24 + 16)[0]
            if guid == want:
                return Discovery(st, count, pointer, _config(read, pointer, memory_size))
    raise TransportError(
        "the codeisland driver is not loaded: its EFI configuration table "
        f"{L.CONFIG_TABLE_GUID} is absent"
    )


def _config(read: ReadPhys, address: int, memory_size: int) -> L.ConfigTable:
    size = ctypes.sizeof(L.ConfigTable)
    if address + size > memory_size:
        raise TransportError(f"codeisland configuration table at {address:#x} is outside memory")
    cfg = L.ConfigTable.from_bytes(read(address, size))
    if cfg.signature != L.CONFIG_SIGNATURE or cfg.size != size:
        raise TransportError(f"codeisland configuration table at {address:#x} is corrupt")
    return cfg
