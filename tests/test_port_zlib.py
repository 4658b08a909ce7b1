"""The worked example of emulation/workloads/PORTING.md, run as CI does: zlib, a program not
written for this project, taken from Debian's source package (scripts/bootstrap.sh
fetch_port_sources: apt-get source, cached outside the repo), built as a workload with the guest
libc, and moved at SMIs with rollback at several thread counts.  Its data holds pointer tables
(z_errmsg[], deflate's configuration_table of function pointers), so it only runs because the
loader applies R_X86_64_RELATIVE."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from test_emu_common import ensure_built

from codeisland.analysis import analyze
from codeisland.emulator.differential import EmulateConfig, run_baseline, run_emulation
from codeisland.paths import repo_root
from smmemu.workload import build_port, load_workload

ZLIB_FILES = ("adler32", "crc32", "deflate", "inflate", "inftrees", "inffast", "trees", "zutil")


def zlib_sources() -> Path:
    """The unpacked upstream tree of Debian's zlib source package (fetched when missing)."""
    cache = Path(os.environ.get("CODEISLAND_ZLIB_SRC", "/var/cache/codeisland/zlib-src"))
    if not (cache / "zlib.h").is_file():
        subprocess.run(
            ["bash", str(repo_root() / "scripts" / "bootstrap.sh"), "fetch_port_sources"],
            check=True, env={**os.environ, "CODEISLAND_ZLIB_SRC": str(cache)},
        )  # fmt: skip
    return cache


@pytest.fixture(scope="module")
def zlib_elf() -> str:
    ensure_built()
    src = zlib_sources()
    ours = repo_root() / "emulation" / "workloads" / "ports" / "zlib" / "zlib_round.c"
    files = [ours] + [src / f"{name}.c" for name in ZLIB_FILES]
    return str(build_port("zlib", files, ["-DZ_SOLO", f"-I{src}"]))


def test_zlib_loads_with_its_pointer_tables_relocated(zlib_elf: str) -> None:
    image = load_workload(zlib_elf)
    assert len(image.relocations) >= 20  # z_errmsg[10], configuration_table[10].func, ...
    imap = analyze(zlib_elf)
    assert imap.relocation_warning() is None
    assert {"deflate_slow", "inflate_fast", "longest_match"} <= {i.name for i in imap}
    base = run_baseline(EmulateConfig(workload=zlib_elf, threads=1, cpus=1))
    out = base.outputs[0].decode()
    assert base.exit_codes == [0]
    assert out.startswith("zlib 1.2.13 thread 0/1")
    assert out.count("round trip ok, status stream end") == 2
    assert "data error, incompatible version" in out  # strings reached through z_errmsg[]


@pytest.mark.parametrize(("cpus", "threads", "slots"), [(1, 1, 0), (2, 2, 16), (2, 4, 0)])
def test_zlib_moved_and_rolled_back_matches_baseline(
    zlib_elf: str, cpus: int, threads: int, slots: int
) -> None:
    cfg = EmulateConfig(
        workload=zlib_elf, cpus=cpus, threads=threads, smi_every=50_000, islands=8,
        rollback_after=2, stack_slots=slots,
    )  # fmt: skip
    report = run_emulation(cfg)
    assert report.identical, report.events
    assert report.nondeterministic_threads == []
    assert len({m["name"] for m in report.moved}) >= 6
    commands = [c.command for c in report.costs if c.command not in ("SAMPLE", "RECLAIM")]
    assert "ROLLBACK" in commands and commands[-1] == "COMMIT"  # moved again after the rollback
