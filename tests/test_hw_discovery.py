"""Discovery of the mailbox from outside: the EFI configuration table under UEFI, a scan of
physical memory for the self-naming mailbox page under an OS (virtual table pointer)."""

from __future__ import annotations

import ctypes
import struct
import uuid

import pytest

from codeisland.errors import TransportError
from codeisland.hw.discovery import CONFIG_TABLE, MEMORY_SCAN, discover
from codeisland.plan import layout as L

MIB = 1 << 20
ST, CT, MAILBOX, CFG, ARENA = 0x2F0008, 0x100000, 0x200000, 0x200800, 0x300000


def _mailbox(mem: bytearray, at: int, names: int | None = None) -> None:
    mb = L.Mailbox()
    mb.signature, mb.version = L.MAILBOX_SIGNATURE, L.MAILBOX_VERSION
    mb.header_size = ctypes.sizeof(mb)
    mb.mailbox_base = at if names is None else names
    mb.mailbox_size = 0x10000
    mb.request_offset, mb.request_max = 0x1000, 0x4000
    mb.response_offset, mb.response_max = 0x5000, 0x4000
    mb.sample_offset, mb.sample_capacity = 0x9000, 16
    mb.sw_smi_value, mb.arena_base, mb.arena_size = 0xC1, ARENA, 0x10000
    mem[at : at + ctypes.sizeof(mb)] = bytes(mb)


def _memory(guid: str = L.CONFIG_TABLE_GUID, signature: int = L.CONFIG_SIGNATURE) -> bytearray:
    mem = bytearray(4 * MIB)
    struct.pack_into("<8sIIII", mem, ST, b"IBI SYST", 0x2_0046, 120, 0x1234, 0)
    struct.pack_into("<QQ", mem, ST + 104, 2, CT)
    mem[CT : CT + 16] = uuid.uuid4().bytes_le
    struct.pack_into("<Q", mem, CT + 16, 0xDEAD)
    mem[CT + 24 : CT + 40] = uuid.UUID(guid).bytes_le
    struct.pack_into("<Q", mem, CT + 40, CFG)
    c = L.ConfigTable()
    c.signature, c.version, c.size = signature, 1, ctypes.sizeof(L.ConfigTable)
    c.mailbox_base, c.arena_base, c.arena_size = MAILBOX, ARENA, 0x10000
    c.mailbox_size, c.sw_smi_value = 0x10000, 0xC1
    mem[CFG : CFG + c.size] = bytes(c)
    _mailbox(mem, MAILBOX)
    return mem


def _reader(mem: bytearray):  # type: ignore[no-untyped-def]
    def read(a: int, n: int) -> bytes:
        if a + n > len(mem):
            raise TransportError("hole")
        return bytes(mem[a : a + n])

    return read


def test_config_table_way_under_uefi() -> None:
    d = discover(_reader(_memory()), 4 * MIB)
    assert d.method == CONFIG_TABLE
    assert (d.system_table, d.config_entries, d.config_table, d.mailbox) == (ST, 2, CFG, MAILBOX)
    assert d.config.sw_smi_value == 0xC1 and not d.notes


def test_unreadable_chunks_are_skipped() -> None:
    assert discover(_reader(_memory()), 1 << 32).config_table == CFG


def test_virtual_table_pointer_falls_back_to_the_memory_scan() -> None:
    mem = _memory()
    struct.pack_into("<Q", mem, ST + 112, 0xFFFFFFFEFF5EBC98)  # after SetVirtualAddressMap
    d = discover(_reader(mem), len(mem))
    assert d.method == MEMORY_SCAN and d.mailbox == MAILBOX
    assert d.config.arena_base == ARENA and d.config.sw_smi_value == 0xC1
    assert 0 < d.scanned_bytes <= len(mem)
    assert "virtual address" in d.explain() and "0xfffffffeff5ebc98" in d.explain()


def test_the_scan_ignores_copies_that_name_another_page() -> None:
    mem = bytearray(4 * MIB)
    _mailbox(mem, 0x1000, names=0x200000)  # a copy of a header (e.g. in a buffer)
    _mailbox(mem, 0x80010)  # not page aligned
    with pytest.raises(TransportError, match="mailbox was not found"):
        discover(_reader(mem), len(mem))
    _mailbox(mem, 0x3F0000)
    d = discover(_reader(mem), len(mem))
    assert d.mailbox == 0x3F0000 and d.method == MEMORY_SCAN


def test_a_header_whose_areas_leave_the_mailbox_is_refused() -> None:
    mem = bytearray(4 * MIB)
    _mailbox(mem, 0x3F0000)
    struct.pack_into("<I", mem, 0x3F0000 + L.Mailbox.response_max.offset, 0x100000)
    with pytest.raises(TransportError, match="no page"):
        discover(_reader(mem), len(mem))


def test_a_config_table_naming_no_mailbox_is_not_trusted() -> None:
    mem = _memory()
    mem[MAILBOX : MAILBOX + 8] = bytes(8)  # the table points at a page that is no mailbox
    with pytest.raises(TransportError, match="does not check out"):
        discover(_reader(mem), len(mem))


def test_failures_name_what_each_way_found() -> None:
    other = _memory(str(uuid.uuid4()))
    other[MAILBOX : MAILBOX + 8] = bytes(8)
    with pytest.raises(TransportError, match=r"not loaded.*no page"):
        discover(_reader(other), len(other))
    corrupt = _memory(signature=0)
    corrupt[MAILBOX : MAILBOX + 8] = bytes(8)
    with pytest.raises(TransportError, match="corrupt"):
        discover(_reader(corrupt), len(corrupt))
    empty = bytearray(2 * MIB)
    with pytest.raises(TransportError, match="no EFI system table"):
        discover(_reader(empty), len(empty))
