"""The emulated firmware around the driver: DXE system table and boot services, the SMM system
table, and the protocols the driver looks up -- each a table of data (GUID, service slots).

Every service slot holds a trap stub (traps.py).  Implemented services are methods named
`svc_<Name>`; a slot without one stops the run with an error naming the service.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from codeisland.errors import EmulationError

from . import efi
from .savestate import (
    LMA_64BIT,
    REG_IO,
    REG_LMA,
    REG_PROCESSOR_ID,
    REGISTER_NAMES,
    SaveStateMap,
    reported_map,
)
from .traps import Call

if TYPE_CHECKING:
    from .machine import Machine

_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class ProtocolDef:
    """One protocol: its GUID, its service slots in order, and trailing data bytes."""

    name: str
    guid: str
    services: tuple[str, ...]
    data: bytes = b""


SMM_BASE2 = ProtocolDef("EFI_SMM_BASE2_PROTOCOL", efi.SMM_BASE2_GUID, ("InSmm", "GetSmstLocation"))
SMM_ACCESS2 = ProtocolDef(
    "EFI_SMM_ACCESS2_PROTOCOL",
    efi.SMM_ACCESS2_GUID,
    ("Open", "Close", "Lock", "GetCapabilities"),
    data=bytes([1, 0]),  # LockState, OpenState
)
SMM_CPU = ProtocolDef("EFI_SMM_CPU_PROTOCOL", efi.SMM_CPU_GUID, ("ReadSaveState", "WriteSaveState"))
SMM_SW_DISPATCH2 = ProtocolDef(
    "EFI_SMM_SW_DISPATCH2_PROTOCOL",
    efi.SMM_SW_DISPATCH2_GUID,
    ("Register", "UnRegister"),
    data=_U64.pack(0xFF),  # MaximumSwiValue
)


@dataclass
class SwChild:
    function: int
    value: int
    handle: int
    context: int  # EFI_SMM_SW_REGISTER_CONTEXT copy in SMRAM


@dataclass
class Registry:
    """What the driver registered: handlers, notifications, installed protocols, config tables."""

    root_handlers: list[tuple[int, int]] = field(default_factory=list)  # (handler, handle)
    sw_children: list[SwChild] = field(default_factory=list)
    notifies: list[tuple[str, int]] = field(default_factory=list)  # (guid, function)
    smm_protocols: dict[str, int] = field(default_factory=dict)
    config_tables: dict[str, int] = field(default_factory=dict)


class Firmware:
    """Builds the tables in emulated memory and implements their services."""

    def __init__(
        self,
        machine: Machine,
        *,
        sw_dispatch: bool,
        smm_access: bool = True,
        withhold: frozenset[str] = frozenset(),
    ) -> None:
        self.m = machine
        self.withhold = withhold  # "owner->Name" services left unimplemented (tests)
        self.reg = Registry()
        self.events: list[str] = []  # a readable trace of what the driver did
        self._next_handle = 0x1000
        mem = machine.memory
        self.config_capacity = 16
        self.config_array = mem.dxe_alloc(self.config_capacity * efi.CONFIG_ENTRY_SIZE)
        self.system_table = self._build_system_table()
        self.dxe_protocols: dict[str, int] = {efi.SMM_BASE2_GUID: self._instance(SMM_BASE2, 0)}
        if smm_access:
            self.dxe_protocols[efi.SMM_ACCESS2_GUID] = self._instance(SMM_ACCESS2, 0)
        self.smst = self._build_smst()
        self.reg.smm_protocols[efi.SMM_CPU_GUID] = self._instance(SMM_CPU, 1)
        if sw_dispatch:
            self.reg.smm_protocols[efi.SMM_SW_DISPATCH2_GUID] = self._instance(SMM_SW_DISPATCH2, 1)

    # -- building ------------------------------------------------------------------

    def _service(self, owner: str, name: str, page: int) -> int:
        full = f"{owner}->{name}"
        method: Callable[[Call], int] | None = getattr(self, f"svc_{name.replace('.', '_')}", None)
        return self.m.traps.stub(full, None if full in self.withhold else method, page)

    def _instance(self, proto: ProtocolDef, page: int) -> int:
        """Lay out one protocol interface: page 0 = DXE memory, page 1 = SMRAM."""
        size = 8 * len(proto.services) + len(proto.data)
        base = self.m.memory.dxe_alloc(size) if page == 0 else self.m.smram.table_alloc(size)
        slots = b"".join(_U64.pack(self._service(proto.name, s, page)) for s in proto.services)
        self.m.write(base, slots + proto.data)
        return base

    def _build_system_table(self) -> int:
        mem = self.m.memory
        bs_size = 24 + 8 * len(efi.BOOT_SERVICES)
        bs = mem.dxe_alloc(bs_size)
        header = struct.pack("<QIIII", efi.BOOT_SERVICES_SIGNATURE, 0x20046, bs_size, 0, 0)
        slots = b"".join(_U64.pack(self._service("gBS", n, 0)) for n in efi.BOOT_SERVICES)
        self.m.write(bs, header + slots)
        st = mem.dxe_alloc(efi.ST_SIZE)
        raw = bytearray(efi.ST_SIZE)
        struct.pack_into("<QIIII", raw, 0, efi.SYSTEM_TABLE_SIGNATURE, 0x20046, efi.ST_SIZE, 0, 0)
        struct.pack_into("<Q", raw, efi.ST_BOOT_SERVICES, bs)
        struct.pack_into("<QQ", raw, efi.ST_NUMBER_OF_TABLES, 0, self.config_array)
        self.m.write(st, bytes(raw))
        return st

    def _build_smst(self) -> int:
        m = self.m
        smst = m.smram.table_alloc(efi.SMST_SIZE)
        raw = bytearray(efi.SMST_SIZE)
        struct.pack_into("<QIIII", raw, 0, efi.SMST_SIGNATURE, 0x1000A, efi.SMST_SIZE, 0, 0)
        for offset, name in efi.SMST_SERVICES.items():
            struct.pack_into("<Q", raw, offset, self._service("gSmst", name, 1))
        n = len(m.cpus)
        sizes = m.smram.table_alloc(8 * n)
        ptrs = m.smram.table_alloc(8 * n)
        m.write(sizes, b"".join(_U64.pack(c.map.layout.map_size) for c in m.cpus))
        m.write(ptrs, b"".join(_U64.pack(c.map.base) for c in m.cpus))
        struct.pack_into("<QQQQ", raw, efi.SMST_CURRENT_CPU, 0, n, sizes, ptrs)
        m.write(smst, bytes(raw))
        return smst

    def set_current_cpu(self, cpu: int) -> None:
        self.m.write(self.smst + efi.SMST_CURRENT_CPU, _U64.pack(cpu))

    def _handle(self) -> int:
        self._next_handle += 0x10
        return self._next_handle

    def _put_u64(self, address: int, value: int) -> None:
        if address == 0:
            raise EmulationError("a service was given a NULL output pointer")
        self.m.write(address, _U64.pack(value & 0xFFFFFFFFFFFFFFFF))

    def _guid_at(self, address: int) -> str:
        return efi.guid_text(self.m.read(address, 16))

    # -- DXE boot services --------------------------------------------------------------

    def svc_LocateProtocol(self, c: Call) -> int:
        guid = self._guid_at(c.arg(0))
        iface = self.dxe_protocols.get(guid)
        self.events.append(f"gBS->LocateProtocol({guid}) -> {'found' if iface else 'not found'}")
        if iface is None:
            return efi.EFI_NOT_FOUND
        self._put_u64(c.arg(2), iface)
        return efi.EFI_SUCCESS

    def svc_AllocatePages(self, c: Call) -> int:
        kind, mtype, pages, out = c.arg(0), c.arg(1), c.arg(2), c.arg(3)
        if kind != efi.ALLOCATE_ANY_PAGES:
            return efi.EFI_UNSUPPORTED
        base = self.m.memory.allocate_pages(pages, mtype)
        name = efi.MEMORY_TYPES[mtype] if mtype < len(efi.MEMORY_TYPES) else str(mtype)
        self.events.append(f"gBS->AllocatePages({pages} pages, {name}) -> {base and hex(base)}")
        if base is None:
            return efi.EFI_OUT_OF_RESOURCES
        self._put_u64(out, base)
        return efi.EFI_SUCCESS

    def svc_InstallConfigurationTable(self, c: Call) -> int:
        guid, table = self._guid_at(c.arg(0)), c.arg(1)
        self.events.append(f"gBS->InstallConfigurationTable({guid}, {table:#x})")
        if table == 0:
            self.reg.config_tables.pop(guid, None)
        else:
            if guid not in self.reg.config_tables and (
                len(self.reg.config_tables) >= self.config_capacity
            ):
                return efi.EFI_OUT_OF_RESOURCES
            self.reg.config_tables[guid] = table
        raw = b"".join(efi.guid_bytes(g) + _U64.pack(t) for g, t in self.reg.config_tables.items())
        self.m.write(self.config_array, raw)
        self._put_u64(self.system_table + efi.ST_NUMBER_OF_TABLES, len(self.reg.config_tables))
        return efi.EFI_SUCCESS

    # -- SmmBase2 / SmmAccess2 ------------------------------------------------------------

    def svc_InSmm(self, c: Call) -> int:
        self.m.write(c.arg(1), bytes([1 if self.m.in_smm else 0]))
        return efi.EFI_SUCCESS

    def svc_GetSmstLocation(self, c: Call) -> int:
        self._put_u64(c.arg(1), self.smst)
        return efi.EFI_SUCCESS

    def svc_GetCapabilities(self, c: Call) -> int:
        size_ptr, buf = c.arg(1), c.arg(2)
        need = efi.SMRAM_DESCRIPTOR_SIZE
        have = _U64.unpack(self.m.read(size_ptr, 8))[0]
        self._put_u64(size_ptr, need)
        if have < need:
            return efi.EFI_BUFFER_TOO_SMALL
        s = self.m.smram
        state = efi.EFI_ALLOCATED
        self.m.write(buf, struct.pack("<QQQQ", s.base, s.base, s.size, state))
        return efi.EFI_SUCCESS

    # -- SMST ---------------------------------------------------------------------------

    def svc_SmmLocateProtocol(self, c: Call) -> int:
        guid = self._guid_at(c.arg(0))
        iface = self.reg.smm_protocols.get(guid)
        self.events.append(
            f"gSmst->SmmLocateProtocol({guid}) -> {'found' if iface else 'not found'}"
        )
        if iface is None:
            return efi.EFI_NOT_FOUND
        self._put_u64(c.arg(2), iface)
        return efi.EFI_SUCCESS

    def svc_SmmAllocatePool(self, c: Call) -> int:
        size, out = c.arg(1), c.arg(2)
        base = self.m.smram.pool_alloc(size)
        if base is None:
            return efi.EFI_OUT_OF_RESOURCES
        self._put_u64(out, base)
        return efi.EFI_SUCCESS

    def svc_SmmAllocatePages(self, c: Call) -> int:
        kind, pages, out = c.arg(0), c.arg(2), c.arg(3)
        if kind != efi.ALLOCATE_ANY_PAGES:
            return efi.EFI_UNSUPPORTED
        base = self.m.smram.pool_alloc(pages * 0x1000, 0x1000)
        if base is None:
            return efi.EFI_OUT_OF_RESOURCES
        self._put_u64(out, base)
        return efi.EFI_SUCCESS

    def svc_SmmFreePool(self, c: Call) -> int:
        return efi.EFI_SUCCESS  # bump allocator: freeing is a no-op, SMRAM is not reused

    def svc_SmmFreePages(self, c: Call) -> int:
        return efi.EFI_SUCCESS

    def svc_SmiHandlerRegister(self, c: Call) -> int:
        handler, kind, out = c.arg(0), c.arg(1), c.arg(2)
        if kind != 0:
            self.events.append(f"gSmst->SmiHandlerRegister({self._guid_at(kind)}) unsupported")
            return efi.EFI_UNSUPPORTED
        handle = self._handle()
        self.reg.root_handlers.append((handler, handle))
        self.events.append("gSmst->SmiHandlerRegister(root)")
        self._put_u64(out, handle)
        return efi.EFI_SUCCESS

    def svc_SmiHandlerUnRegister(self, c: Call) -> int:
        handle = c.arg(0)
        before = len(self.reg.root_handlers)
        self.reg.root_handlers = [h for h in self.reg.root_handlers if h[1] != handle]
        return (
            efi.EFI_SUCCESS if len(self.reg.root_handlers) < before else efi.EFI_INVALID_PARAMETER
        )

    def svc_SmmRegisterProtocolNotify(self, c: Call) -> int:
        guid, function, out = self._guid_at(c.arg(0)), c.arg(1), c.arg(2)
        self.reg.notifies.append((guid, function))
        self.events.append(f"gSmst->SmmRegisterProtocolNotify({guid})")
        if out:
            self._put_u64(out, self._handle())
        return efi.EFI_SUCCESS

    def svc_SmmInstallProtocolInterface(self, c: Call) -> int:
        handle_ptr, guid, iface = c.arg(0), self._guid_at(c.arg(1)), c.arg(3)
        self.reg.smm_protocols[guid] = iface
        if handle_ptr and _U64.unpack(self.m.read(handle_ptr, 8))[0] == 0:
            self._put_u64(handle_ptr, self._handle())
        self.events.append(f"gSmst->SmmInstallProtocolInterface({guid})")
        return efi.EFI_SUCCESS

    # -- SmmCpu: save states --------------------------------------------------------------

    def _save_state_access(self, c: Call) -> tuple[int, int, int, int] | int:
        width, register, cpu, buf = c.arg(1), c.arg(2), c.arg(3), c.arg(4)
        if cpu >= len(self.m.cpus) or width not in (1, 2, 4, 8) or buf == 0:
            return efi.EFI_INVALID_PARAMETER
        return width, register, cpu, buf

    def _map(self, cpu: int) -> SaveStateMap | None:
        """The CPU's save-state map as its reported revision names it (None: unknown)."""
        return reported_map(self.m.cpus[cpu].map.smbase, self.m.read, self.m.write)

    def svc_ReadSaveState(self, c: Call) -> int:
        got = self._save_state_access(c)
        if isinstance(got, int):
            return got
        width, register, cpu, buf = got
        if register == REG_LMA:
            value = LMA_64BIT
        elif register == REG_PROCESSOR_ID:
            value = cpu
        elif register == REG_IO:
            return efi.EFI_NOT_FOUND  # as OVMF's library answers (FACTS.md)
        else:
            name = REGISTER_NAMES.get(register)
            ssm = self._map(cpu)
            if ssm is None:
                return efi.EFI_UNSUPPORTED  # a save-state revision no table describes
            if name is None or not ssm.has(name):
                return efi.EFI_NOT_FOUND
            value = ssm.read(name)
        self.m.write(buf, (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little"))
        self.m.note_save_state("read", cpu, register)
        return efi.EFI_SUCCESS

    def svc_WriteSaveState(self, c: Call) -> int:
        got = self._save_state_access(c)
        if isinstance(got, int):
            return got
        width, register, cpu, buf = got
        name = REGISTER_NAMES.get(register)
        ssm = self._map(cpu)
        if ssm is None:
            return efi.EFI_UNSUPPORTED  # a save-state revision no table describes
        if name is None or not ssm.has(name):
            return efi.EFI_NOT_FOUND if register not in (REG_LMA, REG_IO) else efi.EFI_UNSUPPORTED
        value = int.from_bytes(self.m.read(buf, width), "little")
        if width < 8:
            value |= ssm.read(name) & ~((1 << (8 * width)) - 1)
        ssm.write(name, value)
        self.m.note_save_state("write", cpu, register, value)
        return efi.EFI_SUCCESS

    # -- SmmSwDispatch2 -------------------------------------------------------------------

    def svc_Register(self, c: Call) -> int:
        function, ctx_ptr, out = c.arg(1), c.arg(2), c.arg(3)
        value = _U64.unpack(self.m.read(ctx_ptr, 8))[0]
        if value == 0xFFFFFFFFFFFFFFFF:
            used = {ch.value for ch in self.reg.sw_children}
            value = next(v for v in range(0x20, 0x100) if v not in used)
            self._put_u64(ctx_ptr, value)
        if value > 0xFF or any(ch.value == value for ch in self.reg.sw_children):
            return efi.EFI_INVALID_PARAMETER
        handle = self._handle()
        context = self.m.smram.table_alloc(8)
        self.m.write(context, _U64.pack(value))
        self.reg.sw_children.append(SwChild(function, value, handle, context))
        self.events.append(f"SwDispatch2->Register(SwSmiInputValue={value:#x})")
        self._put_u64(out, handle)
        return efi.EFI_SUCCESS

    def svc_UnRegister(self, c: Call) -> int:
        handle = c.arg(1)
        before = len(self.reg.sw_children)
        self.reg.sw_children = [ch for ch in self.reg.sw_children if ch.handle != handle]
        return efi.EFI_SUCCESS if len(self.reg.sw_children) < before else efi.EFI_INVALID_PARAMETER
