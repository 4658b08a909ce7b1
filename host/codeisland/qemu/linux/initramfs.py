"""The guest's initramfs: busybox-static, our agent, and an /init that starts the agent.

    /bin/busybox  + one symlink per applet the init script uses
    /init         mounts proc/sys/dev, runs /agent on the console, powers off when it ends
    /agent        guest/build/linux/agent[-WORKLOAD] (static; finds the mailbox, runs the workload)

Built in memory as a newc cpio archive and gzip-compressed (level 6: ~1 s less than 9 for a
few percent more bytes); the result is cached next to its inputs' digest, so an unchanged
agent is not packed twice.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from ...errors import ToolMissing
from . import cpio

APPLETS = ("sh", "mount", "mkdir", "cat", "poweroff", "sleep", "echo", "dmesg")
INIT_SCRIPT = """#!/bin/sh
# codeisland Linux guest: run the agent, then power off whatever happened.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "codeisland-init: userspace up"
/agent
echo "codeisland-init: agent exited with $?"
poweroff -f
"""


def base_members(busybox: Path, applets: tuple[str, ...] = APPLETS) -> list[cpio.Member]:
    """Directories, the console node, busybox and its applet links: what every /init needs."""
    if not busybox.is_file():
        raise ToolMissing(f"{busybox} is missing (scripts/bootstrap.sh's fetch_linux_guest)")
    out = [cpio.directory(d) for d in ("bin", "dev", "proc", "sys", "tmp")]
    out.append(cpio.char_device("dev/console", 5, 1))
    out.append(cpio.file("bin/busybox", busybox.read_bytes(), 0o755))
    out += [cpio.symlink(f"bin/{a}", "busybox") for a in applets]
    return out


def members(agent: Path, busybox: Path) -> list[cpio.Member]:
    if not agent.is_file():
        raise ToolMissing(f"{agent} is missing (make -C guest/linux)")
    out = base_members(busybox)
    out.append(cpio.file("init", INIT_SCRIPT.encode(), 0o755))
    out.append(cpio.file("agent", agent.read_bytes(), 0o755))
    return out


def build(agent: Path, busybox: Path, out_dir: Path) -> Path:
    """The initramfs for this agent and busybox (built once per content, in out_dir)."""
    return pack(members(agent, busybox), out_dir)


def pack(ms: list[cpio.Member], out_dir: Path) -> Path:
    """These members as a gzip'd newc archive in out_dir, named by their digest (built once)."""
    digest = hashlib.sha256()
    for m in ms:
        digest.update(m.name.encode() + m.data + m.mode.to_bytes(4, "little"))
    out = out_dir / f"initramfs-{digest.hexdigest()[:16]}.cpio.gz"
    if out.is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(cpio.archive(ms), compresslevel=6, mtime=0))
    tmp.replace(out)
    return out
