"""Write a "newc" cpio archive, the format the Linux kernel unpacks as an initramfs.

Each member: a 110-byte ASCII header (magic 070701, thirteen 8-digit hex fields), the name with
its NUL, padding to 4 bytes, the data, padding to 4 bytes; the archive ends with "TRAILER!!!".
Timestamps, owners and inode numbers are fixed, so the same inputs give the same bytes.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Member:
    name: str  # path inside the archive, without a leading "/"
    mode: int  # file type and permission bits (stat.S_IFREG | 0o755, ...)
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)  # major, minor of a device node


def directory(name: str) -> Member:
    return Member(name, stat.S_IFDIR | 0o755)


def file(name: str, data: bytes, mode: int = 0o644) -> Member:
    return Member(name, stat.S_IFREG | mode, data)


def symlink(name: str, target: str) -> Member:
    return Member(name, stat.S_IFLNK | 0o777, target.encode())


def char_device(name: str, major: int, minor: int) -> Member:
    """A device node: the console must exist before /dev is mounted."""
    return Member(name, stat.S_IFCHR | 0o600, rdev=(major, minor))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, m: Member, name: bytes) -> bytes:
    rmaj, rmin = m.rdev
    nlink = 2 if stat.S_ISDIR(m.mode) else 1
    fields = (ino, m.mode, 0, 0, nlink, 0, len(m.data), 0, 0, rmaj, rmin, len(name), 0)
    return MAGIC + b"".join(b"%08X" % v for v in fields)


def archive(members: list[Member]) -> bytes:
    out = bytearray()
    for ino, m in enumerate([*members, Member(TRAILER, 0)], start=1):
        name = m.name.lstrip("/").encode() + b"\0"
        head = _header(ino if m.name != TRAILER else 0, m, name)
        out += head + name + _pad(len(head) + len(name))
        out += m.data + _pad(len(m.data))
    return bytes(out)
