"""ci_digest64: the C definition (compiled) against the numpy mirror, on edge lengths."""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest

from codeisland.paths import repo_root
from codeisland.plan.digest import digest64

PROBE = r"""
#include <stdio.h>
#include <stdlib.h>
#include "codeisland/digest.h"
int main(void) {
  static unsigned char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf, stdin);
  printf("%016llx\n", (unsigned long long)ci_digest64(buf, n, 0));
  return 0;
}
"""


@pytest.fixture(scope="module")
def c_digest(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    cc = shutil.which("cc") or shutil.which("clang")
    assert cc, "no C compiler"
    work = tmp_path_factory.mktemp("digest")
    (work / "d.c").write_text(PROBE)
    inc = repo_root() / "smm" / "include"
    subprocess.run([cc, "-std=c11", "-O2", f"-I{inc}", "d.c", "-o", "d"], cwd=work, check=True)

    def run(data: bytes) -> int:
        out = subprocess.run([str(work / "d")], input=data, capture_output=True, check=True)
        return int(out.stdout, 16)

    return run


@pytest.mark.parametrize("length", [0, 1, 7, 8, 31, 32, 33, 63, 64, 65, 1000, 4096, 65535])
def test_c_and_python_agree(c_digest, length: int) -> None:  # type: ignore[no-untyped-def]
    data = random.Random(length).randbytes(length)
    assert digest64(data) == c_digest(data)


def test_detects_a_moved_delta() -> None:
    # A re-relocation changes one displacement by +d and another by -d: plain sums miss it.
    base = bytearray(random.Random(1).randbytes(512))
    moved = bytearray(base)
    moved[40] = (moved[40] + 1) & 0xFF
    moved[300] = (moved[300] - 1) & 0xFF
    assert digest64(base) != digest64(moved)


def test_single_byte_changes_are_detected() -> None:
    data = bytearray(random.Random(2).randbytes(256))
    seen = {digest64(data)}
    for i in range(0, 256, 5):
        data[i] ^= 0x40
        seen.add(digest64(data))
    assert len(seen) == 1 + len(range(0, 256, 5))
