"""EDK2 builds for the tests (no tests here): the driver from CodeIslandPkg.dsc with each EDK2
toolchain, and OVMF with the driver built in, from Debian's edk2 source in the cache.

On a developer machine without that source the tests that need it skip (`scripts/bootstrap.sh
--tests` fetches it); in CI a skip is a failure (tests/conftest.py).  Present, the builds run
here, from the cache (seconds when nothing changed).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from codeisland.firmware import build as B
from codeisland.firmware.build_source import BASETOOLS_STAMP, find_source
from codeisland.paths import cache_dir, driver_binary


def edk2_tree_present() -> bool:
    source = find_source(cache_dir())
    return source is not None and (source.basetools / BASETOOLS_STAMP).is_file()


def require_edk2() -> None:
    if not edk2_tree_present():
        pytest.skip(f"Debian's edk2 source is not in {cache_dir()}/edk2 (bootstrap.sh --tests)")


def _quiet(text: str) -> None:
    print(f"[edk2] {text}")  # captured by pytest; shown with -s or on failure


@cache
def edk2_driver(toolchain: str) -> Path:
    require_edk2()
    return Path(B.build_driver(toolchain, progress=_quiet).driver)


@cache
def edk2_firmware(variant: str, platform: str = B.DEFAULT_PLATFORM) -> B.FirmwareBuild:
    require_edk2()
    return B.build_firmware(variant, progress=_quiet, platform=platform)


# driver builds the emulator's driver tests run on: id -> how to get the PE
DRIVER_BUILDS = {
    "clang": driver_binary,  # make -C smm (clang + lld-link)
    "edk2-gcc5": lambda: edk2_driver("GCC5"),
    "edk2-clangpdb": lambda: edk2_driver("CLANGPDB"),
}
