"""The arena layout is defined once: a value changed in the platform TOML reaches both the QEMU
targets' C constants (smm/app's generated arena_layout.h, read by the UEFI app and the Linux
agent) and the host's placement."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from codeisland.paths import repo_root
from codeisland.planning.platform import SHIPPED, load_platform
from codeisland.qemu.linux import agent
from codeisland.qemu.target import placement, target_placement

APP = repo_root() / "smm" / "app"
PROBE = r"""
#include <stdio.h>
#include "agent.h" /* the Linux agent's contract; includes arena_layout.h */
int main(void) {
  printf("%llx %llx %llx %llx %llx\n", (unsigned long long)CI_TARGET_CONTROL_OFFSET,
         (unsigned long long)CI_TARGET_BLOB_OFFSET, (unsigned long long)CI_TARGET_BLOB_LIMIT,
         (unsigned long long)CI_ARENA_HOT_OFFSET, (unsigned long long)CI_ARENA_SIZE);
  printf("%llx %llx\n", (unsigned long long)CI_AGENT_CONTROL_OFFSET,
         (unsigned long long)CI_AGENT_BLOB_OFFSET);
  return 0;
}
"""


def _header(toml: Path, out: Path) -> Path:
    """The header exactly as the app's build makes it (its Makefile rule)."""
    r = subprocess.run(
        ["make", "-s", "-C", str(APP), "arena-header", f"ARENA_TOML={toml}", f"ARENA_H={out}",
         f"PYTHON={sys.executable}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


def _c_values(header: Path, tmp: Path) -> list[int]:
    (tmp / "probe.c").write_text(PROBE)
    exe = tmp / "probe"
    include = ["-I", str(header.parent), "-I", str(repo_root() / "guest" / "linux")]
    subprocess.run(["cc", *include, str(tmp / "probe.c"), "-o", str(exe)], check=True, timeout=60)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return [int(v, 16) for v in out.split()]


def _moved(tmp: Path) -> Path:
    """The shipped profile with its source region moved and shrunk and its hot region moved."""
    text = (SHIPPED / "emulated.toml").read_text()
    text, n = re.subn(
        r'(name = "code"\n(?:.*\n)*?arena_offset = )0x000000\n((?:.*\n)*?size = )0x400000',
        r"\g<1>0x100000\n\g<2>0x300000", text,
    )  # fmt: skip
    assert n == 1
    text, n = re.subn(r'(name = "hot"\n(?:.*\n)*?arena_offset = )0x400000', r"\g<1>0x500000", text)
    text, m = re.subn(r'(name = "hot"\n(?:.*\n)*?size = )0x200000', r"\g<1>0x100000", text)
    assert n == 1 and m == 1
    path = tmp / "moved.toml"
    path.write_text(text)
    return path


def test_a_changed_toml_reaches_the_target_app_and_the_host(tmp_path: Path) -> None:
    toml = _moved(tmp_path)
    platform = load_platform(toml)
    host = target_placement(platform)
    c = _c_values(_header(toml, tmp_path / "gen" / "arena_layout.h"), tmp_path)
    assert (host.control, host.blob, host.blob_limit) == (0x100000, 0x101000, 0x400000)
    assert c == [host.control, host.blob, host.blob_limit, 0x500000, 0x1000000, 0x100000, 0x101000]
    assert platform.region("hot").arena_offset == 0x500000  # what the planner places into


def test_the_shipped_layout_is_what_the_host_uses(tmp_path: Path) -> None:
    c = _c_values(_header(SHIPPED / "emulated.toml", tmp_path / "arena_layout.h"), tmp_path)
    p = placement()
    hot = load_platform("emulated").region("hot").arena_offset
    size = load_platform("emulated").arena_size
    assert c == [
        p.control,
        p.blob,
        p.blob_limit,
        hot,
        size,
        agent.CONTROL_OFFSET,
        agent.BLOB_OFFSET,
    ]


def test_a_platform_without_a_source_region_is_one_error_line(tmp_path: Path) -> None:
    text = (SHIPPED / "emulated.toml").read_text().replace('role = "source"', 'role = "warm"')
    toml = tmp_path / "nosource.toml"
    toml.write_text(text)
    r = subprocess.run(
        [sys.executable, str(APP / "mkarena.py"), str(toml), str(tmp_path / "x.h")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1 and not (tmp_path / "x.h").exists()
    assert r.stderr.count("\n") == 1 and "source region" in r.stderr


def test_the_driver_reserves_the_arena_the_platform_lays_out() -> None:
    # the driver's arena size (CI_ARENA_PAGES, also built by EDK2) against the TOML's arena_size:
    # a smaller arena would leave the hot/far/stack regions outside what the driver registered
    from codeisland.emulator.session import boot

    _, size = boot(cpus=1).arena
    assert size == load_platform("emulated").arena_size


def test_each_target_embeds_its_own_workload_beside_the_generated_header() -> None:
    # the generated header's -I directory must not shadow a workload's workload_blob.h (it once
    # made every Linux agent embed the `own` workload while the host analysed the one asked for)
    root = repo_root()
    built = {
        "app": (["-C", str(APP)], root / "smm/build/app/CodeIslandApp-hashtab.efi",
                root / "smm/build/app/hashtab/workload.bin", root / "smm/build/app/workload.bin"),
        "agent": (["-C", str(root / "guest/linux")], root / "guest/build/linux/agent-hashtab",
                  root / "guest/build/linux/hashtab/workload.bin",
                  root / "guest/build/linux/own/workload.bin"),
    }  # fmt: skip
    for name, (make, binary, mine, other) in built.items():
        r = subprocess.run(
            ["make", "-s", *make, "WORKLOAD=hashtab", f"PYTHON={sys.executable}"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert r.returncode == 0, (name, r.stderr[-2000:])
        data = binary.read_bytes()
        assert mine.read_bytes() in data, f"{name} does not embed hashtab"
        if other.exists():
            assert other.read_bytes() not in data, f"{name} embeds another workload"
