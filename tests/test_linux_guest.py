"""The Linux guest without booting it: the agent's control block against agent.h (a compiled
probe), the initramfs (listed and unpacked by busybox's own cpio), the failure causes read from
a serial log, and the CLI's refusals that need no VM."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from codeisland.paths import repo_root
from codeisland.qemu.linux import agent, cpio, guest, initramfs

ROOT = repo_root()
CLI = [sys.executable, "-c", "from codeisland.cli import main; main()"]


def test_agent_control_mirror_matches_agent_h(tmp_path: Path) -> None:
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        '#include "agent.h"',
        "int main(void) {",
        '  printf("size %zu\\n", sizeof(ci_agent_control));',
    ]
    for name, *_ in agent.AgentControl._fields_:
        lines.append(
            f'  printf("{name} %zu %zu\\n", offsetof(ci_agent_control, {name}), '
            f"sizeof(((ci_agent_control *)0)->{name}));"
        )
    for name in agent.CONSTANTS:
        lines.append(f'  printf("{name} %llu\\n", (unsigned long long)CI_AGENT_{name});')
    lines.append("  return 0;\n}\n")
    src = tmp_path / "probe.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "probe"
    subprocess.run(["make", "-s", "-C", str(ROOT / "smm/app"), "arena-header"], check=True)
    generated = ROOT / "smm/build/app/include"  # arena_layout.h, from the platform TOML
    subprocess.run(
        ["gcc", "-std=c11", "-Wall", "-Werror", f"-I{ROOT / 'guest/linux'}", f"-I{generated}",
         str(src), "-o", exe],
        check=True,
    )  # fmt: skip
    got = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split("\n")
    want = [f"size {ctypes.sizeof(agent.AgentControl)}"]
    for name, ftype, *_ in agent.AgentControl._fields_:
        want.append(f"{name} {getattr(agent.AgentControl, name).offset} {ctypes.sizeof(ftype)}")
    want += [f"{name} {value}" for name, value in agent.CONSTANTS.items()]
    assert got[:-1] == want


def test_va_and_phys_translate_inside_the_arena_only() -> None:
    ctl = agent.AgentControl(arena_phys=0x1C7E5000, arena_va=0x7F0000000000, arena_size=0x1000)
    assert ctl.va_to_phys(0x7F0000000010) == 0x1C7E5010
    assert ctl.phys_to_va(0x1C7E5FFF) == 0x7F0000000FFF
    with pytest.raises(Exception, match="outside"):
        ctl.va_to_phys(0x7F0000001000)
    with pytest.raises(Exception, match="outside"):
        ctl.phys_to_va(0x1C7E4FFF)


def _busybox() -> Path:
    return guest.busybox()  # fetched by scripts/bootstrap.sh: a missing one is a failure here


def test_cpio_archive_unpacks_with_busybox_cpio(tmp_path: Path) -> None:
    members = [
        cpio.directory("bin"),
        cpio.file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755),
        cpio.file("odd", b"x" * 5),  # data not a multiple of 4: padding
        cpio.symlink("bin/link", "hello"),
    ]
    (tmp_path / "a.cpio").write_bytes(cpio.archive(members))
    out = tmp_path / "out"
    out.mkdir()
    with (tmp_path / "a.cpio").open("rb") as f:
        r = subprocess.run([str(_busybox()), "cpio", "-id"], stdin=f, cwd=out, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert (out / "bin/hello").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.access(out / "bin/hello", os.X_OK)
    assert (out / "odd").read_bytes() == b"xxxxx"
    assert os.readlink(out / "bin/link") == "hello"


def test_initramfs_holds_init_agent_and_busybox(tmp_path: Path) -> None:
    fake_agent = tmp_path / "agent"
    fake_agent.write_bytes(b"\x7fELF agent")
    first = initramfs.build(fake_agent, _busybox(), tmp_path / "cache")
    assert initramfs.build(fake_agent, _busybox(), tmp_path / "cache") == first  # cached
    listing = subprocess.run(
        f"gzip -dc {first} | {_busybox()} cpio -t", shell=True, capture_output=True, text=True
    ).stdout.split()
    assert {"init", "agent", "bin/busybox", "bin/sh", "dev/console"} <= set(listing)
    fake_agent.write_bytes(b"\x7fELF another agent")
    assert initramfs.build(fake_agent, _busybox(), tmp_path / "cache") != first


@pytest.mark.parametrize(
    ("serial", "memory", "cause"),
    [
        ("codeisland-agent: error: no codeisland mailbox in the 9 Reserved ranges\n", 256,
         "the guest agent failed: no codeisland mailbox in the 9 Reserved ranges"),
        ("[ 1.2] Kernel panic - not syncing: VFS: Unable to mount root fs\n", 256,
         "the Linux kernel panicked: VFS: Unable to mount root fs"),
        ("!!!! X64 Exception Type - 06(#UD - Invalid Opcode)  CPU Apic ID - 00000000 !!!!\n", 160,
         "CPU exception 06(#UD - Invalid Opcode) with 160 MiB of guest RAM (a Linux guest needs"),
        ("codeisland-init: agent exited with 139\n", 256,
         "the guest agent ended early (signal 11) and the guest powered off"),
        ("codeisland-agent: done rounds 9 bad 0\ncodeisland-init: agent exited with 0\n", 256,
         None),
        ("EFI stub: Loaded initrd\ncodeisland-init: userspace up\n", 256, None),
    ],
)  # fmt: skip
def test_boot_failure_causes_from_the_serial_log(serial: str, memory: int, cause: str) -> None:
    got = guest.linux_boot_failure(serial, memory)
    assert (got is None) if cause is None else (got is not None and cause in got)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_too_little_ram_is_refused_before_booting(tmp_path: Path) -> None:
    r = _cli("qemu", "run", "--guest", "linux", "--memory", "160", "--workdir", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "codeisland: error: a Linux guest needs at least 192 MiB of RAM (got 160): "
        "with 128 or 160 MiB the kernel's EFI stub stops on an invalid opcode"
    )
    assert not (tmp_path / "machine.json").exists()  # no VM was started


def test_missing_kernel_is_one_line(tmp_path: Path) -> None:
    r = _cli(
        "qemu", "run", "--guest", "linux", "--workdir", str(tmp_path / "w"),
        env={"CODEISLAND_LINUX_CACHE": str(tmp_path / "empty")},
    )  # fmt: skip
    assert r.returncode == 6, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "vmlinuz is missing: run scripts/bootstrap.sh" in r.stderr or "busybox" in r.stderr
    r = _cli(
        "qemu", "run", "--guest", "linux", "--workdir", str(tmp_path / "w2"),
        "--kernel", str(tmp_path / "no-such-bzImage"),
    )  # fmt: skip
    assert r.returncode == 2 and "no-such-bzImage does not exist" in r.stderr


def test_agent_builds_statically() -> None:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest/linux")], check=True)
    with guest.agent_binary().open("rb") as f:
        elf = ELFFile(f)
        kinds = {seg["p_type"] for seg in elf.iter_segments()}
        assert elf["e_machine"] == "EM_X86_64" and "PT_INTERP" not in kinds  # static
