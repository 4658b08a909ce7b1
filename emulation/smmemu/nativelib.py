"""The emulator's native hook libraries (emulation/<name>/<name>.c, built by make -C emulation)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

from codeisland.errors import BuildMissing, ToolMissing
from codeisland.paths import emulation_build_dir, repo_root


def load(name: str, what: str) -> ctypes.CDLL:
    """build/<name>/libsmm<name>.so, built first when missing; `what` names it in errors."""
    path = emulation_build_dir() / name / f"libsmm{name}.so"
    if not path.is_file():
        if shutil.which("make") is None:
            raise ToolMissing(f"building the {what} needs make and a C compiler")
        subprocess.run(["make", "-s", "-C", str(repo_root() / "emulation")], check=False)
    if not path.is_file():
        raise BuildMissing(f"the {what} {path}")
    return ctypes.CDLL(str(path))
