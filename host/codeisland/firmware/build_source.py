"""Debian's edk2 source package: fetched once into the cache, BaseTools built, Debian's flags read.

The tree is the one Debian's own OVMF is built from (`apt-get source edk2`, Debian's patches
applied by dpkg-source).  It stays pristine: platform edits are made to copies in a workspace
(build_platform), so one source tree serves every variant.

    <cache>/edk2/src/edk2-<upstream>/        apt-get source edk2 (orig + debian/ + patches)
        BaseTools/Source/C/bin/              built once (stamp .codeisland-basetools)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildFailed, ToolMissing

# the recipe in debian/rules that writes OVMF_CODE_4M.secboot.fd builds this DSC with these flags
DEBIAN_SECBOOT_DSC = "OvmfPkg/OvmfPkgIa32X64.dsc"
DEBIAN_SECBOOT_FLAGS_VAR = "OVMF_4M_SMM_FLAGS"
DEBIAN_TOOLCHAIN_VAR = "EDK2_TOOLCHAIN"
BASETOOLS_STAMP = ".codeisland-basetools"

# tool -> Debian package that provides it (edk2's Build-Depends for an OVMF build)
REQUIRED_TOOLS = {
    "gcc": "build-essential",
    "make": "build-essential",
    "nasm": "nasm",
    "iasl": "acpica-tools",
    "dpkg-source": "dpkg-dev",
}
REQUIRED_FILES = {Path("/usr/include/uuid/uuid.h"): "uuid-dev"}


@dataclass(frozen=True)
class Edk2Source:
    root: Path
    version: str  # Debian version, from debian/changelog

    @property
    def basetools(self) -> Path:
        return self.root / "BaseTools"


def host_python() -> str:
    """EDK2's BaseTools run under Debian's python3 (python3-distutils), as debian/rules does."""
    return "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else "python3"


def check_tools() -> None:
    """One clear line for the first missing build dependency."""
    for tool, package in REQUIRED_TOOLS.items():
        if shutil.which(tool) is None:
            raise ToolMissing(f"{tool} is not installed (apt-get install {package})")
    for path, package in REQUIRED_FILES.items():
        if not path.is_file():
            raise ToolMissing(f"{path} is missing (apt-get install {package})")


def check_build_python() -> None:
    """BaseTools import distutils (a separate Debian package for python3.11); checked before
    a build only (it takes seconds on a loaded machine)."""
    r = subprocess.run([host_python(), "-c", "import distutils"], capture_output=True)
    if r.returncode != 0:
        raise ToolMissing("python3's distutils is missing (apt-get install python3-distutils)")


def _changelog_version(root: Path) -> str:
    first = (root / "debian" / "changelog").read_text(errors="replace").splitlines()[:1]
    m = re.match(r"edk2 \(([^)]+)\)", first[0] if first else "")
    if not m:
        raise BuildFailed(f"{root}/debian/changelog does not name an edk2 version")
    return m.group(1)


def find_source(cache: Path) -> Edk2Source | None:
    """The unpacked tree in the cache, if a previous run fetched it."""
    src = cache / "edk2" / "src"
    for root in sorted(src.glob("edk2-*"), reverse=True):
        if (root / "debian" / "changelog").is_file() and (root / "edksetup.sh").is_file():
            return Edk2Source(root, _changelog_version(root))
    return None


def fetch_source(cache: Path) -> Edk2Source:
    """`apt-get source edk2` into the cache (needs a deb-src entry: scripts/bootstrap.sh)."""
    found = find_source(cache)
    if found is not None:
        return found
    if shutil.which("apt-get") is None:
        raise ToolMissing("apt-get is not available: Debian's edk2 source cannot be fetched")
    src = cache / "edk2" / "src"
    src.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["apt-get", "source", "-q", "edk2"], cwd=src, capture_output=True, text=True)
    if r.returncode != 0:
        text = (r.stderr or r.stdout).strip()
        if "deb-src" in text:
            raise ToolMissing(
                "apt-get source edk2 needs a deb-src entry for Debian's archive "
                "(scripts/bootstrap.sh install_edk2_build_deps adds one)"
            )
        line = next((ln for ln in text.splitlines() if ln.startswith("E:")), text[-300:])
        raise BuildFailed(f"apt-get source edk2 failed: {line}")
    found = find_source(cache)
    if found is None:
        raise BuildFailed(f"apt-get source edk2 left no edk2-* tree in {src}")
    return found


def ensure_basetools(source: Edk2Source, log: Path) -> bool:
    """Build BaseTools' C tools once; True when they were built now."""
    stamp = source.basetools / BASETOOLS_STAMP
    if stamp.is_file():
        return False
    with log.open("w") as out:
        r = subprocess.run(
            ["make", "-C", str(source.basetools), f"-j{os.cpu_count() or 1}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHON_COMMAND": host_python()},
        )
    if r.returncode != 0:
        raise BuildFailed(f"BaseTools did not build: {first_error(log)} (log: {log})")
    stamp.touch()
    return True


