"""Where the toolkit finds its build outputs and shipped data.

The package is installed editable from the repository (README), so build outputs are found
relative to the source tree; CODEISLAND_ROOT overrides the root and CODEISLAND_DRIVER the driver.
Slow downloads and builds (Debian's edk2 source, its Build tree) are cached outside the
repository, in CODEISLAND_CACHE (default /var/cache/codeisland), and never committed.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import BuildMissing


def repo_root() -> Path:
    env = os.environ.get("CODEISLAND_ROOT")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2]


def smm_build_dir() -> Path:
    return repo_root() / "smm" / "build"


def driver_binary() -> Path:
    env = os.environ.get("CODEISLAND_DRIVER")
    return Path(env) if env else smm_build_dir() / "CodeIslandSmm.efi"


def built_driver() -> Path:
    """The driver a command uses when none is given: BuildMissing (exit 6, naming the make
    target) when this checkout has not built it."""
    driver = driver_binary()
    if not driver.is_file():
        raise BuildMissing(f"the SMM driver {driver}")
    return driver


def emulation_build_dir() -> Path:
    return repo_root() / "emulation" / "build"


def cache_dir() -> Path:
    return Path(os.environ.get("CODEISLAND_CACHE", "/var/cache/codeisland"))
