"""Which pages emulated code stored to (emulation/writes/writes.c, built by `make -C emulation`).

A C write hook over [begin, end) sets one byte per 4 KiB page stored to: the plan fuzzer
compares only those pages outside SMRAM after a case instead of all of the board's RAM.  Host
writes (uc_mem_write, numpy) do not go through Unicorn's hooks; a caller that writes memory
itself adds those pages with `note`.
"""

from __future__ import annotations

import ctypes

import numpy as np
from unicorn import UC_HOOK_MEM_WRITE, Uc

from codeisland.errors import EmulationError

from . import nativelib

PAGE = 0x1000


class _State(ctypes.Structure):
    _fields_ = [
        ("base", ctypes.c_uint64),
        ("pages", ctypes.c_uint64),
        ("dirty", ctypes.c_void_p),
        ("stores", ctypes.c_uint64),
    ]


class WriteTracker:
    """Pages of [begin, end) stored to since the last `clear` (begin, end page aligned)."""

    def __init__(self, uc: Uc, begin: int, end: int) -> None:
        from unicorn.unicorn_py3.unicorn import uclib

        if begin % PAGE or end % PAGE or end <= begin:
            raise ValueError(f"write tracker range {begin:#x}..{end:#x} is not whole pages")
        self._lib = nativelib.load("writes", "native write tracker")
        self._uclib, self._uc = uclib, uc
        self.begin = begin
        self.dirty = np.zeros((end - begin) // PAGE, dtype=np.uint8)
        self.state = _State(begin, self.dirty.size, self.dirty.ctypes.data, 0)
        self._handle = ctypes.c_size_t()
        callback = ctypes.cast(self._lib.ci_writes_hook, ctypes.c_void_p)
        # Unicorn matches the hook on a store's first byte: a store that starts up to 512
        # bytes (the widest, FXSAVE) before the range and runs into it must be seen too
        status = uclib.uc_hook_add(
            uc._uch, ctypes.byref(self._handle), UC_HOOK_MEM_WRITE, callback,
            ctypes.byref(self.state), ctypes.c_uint64(max(begin - 512, 0)),
            ctypes.c_uint64(end - 1),
        )  # fmt: skip
        if status != 0:
            raise EmulationError(f"uc_hook_add(write tracker) failed with Unicorn error {status}")
        # code translated before the hook existed would store without calling it
        for lo, hi, _perms in uc.mem_regions():
            uc.ctl_remove_cache(lo, hi + 1)

    def note(self, address: int, length: int) -> None:
        """A host write: mark its pages like an emulated store's."""
        lo = max(address, self.begin) - self.begin
        hi = min(address + length, self.begin + self.dirty.size * PAGE) - self.begin
        if lo < hi:
            self.dirty[lo // PAGE : (hi - 1) // PAGE + 1] = 1

    def pages(self) -> list[int]:
        """Addresses of the pages stored to."""
        return (np.flatnonzero(self.dirty) * PAGE + self.begin).tolist()

    @property
    def stores(self) -> int:
        return int(self.state.stores)

    def clear(self) -> None:
        self.dirty[:] = 0

    def close(self) -> None:
        if self._handle.value:
            self._uclib.uc_hook_del(self._uc._uch, self._handle)
            self._handle = ctypes.c_size_t()
