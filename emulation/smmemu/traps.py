"""Firmware services as traps: each service pointer leads to an 8-byte stub

    B8 <id:u32>   mov eax, id
    E7 F0         out 0xF0, eax      -> PortBus -> TrapTable.dispatch(id)
    C3            ret

so the driver calls a function pointer as usual (MS x64 ABI) and the emulator implements the
service in Python, writing RAX before the `ret`.  A stub without an implementation stops the
run with an error naming the service.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from unicorn import Uc
from unicorn.x86_const import (
    UC_X86_REG_R8,
    UC_X86_REG_R9,
    UC_X86_REG_RAX,
    UC_X86_REG_RCX,
    UC_X86_REG_RDX,
    UC_X86_REG_RSP,
)

from .ports import PORT_TRAP

STUB_SIZE = 8
_ARG_REGS = (UC_X86_REG_RCX, UC_X86_REG_RDX, UC_X86_REG_R8, UC_X86_REG_R9)


class Call:
    """The arguments of one service call (MS x64: rcx, rdx, r8, r9, then the stack)."""

    def __init__(self, uc: Uc) -> None:
        self.uc = uc

    def arg(self, i: int) -> int:
        if i < 4:
            return int(self.uc.reg_read(_ARG_REGS[i]))
        rsp = int(self.uc.reg_read(UC_X86_REG_RSP))
        # at the stub, rsp points at the return address; shadow space is 32 bytes above it
        raw = self.uc.mem_read(rsp + 8 + 32 + 8 * (i - 4), 8)
        return int(struct.unpack("<Q", raw)[0])


Service = Callable[[Call], int]


@dataclass
class Trap:
    name: str
    address: int
    service: Service | None


class TrapTable:
    """Stub pages and the id -> service table."""

    def __init__(self, uc: Uc, on_error: Callable[[str], None]) -> None:
        self.uc = uc
        self.traps: list[Trap] = []
        self.calls: list[str] = []  # every service called, in order (a trace for tests)
        self._pages: list[tuple[int, int]] = []
        self._on_error = on_error

    def add_page(self, base: int, size: int) -> None:
        self._pages.append((base, base + size))

    def stub(self, name: str, service: Service | None, page: int = 0) -> int:
        """Create the stub of one service in stub page `page`; return its address."""
        lo, hi = self._pages[page]
        used = sum(1 for t in self.traps if lo <= t.address < hi)
        address = lo + used * STUB_SIZE
        if address + STUB_SIZE > hi:
            raise RuntimeError("trap page is full")
        ident = len(self.traps)
        code = b"\xb8" + struct.pack("<I", ident) + bytes([0xE7, PORT_TRAP, 0xC3])
        self.uc.mem_write(address, code)
        self.traps.append(Trap(name, address, service))
        return address

    def dispatch(self, _port: int, _size: int, ident: int) -> None:
        if ident >= len(self.traps):
            self._on_error(f"trap {ident} does not exist")
            return
        trap = self.traps[ident]
        self.calls.append(trap.name)
        if trap.service is None:
            self._on_error(f"the driver called {trap.name}, which the emulator does not implement")
            return
        status = trap.service(Call(self.uc))
        self.uc.reg_write(UC_X86_REG_RAX, status)
