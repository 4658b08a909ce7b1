"""Port I/O of the emulated machine: one bus, handlers registered per port.

Unicorn calls these only on IN/OUT instructions (UC_HOOK_INSN), so they cost nothing while
ordinary code runs.  A port nobody registered stops the run with an error naming it.
"""

from __future__ import annotations

from collections.abc import Callable

from unicorn import UC_HOOK_INSN, Uc
from unicorn.x86_const import UC_X86_INS_IN, UC_X86_INS_OUT

InHandler = Callable[[int, int], int]  # (port, size) -> value
OutHandler = Callable[[int, int, int], None]  # (port, size, value)

PORT_CMOS_INDEX = 0x70  # devices.py: CmosRtc
PORT_CMOS_DATA = 0x71
PORT_APM_CNT = 0xB2
PORT_APM_STS = 0xB3
PORT_DEBUGCON = 0x402
PORT_GUEST_OUT = 0xE9
PORT_GUEST_EXIT = 0xEA
PORT_GUEST_IN = 0xEB  # devices.py: InputEvents
PORT_TRAP = 0xF0  # firmware service stubs (traps.py)


class PortBus:
    def __init__(self, uc: Uc, on_error: Callable[[str], None]) -> None:
        self._in: dict[int, InHandler] = {}
        self._out: dict[int, OutHandler] = {}
        self._on_error = on_error
        uc.hook_add(UC_HOOK_INSN, self._hook_in, None, 1, 0, UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INSN, self._hook_out, None, 1, 0, UC_X86_INS_OUT)

    def on_in(self, port: int, handler: InHandler) -> None:
        """Register (or replace) the handler of IN from `port`."""
        self._in[port] = handler

    def on_out(self, port: int, handler: OutHandler) -> None:
        """Register (or replace) the handler of OUT to `port`."""
        self._out[port] = handler

    def _hook_in(self, uc: Uc, port: int, size: int, _user: object) -> int:
        handler = self._in.get(port)
        if handler is None:
            self._on_error(f"IN from unemulated I/O port {port:#x}")
            return (1 << (8 * size)) - 1
        return handler(port, size) & ((1 << (8 * size)) - 1)

    def _hook_out(self, uc: Uc, port: int, size: int, value: int, _user: object) -> None:
        handler = self._out.get(port)
        if handler is None:
            self._on_error(f"OUT {value:#x} to unemulated I/O port {port:#x}")
            return
        handler(port, size, value)
