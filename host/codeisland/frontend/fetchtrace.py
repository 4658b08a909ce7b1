"""ctypes glue for the native front-end cost model (emulation/native/fetchmodel.c).

The model counts per-island executions and runs the L1i / iTLB model on the instruction-fetch
stream in C.  On Unicorn it is registered as a UC_HOOK_BLOCK callback through the C API
(`uc_hook_add` of the library the Python binding loaded), so no Python runs per block; trace
buffers can be fed in bulk with `feed`.  Build it with `make -C emulation/native`.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BuildMissing
from ..paths import emulation_build_dir

ABI_VERSION = 1
MAX_ISLANDS = 65536
MAX_RANGES = 65536

_PARAM_FIELDS = (
    "l1i_size",
    "l1i_ways",
    "l1i_line",
    "itlb4k_entries",
    "itlb4k_ways",
    "itlb2m_entries",
    "itlb2m_ways",
    "fetch_cycles",
    "l1i_miss_cycles",
    "itlb4k_miss_cycles",
    "itlb2m_miss_cycles",
)
_INIT_ERRORS = {
    -2: "l1i_line must be a power of two between 16 and 4096",
    -3: "l1i_size must be a multiple of l1i_line",
    -4: "L1i lines must divide by l1i_ways and fit 8192 lines (ways <= 64)",
    -5: "itlb4k_entries must divide by itlb4k_ways and fit 4096 entries (ways <= 64)",
    -6: "itlb2m_entries must divide by itlb2m_ways and fit 4096 entries (ways <= 64)",
}

u32, u64 = ctypes.c_uint32, ctypes.c_uint64


class Params(ctypes.Structure):
    _fields_ = [(name, u32) for name in _PARAM_FIELDS] + [("reserved", u32)]


class Totals(ctypes.Structure):
    _fields_ = [
        (name, u64)
        for name in (
            "blocks",
            "bytes",
            "lines",
            "l1i_misses",
            "itlb4k_misses",
            "itlb2m_misses",
            "cycles",
            "mem_accesses",
            "unattributed_blocks",
        )
    ]

    def as_dict(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name, _ in self._fields_}


ISLAND_COUNTS_DTYPE = np.dtype(
    [
        ("blocks", "<u8"),
        ("bytes", "<u8"),
        ("l1i_misses", "<u8"),
        ("itlb_misses", "<u8"),
        ("cycles", "<u8"),
        ("mem_accesses", "<u8"),
    ]
)


class FetchModelError(Exception):
    """The native library is missing or refused a parameter (callers convert it)."""


class FetchLibraryMissing(FetchModelError, BuildMissing):
    """libcifetch.so is not built: a FetchModelError to callers that fall back without it, a
    one-line "not built: run make build" to the CLI."""


def library_path() -> Path:
    env = os.environ.get("CODEISLAND_FETCHLIB")
    if env:
        return Path(env)
    return emulation_build_dir() / "native" / "libcifetch.so"


_LIB: ctypes.CDLL | None = None


def load_library() -> ctypes.CDLL:
    """Load libcifetch.so once and declare its prototypes."""
    global _LIB
    if _LIB is not None:
        return _LIB
    path = library_path()
    if not path.is_file():
        raise FetchLibraryMissing(f"the native front-end model {path}")
    lib = ctypes.CDLL(str(path))
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    proto = {
        "ci_fm_size": (sz, []),
        "ci_fm_abi_version": (u32, []),
        "ci_fm_init": (ctypes.c_int, [vp, ctypes.POINTER(Params)]),
        "ci_fm_flush": (None, [vp]),
        "ci_fm_reset_counts": (None, [vp]),
        "ci_fm_add_huge": (ctypes.c_int, [vp, u64, u64]),
        "ci_fm_clear_huge": (None, [vp]),
        "ci_fm_set_ranges": (ctypes.c_int, [vp, vp, vp, vp, u32]),
        "ci_fm_feed": (None, [vp, vp, vp, sz]),
        "ci_fm_totals_get": (None, [vp, ctypes.POINTER(Totals)]),
        "ci_fm_island_counts_get": (u32, [vp, vp, u32]),
    }
    for name, (res, args) in proto.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    if lib.ci_fm_abi_version() != ABI_VERSION:
        raise FetchModelError(f"{path} has ABI {lib.ci_fm_abi_version()}, expected {ABI_VERSION}")
    _LIB = lib
    return lib


class FetchModel:
    """One modeled front end plus per-island counters, owned by Python, run in C."""

    def __init__(self, params: Mapping[str, int]) -> None:
        self._lib = load_library()
        missing = [name for name in _PARAM_FIELDS if name not in params]
        if missing:
            raise FetchModelError(f"front-end parameters missing: {', '.join(missing)}")
        self.params = Params(**{name: int(params[name]) for name in _PARAM_FIELDS})
        self._mem = ctypes.create_string_buffer(self._lib.ci_fm_size() + 16)
        # 16-byte alignment for the C object inside the Python-owned buffer
        addr = ctypes.addressof(self._mem)
        self._ptr = ctypes.c_void_p((addr + 15) & ~15)
        rc = self._lib.ci_fm_init(self._ptr, ctypes.byref(self.params))
        if rc != 0:
            raise FetchModelError(f"front-end parameters rejected: {_INIT_ERRORS.get(rc, rc)}")
        self._hooks: list[tuple[Any, ctypes.c_size_t]] = []

    # -- configuration ---------------------------------------------------------------

    def add_huge_region(self, base: int, size: int) -> None:
        if self._lib.ci_fm_add_huge(self._ptr, base, size) != 0:
            raise FetchModelError(
                f"huge region {base:#x}+{size:#x} is not 2 MiB aligned or the table is full"
            )

    def clear_huge_regions(self) -> None:
        self._lib.ci_fm_clear_huge(self._ptr)

    def set_ranges(self, starts: Sequence[int], ends: Sequence[int], index: Sequence[int]) -> None:
        """Island ranges [start, end) -> island index; a relocated copy may share an index."""
        s = np.asarray(starts, dtype=np.uint64)
        order = np.argsort(s, kind="stable")  # sorted input keeps the C insertion sort linear
        s = np.ascontiguousarray(s[order])
        e = np.ascontiguousarray(np.asarray(ends, dtype=np.uint64)[order])
        i = np.ascontiguousarray(np.asarray(index, dtype=np.uint32)[order])
        if not len(s) == len(e) == len(i) or len(s) > MAX_RANGES:
            raise FetchModelError("island ranges: lengths differ or more than 65536 ranges")
        rc = self._lib.ci_fm_set_ranges(
            self._ptr, s.ctypes.data, e.ctypes.data, i.ctypes.data, len(s)
        )
        if rc == -2:
            raise FetchModelError("island ranges overlap")
        if rc != 0:
            raise FetchModelError("an island range is empty or its index is >= 65536")

    # -- running ---------------------------------------------------------------------

    def feed(self, addrs: np.ndarray, sizes: np.ndarray) -> None:
        """Feed a trace buffer of basic blocks (addresses, sizes in bytes) in one call."""
        a = np.ascontiguousarray(addrs, dtype=np.uint64)
        s = np.ascontiguousarray(sizes, dtype=np.uint32)
        if a.shape != s.shape:
            raise FetchModelError("trace buffer: address and size arrays differ in length")
        self._lib.ci_fm_feed(self._ptr, a.ctypes.data, s.ctypes.data, len(a))

    def flush(self) -> None:
        self._lib.ci_fm_flush(self._ptr)

    def reset_counts(self) -> None:
        self._lib.ci_fm_reset_counts(self._ptr)

    def totals(self) -> dict[str, int]:
        out = Totals()
        self._lib.ci_fm_totals_get(self._ptr, ctypes.byref(out))
        return out.as_dict()

    def island_counts(self, n: int) -> np.ndarray:
        n = min(n, MAX_ISLANDS)
        out = np.zeros(n, dtype=ISLAND_COUNTS_DTYPE)
        self._lib.ci_fm_island_counts_get(self._ptr, out.ctypes.data, n)
        return out

    # -- Unicorn -----------------------------------------------------------------------

    def attach(self, uc: Any, *, data_accesses: bool = False) -> None:
        """Register the native block hook (and optionally the data-access hook) on `uc`."""
        from unicorn import UC_HOOK_BLOCK, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE
        from unicorn.unicorn_py3.unicorn import uclib

        wanted = [(UC_HOOK_BLOCK, "ci_fm_block_hook")]
        if data_accesses:
            wanted.append((UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, "ci_fm_mem_hook"))
        for htype, symbol in wanted:
            handle = ctypes.c_size_t()
            callback = ctypes.cast(getattr(self._lib, symbol), ctypes.c_void_p)
            status = uclib.uc_hook_add(
                uc._uch, ctypes.byref(handle), htype, callback, self._ptr, 1, 0
            )
            if status != 0:
                raise FetchModelError(f"uc_hook_add({symbol}) failed with Unicorn error {status}")
            self._hooks.append((uc, handle))

    def detach(self) -> None:
        from unicorn.unicorn_py3.unicorn import uclib

        while self._hooks:
            uc, handle = self._hooks.pop()
            uclib.uc_hook_del(uc._uch, handle)
