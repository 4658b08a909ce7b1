"""Truncated, non-x86, corrupt and unsupported images: one clear InputError, exit code 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_analysis_support import WORKLOAD_C, build_elf, build_pe

from codeisland.analysis import analyze
from codeisland.cli import main
from codeisland.errors import InputError


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("bad")
    elf = build_elf(tmp).read_bytes()
    pe = build_pe(tmp).read_bytes()
    out: dict[str, bytes] = {
        "empty": b"",
        "text": b"hello, this is not an executable\n",
        "truncated-elf": elf[: len(elf) // 3],
        "elf-header-only": elf[:40],
        "arm64-elf": elf[:18] + (183).to_bytes(2, "little") + elf[20:],
        "elf32": elf[:4] + b"\x01" + elf[5:],
        "truncated-pe": pe[:300],
        "corrupt-pe": b"MZ" + bytes(62),
        "i386-pe": pe,  # machine patched below
    }
    pe_off = int.from_bytes(pe[0x3C:0x40], "little")
    i386 = bytearray(pe)
    i386[pe_off + 4 : pe_off + 6] = (0x14C).to_bytes(2, "little")
    out["i386-pe"] = bytes(i386)
    src = tmp / "obj.c"
    src.write_text(WORKLOAD_C)
    obj = tmp / "obj.o"
    subprocess.run(["clang", "-O2", "-c", "-o", str(obj), str(src)], check=True)
    out["object-file"] = obj.read_bytes()
    paths = {}
    for name, data in out.items():
        p = tmp / name
        p.write_bytes(data)
        paths[name] = p
    return paths


NAMES = [
    "empty",
    "text",
    "truncated-elf",
    "elf-header-only",
    "arm64-elf",
    "elf32",
    "truncated-pe",
    "corrupt-pe",
    "i386-pe",
    "object-file",
]


@pytest.mark.parametrize("name", NAMES)
def test_library_raises_input_error(samples: dict[str, Path], name: str) -> None:
    with pytest.raises(InputError) as info:
        analyze(samples[name])
    assert "\n" not in str(info.value) and str(info.value)


@pytest.mark.parametrize("name", ["truncated-elf", "arm64-elf", "corrupt-pe", "text"])
def test_cli_one_line_exit_2(
    samples: dict[str, Path], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for cmd in ("analyze", "verify"):
        with pytest.raises(SystemExit) as exited:
            main([cmd, str(samples[name])])
        err = capsys.readouterr().err
        assert exited.value.code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("codeisland: error: "), err


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        analyze(tmp_path / "nope.elf")
