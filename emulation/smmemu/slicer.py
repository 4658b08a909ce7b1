"""Native time slices for guest threads (emulation/slicer/slicer.c, built by `make -C emulation`).

A C block hook adds up executed guest code bytes and calls uc_emu_stop once a slice's budget
is spent: a synchronous stop (exact context) at the cost of one C call per block, instead of
emu_start(count=)'s helper call per instruction.  Slices are measured in code bytes, not
instructions; use instruction-count slices (Guest.step) where SMIs must land at exact counts.
"""

from __future__ import annotations

import ctypes

from unicorn import UC_HOOK_BLOCK, Uc

from codeisland.errors import EmulationError

from . import nativelib


class _State(ctypes.Structure):
    _fields_ = [
        ("budget", ctypes.c_uint64),
        ("used", ctypes.c_uint64),
        ("blocks", ctypes.c_uint64),
        ("stop", ctypes.c_void_p),
        ("stopped", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


class NativeSlicer:
    """Attach to a machine's Unicorn for guest code in [begin, end]."""

    def __init__(self, uc: Uc, begin: int, end: int) -> None:
        from unicorn.unicorn_py3.unicorn import uclib

        self._lib = nativelib.load("slicer", "native slicer")
        self._uclib = uclib
        self._uc = uc
        self.state = _State()
        self.state.stop = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value
        self._handle = ctypes.c_size_t()
        callback = ctypes.cast(self._lib.ci_slicer_block_hook, ctypes.c_void_p)
        status = uclib.uc_hook_add(
            uc._uch, ctypes.byref(self._handle), UC_HOOK_BLOCK, callback,
            ctypes.byref(self.state), ctypes.c_uint64(begin), ctypes.c_uint64(end),
        )  # fmt: skip
        if status != 0:
            raise EmulationError(f"uc_hook_add(slicer) failed with Unicorn error {status}")

    def arm(self, budget_bytes: int) -> None:
        """Start a slice of `budget_bytes` of executed guest code."""
        self.state.budget = budget_bytes
        self.state.used = 0
        self.state.stopped = 0

    @property
    def used(self) -> int:
        return int(self.state.used)

    def close(self) -> None:
        if self._handle.value:
            self._uclib.uc_hook_del(self._uc._uch, self._handle)
            self._handle = ctypes.c_size_t()