def debian_variables(root: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Make variables of debian/rules, as Debian's own build expands them.  One make run
    (dpkg's makefiles make it ~20 s on a loaded machine), remembered beside the tree until
    debian/rules changes."""
    rules = (root / "debian" / "rules").read_bytes()
    key = hashlib.sha256(rules + repr(names).encode()).hexdigest()
    memo = root.parent / f".codeisland-debian-variables.{key[:16]}.json"
    try:
        return dict(json.loads(memo.read_text()))
    except (OSError, ValueError):
        pass
    target = "codeisland-print-variables"
    recipe = "@" + "; ".join(f"echo '{n}=$({n})'" for n in names)
    r = subprocess.run(
        ["make", "-s", "-f", "debian/rules", "--eval", f"{target}: ; {recipe}", target],
        cwd=root,
        capture_output=True,
        text=True,
    )
    found = dict(ln.split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)
    for name in names:
        if r.returncode != 0 or not found.get(name, "").strip():
            why = (r.stderr or "").strip()[-200:]
            raise BuildFailed(f"debian/rules does not define {name}: {why}")
    values = {n: found[n].strip() for n in names}
    memo.write_text(json.dumps(values))
    return values


def _debian(source: Edk2Source) -> dict[str, str]:
    return debian_variables(source.root, (DEBIAN_SECBOOT_FLAGS_VAR, DEBIAN_TOOLCHAIN_VAR))


def debian_build_flags(source: Edk2Source) -> list[str]:
    """The -D flags Debian builds OVMF_CODE_4M.secboot.fd with (e.g. -DSMM_REQUIRE=TRUE)."""
    return _debian(source)[DEBIAN_SECBOOT_FLAGS_VAR].split()


def debian_toolchain(source: Edk2Source) -> str:
    return _debian(source)[DEBIAN_TOOLCHAIN_VAR]


LOG_ERRORS = [  # most telling first
    re.compile(r": (fatal )?error: "),  # gcc/clang: file:line:col: error: ...
    re.compile(r"undefined reference|multiple definition|undefined symbol"),  # ld, lld-link
    re.compile(r"\berror [0-9A-Z]{4}:"),  # EDK2: file(line): error 000E: ...
    re.compile(r"(^\s*error:|Error \d+\b|No such file)", re.I),
]


def first_error(log: Path) -> str:
    """The first line of a build log that says what went wrong: a compiler or linker message
    first (collect2's summary is not one), then EDK2's own error lines."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no build log"
    for pattern in LOG_ERRORS:
        hits = [ln for ln in lines if pattern.search(ln) and not ln.startswith("collect2:")]
        if hits:
            return hits[0].strip()[:400]
    tail = [ln for ln in lines if ln.strip()][-1:]
    return tail[0].strip() if tail else "empty build log"
