"""Third-party programs ported as guest workloads (emulation/workloads/PORTING.md) whose runs
the benchmark replays as recorded workloads (loop/recorded.py): where their sources come from,
how they are built, and how their profiles are recorded.

The sources are Debian's source packages of this release, fetched by
`scripts/bootstrap.sh fetch_port_sources` into caches outside the repository (never vendored);
the entries (`*_jobs.c`, ours) serve a stream of randomly drawn jobs with no phases.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..paths import cache_dir, repo_root
from ..profile.format import Profile

# how the benchmark's stored profiles were recorded (scripts/record_bench_profiles.py)
RECORD_WINDOWS = 168  # seven emulated days of 24 one-hour windows
RECORD_SETTINGS = {"cpus": 2, "threads": 2, "window_instructions": 400_000,
                   "sample_every": 20_000, "seed": 1}  # fmt: skip


@dataclass(frozen=True)
class Port:
    program: str  # the upstream program, e.g. "zlib"
    env: str  # environment variable that overrides the source cache
    probe: str  # a file the unpacked source tree has
    files: tuple[str, ...]  # the library's C files, in the source tree
    cflags: tuple[str, ...]  # beyond -I<tree>

    @property
    def workload(self) -> str:
        return f"{self.program}_jobs"

    @property
    def entry(self) -> Path:
        return (
            repo_root() / "emulation" / "workloads" / "ports" / self.program / f"{self.workload}.c"
        )

    def sources(self) -> Path:
        """The unpacked upstream tree (fetched from Debian's source package when missing)."""
        tree = Path(os.environ.get(self.env, str(cache_dir() / f"{self.program}-src")))
        if not (tree / self.probe).is_file():
            script = repo_root() / "scripts" / "bootstrap.sh"
            proc = subprocess.run(["bash", str(script), "fetch_port_sources"],
                                  capture_output=True, text=True)  # fmt: skip
            if proc.returncode != 0 or not (tree / self.probe).is_file():
                raise InputError(
                    f"the sources of {self.program} are not in {tree} and fetching them failed: "
                    f"{proc.stderr.strip()[-300:]}"
                )
        return tree

    def package(self) -> str:
        """The Debian source package the tree came from (name_version)."""
        stamp = self.sources() / "SOURCE-PACKAGE"
        return stamp.read_text().strip() if stamp.is_file() else self.program

    def build(self, jobs: int | None = None) -> Path:
        """The port's ELF; `jobs` per thread instead of the entry's default (a short run)."""
        from smmemu.workload import build_port

        tree = self.sources()
        files = [self.entry] + [tree / f for f in self.files]
        name, flags = self.workload, [*self.cflags, f"-I{tree}"]
        if jobs is not None:
            name, flags = f"{name}_{jobs}", [*flags, f"-DJOBS={jobs}"]
        return build_port(name, files, flags)


PORTS = {
    "zlib": Port(
        "zlib", "CODEISLAND_ZLIB_SRC", "deflate.c",
        tuple(f"{f}.c" for f in ("adler32", "crc32", "deflate", "inflate", "inftrees",
                                 "inffast", "trees", "zutil")),
        ("-DZ_SOLO",),
    ),
    "bzip2": Port(
        "bzip2", "CODEISLAND_BZIP2_SRC", "blocksort.c",
        tuple(f"{f}.c" for f in ("blocksort", "huffman", "crctable", "randtable", "compress",
                                 "decompress", "bzlib")),
        # BZ_NO_STDIO drops the FILE API and, with it, bzlib_private.h's <string.h>
        ("-DBZ_NO_STDIO", "-include", "string.h"),
    ),
}  # fmt: skip


def record(program: str, windows: int = RECORD_WINDOWS) -> Profile:
    """Build the port and record `windows` windows of it in the emulator (real driver), with
    the settings of the stored profiles."""
    from .record import record_emulated

    port = PORTS[program]
    elf = port.build()
    profile = record_emulated(str(elf), windows=windows, **RECORD_SETTINGS)
    profile.source.update(workload=port.workload, package=port.package())
    return profile
