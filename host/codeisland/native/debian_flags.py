"""Compiler flags as Debian builds C packages: what test and benchmark programs are built with.

`dpkg-buildflags` with DEB_BUILD_MAINT_OPTIONS=hardening=+all (PIE, -O2, stack protector,
_FORTIFY_SOURCE, relro and now), plus -fcf-protection: endbr64 at indirect-branch targets, on by
default in dpkg-buildflags since dpkg 1.22 (trixie) and in Debian's gcc on Ubuntu; bookworm's
dpkg leaves it out, so it is added here explicitly.  Without dpkg-dev the same list is used.
"""

from __future__ import annotations

import os
import shutil
import subprocess

FALLBACK_CFLAGS = "-g -O2 -fstack-protector-strong -Wformat -Werror=format-security -fPIE"
FALLBACK_LDFLAGS = "-Wl,-z,relro -Wl,-z,now -pie"
EXTRA_CFLAGS = "-fcf-protection -D_FORTIFY_SOURCE=2"


def _buildflags(kind: str, fallback: str) -> list[str]:
    if shutil.which("dpkg-buildflags") is None:
        return fallback.split()
    env = dict(os.environ, DEB_BUILD_MAINT_OPTIONS="hardening=+all")
    r = subprocess.run(["dpkg-buildflags", "--get", kind], capture_output=True, text=True, env=env)
    return r.stdout.split() if r.returncode == 0 and r.stdout.strip() else fallback.split()


def cflags() -> list[str]:
    return [*_buildflags("CFLAGS", FALLBACK_CFLAGS), *EXTRA_CFLAGS.split()]


def ldflags() -> list[str]:
    return _buildflags("LDFLAGS", FALLBACK_LDFLAGS)
