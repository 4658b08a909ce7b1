"""Find the driver's mailbox from outside, under UEFI and under an OS alike.

Two ways, each checked against the mailbox header itself (signature, version, sizes, and
`mailbox_base` equal to the page's own physical address), so no pointer is trusted:

1. the EFI configuration table: like chipsec's UEFI HAL, find the EFI system table by its
   signature ("IBI SYST") scanning physical memory downwards in 1 MiB chunks, walk its
   configuration table to our CI_CONFIG_TABLE_GUID entry.  Works while the firmware owns the
   machine (a UEFI app); once an OS has called SetVirtualAddressMap the table pointer is a
   virtual address and this way ends;
2. a scan of physical memory for the mailbox header page: a 4 KiB-aligned page that starts with
   CI_MAILBOX_SIGNATURE and names itself as mailbox_base (copies elsewhere name another page).
   0.3-1.2 s for 512 MiB; works under Linux.

Everything read is bounds-checked: this is memory another agent controls.
"""

from __future__ import annotations

import ctypes
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import TransportError
from ..plan import layout as L

SYSTEM_TABLE_SIGNATURE = b"IBI SYST"
SYSTEM_TABLE_HEADER_SIZE = 120  # EFI_SYSTEM_TABLE, x64
CONFIG_ENTRY_SIZE = 24  # EFI_GUID + pointer
MAX_CONFIG_ENTRIES = 256
CHUNK = 1 << 20
PAGE = 4096
CONFIG_TABLE = "config table"
MEMORY_SCAN = "memory scan"

ReadPhys = Callable[[int, int], bytes]


