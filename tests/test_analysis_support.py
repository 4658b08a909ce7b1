"""Builders of small test images compiled on the fly (clang + lld), shared by the analysis,
planning and verify tests (no tests here; each test module makes its own fixture)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

WORKLOAD_C = r"""
static volatile int sink[16];
static const int table[8] = {3, 1, 4, 1, 5, 9, 2, 6};

__attribute__((noinline)) int leaf(int x) { return x * 3 + sink[x & 15]; }

__attribute__((noinline)) int middle(int x) {
    int s = 0;
    for (int i = 0; i < x; i++)
        s += leaf(i) + table[i & 7];
    return s;
}

__attribute__((noinline)) int chooser(int x) {
    switch (x) {
    case 0: return leaf(1);
    case 1: return middle(2);
    case 2: return 7;
    case 3: return 9;
    case 4: return leaf(5);
    case 5: return 11;
    case 6: return middle(3);
    default: return 0;
    }
}

__attribute__((noinline)) int top(int n) {
    int acc = 0;
    for (int i = 0; i < n; i++) {
        acc += middle(i & 7);
        sink[i & 15] = acc;
    }
    return acc + chooser(n & 7);
}

int _start(void) { return top(10); }
"""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def build_elf(
    tmp: Path, source: str = WORKLOAD_C, name: str = "work", extra: tuple[str, ...] = ()
) -> Path:
    """A freestanding position-independent ELF (like the emulator's workloads)."""
    src = tmp / f"{name}.c"
    src.write_text(source)
    out = tmp / f"{name}.elf"
    subprocess.run(
        [
            _tool("clang"),
            "-O2",
            "-fPIC",
            "-ffreestanding",
            "-fno-builtin",
            "-nostdlib",
            "-fuse-ld=lld",
            "-static-pie",
            "-Wl,-e,_start",
            *extra,
            "-o",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    return out


def build_pe(
    tmp: Path,
    source: str = WORKLOAD_C,
    name: str = "work",
    extra: tuple[str, ...] = (),
    link_extra: tuple[str, ...] = (),
) -> Path:
    """A PE32+ EFI driver built the way FACTS.md describes."""
    src = tmp / f"{name}.c"
    src.write_text(source.replace("int _start(void)", "unsigned long long efi_main(void)"))
    obj = tmp / f"{name}.obj"
    out = tmp / f"{name}.efi"
    subprocess.run(
        [
            _tool("clang"),
            "-target",
            "x86_64-unknown-windows",
            "-ffreestanding",
            "-fshort-wchar",
            "-mno-red-zone",
            "-fno-stack-protector",
            "-mno-stack-arg-probe",
            "-O2",
            *extra,
            "-c",
            "-o",
            str(obj),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            _tool("lld-link"),
            "-subsystem:efi_boot_service_driver",
            "-nodefaultlib",
            "-dll",
            "-entry:efi_main",
            f"-out:{out}",
            *link_extra,
            str(obj),
        ],
        check=True,
        capture_output=True,
    )
    return out


OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
_FILE_SMM, _FILE_DRIVER = 0x0A, 0x07
_SECTION_PE32, _SECTION_UI = 0x10, 0x15


def ovmf_drivers(path: Path = OVMF_CODE) -> dict[str, bytes]:
    """name -> PE32+ bytes of every DXE and SMM driver in Debian's OVMF image (stripped PE32+),
    read through the firmware tooling of codeisland.firmware."""
    if not path.exists():
        pytest.skip(f"{path} is not installed (Debian package ovmf)")
    from codeisland.firmware import sections as S
    from codeisland.firmware.image import find_compressed_dxe

    dxe = find_compressed_dxe(path.read_bytes()).dxe
    out: dict[str, bytes] = {}
    for f in dxe.files:
        if f.type not in (_FILE_SMM, _FILE_DRIVER):
            continue
        body = f.body(dxe.data)
        secs = S.parse_sections(body, str(f.guid))
        pe = next((s.body(body) for s in secs if s.type == _SECTION_PE32), None)
        ui = next((s.body(body) for s in secs if s.type == _SECTION_UI), None)
        if pe is None:
            continue
        name = ui.decode("utf-16-le").rstrip("\0") if ui else str(f.guid)
        kind = "smm" if f.type == _FILE_SMM else "dxe"
        out[f"{kind}:{name}"] = pe
    return out


def run_tool(*argv: str) -> None:
    subprocess.run([_tool(argv[0]), *argv[1:]], check=True, capture_output=True)
