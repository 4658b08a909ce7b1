"""The built SMM driver inspected with lief: the binary contract PiSmmCore, the emulator and the
firmware injector rely on (PE32+ x86-64 DXE_SMM_DRIVER, entry in .text, no imports, relocations
for every absolute address, and the MM_DEPEX body)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import lief
import pytest

from codeisland.paths import repo_root, smm_build_dir

SMM_CPU_PROTOCOL = "eb346b97-975f-4a9f-8b22-f8e92bb3d569"
DEPEX_PUSH, DEPEX_AND, DEPEX_END = 0x02, 0x03, 0x08
SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER = 11


@pytest.fixture(scope="module")
def built() -> Path:
    """Build with `make -C smm` (incremental) and return the build directory."""
    for tool in ("clang", "lld-link", "make"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/bootstrap.sh installs it)")
    proc = subprocess.run(
        ["make", "-C", str(repo_root() / "smm")], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return smm_build_dir()


@pytest.fixture(scope="module")
def pe(built: Path) -> lief.PE.Binary:
    binary = lief.PE.parse(str(built / "CodeIslandSmm.efi"))
    assert binary is not None
    return binary


def test_header_is_pe32plus_x64_smm_driver(pe: lief.PE.Binary) -> None:
    assert pe.header.machine == lief.PE.Header.MACHINE_TYPES.AMD64
    assert pe.optional_header.magic == lief.PE.PE_TYPE.PE32_PLUS
    assert int(pe.optional_header.subsystem) == SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER
    assert pe.optional_header.section_alignment == 0x1000
    # PiSmmCore loads it into SMRAM: keep the image small
    assert pe.optional_header.sizeof_image < 512 * 1024


def test_entry_point_is_codeislandsmmentry_in_text(pe: lief.PE.Binary, built: Path) -> None:
    entry = pe.optional_header.addressof_entrypoint
    text = pe.get_section(".text")
    assert text.virtual_address <= entry < text.virtual_address + text.virtual_size
    assert text.has_characteristic(lief.PE.Section.CHARACTERISTICS.MEM_EXECUTE)
    mapfile = (built / "CodeIslandSmm.map").read_text()
    match = re.search(r"\s([0-9a-f]{16})\s+driver\.o", _map_line(mapfile, "CodeIslandSmmEntry"))
    assert match, "CodeIslandSmmEntry missing from the map"
    assert int(match.group(1), 16) - pe.optional_header.imagebase == entry


def _map_line(mapfile: str, symbol: str) -> str:
    for line in mapfile.splitlines():
        if re.search(rf"\s{re.escape(symbol)}\s", line):
            return line
    return ""


def test_no_imports_and_no_writable_code(pe: lief.PE.Binary) -> None:
    imports = pe.data_directory(lief.PE.DataDirectory.TYPES.IMPORT_TABLE)
    assert imports.rva == 0 and imports.size == 0
    assert not pe.has_imports
    for section in pe.sections:
        executes = section.has_characteristic(lief.PE.Section.CHARACTERISTICS.MEM_EXECUTE)
        writes = section.has_characteristic(lief.PE.Section.CHARACTERISTICS.MEM_WRITE)
        assert not (executes and writes), f"{section.name} is writable and executable"


def _relocated_offsets(pe: lief.PE.Binary) -> set[int]:
    out = set()
    for block in pe.relocations:
        for entry in block.entries:
            if entry.type == lief.PE.RelocationEntry.BASE_TYPES.ABS:
                continue  # padding
            assert entry.type == lief.PE.RelocationEntry.BASE_TYPES.DIR64, entry.type
            out.add(block.virtual_address + entry.position)
    return out


def test_every_absolute_address_is_relocated(pe: lief.PE.Binary) -> None:
    """Each 8-byte value in a data section that points into the image must carry a DIR64
    relocation (PiSmmCore rebases the image into SMRAM), and every relocation must patch such a
    pointer.  The status text table guarantees at least one."""
    base, size = pe.optional_header.imagebase, pe.optional_header.sizeof_image
    relocated = _relocated_offsets(pe)
    assert relocated, "the driver has absolute pointers (status texts) but no relocations"
    pointers = set()
    for section in pe.sections:
        if section.name in (".text", ".reloc"):
            continue
        raw = bytes(section.content)
        for off in range(0, len(raw) - 7, 8):
            (value,) = struct.unpack_from("<Q", raw, off)
            if base <= value < base + size:
                pointers.add(section.virtual_address + off)
    assert pointers == relocated
    for rva in relocated:
        (value,) = struct.unpack("<Q", bytes(pe.get_content_from_virtual_address(rva, 8)))
        assert base <= value < base + size


def test_depex_pushes_smm_cpu_protocol_then_ends(built: Path) -> None:
    body = (built / "CodeIslandSmm.depex").read_bytes()
    guids, i = [], 0
    while i < len(body) and body[i] == DEPEX_PUSH:
        guids.append(str(uuid.UUID(bytes_le=body[i + 1 : i + 17])))
        i += 17
        if i < len(body) and body[i] == DEPEX_AND:
            i += 1
    assert body[i:] == bytes([DEPEX_END])
    assert SMM_CPU_PROTOCOL in guids
    assert body == bytes([DEPEX_PUSH]) + uuid.UUID(SMM_CPU_PROTOCOL).bytes_le + bytes([DEPEX_END])