@dataclass
class Discovery:
    method: str  # CONFIG_TABLE or MEMORY_SCAN
    mailbox: int  # physical address of the mailbox header (checked)
    config: L.ConfigTable  # from the configuration table, or built from the mailbox header
    system_table: int = 0
    config_entries: int = 0
    config_table: int = 0  # address of our ci_config_table (config-table way only)
    scanned_bytes: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # why an earlier way did not answer

    def explain(self) -> str:
        if self.method == CONFIG_TABLE:
            how = (
                f"EFI system table {self.system_table:#x} -> configuration table entry "
                f"{self.config_table:#x} -> mailbox header {self.mailbox:#x} (self-address checked)"
            )
        else:
            how = (
                f"mailbox header page {self.mailbox:#x} found by scanning "
                f"{self.scanned_bytes >> 20} MiB of physical memory in {self.seconds:.1f} s "
                f"(its mailbox_base names itself)"
            )
        return how + "".join(f"; {n}" for n in self.notes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "mailbox": self.mailbox,
            "system_table": self.system_table,
            "config_entries": self.config_entries,
            "config_table": self.config_table,
            "mailbox_base": int(self.config.mailbox_base),
            "arena_base": int(self.config.arena_base),
            "arena_size": int(self.config.arena_size),
            "sw_smi_value": int(self.config.sw_smi_value),
            "scanned_bytes": self.scanned_bytes,
            "seconds": self.seconds,
            "notes": list(self.notes),
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
    """Locate the mailbox: the configuration table first, else a memory scan.

    TransportError, naming what each way found, when neither finds a checked mailbox."""
    notes: list[str] = []
    try:
        found = _through_config_table(read, memory_size)
        if _mailbox_header(read, int(found.config.mailbox_base), memory_size) is not None:
            return found
        notes.append(
            f"the configuration table names a mailbox at {found.config.mailbox_base:#x} "
            "that does not check out there"
        )
    except TransportError as exc:
        notes.append(str(exc))
    t0 = time.monotonic()
    hits, scanned = scan_for_mailbox(read, memory_size)
    if not hits:
        raise TransportError(
            "the codeisland mailbox was not found: "
            + "; ".join(notes)
            + f"; no page of the {scanned >> 20} MiB of physical memory scanned holds a "
            "mailbox header naming itself (is the driver injected and the guest booted?)"
        )
    address, header = hits[0]
    return Discovery(
        MEMORY_SCAN,
        address,
        config_from_mailbox(header),
        scanned_bytes=scanned,
        seconds=time.monotonic() - t0,
        notes=notes,
    )


def _through_config_table(read: ReadPhys, memory_size: int) -> Discovery:
    want = uuid.UUID(L.CONFIG_TABLE_GUID).bytes_le
    tables = find_system_tables(read, memory_size)
    if not tables:
        raise TransportError("no EFI system table found in physical memory")
    virtual = []
    for st in tables:
        count, table = struct.unpack("<QQ", read(st + 104, 16))
        if not 0 < count <= MAX_CONFIG_ENTRIES:
            continue
        if table + count * CONFIG_ENTRY_SIZE > memory_size:
            virtual.append(f"{st:#x} -> {table:#x}")
            continue
        raw = read(table, count * CONFIG_ENTRY_SIZE)
        for i in range(count):
            guid, pointer = raw[i * 24 : i * 24 + 16], struct.unpack_from("<Q", raw, i * 24 + 16)[0]
            if guid == want:
                cfg = _config(read, pointer, memory_size)
                return Discovery(CONFIG_TABLE, int(cfg.mailbox_base), cfg, st, count, pointer)
    if virtual:
        raise TransportError(
            "the EFI system table's configuration table pointer is outside physical memory "
            f"({', '.join(virtual)}): a virtual address, the OS called SetVirtualAddressMap"
        )
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


def _checked_header(raw: bytes, address: int, memory_size: int) -> L.Mailbox | None:
    size = ctypes.sizeof(L.Mailbox)
    if len(raw) < size:
        return None
    mb = L.Mailbox.from_bytes(raw[:size])
    areas = (
        (mb.request_offset, mb.request_max),
        (mb.response_offset, mb.response_max),
        (mb.sample_offset, mb.sample_capacity * ctypes.sizeof(L.Sample)),
    )
    ok = (
        mb.signature == L.MAILBOX_SIGNATURE
        and mb.mailbox_base == address
        and mb.version == L.MAILBOX_VERSION
        and mb.header_size == size
        and mb.mailbox_size >= L.MAILBOX_HEADER_SIZE
        and address + mb.mailbox_size <= memory_size
        and all(o >= L.MAILBOX_HEADER_SIZE and o + n <= mb.mailbox_size for o, n in areas)
        and mb.arena_size > 0
        and mb.arena_base % PAGE == 0
        and mb.arena_base + mb.arena_size <= memory_size
        and not (
            mb.arena_base < address + mb.mailbox_size and address < mb.arena_base + mb.arena_size
        )
    )
    return mb if ok else None


def _mailbox_header(read: ReadPhys, address: int, memory_size: int) -> L.Mailbox | None:
    if address % PAGE or address + L.MAILBOX_HEADER_SIZE > memory_size:
        return None
    try:
        return _checked_header(read(address, ctypes.sizeof(L.Mailbox)), address, memory_size)
    except TransportError:
        return None


def scan_for_mailbox(
    read: ReadPhys, memory_size: int, first_only: bool = True
) -> tuple[list[tuple[int, L.Mailbox]], int]:
    """Pages that hold a self-consistent mailbox header, highest first (only the highest
    unless first_only is False: the driver reserves its pages high, so the scan stays short);
    and the bytes scanned."""
    signature = struct.pack("<Q", L.MAILBOX_SIGNATURE)
    hits: list[tuple[int, L.Mailbox]] = []
    scanned = 0
    for base in range(memory_size - CHUNK, -1, -CHUNK):
        try:
            chunk = read(base, CHUNK)
        except TransportError:
            continue
        scanned += len(chunk)
        pos = chunk.find(signature)
        while pos != -1:
            if pos % PAGE == 0:
                mb = _checked_header(chunk[pos : pos + PAGE], base + pos, memory_size)
                if mb is not None:
                    hits.append((base + pos, mb))
            pos = chunk.find(signature, pos + 1)
        if hits and first_only:
            break
    return hits, scanned


def config_from_mailbox(mb: L.Mailbox) -> L.ConfigTable:
    """The configuration-table view of a mailbox header (the same facts, one shape)."""
    cfg = L.ConfigTable()
    cfg.signature, cfg.version, cfg.size = L.CONFIG_SIGNATURE, mb.version, ctypes.sizeof(cfg)
    cfg.mailbox_base, cfg.arena_base, cfg.arena_size = mb.mailbox_base, mb.arena_base, mb.arena_size
    cfg.mailbox_size, cfg.sw_smi_value = mb.mailbox_size, mb.sw_smi_value
    return cfg
